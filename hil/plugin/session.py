"""The plugin's state of one pytest run: the bench it opens once, whether it broke, the records for the reports.

Also what makes a test a bench test (markers, fixtures) - the plugin leaves every other test alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hil.bench.bench import Bench
from hil.bench.config import DEFAULT_BENCH, BenchConfig, load_bench
from hil.errors import BenchBroken, BenchConfigError, HilError
from hil.plugin.known_state import Baseline, known_state, restore_baseline

try:  # allure-pytest is a dependency, but the plugin still works without it
    import allure
except ImportError:  # pragma: no cover
    allure = None  # type: ignore[assignment]

MARKERS = [
    "sim_only: uses a virtual-bench backdoor; skipped on real benches",
    "destructive: changes the DUT's firmware or configuration; the DUT is restored to its baseline afterwards",
    "irreversible: advances a one-way counter on the DUT; on real benches only with --allow-irreversible",
    "requirement(*ids): regulation topics (hil.report.requirements) this test is evidence for",
    "fault(row, expect): the update-fault-matrix row this case covers and what the device must do",
    "slow: long-running; part of the nightly selection",
    "nightly: long work (timing soak) that runs only with --nightly or HIL_NIGHTLY=1",
    "bench(variant, can, capabilities): the benches this test can run on (rack mode picks one; others skip)",
    "severity(level): Allure severity (blocker, critical, normal, minor, trivial); default from the requirements",
    "expect_violation(*names, reason): these measurements are expected outside their limits (e.g. the overrun "
    "build); any other measurement outside its limits fails the test",
]

#: Marker names that make a test a bench test (and the plugin active).
BENCH_MARKERS = ("sim_only", "destructive", "irreversible", "requirement", "fault")
#: The plugin's fixtures; a test that uses any of them makes the plugin active.
FIXTURES = ("bench_config", "bench", "can", "uds", "psu", "load", "console", "flasher", "dut", "images", "measure",
            "evidence")
#: Where those fixtures are defined: a suite's own fixture of the same name is not a use of the plugin.
FIXTURE_MODULE = "hil.plugin.fixtures"

STASH_KEY = pytest.StashKey["HilSession"]()

DEFAULT_SWEEP_POINTS = 2
NIGHTLY_SWEEP_POINTS = 25


@dataclass
class HilSession:
    """State of one pytest run against one bench."""

    config: pytest.Config
    bench: Bench | None = None
    broken: str | None = None
    baseline: Baseline = field(default_factory=Baseline)
    records: list[dict[str, Any]] = field(default_factory=list)
    identity: dict[str, Any] = field(default_factory=dict)
    opened: bool = False
    started: float = field(default_factory=time.time)
    rack: Any = None  # hil.rack.inventory.Rack in rack mode
    rack_worker: Any = None  # hil.rack.scheduling.RackWorker: the bench this process leased
    controller: Any = None  # hil.rack.scheduling.RackController on the xdist controller
    interrupt: Any = None  # stops the running test when the lease is lost
    running: bool = False  # a test's setup or call is running (the lease heartbeat may interrupt it)
    _cfg: BenchConfig | None = None

    def lease(self) -> Any:
        """Rack mode: lease one bench of the rack for this process (once); a failure breaks this process's bench."""
        if self.rack_worker is None:
            from hil.rack import scheduling as rackrun

            self.rack_worker = rackrun.RackWorker.start(self.rack, rackrun.worker_slot())
            self.rack_worker.on_lost.append(self._lease_lost)
            if self.rack_worker.cause:
                self.broken = self.rack_worker.cause
        return self.rack_worker

    def _lease_lost(self, cause: str) -> None:
        """Called by the lease heartbeat thread: the bench is no longer ours."""
        self.broken = f"LeaseLost: {cause}"
        if self.running and self.interrupt is not None:
            self.interrupt()

    def here(self, option: str) -> Path:
        """An option's path; a relative one is taken from where pytest was started (not the rootdir)."""
        path = Path(self.config.getoption(option))
        return path if path.is_absolute() else Path(self.config.invocation_params.dir) / path

    @property
    def bench_file(self) -> Path:
        """`--bench`, else $HIL_BENCH, else benches/sim.yaml - relative to the current directory."""
        given = self.config.getoption("--bench") or os.environ.get("HIL_BENCH") or DEFAULT_BENCH
        path = Path(given)
        return path if path.is_absolute() else Path(self.config.invocation_params.dir) / path

    @property
    def cfg(self) -> BenchConfig:
        if self._cfg is None and self.rack is not None:
            w = self.lease()
            # Without a lease the tests of this process error with the cause; the config is the rack's first bench.
            self._cfg = (w.bench or self.rack.benches[0]).cfg
        if self._cfg is None:
            path = self.bench_file
            if not path.is_file() and not (self.config.getoption("--bench") or os.environ.get("HIL_BENCH")):
                raise pytest.UsageError(f"these tests need a bench: no --bench given and {path} does not exist; "
                                        "pass --bench FILE (or set HIL_BENCH)")
            try:
                self._cfg = load_bench(path)
            except BenchConfigError as exc:
                raise pytest.UsageError(str(exc)) from None
        return self._cfg

    @property
    def evidence_root(self) -> Path:
        return self.here("--evidence-dir")

    def open(self) -> Bench:
        """Open the bench once per run (lock, start a virtual bench, power on). A failure breaks the bench for the rest."""
        if self.broken:
            raise BenchBroken(f"bench unusable since an earlier failure: {self.broken}")
        if self.bench is not None:
            return self.bench
        cfg = self.cfg
        session_dir = self.evidence_root / ("_session" if self.rack is None else f"_session-{cfg.bench}")
        session_dir.mkdir(parents=True, exist_ok=True)
        self.opened = True
        try:
            self.bench = Bench.open(cfg, evidence_dir=session_dir)
            # Known state before the first test too: a DUT left on another image (by `hil flash`, or an
            # interrupted run) is brought back to the baseline first.
            restore_baseline(self.bench, self.baseline, destructive=False)
            dut = self.bench.make_dut()
            self.identity = {"bench": cfg.bench, "virtual": cfg.virtual, "dut": dut.identity(),
                             "psu": self.bench.supply.identity(),
                             "load": self.bench.load.identity() if self.bench.load else None}
            self.baseline = Baseline(config=dut.config(), group=dut.vehicle_group())
        except (HilError, OSError) as exc:
            self.broken = f"{type(exc).__name__}: {exc}"
            raise BenchBroken(f"bench {cfg.bench} could not be opened: {exc}") from exc
        return self.bench

    def back_to_known_state(self, node: pytest.Item) -> None:
        """After a test, also a failed one: the bench in its known state, or broken with the cause."""
        if self.bench is None or self.broken:
            return
        try:
            known_state(self.bench, self.baseline, destructive=node.get_closest_marker("destructive") is not None)
        except (HilError, OSError) as exc:
            self.broken = f"could not restore the bench after {node.nodeid}: {type(exc).__name__}: {exc}"

    def close(self) -> None:
        if self.bench is not None:
            self.bench.close()  # also releases the bench lock
            self.bench = None
        if self.rack_worker is not None:
            self.rack_worker.stop()


