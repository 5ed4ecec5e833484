"""The pytest plugin: bench option, fixtures, markers, evidence, known state after every test.

Tests ask for capabilities (`psu`, `uds`, `can`, `console`, `load`, `flasher`, `dut`, `images`, `profiles`, `vehicle`),
never for a vendor class. The same test runs on a virtual bench and on real hardware; only
`--bench` differs.

Installed as a pytest entry point (`pytest11`, name `hil.plugin`), so a suite anywhere gets it
without `-p`. It stays inert until a collected test uses one of its fixtures or markers: a run
of unrelated tests needs no bench file. The bench lock is taken by `Bench.open`.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest
from hil import allure_audit
from hil.bench import Bench
from hil.config import DEFAULT_BENCH, BenchConfig, load_bench
from hil.contract import BootMode, Reason, UpdateState
from hil.drivers.protocols import BatteryEmulator, ConsoleProtocol, PowerSupply
from hil.dut import Dut
from hil.errors import BenchBroken, BenchConfigError, HilError, HilTimeout
from hil.measure import Measurement

if TYPE_CHECKING:  # the drivers load when a bench opens
    from hil.drivers.can import CanChannel
    from hil.drivers.uds import UdsClient
    from hil.flasher import Flasher

try:  # allure-pytest is a dependency, but the plugin still works without it
    import allure
except ImportError:  # pragma: no cover
    allure = None  # type: ignore[assignment]

MARKERS = [
    "sim_only: uses a virtual-bench backdoor; skipped on real benches",
    "destructive: changes the DUT's firmware or configuration; the DUT is restored to its baseline afterwards",
    "irreversible: advances a one-way counter on the DUT; on real benches only with --allow-irreversible",
    "requirement(*ids): regulation topics (hil.requirements) this test is evidence for",
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

STASH_KEY = pytest.StashKey["HilSession"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "BMS OTA hardware-in-the-loop")
    group.addoption("--bench", default=None,
                    help="bench YAML, relative to the current directory (default: $HIL_BENCH, else benches/sim.yaml)")
    group.addoption("--evidence-dir", default="reports/evidence",
                    help="where CAN traces, console and supply logs of every test are kept (relative: to the "
                         "current directory)")
    group.addoption("--reports-dir", default="reports",
                    help="where the fault matrix, traceability and run record are written (relative: to the "
                         "current directory)")
    group.addoption("--sweep-points", type=int, default=None,
                    help="power-cut points per install phase in the black-box sweep (default 2; nightly: 25)")
    group.addoption("--rack", default=os.environ.get("HIL_RACK"),
                    help="rack YAML (benches/racks/*.yaml): each process (xdist worker) leases one bench of it; "
                         "use with -n N (env HIL_RACK)")
    group.addoption("--soak-s", type=float, default=600.0,
                    help="length of the nightly timing soak in seconds (default 600)")
    group.addoption("--nightly", action="store_true", default=os.environ.get("HIL_NIGHTLY", "") not in ("", "0"),
                    help="the long work: wide black-box sweep (25 points), fuzz budgets, timing soak (env HIL_NIGHTLY=1)")
    group.addoption("--allow-irreversible", action="store_true",
                    help="run tests that advance one-way counters on a real DUT")


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    if config.option.sweep_points is None:
        config.option.sweep_points = NIGHTLY_SWEEP_POINTS if config.option.nightly else DEFAULT_SWEEP_POINTS
    if config.option.nightly:
        os.environ.setdefault("HIL_NIGHTLY", "1")  # hypothesis profiles and subprocesses see the nightly budget too
    hil = HilSession(config)
    config.stash[STASH_KEY] = hil
    if config.getoption("--rack"):
        from hil import rackrun

        hil.rack = rackrun.load_rack_option(config)
        if getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput"):
            hil.controller = rackrun.RackController(config, hil.rack)
            config.pluginmanager.register(hil.controller, "hil-rack-controller")
        else:
            hil.interrupt = rackrun.install_interrupt(lambda: hil.broken, lambda: hil.running)


DEFAULT_SWEEP_POINTS = 2
NIGHTLY_SWEEP_POINTS = 25


@dataclass
class HilSession:
    """State of one pytest run against one bench."""

    config: pytest.Config
    bench: Bench | None = None
    broken: str | None = None
    baseline_config: dict[str, Any] | None = None
    baseline_group: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    identity: dict[str, Any] = field(default_factory=dict)
    opened: bool = False
    started: float = field(default_factory=time.time)
    rack: Any = None  # hil.rack.Rack in rack mode
    rack_worker: Any = None  # hil.rackrun.RackWorker: the bench this process leased
    controller: Any = None  # hil.rackrun.RackController on the xdist controller
    interrupt: Any = None  # stops the running test when the lease is lost
    running: bool = False  # a test's setup or call is running (the lease heartbeat may interrupt it)
    _cfg: BenchConfig | None = None

    def lease(self) -> Any:
        """Rack mode: lease one bench of the rack for this process (once); a failure breaks this process's bench."""
        if self.rack_worker is None:
            from hil import rackrun

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
            _restore_baseline(self, self.bench, destructive=False)
            dut = self.bench.make_dut()
            self.identity = {"bench": cfg.bench, "virtual": cfg.virtual, "dut": dut.identity(),
                             "psu": self.bench.supply.identity(),
                             "load": self.bench.load.identity() if self.bench.load else None}
            self.baseline_config = dut.config()
            self.baseline_group = dut.vehicle_group()
        except (HilError, OSError) as exc:
            self.broken = f"{type(exc).__name__}: {exc}"
            raise BenchBroken(f"bench {cfg.bench} could not be opened: {exc}") from exc
        return self.bench

    def close(self) -> None:
        if self.bench is not None:
            self.bench.close()  # also releases the bench lock
            self.bench = None
        if self.rack_worker is not None:
            self.rack_worker.stop()


