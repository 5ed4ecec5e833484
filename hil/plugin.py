"""The pytest plugin: bench option, fixtures, markers, bench lock, evidence, known state after every test.

Tests ask for capabilities (`psu`, `uds`, `can`, `console`, `load`, `flasher`, `dut`, `images`),
never for a vendor class. The same test runs on a virtual bench and on real hardware; only
`--bench` differs.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from filelock import FileLock, Timeout

from hil.bench import Bench
from hil.config import BenchConfig, load_bench
from hil.contract import BootMode, UpdateState
from hil.dut import Dut
from hil.errors import BenchBroken, BenchBusy, BenchConfigError, HilError, HilTimeout
from hil.measure import Measurement

try:  # allure-pytest is a dependency, but the plugin still works without it
    import allure
except ImportError:  # pragma: no cover
    allure = None

MARKERS = [
    "sim_only: uses a virtual-bench backdoor; skipped on real benches",
    "destructive: changes the DUT's firmware or configuration; the DUT is restored to its baseline afterwards",
    "irreversible: advances a one-way counter on the DUT; on real benches only with --allow-irreversible",
    "requirement(*ids): regulation topics (hil.requirements) this test is evidence for",
    "fault(row, expect): the update-fault-matrix row this case covers and what the device must do",
    "slow: long-running; part of the nightly selection",
]

STASH_KEY = pytest.StashKey["HilSession"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "BMS OTA hardware-in-the-loop")
    group.addoption("--bench", default=os.environ.get("HIL_BENCH", "benches/sim.yaml"),
                    help="bench YAML (default: benches/sim.yaml, the virtual bench; env HIL_BENCH)")
    group.addoption("--evidence-dir", default="reports/evidence",
                    help="where CAN traces, console and supply logs of every test are kept")
    group.addoption("--reports-dir", default="reports",
                    help="where the fault matrix, traceability and run record are written")
    group.addoption("--sweep-points", type=int, default=2,
                    help="power-cut points per install phase in the black-box sweep (nightly: 25)")
    group.addoption("--allow-irreversible", action="store_true",
                    help="run tests that advance one-way counters on a real DUT")


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    config.stash[STASH_KEY] = HilSession(config)


@dataclass
class HilSession:
    """State of one pytest run against one bench."""

    config: pytest.Config
    bench: Bench | None = None
    broken: str | None = None
    lock: FileLock | None = None
    baseline_config: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    identity: dict[str, Any] = field(default_factory=dict)
    opened: bool = False
    started: float = field(default_factory=time.time)
    _cfg: BenchConfig | None = None

    @property
    def cfg(self) -> BenchConfig:
        if self._cfg is None:
            path = Path(self.config.getoption("--bench"))
            if not path.is_absolute():
                path = Path(self.config.rootpath) / path
            try:
                self._cfg = load_bench(path)
            except BenchConfigError as exc:
                raise pytest.UsageError(str(exc)) from None
        return self._cfg

    @property
    def evidence_root(self) -> Path:
        root = Path(self.config.getoption("--evidence-dir"))
        return root if root.is_absolute() else Path(self.config.rootpath) / root

    def open(self) -> Bench:
        """Open the bench once per run (lock, start a virtual bench, power on). A failure breaks the bench for the rest."""
        if self.broken:
            raise BenchBroken(f"bench unusable since an earlier failure: {self.broken}")
        if self.bench is not None:
            return self.bench
        cfg = self.cfg
        lock_dir = Path(os.environ.get("HIL_LOCK_DIR", Path.home() / ".hil" / "locks"))
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(lock_dir / f"{cfg.bench}.lock"))
        try:
            self.lock.acquire(timeout=float(os.environ.get("HIL_LOCK_TIMEOUT", "0")))
        except Timeout:
            self.broken = f"bench {cfg.bench} is locked by another run ({self.lock.lock_file})"
            raise BenchBusy(self.broken) from None
        session_dir = self.evidence_root / "_session"
        session_dir.mkdir(parents=True, exist_ok=True)
        self.opened = True
        try:
            self.bench = Bench.open(cfg, evidence_dir=session_dir)
            # Known state before the first test too: a DUT left on another image (by `hil flash`, or an
            # interrupted run) is brought back to the baseline first.
            _restore_baseline(self, self.bench, destructive=False)
            dut = Dut(self.bench.uds, self.bench.can, cfg.dut)
            self.identity = {"bench": cfg.bench, "virtual": cfg.virtual, "dut": dut.identity(),
                             "psu": self.bench.psu.identity(),
                             "load": self.bench.load.identity() if self.bench.load else None}
            self.baseline_config = dut.config()
        except (HilError, OSError) as exc:
            self.broken = f"{type(exc).__name__}: {exc}"
            raise BenchBroken(f"bench {cfg.bench} could not be opened: {exc}") from exc
        return self.bench

    def close(self) -> None:
        if self.bench is not None:
            self.bench.close()
            self.bench = None
        if self.lock is not None and self.lock.is_locked:
            self.lock.release()


def _hil(request: pytest.FixtureRequest) -> HilSession:
    return request.config.stash[STASH_KEY]


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def bench_config(request: pytest.FixtureRequest) -> BenchConfig:
    """The validated bench YAML."""
    return _hil(request).cfg


@pytest.fixture
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    """The open bench; put back into its known state after the test, also after a failure."""
    hil = _hil(request)
    b = hil.open()
    evidence = _evidence_dir(hil, request.node)
    _start_evidence(b, evidence)
    try:
        yield b
    finally:
        try:
            _stop_evidence(b, evidence, request.node)
        finally:
            _known_state(hil, request.node)
    _check_evidence_kept(b, evidence)


@pytest.fixture
def can(bench: Bench) -> Any:
    """CAN channel: DBC-decoded `wait_for`, `recorder`, traces."""
    return bench.can


@pytest.fixture
def uds(bench: Bench) -> Any:
    """UDS client (udsoncan over ISO-TP) addressed to the DUT."""
    return bench.uds


@pytest.fixture
def psu(bench: Bench) -> Any:
    """The DUT's power supply: limits checked before sending, every setting read back."""
    return bench.psu


