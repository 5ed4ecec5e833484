"""The pytest plugin: bench option, fixtures, markers, evidence, known state after every test.

Tests ask for capabilities (`psu`, `uds`, `can`, `console`, `load`, `flasher`, `dut`, `images`, `config_packages`,
`vehicle`, `not_covered`),
never for a vendor class. The same test runs on a virtual bench and on real hardware; only
`--bench` differs.

Installed as a pytest entry point (`pytest11`, name `hil.plugin`), so a suite anywhere gets it
without `-p`. It stays inert until a collected test uses one of its fixtures or markers: a run
of unrelated tests needs no bench file. The bench lock is taken by `Bench.open`.
"""

from __future__ import annotations

# pytest registers this module: its hooks and fixtures are the names below (the code lives beside it,
# one concern a file). Tests import MISSING_ROLE_PREFIX, ImageStore and measurement_verdict from here.
from hil.plugin.fixtures import (bench, bench_config, can, config_packages, console, console_if_any, console_pattern,
                                 dut, dut_profile, evidence, family_phase, flasher, images, load, measure, not_covered,
                                 psu, uds, vehicle)
from hil.plugin.evidence import measurement_verdict
from hil.plugin.hooks import (pytest_addoption, pytest_collection_modifyitems, pytest_configure, pytest_pyfunc_call,
                              pytest_runtest_call, pytest_runtest_makereport, pytest_runtest_setup,
                              pytest_sessionfinish)
from hil.plugin.images import MISSING_ROLE_PREFIX, ImageStore
from hil.plugin.session import FIXTURES, MARKERS, HilSession, uses_bench

__all__ = ["FIXTURES", "MARKERS", "MISSING_ROLE_PREFIX", "HilSession", "ImageStore", "bench", "bench_config", "can",
           "config_packages", "console", "console_if_any", "console_pattern", "dut", "dut_profile", "evidence",
           "family_phase", "flasher", "images", "load", "measure", "measurement_verdict", "not_covered", "psu",
           "pytest_addoption", "pytest_collection_modifyitems", "pytest_configure", "pytest_pyfunc_call", "pytest_runtest_call",
           "pytest_runtest_makereport", "pytest_runtest_setup", "pytest_sessionfinish", "uds", "uses_bench", "vehicle"]
