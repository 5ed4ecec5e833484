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


# --------------------------------------------------------------------------- hermetic: beside any validation run
#
# The tests run while a validation run holds any bench of the repository (`pytest testcases --bench
# benches/sim-inproc.yaml`, `make suite`): they have their own lock directory (never ~/.hil), and
# every bench they open, start or hand to a subprocess is a private copy (tests/bench_ports.py) -
# never a shipped bench's name, CAN channel, TCP ports or flash file. The guard below fails a test
# that breaks this, naming what it shares.

import inspect  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import pytest  # noqa: E402

from bench_ports import Footprint, footprint_of_config, footprint_of_file, shared_with_shipped  # noqa: E402

_LOCK_DIR_KEY = pytest.StashKey[str]()


#: The framework tests that need a whole virtual bench (a board with its instruments, or a pytest run of the
#: validation cases): `make test-fast` (`-m "not integration"`) leaves them out.
INTEGRATION = ("integration: needs a whole virtual bench or runs validation cases in a subprocess "
               "(make test-fast leaves it out)")


def pytest_configure(config: pytest.Config) -> None:
    """The `integration` marker; this run's own bench lock directory (xdist workers and subprocesses inherit it)."""
    config.addinivalue_line("markers", INTEGRATION)
    if not hasattr(config, "workerinput"):
        config.stash[_LOCK_DIR_KEY] = tempfile.mkdtemp(prefix="hil-test-locks-")
        os.environ["HIL_LOCK_DIR"] = config.stash[_LOCK_DIR_KEY]


def pytest_unconfigure(config: pytest.Config) -> None:
    lock_dir = config.stash.get(_LOCK_DIR_KEY, None)
    if lock_dir:
        shutil.rmtree(lock_dir, ignore_errors=True)


class NotHermetic(AssertionError):
    """A framework test used a shipped bench (its lock, channel, ports or flash file)."""


_violations: list[str] = []


def _refuse(fp: Footprint | None, what: str) -> None:
    shared = shared_with_shipped(fp) if fp is not None else []
    if shared:
        text = (f"{what} shares with a shipped bench: {'; '.join(shared)} - a framework test takes a private "
                "copy (tests/bench_ports.py: private_bench_file, private_config)")
        _violations.append(text)
        raise NotHermetic(text)


#: `hil` commands that open a bench: without --bench they take benches/sim.yaml (hil.bench.config.DEFAULT_BENCH).
_OPENS_A_BENCH = ("sim", "doctor", "flash")


def _bench_args(args: Any, cwd: Any, env: Any) -> Iterator[Path]:
    """The bench files a command line names (--bench FILE, --bench=FILE, $HIL_BENCH, a `hil` command's default)."""
    from hil.bench.config import DEFAULT_BENCH

    argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else []
    here = Path(cwd) if cwd else Path.cwd()
    named = False
    for i, arg in enumerate(argv):
        if arg == "--bench" and i + 1 < len(argv):
            named = True
            yield here / argv[i + 1]
        elif arg.startswith("--bench="):
            named = True
            yield here / arg.partition("=")[2]
    from_env = (env if env is not None else os.environ).get("HIL_BENCH")
    if from_env:
        named = True
        yield here / from_env
    command = argv[argv.index("hil") + 1:] if "-m" in argv and "hil" in argv else []
    if not named and command and command[0] in _OPENS_A_BENCH:
        yield here / DEFAULT_BENCH


#: Plugins a pytest run of these tests' subprocesses never uses: hypothesis's and labgrid's (labgrid is our lease
#: client, not a pytest plugin) take a second each to import, and the tests start some fifty pytest runs.
SUBPROCESS_PYTEST_ADDOPTS = "-p no:hypothesispytest -p no:labgrid"


#: What pytest-xdist tells its workers' code; a pytest run a test starts is no worker of this run (a rack run
#: would take it for worker gw1 and lease that worker's bench).
XDIST_ENVIRONMENT = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


@pytest.fixture(scope="session", autouse=True)
def _subprocess_environment() -> Iterator[None]:
    """What the processes the tests start inherit; set in the session, after this run parsed its own options."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTEST_ADDOPTS", f"{os.environ.get('PYTEST_ADDOPTS', '')} {SUBPROCESS_PYTEST_ADDOPTS}".strip())
        for name in XDIST_ENVIRONMENT:
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session", autouse=True)
def _hermetic() -> Iterator[None]:
    """Refuse, in this process and in its subprocesses' command lines, any bench that is not a test's own."""
    from can.interfaces.udp_multicast import UdpMulticastBus

    from hil.bench.lock import BenchLock
    from hil.sim.bench import VirtualBench

    lock_init, sim_init, udp_init, popen_init = (BenchLock.__init__, VirtualBench.__init__, UdpMulticastBus.__init__,
                                                 subprocess.Popen.__init__)

    def lock(self: Any, bench: str, *args: Any, **kw: Any) -> None:
        _refuse(Footprint(bench, name=bench), f"the bench lock of {bench!r}")
        lock_init(self, bench, *args, **kw)

    def sim(self: Any, cfg: Any, *args: Any, **kw: Any) -> None:
        _refuse(footprint_of_config(cfg), f"the virtual bench {cfg.bench!r} ({cfg.source or 'no file'})")
        sim_init(self, cfg, *args, **kw)

    udp_signature = inspect.signature(udp_init)

    def udp(self: Any, *args: Any, **kw: Any) -> None:
        given = udp_signature.bind(self, *args, **kw)
        given.apply_defaults()  # python-can's default port is benches/sim.yaml's
        group, port = given.arguments["channel"], given.arguments["port"]
        _refuse(Footprint(f"{group}:{port}", channels=frozenset({f"udp_multicast:{group}:{port}"})),
                f"the udp_multicast CAN bus {group}:{port}")
        udp_init(self, *args, **kw)

    def popen(self: Any, args: Any, *a: Any, **kw: Any) -> None:
        for path in _bench_args(args, kw.get("cwd"), kw.get("env")):
            if path.is_file():
                _refuse(footprint_of_file(path), f"the bench file {path} of the command {args}")
        popen_init(self, args, *a, **kw)

    patch = pytest.MonkeyPatch()
    patch.setattr(BenchLock, "__init__", lock)
    patch.setattr(VirtualBench, "__init__", sim)
    patch.setattr(UdpMulticastBus, "__init__", udp)
    patch.setattr(subprocess.Popen, "__init__", popen)
    try:
        yield
    finally:
        patch.undo()


_SEEN = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_SEEN] = len(_violations)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A refusal that the code under test caught and swallowed still fails the test that caused it."""
    outcome: Any = yield
    report = outcome.get_result()
    new = _violations[item.stash.get(_SEEN, len(_violations)):]
    if new and report.passed and report.when in ("setup", "call"):
        report.outcome = "failed"
        report.longrepr = "not hermetic: " + " | ".join(new)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests first (stable order otherwise): the long ones start while the other worker takes the rest."""
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)