@pytest.fixture
def load(bench: Bench) -> Any:
    """Battery/load emulator (pack current, temperatures, cell voltages)."""
    if bench.load is None:
        pytest.skip(f"bench {bench.cfg.bench} has no battery/load emulator")
    return bench.load


@pytest.fixture
def console(bench: Bench) -> Any:
    """The DUT's debug console: `expect(pattern, timeout)`."""
    if bench.console is None:
        pytest.skip(f"console missing: bench {bench.cfg.bench} has no console")
    return bench.console


@pytest.fixture
def console_if_any(bench: Bench) -> Any:
    """The DUT's console, or None on a bench without one: for cases whose verdict does not depend on it
    (the console then only adds evidence and the profile's console checks)."""
    return bench.console


@pytest.fixture
def flasher(bench: Bench) -> Any:
    """The UDS programming sequence: stage, activate, wait_outcome, update. Hooks are cleared after the test."""
    f = bench.flasher
    yield f
    f.on_phase.clear()
    f.on_progress.clear()
    f.block_filter = None


@pytest.fixture
def dut(bench: Bench) -> Dut:
    """Identity, status and configuration of the device under test."""
    return Dut(bench.uds, bench.can, bench.cfg.dut)


@pytest.fixture(scope="session")
def images(bench_config: BenchConfig) -> "ImageStore":
    """Signed firmware images by recipe name (built on first use with the bench's keys)."""
    return ImageStore(bench_config)


@pytest.fixture(scope="session")
def profile(bench_config: BenchConfig) -> Any:
    """The DUT profile (hil.profile.DutProfile): the board's identifiers, encodings and console patterns."""
    return bench_config.profile


@pytest.fixture
def console_pattern(bench_config: BenchConfig) -> Any:
    """`console_pattern(name)`: the profile's console pattern, or skip the case naming the missing pattern."""
    def get(name: str) -> str:
        pattern = bench_config.profile.console_pattern(name)
        if pattern is None:
            pytest.skip(f"console pattern missing: profile {bench_config.profile.name} has no console pattern {name!r}")
        return pattern
    return get


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Any:
    """Record a measurement with its limits; the report shows value and limit side by side. Returns the Measurement."""
    recorded: list[Measurement] = []

    def record(m: Measurement) -> Measurement:
        recorded.append(m)
        if allure is not None:
            with allure.step(str(m)):
                pass
        return m

    request.node.stash[_MEASUREMENTS] = recorded
    return record


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Path:
    """This test's evidence directory (CAN trace, console, supply log live here)."""
    return _evidence_dir(_hil(request), request.node)


_MEASUREMENTS = pytest.StashKey[list]()


