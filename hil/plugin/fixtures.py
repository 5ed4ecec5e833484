"""The plugin's fixtures: capabilities a test asks for (`psu`, `uds`, `can`, `console`, `load`, `flasher`, `dut`,
`images`, `config_packages`, `vehicle`, `measure`, `evidence`), never a vendor class."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from hil.bench.bench import Bench
from hil.bench.config import BenchConfig
from hil.drivers.protocols import BatteryEmulator, ConsoleProtocol, PowerSupply
from hil.dut.dut import Dut
from hil.plugin.evidence import (GAPS, MEASUREMENTS, MeasurementOutOfLimits, check_evidence_kept, evidence_dir,
                                 expected_violations, start_evidence, stop_evidence)
from hil.plugin.images import ImageStore
from hil.plugin.session import allure, session_of
from hil.report import allure as allure_audit
from hil.timing.measure import Measurement

if TYPE_CHECKING:  # the drivers load when a bench opens
    from hil.drivers.can import CanChannel
    from hil.drivers.uds import UdsClient
    from hil.dut.flasher import Flasher


@pytest.fixture(scope="session")
def bench_config(request: pytest.FixtureRequest) -> BenchConfig:
    """The validated bench YAML."""
    return session_of(request).cfg


@pytest.fixture
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    """The open bench; put back into its known state after the test, also after a failure."""
    hil = session_of(request)
    b = hil.open()
    evidence = evidence_dir(hil, request.node)
    start_evidence(b, evidence)
    audit = allure_audit.TestAudit(b, request.node).start()
    try:
        yield b
    finally:
        try:
            audit.finish(evidence)  # phases, faults, images, board status: into the evidence and the report
            stop_evidence(b, evidence, request.node, audit.fault_marks)
        finally:
            hil.back_to_known_state(request.node)
    check_evidence_kept(b, evidence)


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
    """Battery/load emulator (pack current, temperatures, cell voltages). A function this bench's instrument
    does not offer (an electronic load has no cell voltages, cannot charge) ends the case NOT COVERED, naming
    it; `load.require(function, ...)` asks up front (functions: hil.drivers.load)."""
    if bench.load is None:
        pytest.skip(f"instrument missing: bench {bench.cfg.bench} has no battery/load emulator")
    return _OfferedOrNotCovered(bench.load)  # type: ignore[return-value]


class _OfferedOrNotCovered:
    """The battery emulator driver; a function its dialect lacks skips the case as NOT COVERED, with the reason."""

    def __init__(self, driver: Any) -> None:
        self._driver = driver

    def require(self, *functions: str) -> None:
        """Skip the case (NOT COVERED) unless the instrument offers every one of `functions`."""
        missing = self._driver.missing(*functions)
        if missing:
            pytest.skip(f"instrument function missing: {missing}")

    def __getattr__(self, name: str) -> Any:
        from hil.drivers.load import FunctionNotOffered

        attr = getattr(self._driver, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except FunctionNotOffered as exc:
                pytest.skip(f"instrument function missing: {exc}")
        return call


@pytest.fixture
def vehicle(bench: Bench) -> Any:
    """The vehicle side on CAN (its state message at the profile's period): `plug_in`, `unplug`, `drive`, `park`."""
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
def config_packages(bench: Bench, dut: Dut) -> Any:
    """Signed configuration packages by recipe name (`config_packages[name]`), `apply(name or bytes)`, `values(name)`;
    the bench's fleet: `groups`, `sequence(group)` (a group's packages in apply order), `role(name)`.

    The DUT starts without an active profile version (reset through the development restore path), so a
    profile left by an earlier run cannot make the case's packages look like downgrades."""
    from hil.config_packages.loader import ConfigPackageStore

    store = ConfigPackageStore(bench.cfg, bench.uds)
    store.reset_profile_version(dut)
    return store


@pytest.fixture(scope="session")
def images(bench_config: BenchConfig) -> "ImageStore":
    """Signed firmware images by recipe name (built on first use with the bench's keys)."""
    return ImageStore(bench_config)


@pytest.fixture(scope="session")
def dut_profile(bench_config: BenchConfig) -> Any:
    """The DUT profile (hil.bench.dut_profile.DutProfile): the board's identifiers, encodings and console patterns."""
    return bench_config.profile


def _skip_if_not_applicable(profile: Any, name: str, what: str) -> None:
    """Skip (NOT COVERED) naming the family's reason when the board's update family does not have `name`."""
    from hil.images.families import NOT_APPLICABLE_PREFIX, family

    fam = family(profile.update.family)
    if name in fam.not_applicable:
        pytest.skip(f"{NOT_APPLICABLE_PREFIX}{fam.name}: {what} {name!r}: {fam.not_applicable[name]}")


@pytest.fixture
def console_pattern(bench_config: BenchConfig) -> Any:
    """`console_pattern(name)`: the profile's console pattern, or skip the case naming the missing pattern - and,
    where the board's update family has no such phase at all (no swap to watch), why it does not apply."""

    def get(name: str) -> str:
        profile = bench_config.profile
        pattern = profile.console_pattern(name)
        if pattern is None:
            _skip_if_not_applicable(profile, name, "console pattern")
            pytest.skip(f"console pattern missing: profile {profile.name} has no console pattern {name!r}")
        return pattern
    return get


@pytest.fixture
def family_phase(bench_config: BenchConfig) -> Callable[[str], None]:
    """`family_phase(name)`: a case needs this phase of an update (e.g. `interruptible_revert`); where the board's
    update family has no such phase (hil/images/families.py `not_applicable`), the case skips with the family's
    reason and its fault-matrix row is NOT COVERED."""

    def need(name: str) -> None:
        _skip_if_not_applicable(bench_config.profile, name, "phase")
    return need


@pytest.fixture
def not_covered(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """`not_covered(reason)`: a check of this case cannot run on this board. The case goes on checking the rest;
    if all that passes it ends skipped with the reason, so its fault-matrix row is NOT COVERED, never a quiet PASS.
    The reason starts with one of hil.report.records.GAP_PREFIXES (e.g. "counter signal missing: ...")."""
    from hil.report.records import GAP_PREFIXES

    gaps = request.node.stash.setdefault(GAPS, [])

    def declare(reason: str) -> None:
        if not reason.startswith(GAP_PREFIXES):
            raise ValueError(f"a not-covered reason starts with one of {', '.join(map(repr, GAP_PREFIXES))}; got {reason!r}")
        gaps.append(reason)
    return declare


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Callable[[Measurement], Measurement]:
    """Record a measurement with its limits; the report shows value and limit side by side. Returns the Measurement.

    A measurement outside its limits fails the test (after the test body, so every measurement is
    recorded) and its report step shows failed, unless the case declares it with
    `@pytest.mark.expect_violation("<name>", reason=...)`.
    """
    recorded: list[Measurement] = []
    expected = expected_violations(request.node)

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

    request.node.stash[MEASUREMENTS] = recorded
    return record


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Iterator[Path]:
    """This test's evidence directory (CAN trace, console, supply log, plots live here)."""
    d = evidence_dir(session_of(request), request.node)
    yield d
    if "bench" not in request.fixturenames:  # the bench fixture attaches them otherwise
        allure_audit.attach_evidence(d)