def _hil(request: pytest.FixtureRequest) -> HilSession:
    return request.config.stash[STASH_KEY]


def _label_bench(hil: HilSession) -> None:
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
    audit = allure_audit.TestAudit(b, request.node).start()
    try:
        yield b
    finally:
        try:
            audit.finish(evidence)  # phases, faults, images, board status: into the evidence and the report
            _stop_evidence(b, evidence, request.node)
        finally:
            _known_state(hil, request.node)
    _check_evidence_kept(b, evidence)


@pytest.fixture
def can(bench: Bench) -> CanChannel:
    """CAN channel: DBC-decoded `wait_for`, `recorder`, traces."""
    return bench.channel


@pytest.fixture
def uds(bench: Bench) -> UdsClient:
    """UDS client (udsoncan over ISO-TP) addressed to the DUT."""
    return bench.client


@pytest.fixture
def psu(bench: Bench) -> PowerSupply:
    """The DUT's power supply: limits checked before sending, every setting read back."""
    return bench.supply


@pytest.fixture
def load(bench: Bench) -> BatteryEmulator:
    """Battery/load emulator (pack current, temperatures, cell voltages)."""
    if bench.load is None:
        pytest.skip(f"bench {bench.cfg.bench} has no battery/load emulator")
    return bench.load


@pytest.fixture
def vehicle(bench: Bench) -> Any:
    """The vehicle side on CAN (VCU_VehicleState every 100 ms): `plug_in`, `unplug`, `drive`, `park`."""
    return bench.vehicle


@pytest.fixture
def console(bench: Bench) -> ConsoleProtocol:
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
def flasher(bench: Bench) -> Iterator[Flasher]:
    """The UDS programming sequence: stage, activate, wait_outcome, update. Hooks are cleared after the test."""
    f = bench.programmer
    yield f
    f.on_phase.clear()
    f.on_progress.clear()
    f.block_filter = None


@pytest.fixture
def dut(bench: Bench) -> Dut:
    """Identity, status and configuration of the device under test."""
    return bench.make_dut()


@pytest.fixture
def profiles(bench: Bench, dut: Dut) -> Any:
    """Signed configuration packages by recipe name (`profiles["winter-north"]`), `apply(name or bytes)`, `values(name)`.

    The DUT starts without an active profile version (reset through the development restore path), so a
    profile left by an earlier run cannot make the case's packages look like downgrades."""
    from hil.profiles.loader import ProfileStore

    store = ProfileStore(bench.cfg, bench.uds)
    store.reset_profile_version(dut)
    return store


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
def measure(request: pytest.FixtureRequest) -> Callable[[Measurement], Measurement]:
    """Record a measurement with its limits; the report shows value and limit side by side. Returns the Measurement.

    A measurement outside its limits fails the test (after the test body, so every measurement is
    recorded) and its report step shows failed, unless the case declares it with
    `@pytest.mark.expect_violation("<name>", reason=...)`.
    """
    recorded: list[Measurement] = []
    expected = _expected_violations(request.node)

    def record(m: Measurement) -> Measurement:
        recorded.append(m)
        if allure is not None:
            title = str(m) + (f" (violation expected: {expected[m.name]})" if not m.passed and m.name in expected else "")
            try:
                with allure.step(title):
                    if not m.passed and m.name not in expected:
                        raise MeasurementOutOfLimits(str(m))  # marks this step failed in the report
            except MeasurementOutOfLimits:
                pass
        return m

    request.node.stash[_MEASUREMENTS] = recorded
    return record


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Iterator[Path]:
    """This test's evidence directory (CAN trace, console, supply log, plots live here)."""
    d = _evidence_dir(_hil(request), request.node)
    yield d
    if "bench" not in request.fixturenames:  # the bench fixture attaches them otherwise
        allure_audit.attach_evidence(d)