class ImageStore:
    """Firmware images by role (the bench's image catalogue), recipe name or path, built and signed on demand.

    `images["update"]` is the catalogue's image for that role (hil/images/catalogue.py ROLES). A role the
    bench neither maps nor can derive skips the asking case, naming the role and what is missing; the
    fault matrix then reports the row NOT COVERED. Any other name is a recipe (virtual bench) or a path.
    """

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self._cache: dict[str, bytes] = {}

    def get(self, name: str) -> bytes:
        """The image, or MissingImage naming the role and the reason (for callers outside a test)."""
        from hil.images.catalogue import DERIVED, catalogue_of, resolve_image

        if name not in self._cache:
            derived = name in DERIVED and name not in catalogue_of(self.cfg)
            update = self.get("update") if derived else None  # cached: derived roles re-sign the update
            self._cache[name] = resolve_image(name, self.cfg, update)
        return self._cache[name]

    def __getitem__(self, name: str) -> bytes:
        from hil.images.catalogue import MissingImage

        try:
            return self.get(name)
        except MissingImage as exc:
            pytest.skip(f"{MISSING_ROLE_PREFIX}{exc.role}: {exc.reason}")
            raise  # unreachable: skip raises

    def version(self, name: str) -> str:
        """The version an image reports (F189 once it runs), from the image header."""
        from hil.images.mcuboot import parse_image

        return parse_image(self[name]).version_str

    def security_counter(self, name: str) -> int:
        """The security counter an image carries (0 if none)."""
        from hil.images.mcuboot import parse_image

        return parse_image(self[name]).security_counter or 0

    def baseline(self) -> bytes:
        """The baseline image: the catalogue's `baseline` role, else dut.baseline_image."""
        from hil.images.catalogue import catalogue_of

        return self["baseline"] if "baseline" in catalogue_of(self.cfg) else self[self.cfg.dut.baseline_image]


#: Skip reasons of cases whose image role is missing start with this (the fault matrix shows the reason).
MISSING_ROLE_PREFIX = "image role missing: "


# ---------------------------------------------------------------------- evidence
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:150]


def _evidence_dir(hil: HilSession, node: pytest.Item) -> Path:
    d = hil.evidence_root / _safe(node.nodeid)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _start_evidence(b: Bench, d: Path) -> None:
    b.can.start_trace([d / "can.blf", d / "can.asc"])
    if b.console is not None:
        b.console_mark = b.console.mark()  # type: ignore[attr-defined]
    b.psu.start_log(d / "supply.log")
    b.evidence_started = time.time()  # type: ignore[attr-defined]


def _stop_evidence(b: Bench, d: Path, node: pytest.Item) -> None:
    try:
        b.can.stop_trace()
    except HilError:
        pass
    if b.console is not None:
        (d / "console.log").write_text(b.console.text[getattr(b, "console_mark", 0):])
    b.psu.start_log(b.evidence_dir / "supply.log" if b.evidence_dir else None)
    measurements = node.stash.get(_MEASUREMENTS, [])
    if measurements:
        (d / "measurements.json").write_text(json.dumps([m.as_dict() for m in measurements], indent=2))
    if allure is not None:
        for f in sorted(d.iterdir()):
            # The .blf trace stays on disk (hashed in traceability.md); the report carries the readable .asc.
            if f.is_file() and f.stat().st_size and f.suffix != ".blf":
                kind = allure.attachment_type.TEXT if f.suffix in (".log", ".asc", ".json", ".txt") else None
                allure.attach.file(str(f), name=f.name, attachment_type=kind, extension=f.suffix.lstrip("."))


def _check_evidence_kept(b: Bench, d: Path) -> None:
    """Every test's evidence is on disk: a non-empty CAN trace in both formats, the console and supply logs."""
    wanted = ["can.blf", "can.asc", "supply.log"] + (["console.log"] if b.console is not None else [])
    missing = [n for n in wanted if not (d / n).is_file()]
    empty = [n for n in ("can.blf", "can.asc") if (d / n).is_file() and (d / n).stat().st_size == 0]
    if missing or empty:
        raise HilError(f"evidence not kept in {d}: missing {missing or 'none'}, empty {empty or 'none'}")


# ---------------------------------------------------------------------- known state
def _known_state(hil: HilSession, node: pytest.Item) -> None:
    """Nominal power, load emulator reset, DUT on its baseline image and configuration - or the bench is broken."""
    b = hil.bench
    if b is None or hil.broken:
        return
    try:
        if b.load is not None:
            b.load.safe_state()
        b.psu.power_on()
        _restore_baseline(hil, b, destructive=node.get_closest_marker("destructive") is not None)
    except (HilError, OSError) as exc:
        hil.broken = f"could not restore the bench after {node.nodeid}: {type(exc).__name__}: {exc}"