def session_of(request: pytest.FixtureRequest) -> HilSession:
    return request.config.stash[STASH_KEY]


def label_bench(hil: HilSession) -> None:
    """Allure: the bench this test ran on, the DUT's identity and the instruments (excluded from history ids)."""
    if allure is None or hil._cfg is None:
        return
    ident = hil.identity or {"bench": hil._cfg.bench}
    allure.dynamic.label("bench", str(ident.get("bench")))
    if hil.rack is not None:
        allure.dynamic.label("rack", hil.rack.name)
    dut = ident.get("dut") or {}
    for name, value in (("bench", ident.get("bench")),
                        ("DUT", ", ".join(f"{k} {v}" for k, v in dut.items()) if isinstance(dut, dict) else dut),
                        ("supply", ident.get("psu")), ("battery emulator", ident.get("load"))):
        if value:
            allure.dynamic.parameter(name, str(value), excluded=True)


def uses_bench(item: pytest.Item) -> bool:
    """Whether a test uses one of the plugin's fixtures or markers (else the plugin leaves it alone)."""
    if any(item.get_closest_marker(m) is not None for m in BENCH_MARKERS):
        return True
    names = set(getattr(item, "fixturenames", ())) & set(FIXTURES)
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}) if info is not None else {}
    for name in names:
        chain = defs.get(name)
        # A suite's own fixture of the same name (e.g. its own `bench`) overrides ours: not a use of the plugin.
        if not chain or getattr(chain[-1].func, "__module__", "") == FIXTURE_MODULE:
            return True
    return False