_MEASUREMENTS = pytest.StashKey[list]()


class MeasurementOutOfLimits(AssertionError):
    """A measurement outside its declared limits: the test fails (OpenHTF's rule)."""


def _expected_violations(node: pytest.Item) -> dict[str, str]:
    """Measurement name -> reason, from the case's expect_violation markers."""
    out: dict[str, str] = {}
    for mark in node.iter_markers("expect_violation"):
        for name in mark.args:
            out[str(name)] = str(mark.kwargs.get("reason", "declared by the case"))
    return out


def measurement_verdict(measurements: list[Measurement], expected: dict[str, str]) -> str | None:
    """Why the measurements fail the test (None: they pass): a violation the case did not declare, or a case
    that declares violations of which none happened (it relies on one, so its absence is a failure too)."""
    problems = [f"{m}" for m in measurements if not m.passed and m.name not in expected]
    if expected and not any(not m.passed and m.name in expected for m in measurements):
        problems.append(f"a violation of {', '.join(sorted(expected))} was expected "
                        f"({'; '.join(sorted(set(expected.values())))}) but none happened")
    if not problems:
        return None
    return "measurement outside its limits:\n- " + "\n- ".join(problems)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    """After a test body that passed, its measurements decide too: one outside its limits fails the test."""
    result = yield
    measurements = pyfuncitem.stash.get(_MEASUREMENTS, None)
    if measurements is not None:
        verdict = measurement_verdict(measurements, _expected_violations(pyfuncitem))
        if verdict is not None:
            raise MeasurementOutOfLimits(verdict)
    return result


class ImageStore:
    """Firmware images by role (the bench's image catalogue), recipe name or path, built and signed on demand.

    `images["update"]` is the catalogue's image for that role (hil/images/catalogue.py ROLES). A role the
    bench neither maps nor can derive skips the asking case, naming the role and what is missing; the
    fault matrix then reports the row NOT COVERED. Any other name is a recipe (virtual bench) or a path.
    """

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self._cache: dict[str, bytes] = {}
        self.used: list[tuple[float, str]] = []  # (wall clock, name): which test used which image

    def get(self, name: str) -> bytes:
        """The image, or MissingImage naming the role and the reason (for callers outside a test)."""
        from hil.images.catalogue import DERIVED, catalogue_of, resolve_image

        self.used.append((time.time(), name))
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
    b.channel.start_trace([d / "can.blf", d / "can.asc"])
    if b.console is not None:
        b.console_mark = b.console.mark()  # type: ignore[attr-defined]
    b.supply.start_log(d / "supply.log")
    b.evidence_started = time.time()  # type: ignore[attr-defined]


def _stop_evidence(b: Bench, d: Path, node: pytest.Item) -> None:
    try:
        b.channel.stop_trace()
    except HilError:
        pass
    if b.console is not None:
        (d / "console.log").write_text(b.console.text[getattr(b, "console_mark", 0):])
    b.supply.start_log(b.evidence_dir / "supply.log" if b.evidence_dir else None)
    _history_evidence(b, d)
    measurements = node.stash.get(_MEASUREMENTS, [])
    if measurements:
        (d / "measurements.json").write_text(json.dumps([m.as_dict() for m in measurements], indent=2))
    allure_audit.attach_evidence(d)


def _history_evidence(b: Bench, d: Path) -> None:
    """The DUT's update history and DTCs as read at the end of the case (evidence of what it reports)."""
    from hil.contract import Did, UpdateHistoryEntry

    try:
        entries = UpdateHistoryEntry.decode_all(b.client.read_did(Did.UPDATE_HISTORY))
        lines = [str(e) for e in entries] or ["(no update attempts recorded)"]
        lines.append("DTCs: " + (", ".join(f"0x{n:06X} status 0x{st:02X}" for n, st in b.client.read_dtcs()) or "none"))
    except (HilError, ValueError) as exc:
        lines = [f"update history not readable at the end of the case: {exc}"]
    (d / "update-history.txt").write_text("\n".join(lines) + "\n")


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
        if b.vehicle is not None:
            b.vehicle.safe_state()
        b.supply.power_on()
        _restore_baseline(hil, b, destructive=node.get_closest_marker("destructive") is not None)
    except (HilError, OSError) as exc:
        hil.broken = f"could not restore the bench after {node.nodeid}: {type(exc).__name__}: {exc}"


