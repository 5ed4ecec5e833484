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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.config import BenchConfig
from hil.errors import BenchBroken, HilError, HilTimeout

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
        """Start the process and wait for its READY line (first start builds keys and images)."""
        cmd = [sys.executable, "-m", "hil", "sim", "--bench", str(self.bench_file), "--ready-line"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._reader = threading.Thread(target=self._read, name="hil-sim-output", daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or not self.endpoints:
            output = "".join(self._lines[-40:])
            self.stop()
            raise HilTimeout(f"virtual bench {self.bench_file} did not report ready within {timeout:.0f} s", output)
        return self.endpoints

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
        """Ctrl-C the simulator, and kill it if it does not stop in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def apply_endpoints(cfg: BenchConfig, endpoints: dict[str, Any]) -> BenchConfig:
    """The bench config with the addresses a started simulator actually listens on."""
    update: dict[str, Any] = {}
    if "psu" in endpoints:
        update["psu"] = cfg.psu.model_copy(update={"resource": endpoints["psu"]})
    if "load" in endpoints and cfg.load is not None:
        update["load"] = cfg.load.model_copy(update={"resource": endpoints["load"]})
    if "console" in endpoints and cfg.console is not None:
        update["console"] = cfg.console.model_copy(update={"url": endpoints["console"]})
    return cfg.model_copy(update=update)


@dataclass
class Bench:
    """The drivers of one bench. Tests get them through fixtures; `hil doctor` and `hil flash` use them directly."""

    cfg: BenchConfig
    can: Any = None
    uds: Any = None
    psu: Any = None
    load: Any = None
    console: Any = None
    flasher: Any = None
    vehicle: Any = None  # the vehicle side on CAN (hil.vehicle.Vehicle): VCU_VehicleState, the charging window
    sim: Any = None  # SimProcess or an in-process VirtualBench, only for virtual benches
    evidence_dir: Path | None = None

    @classmethod
    def open(cls, cfg: BenchConfig, *, start_virtual: bool = True, evidence_dir: Path | None = None,
             power_on: bool = True) -> "Bench":
        """Start the simulator if virtual, open every driver, and power the DUT."""
        bench = cls(cfg, evidence_dir=evidence_dir)
        try:
            if cfg.virtual and start_virtual:
                bench.start_sim()
            bench._open_drivers()
            if power_on:
                bench.power_on_and_wait()
        except BaseException:
            bench.close()
            raise
        return bench

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
        self.cfg = apply_endpoints(self.cfg, sp.start())
        assert sp.proc is not None
        return f"started as process {sp.proc.pid} (hil sim)"

    def _open_drivers(self) -> None:
        from hil.drivers.can import CanChannel
        from hil.drivers.console import Console
        from hil.drivers.load import ScpiBatteryEmulator
        from hil.drivers.psu import ScpiPowerSupply
        from hil.drivers.uds import UdsClient
        from hil.flasher import Flasher
        from hil.vehicle import Vehicle

        ev = self.evidence_dir
        if self.cfg.console is not None:
            # Open the console before powering the board: a UART loses what is sent before it is open.
            self.console = Console(self.cfg.console.url, self.cfg.console.baudrate,
                                   log_path=ev / "console.log" if ev else None)
        self.psu = ScpiPowerSupply(self.cfg.psu)
        if ev:
            self.psu.start_log(ev / "supply.log")
        if self.cfg.load is not None:
            self.load = ScpiBatteryEmulator(self.cfg.load)
        self.can = CanChannel(self.cfg.can)
        self.vehicle = Vehicle(self.can)
        self.vehicle.start()  # the charging window (plugged in, parked) until a test says otherwise
        self.uds = UdsClient(self.can, self.cfg.dut)
        self.flasher = Flasher(self.uds, self.can, self.cfg.dut)

    def power_on_and_wait(self, timeout: float | None = None) -> None:
        """Nominal supply on; wait until the DUT answers (SOC frames, or UDS in recovery)."""
        from hil import contract

        self.psu.power_on()
        if self.load is not None:
            self.load.safe_state()
        timeout = timeout or self.cfg.dut.boot_timeout_s
        try:
            self.can.wait_for(contract.MSG_SOC_CORE, timeout=timeout)
        except HilTimeout:
            try:
                self.uds.boot_info()  # a DUT in recovery answers UDS but sends no SOC frames
            except HilError as exc:
                raise BenchBroken(f"DUT {self.cfg.dut.hardware_number} on bench {self.cfg.bench} did not start "
                                  f"within {timeout:.0f} s after power-on: {exc}") from exc

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

    def __enter__(self) -> "Bench":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
