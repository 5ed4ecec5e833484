"""Settings shared by the framework's own tests.

Hypothesis profiles for the fuzz targets (tests/test_fuzz.py):
- `hil-ci` (default, `make test`): a few hundred examples per target, derandomized so that a
  `make test` run is reproducible - the same examples on every machine, no flake from a lucky draw;
- `hil-nightly` (`HIL_NIGHTLY=1`): at least 10,000 fresh random examples per target.
Generated boards (tests/test_generated_boards.py, tests/boards.py) draw CI_BOARDS (5) in `make test`,
NIGHTLY_BOARDS (100) with `HIL_NIGHTLY=1` or the hil-nightly profile.
`HYPOTHESIS_PROFILE=<name>` picks any registered profile explicitly.

`outside_suite/` is a user's suite: it runs only from a temporary folder outside the repository
(tests/test_cli_and_plugin.py), never as part of this collection.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: Examples per fuzz target in `make test`; the targets scale their own counts from this.
CI_EXAMPLES = 300
NIGHTLY_EXAMPLES = 10_000

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.function_scoped_fixture])
settings.register_profile("hil-ci", max_examples=CI_EXAMPLES, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("hil-nightly", max_examples=NIGHTLY_EXAMPLES, print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("hil-nightly" if os.environ.get("HIL_NIGHTLY", "") not in ("", "0") else "hil-ci"))

collect_ignore = ["outside_suite"]