def _restore_baseline(hil: HilSession, b: Bench, destructive: bool) -> None:
    from hil.checks import wait_dut_up
    from hil.images.mcuboot import parse_image

    dut = b.make_dut()
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
    if hil.baseline_group is not None and dut.vehicle_group() != hil.baseline_group:
        dut.provision_vehicle_group(hil.baseline_group)
    if hil.baseline_config is not None and dut.config() != hil.baseline_config:
        dut.write_config(hil.baseline_config)
    _clear_update_state(b, dut)


#: Update states after which the inactive slot holds nothing of a test: the confirmed baseline with its
#: backup (SUCCESS), or an erased slot (IDLE without a reason).
_KNOWN_UPDATE_STATES = (UpdateState.SUCCESS, UpdateState.IDLE)


def _clear_update_state(b: Bench, dut: Dut) -> None:
    """No test inherits a staged, rejected or reverted image: such a slot is erased (the contract's erase
    routine), so every test starts with the update status IDLE or SUCCESS and a known secondary slot."""
    status = dut.status()
    if status.state in _KNOWN_UPDATE_STATES and status.reason is Reason.NONE:
        return
    b.programmer.discard()
    after = dut.status()
    if after.state not in _KNOWN_UPDATE_STATES or after.reason is not Reason.NONE:
        raise BenchBroken(f"update status {status.state.name}/{status.reason.name} could not be cleared: "
                          f"after the erase routine it is {after.state.name}/{after.reason.name}")


# ---------------------------------------------------------------------- markers and reporting
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
        if not chain or getattr(chain[-1].func, "__module__", "") == __name__:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    hil: HilSession = config.stash[STASH_KEY]
    for item in items:
        if item.get_closest_marker("nightly") and not config.getoption("--nightly"):
            item.add_marker(pytest.mark.skip(reason="nightly work: run with --nightly (or HIL_NIGHTLY=1)"))
    ours = [item for item in items if uses_bench(item)]
    if not ours:
        return  # inert: no bench file is read for a run that does not use the bench
    cfg = hil.cfg
    allure_audit.check_requirement_ids(ours)
    _select_benches(hil, cfg, ours)
    for item in ours:
        if item.get_closest_marker("sim_only") and not cfg.virtual:
            item.add_marker(pytest.mark.skip(reason=f"sim_only: bench {cfg.bench} is real"))
        if item.get_closest_marker("irreversible") and not cfg.virtual and not config.getoption("--allow-irreversible"):
            item.add_marker(pytest.mark.skip(reason="irreversible on a real DUT: pass --allow-irreversible"))
        allure_audit.label_item(item)
        if allure is not None:
            fault = item.get_closest_marker("fault")
            if fault is not None:
                row = fault.kwargs.get("row", fault.args[0] if fault.args else None)
                item.add_marker(allure.tag(f"fault matrix row {row}"))