def _restore_baseline(hil: HilSession, b: Bench, destructive: bool) -> None:
    from hil.checks import wait_dut_up
    from hil.images.mcuboot import parse_image

    dut = Dut(b.uds, b.can, b.cfg.dut)
    try:
        wait_dut_up(dut, b.cfg.dut.boot_timeout_s * 2)
    except HilTimeout as exc:
        raise BenchBroken(f"DUT does not answer UDS: {exc}") from exc
    info = dut.boot_info()
    store = ImageStore(b.cfg)
    baseline = b.cfg.dut.baseline_image
    image = store.baseline()
    version = dut.version()
    status = dut.status()
    needs_image = (info.mode is BootMode.RECOVERY or not info.confirmed or version != parse_image(image).version_str
                   or status.state not in (UpdateState.SUCCESS, UpdateState.IDLE, UpdateState.ROLLED_BACK,
                                           UpdateState.REJECTED, UpdateState.VERIFIED, UpdateState.DOWNLOADED))
    if needs_image or (destructive and dut.security_counter() > 1):
        from hil.restore import restore_strategy

        restore_strategy(b.cfg.profile.restore).restore(b, image, baseline)
    if hil.baseline_config is not None and dut.config() != hil.baseline_config:
        dut.write_config(hil.baseline_config)


# ---------------------------------------------------------------------- markers and reporting
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    hil: HilSession = config.stash[STASH_KEY]
    try:
        cfg = hil.cfg
    except pytest.UsageError:
        raise
    for item in items:
        if item.get_closest_marker("sim_only") and not cfg.virtual:
            item.add_marker(pytest.mark.skip(reason=f"sim_only: bench {cfg.bench} is real"))
        if item.get_closest_marker("irreversible") and not cfg.virtual and not config.getoption("--allow-irreversible"):
            item.add_marker(pytest.mark.skip(reason="irreversible on a real DUT: pass --allow-irreversible"))
        if allure is not None:
            for m in item.iter_markers("requirement"):
                for rid in m.args:
                    item.add_marker(allure.tag(rid))
            fault = item.get_closest_marker("fault")
            if fault is not None:
                row = fault.kwargs.get("row", fault.args[0] if fault.args else None)
                item.add_marker(allure.feature(f"fault matrix row {row}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        hil: HilSession = item.config.stash[STASH_KEY]
        fault = item.get_closest_marker("fault")
        rows = []
        expect = ""
        if fault is not None:
            row = fault.kwargs.get("row", fault.args[0] if fault.args else None)
            rows = list(row) if isinstance(row, (list, tuple)) else [row]
            expect = fault.kwargs.get("expect", "")
        reqs = [rid for m in item.iter_markers("requirement") for rid in m.args]
        evidence = hil.evidence_root / _safe(item.nodeid)
        outcome_name = report.outcome if report.when == "call" else ("error" if report.failed else report.outcome)
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        hil.records.append({"nodeid": item.nodeid, "name": item.name, "outcome": outcome_name,
                            "duration_s": report.duration, "fault_rows": rows, "expect": expect,
                            "requirements": reqs, "evidence_dir": str(evidence), "reason": reason,
                            "measurements": [m.as_dict() for m in item.stash.get(_MEASUREMENTS, [])]})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    hil: HilSession = session.config.stash[STASH_KEY]
    try:
        if hil.opened and hil.records:  # only runs against a bench produce evidence reports
            _write_reports(hil)
    finally:
        hil.close()


def _write_reports(hil: HilSession) -> None:
    try:
        from hil import report
    except ImportError:  # pragma: no cover
        return
    out = Path(hil.config.getoption("--reports-dir"))
    out = out if out.is_absolute() else Path(hil.config.rootpath) / out
    out.mkdir(parents=True, exist_ok=True)
    records = [report.TestRecord(nodeid=r["nodeid"], name=r["name"], outcome=r["outcome"], duration_s=r["duration_s"],
                                 fault_rows=[x for x in r["fault_rows"] if x is not None], expect=r["expect"],
                                 requirements=r["requirements"],
                                 evidence=sorted(p for p in Path(r["evidence_dir"]).glob("*") if p.is_file())
                                 if Path(r["evidence_dir"]).is_dir() else [],
                                 measurements=r["measurements"], reason=r.get("reason", "")) for r in hil.records]
    if any(r.fault_rows for r in records):
        report.write_fault_matrix(records, out)
    if any(r.requirements for r in records):
        report.write_traceability(records, out)
    import datetime
    import sys

    def iso(t: float) -> str:
        return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")

    report.write_run_record(out, bench=hil.identity or {"bench": hil.cfg.bench}, tool_versions=report.tool_versions(),
                            started=iso(hil.started), finished=iso(time.time()), command=sys.argv,
                            seeds={"sweep_points": hil.config.getoption("--sweep-points")},
                            repo=Path(hil.config.rootpath))

