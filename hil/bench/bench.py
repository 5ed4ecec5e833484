"""A bench as the framework sees it: drivers opened from a bench config, virtual or real.

The code path is the same for both; for a virtual bench `Bench.open` first starts the simulator:
as its own process (`hil sim`) when CAN runs over `udp_multicast`, in this process when CAN is
python-can's `virtual` interface (which only works inside one process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hil.bench.config import BenchConfig
from hil.drivers.protocols import BatteryEmulator, ConsoleProtocol, PowerSupply
from hil.errors import BenchBroken, HilError, HilTimeout
from hil.bench.lock import BenchLock

if TYPE_CHECKING:  # drivers are imported when a bench opens them, not when hil.bench is imported
    from hil.drivers.can import CanChannel
    from hil.drivers.uds import UdsClient
    from hil.dut.dut import Dut
    from hil.dut.flasher import Flasher
    from hil.sim.bench import VirtualBench
    from hil.drivers.vehicle import Vehicle

READY_MARK = "HIL-SIM READY "


class SimProcess:
    """A virtual bench running as `hil sim` in a child process."""

    def __init__(self, bench_file: Path, log_path: Path | None = None) -> None:
        self.bench_file = bench_file
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.endpoints: dict[str, Any] = {}
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 120.0) -> dict[str, Any]:
        """Start the process and wait for its READY line (first start builds keys and images).

        The parent holds the bench lock, so the child is told not to take it (`--lock-held`).
        A child that exits first is reported at once with its exit code and last output.
        """
        # The child ends with this process, however it ends (hil/sim/lifetime.py): it watches the pipe on its
        # stdin, whose write end only this process holds, and on Linux asks for SIGTERM when its parent thread
        # ends - asked only from the main thread, whose end is this process's end.
        cmd = [sys.executable, "-m", "hil", "sim", "--bench", str(self.bench_file), "--ready-line", "--lock-held",
               "--parent-pid", str(os.getpid())]
        if threading.current_thread() is threading.main_thread():
            cmd.append("--death-signal")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._reader = threading.Thread(target=self._read, name="hil-sim-output", daemon=True)
        self._reader.start()
        # The reader sets the event on READY and also at end of output (the child exited).
        ready = self._ready.wait(timeout)
        if ready and self.endpoints:
            return self.endpoints
        if ready:
            self._reader.join(5)
            try:
                code = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            lines = [ln.rstrip() for ln in self._lines if ln.strip()]
            last = lines[-1] if lines else "(no output)"
            self.stop()
            raise BenchBroken(f"virtual bench process `hil sim --bench {self.bench_file}` exited with code {code} "
                              f"before it was ready: {last}\n--- last output ---\n" + "\n".join(lines[-30:]))
        output = "".join(self._lines[-40:])
        self.stop()
        raise HilTimeout(f"virtual bench {self.bench_file} did not report ready within {timeout:.0f} s", output)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        log = open(self.log_path, "a") if self.log_path else None
        try:
            for line in self.proc.stdout:
                self._lines.append(line)
                del self._lines[:-500]
                if log:
                    log.write(line)
                    log.flush()
                if line.startswith(READY_MARK):
                    self.endpoints = json.loads(line[len(READY_MARK):])
                    self._ready.set()
        finally:
            self._ready.set()
            if log:
                log.close()

    def stop(self, timeout: float = 15.0) -> None:
        """Ctrl-C the simulator, and kill it if it does not stop in time; then close its pipe."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass


@dataclass
class Bench:
    """The drivers of one bench. Tests get them through fixtures; `hil doctor` and `hil flash` use them directly.

    This class is the one place drivers are built from a bench config (`open_psu`, `open_load`,
    `open_console`, `open_can`); `hil doctor` calls the same methods one by one to name what fails.
    """

    cfg: BenchConfig
    can: CanChannel | None = None
    uds: UdsClient | None = None
    psu: PowerSupply | None = None
    load: BatteryEmulator | None = None
    console: ConsoleProtocol | None = None
    flasher: Flasher | None = None
    vehicle: Vehicle | None = None  # the vehicle side on CAN (hil.vehicle.Vehicle): VCU_VehicleState, the charging window
    sim: SimProcess | VirtualBench | None = None  # only for virtual benches
    evidence_dir: Path | None = None
    lock: BenchLock | None = None

    @classmethod
    def open(cls, cfg: BenchConfig, *, start_virtual: bool = True, evidence_dir: Path | None = None,
             power_on: bool = True, lock: bool = True) -> "Bench":
        """Take the bench lock, start the simulator if virtual, open every driver, and power the DUT.

        A bench someone else holds raises BenchBusy naming the holder, before anything is started.
        """
        bench = cls(cfg, evidence_dir=evidence_dir)
        try:
            if lock:
                bench.take_lock()
            if cfg.virtual and start_virtual:
                bench.start_sim()
            bench.open_drivers()
            if power_on:
                bench.power_on_and_wait()
        except BaseException:
            bench.close()
            raise
        return bench

    def take_lock(self) -> None:
        """Hold this bench's lock until `close()` (BenchBusy naming the holder if another run has it)."""
        if self.lock is None:
            self.lock = BenchLock(self.cfg.bench)
        self.lock.acquire()

    def start_sim(self) -> str:
        """Start the virtual bench this config describes; say how it runs."""
        if self.cfg.can.interface == "virtual":
            from hil.sim.bench import VirtualBench  # only virtual benches need the simulator

            vb = VirtualBench(self.cfg)
            self.sim = vb
            self.cfg = vb.start()
            return "started in this process (CAN: python-can virtual)"
        if self.cfg.source is None:
            raise BenchBroken("a virtual bench run as a process needs its bench file (cfg.source)")
        log = self.evidence_dir / "virtual-bench.log" if self.evidence_dir else None
        sp = SimProcess(self.cfg.source, log)
        self.sim = sp
        self.cfg = self.cfg.with_endpoints(sp.start())
        assert sp.proc is not None
        return f"started as process {sp.proc.pid} (hil sim)"

    # ------------------------------------------------------------------ driver construction (the one owner)
    def open_console(self) -> ConsoleProtocol | None:
        """The console driver, if the bench has one (opened before power-on: a UART loses what comes earlier)."""
        from hil.drivers.console import Console

        if self.cfg.console is not None and self.console is None:
            ev = self.evidence_dir
            self.console = Console(self.cfg.console.url, self.cfg.console.baudrate,
                                   log_path=ev / "console.log" if ev else None,
                                   host_margin_s=self.cfg.tester.host_margin_ms / 1000.0,
                                   patterns=self.cfg.profile.console.patterns)
        return self.console

    def open_psu(self) -> PowerSupply:
        """The supply driver (its dialect from `psu.dialect`); queries `*IDN?` at once."""
        from hil.drivers.psu import ScpiPowerSupply

        if self.psu is None:
            self.psu = ScpiPowerSupply(self.cfg.psu, visa_library=self.cfg.visa_library)
            if self.evidence_dir:
                self.psu.start_log(self.evidence_dir / "supply.log")
        return self.psu

    def open_load(self) -> BatteryEmulator | None:
        """The battery emulator driver, if the bench has one; queries `*IDN?` at once."""
        from hil.drivers.load import ScpiBatteryEmulator

        if self.cfg.load is not None and self.load is None:
            pack = self.cfg.profile.soc_core
            self.load = ScpiBatteryEmulator(self.cfg.load, visa_library=self.cfg.visa_library, n_cells=pack.cells,
                                            n_temps=pack.temperatures)
        return self.load

    def open_can(self) -> CanChannel:
        """The CAN channel, the UDS client on it, and the Flasher on both."""
        from hil.drivers.can import CanChannel
        from hil.drivers.uds import UdsClient
        from hil.dut.flasher import Flasher
        from hil.drivers.vehicle import Vehicle

        if self.can is None:
            self.can = CanChannel(self.cfg.can, profile=self.cfg.profile)
            self.uds = UdsClient(self.can, self.cfg.dut, self.cfg.profile, self.cfg.tester)
            self.flasher = Flasher(self.uds, self.can, self.cfg.dut, self.cfg.profile)
            self.vehicle = Vehicle(self.can)
            self.vehicle.start()  # the charging window (plugged in, parked) until a test says otherwise
            self.flasher.vehicle = self.vehicle
        return self.can

    def open_drivers(self) -> None:
        """Every driver the bench file names."""
        self.open_console()
        self.open_psu()
        self.open_load()
        self.open_can()

    # ------------------------------------------------------------------ typed access (after open)
    def _need(self, name: str) -> Any:
        drv = getattr(self, name)
        if drv is None:
            raise BenchBroken(f"bench {self.cfg.bench}: {name} is not open")
        return drv

    @property
    def supply(self) -> PowerSupply:
        """The open supply (BenchBroken when it is not open)."""
        psu: PowerSupply = self._need("psu")
        return psu

    @property
    def channel(self) -> CanChannel:
        """The open CAN channel."""
        can: CanChannel = self._need("can")
        return can

    @property
    def client(self) -> UdsClient:
        """The open UDS client."""
        uds: UdsClient = self._need("uds")
        return uds

    def make_dut(self) -> Dut:
        """The DUT as tests see it, on this bench's open UDS client and CAN channel."""
        from hil.dut.dut import Dut

        return Dut(self.client, self.channel, self.cfg.dut)

    @property
    def programmer(self) -> Flasher:
        """The open Flasher."""
        flasher: Flasher = self._need("flasher")
        return flasher

    def power_on_and_wait(self, timeout: float | None = None) -> None:
        """Nominal supply on; wait until the DUT answers (SOC frames, or UDS in recovery)."""
        from hil.bench import contract

        self.supply.power_on()
        if self.load is not None:
            self.load.safe_state()
        timeout = timeout or self.cfg.dut.boot_timeout_s
        deadline = time.monotonic() + timeout
        # A booting DUT sends SOC frames within its restart budget; one in recovery never does but answers
        # UDS. So: SOC frames for that budget, then UDS or SOC frames, whichever comes, until the timeout.
        wait_s = min(timeout, self.cfg.timing.soc_restart_s)
        while True:
            try:
                self.channel.wait_for(contract.MSG_SOC_CORE, timeout=wait_s)
                return
            except HilTimeout:
                pass
            try:
                self.client.boot_info()
                return
            except HilError as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchBroken(f"DUT {self.cfg.dut.hardware_number} on bench {self.cfg.bench} did not start "
                                      f"within {timeout:.0f} s after power-on: {exc}") from exc
                wait_s = min(1.0, remaining)

    def close(self) -> None:
        """Safe state for every instrument, then close drivers and stop a virtual bench."""
        for name in ("load", "psu"):
            drv = getattr(self, name)
            if drv is not None:
                try:
                    drv.safe_state()
                except HilError:
                    pass
        for name in ("vehicle", "uds", "can", "console", "psu", "load"):
            drv = getattr(self, name)
            if drv is not None:
                try:
                    drv.close()
                except Exception:  # closing must go on for the rest
                    pass
                setattr(self, name, None)
        if self.sim is not None:
            self.sim.stop()
            self.sim = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> "Bench":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