def _select_benches(hil: HilSession, cfg: BenchConfig, items: list[pytest.Item]) -> None:
    """Skip, with the reason, tests this bench cannot serve (`@pytest.mark.bench`, fixtures that need an instrument).

    In an xdist rack run the list goes to the controller's scheduler too, so these tests go to a
    worker whose bench serves them and are skipped only when no worker's bench does.
    """
    from hil import rackrun
    from hil.rack import derived_tags

    if hil.rack is not None and hil.rack_worker is not None and hil.rack_worker.bench is not None:
        tags = hil.rack_worker.bench.tags
    else:
        tags = derived_tags(cfg)
    cannot: list[str] = []
    first: list[str] = []
    for item in items:
        need = rackrun.item_need(item)
        if item.get_closest_marker("slow"):
            first.append(item.nodeid)
        if not need.served_by(tags):
            cannot.append(item.nodeid)
            item.add_marker(pytest.mark.skip(reason=rackrun.skip_reason(need, hil.rack, cfg.bench, tags)))
    side = getattr(hil.config, "workerinput", {}).get(rackrun.SIDE_DIR_KEY)
    if side:
        bench = hil.rack_worker.bench.name if hil.rack_worker and hil.rack_worker.bench else None
        rackrun.write_side_file(Path(side), os.environ.get("PYTEST_XDIST_WORKER", "gw0"), bench, hil.broken,
                                cannot, first)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    hil: HilSession = item.config.stash[STASH_KEY]
    hil.running = True
    try:
        yield
    finally:
        hil.running = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    hil: HilSession = item.config.stash[STASH_KEY]
    _label_bench(hil)  # here, not in the bench fixture: tests without it (the sim-only sweep) ran on the bench too
    hil.running = True
    try:
        yield
    finally:
        hil.running = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if (report.when == "call" or (report.when == "setup" and report.outcome != "passed")) and uses_bench(item):
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
        if hil.rack is not None and hil.broken:
            from hil.rackrun import BROKEN_PROPERTY

            report.user_properties.append((BROKEN_PROPERTY, hil.broken))
        hil.records.append({"nodeid": item.nodeid, "name": item.name, "outcome": outcome_name,
                            "bench": hil._cfg.bench if hil._cfg is not None else None,
                            "duration_s": report.duration, "fault_rows": rows, "expect": expect,
                            "requirements": reqs, "evidence_dir": str(evidence), "reason": reason,
                            "measurements": [m.as_dict() for m in item.stash.get(_MEASUREMENTS, [])]})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    hil: HilSession = session.config.stash[STASH_KEY]
    try:
        if hil.controller is not None:
            _write_rack_reports(hil)
        elif hasattr(hil.config, "workerinput") and hil.rack is not None:
            _hand_to_controller(hil)
        elif hil.opened and hil.records:  # only runs against a bench produce evidence reports
            _write_reports(hil)
    finally:
        hil.close()


def _reports_dir(hil: HilSession) -> Path:
    return hil.here("--reports-dir")


def _iso(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


def _bench_entry(hil: HilSession) -> dict[str, Any]:
    """This process's bench for the run record: identity, lease, and why it broke (if it did)."""
    entry: dict[str, Any] = dict(hil.identity or {"bench": hil._cfg.bench if hil._cfg is not None else None})
    if hil.rack_worker is not None:
        entry["lease"] = hil.rack_worker.describe()
    if hil.broken:
        entry["broken"] = hil.broken
    return entry


def _write_reports(hil: HilSession) -> None:
    import sys

    from hil import report_merge

    benches = _bench_entry(hil)
    if hil.rack is not None:
        benches = {"rack": hil.rack.name, "benches": {str(benches.get("bench")): benches}}
    report_merge.write_all(_reports_dir(hil), hil.records, benches, started=_iso(hil.started), finished=_iso(time.time()),
                           command=sys.argv, seeds={"sweep_points": hil.config.getoption("--sweep-points"),
                                                    "nightly": hil.config.getoption("--nightly")},
                           repo=Path(hil.config.rootpath))
    _write_allure_extras(hil, hil.identity or {"bench": hil.cfg.bench})


def _write_allure_extras(hil: HilSession, identity: dict[str, Any]) -> None:
    """Categories and environment (bench, DUT, instruments, commit, tools) beside the Allure results."""
    from hil import report

    allure_audit.write_session(hil.config, _reports_dir(hil), identity, report.tool_versions(), _iso(hil.started))


def _hand_to_controller(hil: HilSession) -> None:
    """xdist worker in rack mode: the controller writes the one report from every worker's records."""
    from hil.rackrun import OUTPUT_KEY

    bench = hil.rack_worker.bench.name if hil.rack_worker is not None and hil.rack_worker.bench else None
    hil.config.workeroutput[OUTPUT_KEY] = {  # type: ignore[attr-defined]
        "bench": bench, "identity": hil.identity, "broken": hil.broken,
        "lease": hil.rack_worker.describe() if hil.rack_worker is not None else None,
        "opened": hil.opened, "records": hil.records}


def _write_rack_reports(hil: HilSession) -> None:
    """xdist controller in rack mode: one fault matrix, traceability and run record from all workers."""
    import sys

    from hil import report_merge

    ctl = hil.controller
    try:
        records = ctl.records()
        if not records:
            return
        benches = {"rack": hil.rack.name, "benches": {(b["bench"] or b["worker"]): b for b in ctl.benches()}}
        report_merge.write_all(_reports_dir(hil), records, benches, started=_iso(hil.started), finished=_iso(time.time()),
                               command=sys.argv, seeds={"sweep_points": hil.config.getoption("--sweep-points"),
                                                        "nightly": hil.config.getoption("--nightly")},
                               repo=Path(hil.config.rootpath))
        _write_allure_extras(hil, {"rack": hil.rack.name, "bench": ", ".join(sorted(benches["benches"]))})
    finally:
        ctl.cleanup()
