"""The validation suite's one rule beyond the plugin's: every case names the requirement it is evidence for.

A case without `@pytest.mark.requirement(...)` fails collection, naming it: in the report it would sit
at the root of the requirement tree, evidence for nothing (ids: hil/report/requirements.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.report.allure import check_requirements_named

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    check_requirements_named(item for item in items if Path(str(item.path)).resolve().is_relative_to(HERE))
