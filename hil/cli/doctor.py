"""`hil doctor`: check every part of a bench, one named result per part."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hil.bench import contract
from hil.bench.bench import Bench
from hil.bench.config import BenchConfig
from hil.drivers.protocols import BatteryEmulator, ConsoleProtocol
from hil.errors import HilError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _run(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except (HilError, OSError, ValueError) as exc:
        return Check(name, False, f"{type(exc).__name__}: {exc}".splitlines()[0])


def run_doctor(cfg: BenchConfig) -> list[Check]:
    """Take the bench lock, start a virtual bench if the file says so, then check the profile, the image
    catalogue, instruments, CAN and the DUT."""
    checks: list[Check] = [_run("DUT profile", lambda: _profile(cfg)), _run("image catalogue", lambda: _catalogue(cfg))]
    bench = Bench(cfg)
    try:
        checks.append(_run("bench lock", lambda: _take_lock(bench)))
        if not checks[-1].ok:
            return checks
        if cfg.virtual:
            started = _run("virtual bench", bench.start_sim)
            checks.append(started)
            if not started.ok:
                return checks
        checks.append(_run(f"supply {bench.cfg.psu.resource}", lambda: bench.open_psu().identity()))
        if not checks[-1].ok:
            return checks
        if bench.cfg.load is not None:
            checks.append(_run(f"battery emulator {bench.cfg.load.resource}", lambda: _identity(bench.open_load())))
        if bench.cfg.console is not None:
            checks.append(_run(f"console {bench.cfg.console.url}", lambda: _opened(bench.open_console())))
        checks.append(_run(f"CAN {bench.cfg.can.interface}:{bench.cfg.can.channel}", lambda: _can_alive(bench)))
        if checks[-1].ok:
            checks.append(_run("DUT identity", lambda: _dut_identity(bench)))
            checks.append(_run(f"SecurityAccess 0x{cfg.profile.security.programming_level:02X}",
                               lambda: _unlock(bench)))
    finally:
        bench.close()
    return checks


def _take_lock(bench: Bench) -> str:
    bench.take_lock()
    assert bench.lock is not None
    return f"held ({bench.lock.path})"


def _identity(driver: BatteryEmulator | None) -> str:
    return driver.identity() if driver is not None else "none"


def _opened(console: ConsoleProtocol | None) -> str:
    return "open" if console is not None else "none"


def _can_alive(bench: Bench) -> str:
    bench.open_can()
    bench.power_on_and_wait()
    from hil.bench.frames import cycle_counter

    frame = bench.channel.wait_for(contract.MSG_SOC_CORE, timeout=bench.cfg.timing.soc_restart_s)
    counter = cycle_counter(bench.channel.db, bench.cfg.profile)
    if counter is None:
        counted = "no cycle counter: missed cycles NOT COVERED"
    elif counter.signal not in frame.signals:
        raise ValueError(f"{contract.MSG_SOC_CORE} arrived without its counter {counter.signal}: {frame.describe()}")
    else:
        counted = f"counter {counter.signal} = {frame.signals[counter.signal]} of {counter.modulo}"
    return f"{contract.MSG_SOC_CORE} received (SOC {float(frame.signals[contract.SIG_SOC]):.1f} %, {counted})"


def _dut_identity(bench: Bench) -> str:
    uds = bench.client
    hw = uds.read_str(contract.Did.HARDWARE_NUMBER)
    sw = uds.software_version()
    serial = uds.read_str(contract.Did.SERIAL_NUMBER)
    expected = bench.cfg.dut.hardware_number
    if hw != expected:
        raise ValueError(f"hardware number {hw!r}, bench file expects {expected!r}")
    if bench.cfg.dut.serial_number and serial != bench.cfg.dut.serial_number:
        raise ValueError(f"serial number {serial!r}, bench file expects {bench.cfg.dut.serial_number!r}")
    return f"hardware {hw}, software {sw}, serial {serial}"


def _profile(cfg: BenchConfig) -> str:
    """The profile loaded (validated against its DBC at load); say which one and its key numbers."""
    p = cfg.profile
    return (f"{p.name} ({p.source or 'built-in default'}): UDS 0x{p.uds.phys_request_id:X}/0x{p.uds.phys_response_id:X}, "
            f"{len(p.dids)} DIDs, {len(p.routines)} routines, restore {p.restore.method}, "
            f"{len(p.console.patterns)} console patterns, update family {p.update.family}, {p.soc_core.cells} cells, "
            f"counter {p.soc_core.counter or 'none (missed cycles NOT COVERED)'}")


def _catalogue(cfg: BenchConfig) -> str:
    """Which image roles the bench maps, derives or lacks (lacking ones are NOT COVERED in the fault matrix)."""
    from pathlib import Path

    from hil.images.catalogue import DERIVED, ROLES, catalogue_of, signing_key
    from hil.images.families import image_file_suffixes

    catalogue = catalogue_of(cfg)
    absent = [r for r, v in catalogue.items() if v.endswith(image_file_suffixes()) and not Path(v).is_file()
              and cfg.images.prebuild is None]
    if absent:
        raise ValueError(f"catalogue files missing: {', '.join(f'{r}={catalogue[r]}' for r in absent)}")
    key = signing_key(cfg)
    derived = [r for r, needs_key in DERIVED.items() if r not in catalogue and (not needs_key or key is not None)]
    missing = [r for r in ROLES if r not in catalogue and r not in derived]
    return (f"{len(catalogue)} mapped, derived: {', '.join(derived) or 'none'}; "
            f"missing (cases skipped, NOT COVERED): {', '.join(missing) or 'none'}")


def _unlock(bench: Bench) -> str:
    """The profile's seed-to-key with the bench's secret opens the programming level (then back to default)."""
    from hil.bench.contract import Session

    uds = bench.client
    uds.session(Session.PROGRAMMING)
    try:
        uds.unlock(bench.cfg.dut.security)
    finally:
        uds.session(Session.DEFAULT)
    return f"unlocked with {bench.cfg.dut.security.algorithm}"
