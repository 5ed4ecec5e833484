"""The simulated BMS board: MCU (bootloader + firmware), program flash, CAN transceiver, UART, supply input.

The board is powered by the emulated supply: an output below the brown-out threshold is a
power loss (every running thread stops where it is, a flash operation in flight is torn), and
power returning is a power-on reset. Resets (ECUReset, a crash, the watchdog) reboot through the
bootloader without losing power. Nothing here is reachable by the framework except through the
wire protocols: CAN (UDS and the DBC frames), SCPI and the console.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from typing import Any, Callable, Sequence

import can

from hil.bench import contract
from hil.drivers.canbus import frame_time_s
from hil.bench.config import BenchConfig
from hil.bench.contract import BootMode, Reason, ResetCause, UpdateState
from hil.drivers.canbus import load_dbc
from hil.bench.frames import cell_layout, cycle_counter, temperature_layout
from hil.sim.errors import PowerLoss
from hil.images.container import BootImage
from hil.images.mcuboot import TrustedKey
from hil.images.payload import FirmwareDescriptor, PayloadError, decode_payload
from hil.sim import config_packages
from hil.sim.bootloader import Bootloader
from hil.sim.defects import Defects
from hil.sim.diag import DiagServer
from hil.sim.ecu import PackSource
from hil.sim.family import board_parts
from hil.sim.flash import Cut, FlashModel, FlashOp
from hil.sim.mcu_time import ModelLock, charge
from hil.sim.nvstore import NvStore
from hil.sim.soc import RELEASE_TRACE_LEN, CpuStall, SocCore, SocEstimator, TimingProfile, new_release_trace, soc_from_ocv
from hil.sim.uds_server import UdsServerTransport

#: Configuration a factory-new board carries, per schema version (2.0.0 migrates to schema 2).
DEFAULT_CONFIG: dict[int, dict[str, Any]] = {
    1: {"profile": "default", "profile_version": 0, "cell_ov_mV": 4200, "cell_uv_mV": 2800, "max_charge_A": 100,
        "max_discharge_A": 200, "temp_max_C": 55, "capacity_Ah": 50, "cold_charge_below_C": 10, "cold_charge_A": 50},
}
DEFAULT_CONFIG[2] = {**DEFAULT_CONFIG[1], "balancing_threshold_mV": 10}


#: Frames the CAN controller holds for transmission (hardware mailboxes plus the driver's queue).
TX_MAILBOX_DEPTH = 32
#: Defect bms_offline_too_long_during_install: silent start-up after an install, beyond a 5 s offline budget.
OFFLINE_DEFECT_S = 6.5
#: The analog front end scans the temperature sensors this often; the firmware works with the last scan
#: (one reason a board takes time to settle after a temperature change: the DUT profile's `settling`).
TEMPERATURE_SCAN_S = 0.5


class TemperatureScan:
    """The AFE's periodic temperature scan: sensors are read at most once per `period_s`, readers get the last scan."""

    def __init__(self, read: Callable[[], list[float]], period_s: float = TEMPERATURE_SCAN_S) -> None:
        self._read = read
        self.period_s = period_s
        self._lock = threading.Lock()
        self._values: list[float] | None = None
        self._at = 0.0

    def __call__(self) -> list[float]:
        with self._lock:
            now = time.monotonic()
            if self._values is None or now - self._at >= self.period_s:
                self._values, self._at = list(self._read()), now
            return list(self._values)


class CpuReset(Exception):
    """The MCU resets (ECUReset, crash, watchdog); the board reboots through the bootloader."""

    def __init__(self, cause: ResetCause) -> None:
        self.cause = cause
        super().__init__(cause.name)


class Cpu:
    """One boot of the MCU. Every wait of the board's code goes through `sleep`, which ends on power loss or reset."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.reset_cause: ResetCause | None = None
        self.power_lost = False

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float | None) -> bool:
        """True when the boot ended during the wait. The wait is charged to the caller's model time."""
        if self._stop.wait(seconds):
            return True
        charge(seconds or 0.0)
        return False

    def sleep(self, seconds: float | None) -> None:
        """Sleep, or raise PowerLoss / CpuReset if the boot ends meanwhile."""
        if self.wait(seconds):
            self.raise_stop()

    def raise_stop(self) -> None:
        if self.power_lost or self.reset_cause is None:
            raise PowerLoss("supply lost")
        raise CpuReset(self.reset_cause)

    def reset(self, cause: ResetCause) -> None:
        if not self._stop.is_set():
            self.reset_cause = cause
            self._stop.set()

    def lose_power(self) -> None:
        self.power_lost = True
        self._stop.set()


class _VehicleRx(can.Listener):
    """The board's CAN receive filter for VCU_VehicleState."""

    def __init__(self, board: "Board") -> None:
        self._board = board

    def on_message_received(self, msg: can.Message) -> None:
        board = self._board
        if msg.arbitration_id != board._vehicle_spec.frame_id or msg.is_error_frame or not board.powered:
            return
        try:
            signals: Any = board._vehicle_spec.decode(bytes(msg.data), decode_choices=False)
        except Exception:  # a malformed frame is ignored, as a CAN driver would
            return
        board._vehicle = (board.profile.can.to_framework_signals(contract.MSG_VEHICLE_STATE, dict(signals)), time.monotonic())


class Board:
    """A BMS board. Power comes from `supply_changed(volts)`; CAN, console and battery inputs are injected."""

    def __init__(self, cfg: BenchConfig, flash: FlashModel, trusted: Sequence[TrustedKey], bus: can.BusABC,
                 notifier: can.Notifier, battery: PackSource, console: Callable[[str], None]) -> None:
        assert cfg.sim is not None
        self.cfg = cfg
        self.sim = cfg.sim
        self.layout = cfg.flash_layout
        self.flash = flash
        self.trusted = list(trusted)
        self.bus = bus
        self.notifier = notifier
        # What the firmware reads of the pack: current and cell voltages each cycle, temperatures from the last scan.
        self.battery = PackSource(battery.pack_current, TemperatureScan(battery.temperatures), battery.cell_voltages)
        self._console = console
        self.profile = cfg.profile
        dbc = cfg.can.dbc or self.profile.can.dbc
        assert dbc is not None, "load_bench gives every bench a DBC"
        self.db = load_dbc(dbc)
        self.hardware_number = cfg.dut.hardware_number
        self.serial_number = cfg.dut.serial_number or "UNKNOWN"
        self.nv = NvStore(flash, self.layout)
        #: sim_only: the promises this board breaks on purpose (empty for a good board).
        self.defects = Defects(self.sim.defects)
        #: the update family's parts: bootloader and UDS application (hil/sim/family.py)
        self.parts = board_parts(self.profile)
        self.bootloader: Bootloader = self.parts.bootloader(flash, self.layout, self.nv, self.trusted,
                                                            self.hardware_number, log=self.log, defects=self.defects,
                                                            profile=self.profile)
        self._nv_lock = ModelLock()  # a task waiting for an NV write is stalled in model time too
        self._power_lock = threading.Lock()
        self._powered = False
        self._supply_volts = 0.0
        self._min_volts_while_off = 0.0
        self._cpu: Cpu | None = None
        self._cpu_thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._boot_threads: list[threading.Thread] = []
        self._transport: UdsServerTransport | None = None
        self._kick = time.monotonic()
        self.diag: DiagServer | None = None
        self.reset_cause = ResetCause.POWER_ON
        self.running_image: BootImage | None = None
        self.descriptor: FirmwareDescriptor | None = None
        self.soc: SocCore | None = None
        # SecurityAccess attempt counter and lockout survive resets (a reset must not defeat the delay);
        # a power-on restarts the delay instead (ISO 14229 boot delay).
        self.sa_attempts = 0
        self.sa_lockout_until = 0.0
        self.tx_dropped = 0  # frames lost to a full TX mailbox (visible as missed cycles on the bus)
        self.cpu_stall = CpuStall()
        self._nv_ram: dict[str, Any] = {}  # the application's RAM copies of NV values (nv_ram)
        #: sim_only: true SOC releases across boots (hil.sim.soc.Release), for the measurement fidelity test.
        self.soc_trace = new_release_trace()
        #: sim_only: (wall time, rolling counter) of each BMS_SocCore frame as the CAN controller put it on the bus.
        self.soc_sent: collections.deque[tuple[float, int]] = collections.deque(maxlen=RELEASE_TRACE_LEN)
        self._soc_msg = self.db.get_message_by_name(self.profile.can.dbc_message(contract.MSG_SOC_CORE))
        self._soc_id = self._soc_msg.frame_id
        # The profile's frame facts: the SOC frame's cycle counter (None: none), where cells and sensors sit.
        self.counter = cycle_counter(self.db, self.profile)
        self._counter_dbc = (next(iter(self.profile.can.to_dbc_signals(contract.MSG_SOC_CORE, {self.counter.signal: 0})))
                             if self.counter is not None else None)
        self.cells = cell_layout(self.db, self.profile)
        self.temperature_sensors = temperature_layout(self.db, self.profile)
        # Vehicle state from the VCU (charging window); RAM only, refreshed every 100 ms on the bus.
        self._vehicle: tuple[dict[str, Any], float] | None = None
        self.charge_inhibit = False  # activation asked the charger to stop
        self._vehicle_spec: Any = self.db.get_message_by_name(self.profile.can.dbc_message(contract.MSG_VEHICLE_STATE))
        notifier.add_listener(_VehicleRx(self))
        flash.interrupter = self._flash_gate

    # ------------------------------------------------------------------ shared with DiagServer
    def log(self, line: str) -> None:
        """A console line, prefixed with milliseconds since power-on as the firmware prints them."""
        self._console(f"[{(time.monotonic() - self._t0) * 1000:10.1f}] {line}")

    def nv_get(self, key: str, default: Any = None) -> Any:
        """Read the NV state without waiting for a write in progress (the firmware's RAM copy).

        Readers never take `_nv_lock`: a write holds it for the whole flash operation (a sector erase
        is 15 ms), and the SOC core reads the update state every cycle. The journaled store shows the
        old or the new state at every moment of a write, so a read needs no lock.
        """
        return self.nv.get(key, default)

    def nv_update(self, **changes: Any) -> None:
        with self._nv_lock:
            self.nv.update(**changes)

    def update_state(self) -> UpdateState:
        return UpdateState(int(self.nv_get("update", {}).get("state", UpdateState.IDLE)))

    def set_update(self, state: UpdateState, reason: Reason, target: tuple[int, int, int] | None = None) -> None:
        with self._nv_lock:
            current = dict(self.nv.get("update", {}))
            record = {"state": int(state), "reason": int(reason),
                      "target": list(target) if target is not None else current.get("target", [0, 0, 0])}
            if record != current:
                self.nv.update(update=record)
            self.record_outcome()

    # ------------------------------------------------------------------ update history and fault memory
    def begin_attempt(self) -> None:
        """A new update attempt (an image download starts): remember where it starts from."""
        with self._nv_lock:
            attempt = dict(self.nv.get("attempt", {}) or {})
            version = list(self.running_image.version_tuple) if self.running_image is not None else [0, 0, 0]
            self.nv.update(attempt={"id": int(attempt.get("id", 0)) + 1, "from": version})

    def record_outcome(self) -> None:
        """Once per attempt, when it ends (SUCCESS, ROLLED_BACK, REJECTED): a history entry, and a DTC if it failed."""
        terminal = (UpdateState.SUCCESS, UpdateState.ROLLED_BACK, UpdateState.REJECTED)
        with self._nv_lock:
            upd = self.nv.get("update", {}) or {}
            attempt = self.nv.get("attempt", {}) or {}
            state = UpdateState(int(upd.get("state", UpdateState.IDLE)))
            if state not in terminal or not attempt or attempt.get("id") == self.nv.get("history_done"):
                return
            if state is UpdateState.ROLLED_BACK and self.defects.has("rollback_not_recorded"):
                return
            entry = {"from": list(attempt.get("from", [0, 0, 0])), "to": list(upd.get("target", [0, 0, 0])),
                     "result": int(state), "reason": int(upd.get("reason", 0)),
                     "boot": int(self.nv.get("boot_count", 0))}
            if self.defects.has("history_records_wrong_outcome"):
                # The defective board writes its history entry as if every attempt had succeeded.
                entry.update(result=int(UpdateState.SUCCESS), reason=int(Reason.NONE))
            history = (list(self.nv.get("history", []) or []) + [entry])[-self.profile.records.history_depth:]
            changes: dict[str, Any] = {"history": history, "history_done": attempt.get("id")}
            if state is not UpdateState.SUCCESS:
                dtc = contract.Dtc.UPDATE_ROLLED_BACK if state is UpdateState.ROLLED_BACK else contract.Dtc.UPDATE_REJECTED
                dtcs = dict(self.nv.get("dtcs", {}) or {})
                dtcs[str(int(dtc))] = contract.DTC_STATUS_FAILED
                changes["dtcs"] = dtcs
                self.log(f"DTC: 0x{int(dtc):06X} {dtc.name} set")
            self.nv.update(**changes)

    def history_record(self) -> bytes:
        """DID UPDATE_HISTORY, in the profile's record layout."""
        entries = [contract.UpdateHistoryEntry(tuple(e["from"])[:3], tuple(e["to"])[:3],  # type: ignore[arg-type]
                                               UpdateState(e["result"]), Reason(e["reason"]), int(e["boot"]))
                   for e in (self.nv_get("history", []) or [])]
        return self.profile.encode_history(entries[-self.profile.records.history_depth:])

    def dtcs(self) -> dict[int, int]:
        """Stored DTCs: number -> status byte."""
        return {int(k): int(v) for k, v in (self.nv_get("dtcs", {}) or {}).items()}

    def clear_dtcs(self) -> None:
        self.nv_update(dtcs={})

    def nv_ram(self, key: str, default: Any = None) -> Any:
        """An NV value as the application keeps it in RAM: refreshed when the NV store is free, never waited
        for. The SOC task reads this, so a flash write or erase of the NV store never holds it up."""
        if self._nv_lock.acquire(blocking=False):
            try:
                self._nv_ram[key] = self.nv.get(key, default)
            finally:
                self._nv_lock.release()
        return self._nv_ram.get(key, default)

    def update_record(self, progress: int, *, from_ram: bool = False) -> contract.UpdateStatusRecord:
        upd = self.nv_ram("update", {}) if from_ram else self.nv_get("update", {})
        target = tuple(upd.get("target", [0, 0, 0]))[:3]
        state = UpdateState(int(upd.get("state", UpdateState.IDLE)))
        if state is not UpdateState.DOWNLOADING:
            progress = 100 if state in (UpdateState.DOWNLOADED, UpdateState.VERIFIED, UpdateState.SUCCESS) else 0
        return contract.UpdateStatusRecord(state, Reason(int(upd.get("reason", 0))), progress,
                                           (int(target[0]), int(target[1]), int(target[2])))

    def vehicle_group(self) -> str:
        """The vehicle group this board is provisioned for (DID FD0C)."""
        return str(self.nv_get("vehicle_group", self.sim.vehicle_group))

    def vin(self) -> str:
        """The vehicle identification number this board is provisioned with (DID F190); zeros until then."""
        return str(self.nv_get("vin", contract.VIN_UNPROVISIONED))

    def known_config_keys(self) -> set[str]:
        """Configuration keys the running firmware's schema knows."""
        schema = int(self.nv_get("config_schema", 1))
        return set(DEFAULT_CONFIG.get(schema, DEFAULT_CONFIG[1])) | set(self.nv_get("config", {}))

    def pause(self, seconds: float) -> None:
        """Time the board's code spends (ends with PowerLoss / CpuReset if the boot ends meanwhile)."""
        cpu = self._cpu
        if cpu is None:
            raise PowerLoss("board not running")
        cpu.sleep(seconds)

    def vehicle_window(self) -> tuple[bool, bool, str]:
        """(plugged in, idle, what the vehicle says) from the last VCU_VehicleState; none recent = not plugged in."""
        last = self._vehicle
        if last is None or time.monotonic() - last[1] > self.profile.vehicle_state.timeout_ms / 1000.0:
            return False, True, "no vehicle state on CAN"
        sig = last[0]
        plugged = bool(sig.get(contract.SIG_CHARGER_CONNECTED))
        speed = float(sig.get(contract.SIG_VEHICLE_SPEED, 0.0))
        drive_ready = bool(sig.get(contract.SIG_DRIVE_READY))
        idle = not drive_ready and speed <= contract.VEHICLE_MOVING_KMH
        return plugged, idle, (f"charger {'connected' if plugged else 'not connected'}, drive ready "
                               f"{int(drive_ready)}, {speed:.1f} km/h")

    @property
    def sa_delay_s(self) -> float:
        """SecurityAccess delay after the last failed attempt: the profile's, unless the bench's sim overrides it."""
        return self.sim.sa_lockout_s if self.sim.sa_lockout_s is not None else self.profile.security.delay_s

    def supply_voltage(self) -> float:
        return self._supply_volts

    def security_level(self, level: int) -> tuple[str, bytes] | None:
        """(algorithm, secret) of a SecurityAccess level this board is provisioned with; None if absent."""
        dut = self.cfg.dut
        for sec in (dut.security, dut.bench_security):
            if sec is not None and sec.level == level:
                return sec.algorithm or self.profile.security.algorithm, sec.resolve_secret()
        return None

    def request_reset_after_response(self) -> None:
        """ECUReset: answer first, then reset (the transport sends the response within a few ms)."""
        cpu = self._cpu
        if self.soc is not None:
            self.nv_update(soc=round(self.soc.estimator.soc, 3))  # an orderly reset loses no SOC
        if cpu is not None:
            timer = threading.Timer(0.05, cpu.reset, args=(ResetCause.SOFTWARE,))
            timer.daemon = True
            timer.start()

    def erase_secondary(self) -> None:
        """The application's erase of the inactive slot (see `flash_erase`)."""
        self.flash_erase(self.bootloader.erase_secondary)

    def flash_erase(self, erase: Callable[[], None]) -> None:
        """An erase the application runs while it keeps going. A build for a single-bank part (`stall_on_erase`)
        erases from the bank its code runs from: the SOC task cannot run until the erase ends. The defect
        soc_stalls_during_erase does the same on any build."""
        desc = self.descriptor
        stalls = (desc is not None and desc.timing.stall_on_erase) or self.defects.has("soc_stalls_during_erase")
        stall = self.cpu_stall.held() if stalls else contextlib.nullcontext()
        with stall:
            erase()

    # ------------------------------------------------------------------ power
    @property
    def powered(self) -> bool:
        return self._powered

    def supply_current(self, volts: float) -> float:
        """What the board draws at `volts` (the supply emulator's load callback)."""
        return self.sim.supply_current_a if volts >= self.sim.brownout_v else 0.0

    def supply_changed(self, volts: float) -> None:
        """Called by the supply emulator on every change of its output voltage."""
        with self._power_lock:
            self._supply_volts = volts
            if self._powered and volts < self.sim.brownout_v:
                self._powered = False
                self._min_volts_while_off = volts
                self._power_down()
            elif not self._powered and volts >= self.sim.brownout_v:
                cause = ResetCause.BROWN_OUT if self._min_volts_while_off > 0.5 else ResetCause.POWER_ON
                self._powered = True
                self._power_up(cause)
            elif not self._powered:
                self._min_volts_while_off = min(self._min_volts_while_off, volts)

    def _power_up(self, cause: ResetCause) -> None:
        self._t0 = time.monotonic()
        if self.sa_attempts or self.sa_lockout_until > self._t0:
            self.sa_lockout_until = self._t0 + self.sa_delay_s
        thread = threading.Thread(target=self._cpu_loop, args=(cause,), name="bms-cpu", daemon=True)
        self._cpu_thread = thread
        thread.start()

    def _power_down(self) -> None:
        cpu = self._cpu
        if cpu is not None:
            cpu.lose_power()
        thread = self._cpu_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def shutdown(self) -> None:
        """Stop the board for good (bench shutdown)."""
        with self._power_lock:
            if self._powered:
                self._powered = False
                self._power_down()

    def _flash_gate(self, op: FlashOp, duration_s: float) -> Cut | None:
        """The flash choke point's interrupter: ops take their time; power loss or reset tears them."""
        cpu = self._cpu
        if cpu is None or cpu.stopped:
            return Cut(torn=False, fraction=0.0)
        if duration_s <= 0:
            return None
        start = time.monotonic()
        if cpu.wait(duration_s):
            return Cut(torn=True, fraction=min(1.0, (time.monotonic() - start) / duration_s))
        return None

    # ------------------------------------------------------------------ boot loop
    def _cpu_loop(self, cause: ResetCause) -> None:
        while True:
            cpu = Cpu()
            self._cpu = cpu
            self.reset_cause = cause
            try:
                self._boot(cpu, cause)
            except CpuReset as reset:
                cpu.reset(reset.cause)
            except PowerLoss:
                pass
            except Exception as exc:  # a model bug must show, not kill the board silently
                self.log(f"SIM: internal error {type(exc).__name__}: {exc}")
                cpu.reset(ResetCause.FAULT)
            finally:
                cpu.reset(ResetCause.SOFTWARE)  # ends every wait of this boot (no-op if already stopped)
                self._teardown_boot()
            if cpu.power_lost or not self._powered:
                return
            cause = cpu.reset_cause or ResetCause.SOFTWARE

    def _teardown_boot(self) -> None:
        if self._transport is not None:
            self._transport.stop()
            self._transport = None
        if self.diag is not None:
            self.diag.close()
        for t in self._boot_threads:
            if t is not threading.current_thread():
                t.join(timeout=2.0)
        self._boot_threads.clear()
        self.diag = None
        self.soc = None

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except (PowerLoss, CpuReset):
                pass
            except Exception as exc:  # a model bug must show on the console, not end a task silently
                self.log(f"SIM: internal error in task {name}: {type(exc).__name__}: {exc}")
                cpu = self._cpu
                if cpu is not None:
                    cpu.reset(ResetCause.FAULT)
        t = threading.Thread(target=guarded, name=name, daemon=True)
        self._boot_threads.append(t)
        t.start()

    def _start_diag(self, cpu: Cpu, recovery: bool) -> None:
        diag = self.parts.diag_server(self, recovery=recovery)
        self.diag = diag
        self._transport = UdsServerTransport(self.bus, self.notifier, rxid=self.cfg.dut.tx_id, txid=self.cfg.dut.rx_id,
                                             fd=self.cfg.can.fd, handler=diag.handle, profile=self.profile,
                                             activity=diag.touch)
        self._transport.start()
        self._spawn("uds-s3", lambda: diag.run_s3_timer(cpu.wait))  # S3 runs out with no request arriving

    def _boot(self, cpu: Cpu, cause: ResetCause) -> None:
        self.log(self.profile.console.line("reset", cause=cause.name))
        with self._nv_lock:
            result = self.bootloader.boot(cause)
        self.running_image = result.image
        with self._nv_lock:
            self.nv.update(boot_count=int(self.nv.get("boot_count", 0)) + 1)
            self.record_outcome()  # the bootloader may have ended an attempt (revert, rejection, permanent install)
        if result.mode is BootMode.RECOVERY:
            self.descriptor = None
            self.log("RECOVERY: minimal UDS server running")
            self._start_diag(cpu, recovery=True)
            cpu.sleep(None)
            return
        assert result.image is not None
        try:
            desc = decode_payload(result.image.payload)
        except PayloadError as exc:
            self.log(f"APP: HardFault: cannot decode firmware payload ({exc})")
            raise CpuReset(ResetCause.FAULT) from None
        self.descriptor = desc
        self.log(self.profile.console.line("app_starting", version=desc.version, build=desc.build,
                                           trial=" (trial boot)" if result.trial else ""))
        if result.trial and self.defects.has("bms_offline_too_long_during_install"):
            cpu.sleep(OFFLINE_DEFECT_S)  # rebuilds its models from scratch before it sends anything
        self._kick = time.monotonic()
        self._spawn("watchdog", lambda: self._watchdog(cpu))
        if desc.self_test == "crash":
            self.log("APP: HardFault at 0x0800_1f3c during init")
            raise CpuReset(ResetCause.FAULT)
        if desc.self_test == "hang":
            self.log("APP: init waiting for AFE ...")
            cpu.sleep(None)  # never kicks the watchdog again
        self._migrate_config(desc)
        config_packages.resolve_after_boot(self)
        if self.update_state() is UpdateState.DOWNLOADING:
            self.set_update(UpdateState.IDLE, Reason.DOWNLOAD_ABORTED)
        elif (not result.trial and self.update_state() in (UpdateState.INSTALLING, UpdateState.TESTING)
              and self.bootloader.is_confirmed()):
            # A permanent (or restore) install is confirmed by the swap itself; a TESTING status on a
            # confirmed image means power was lost between the confirmation and the status write.
            self.set_update(UpdateState.SUCCESS, Reason.NONE, target=result.image.version_tuple)
        # Diagnostics first: once the SOC core's frames are on the bus, UDS answers (bench contract).
        self._start_diag(cpu, recovery=False)
        self._start_soc(cpu, desc)
        self._spawn("soc-persist", lambda: self._persist_soc(cpu))
        if result.trial:
            self._self_test(cpu, desc)
        while True:
            self._kick = time.monotonic()
            cpu.sleep(0.1)

    def _persist_soc(self, cpu: Cpu, period_s: float = 2.0) -> None:
        """SOC survives resets and power cycles: a background task (not the SOC core, whose timing it would
        disturb) writes it to NV when it has moved, as BMS firmware does to bound the loss at a power cut."""
        last = self.nv_get("soc", None)
        while True:
            cpu.sleep(period_s)
            core = self.soc
            if core is not None and (last is None or abs(core.estimator.soc - float(last)) >= 0.01):
                last = round(core.estimator.soc, 3)
                self.nv_update(soc=last)

    def _watchdog(self, cpu: Cpu) -> None:
        """The independent watchdog: counts its own ticks since the last kick, so a host that runs this
        board's threads late (a loaded machine) cannot make it bite a firmware that kicks on time."""
        if self.defects.has("watchdog_never_fires"):
            return
        period = self.sim.watchdog_ms / 1000.0
        tick = min(0.05, period / 4)
        last_kick, unkicked = self._kick, 0.0
        while not cpu.wait(tick):
            if self._kick != last_kick:
                last_kick, unkicked = self._kick, 0.0
                continue
            unkicked += tick
            if unkicked > period:
                self.log("WDG: watchdog expired, resetting")
                cpu.reset(ResetCause.WATCHDOG)
                return

    def _migrate_config(self, desc: FirmwareDescriptor) -> None:
        with self._nv_lock:
            schema = int(self.nv.get("config_schema", 1))
            config = dict(self.nv.get("config", {})) or dict(DEFAULT_CONFIG[1])
            if desc.config_schema > schema:
                for version in range(schema + 1, desc.config_schema + 1):
                    for key, value in DEFAULT_CONFIG.get(version, {}).items():
                        config.setdefault(key, value)
                self.nv.update(config=config, config_schema=desc.config_schema)
                self.log(f"APP: configuration migrated to schema {desc.config_schema}")
            elif desc.config_schema < schema:
                # Firmware older than the stored configuration cannot read it (it knows no later schema):
                # it falls back to its factory defaults. A rollback never gets here, because the bootloader
                # restores the pre-update configuration first; the bench restore path does, and writes the
                # session's configuration afterwards.
                config = dict(DEFAULT_CONFIG.get(desc.config_schema, DEFAULT_CONFIG[1]))
                self.nv.update(config=config, config_schema=desc.config_schema)
                self.log(f"APP: configuration schema {schema} unknown to this firmware, "
                         f"factory defaults of schema {desc.config_schema} loaded")

    def _self_test(self, cpu: Cpu, desc: FirmwareDescriptor) -> None:
        self.set_update(UpdateState.TESTING, Reason.NONE, target=self.running_image.version_tuple if self.running_image else None)
        self.log(self.profile.console.line("selftest_running"))
        cpu.sleep(self.sim.selftest_ms / 1000.0)
        self._kick = time.monotonic()
        if desc.self_test == "fail":
            self.log(self.profile.console.line("selftest_failed", code=desc.selftest_code))
            self.set_update(UpdateState.TESTING, Reason.SELFTEST_FAILED)
            raise CpuReset(ResetCause.SOFTWARE)
        with self._nv_lock:
            self.bootloader.confirm()
        self.set_update(UpdateState.SUCCESS, Reason.NONE)
        self.log(self.profile.console.line("selftest_passed"))

    def _start_soc(self, cpu: Cpu, desc: FirmwareDescriptor) -> None:
        config = self.nv_get("config", DEFAULT_CONFIG[1])
        # The application loads its RAM copies at start-up (a blocking read, before the SOC task runs).
        self._nv_ram.update(update=self.nv_get("update", {}), boot_count=self.nv_get("boot_count", 0), config=config)
        stored = self.nv_get("soc", None)
        if stored is None or self.defects.has("soc_jumps_at_reset"):
            # No stored SOC (a new board), or the defective board that forgets it: estimate from the rested OCV.
            cells = self.battery.cell_voltages()
            stored = soc_from_ocv(sum(cells) / len(cells)) if cells else 50.0
            if self.defects.has("soc_jumps_at_reset"):
                stored = min(100.0, float(stored) + 8.0)  # an uncompensated OCV reading under load
        estimator = SocEstimator(capacity_ah=float(config.get("capacity_Ah", 50)),
                                 soc=float(stored), algorithm=desc.soc_algorithm)
        t = desc.timing
        mailbox: queue.Queue[can.Message] = queue.Queue(maxsize=TX_MAILBOX_DEPTH)
        self._spawn("can-tx", lambda: self._can_tx(cpu, mailbox))
        extra = tuple(desc.extra_messages)
        with self._nv_lock:
            seen = list(self.nv.get("features_seen", []) or [])
            if any(m not in seen for m in extra):
                self.nv.update(features_seen=sorted(set(seen) | set(extra)))
        if self.defects.has("new_message_never_sent"):
            extra = tuple(m for m in extra if m != contract.MSG_BALANCING)
        if self.defects.has("new_message_after_rollback"):
            # The defective board enables features from what NV says was once installed, not from the running build.
            extra = tuple(sorted(set(extra) | set(seen)))
        core = SocCore(transmit=lambda msg: self._post(mailbox, msg), db=self.db, pack=self.battery, estimator=estimator, sleep=cpu.sleep,
                       period_s=self.cfg.timing.soc_period_ms / 1000.0, counter=self.counter, cells=self.cells,
                       temperatures=self.temperature_sensors, slow_every=self.profile.soc_core.slow_every_cycles,
                       timing=TimingProfile(t.exec_ms, t.jitter_ms, t.overrun_every, t.overrun_ms),
                       extra_messages=extra, charge_limits=self._charge_limits,
                       update_status=self._update_status_signals, names=self.profile.can,
                       flash_stall=self.cpu_stall, trace=self.soc_trace, mute=self._soc_muted,
                       layout_changed=self.defects.has("existing_signal_layout_changed") and desc.config_schema >= 2)
        self.soc = core
        self._spawn("soc-core", core.run)

    def _soc_muted(self) -> bool:
        """Defect only: the SOC core's frames are not sent while an image downloads."""
        diag = self.diag
        return self.defects.has("soc_frames_dropped_while_downloading") and diag is not None and diag.downloading

    def _post(self, mailbox: "queue.Queue[can.Message]", msg: can.Message) -> None:
        """Hand a frame to the CAN controller; a full mailbox drops it (counted), as a real controller would."""
        try:
            mailbox.put_nowait(msg)
        except queue.Full:
            self.tx_dropped += 1

    def _can_tx(self, cpu: Cpu, mailbox: "queue.Queue[can.Message]") -> None:
        """The CAN controller: sends queued frames while the application runs on (a send may wait for the bus).

        Each frame is stamped with the end of its transmission on the controller's own timeline: when
        the firmware queued it, after the frames queued before it, plus its bus time - as the tester's
        interface would timestamp it. The host thread that forwards it may run later; that delay is the
        host's, not the board's, and must not show as SOC jitter (python-can delivers the stamp:
        hil/drivers/canbus.py `open_bus(..., sender_stamps=True)`).
        """
        can_cfg = self.cfg.can
        free = 0.0
        while not cpu.stopped:
            try:
                msg = mailbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if msg.is_fd and can_cfg.data_bitrate is not None:
                msg.bitrate_switch = True
            if msg.timestamp:
                duration = frame_time_s(len(msg.data), fd=msg.is_fd, bitrate=can_cfg.bitrate,
                                        data_bitrate=can_cfg.data_bitrate if msg.bitrate_switch else None)
                free = max(free, msg.timestamp) + duration
                msg.timestamp = free
            self.bus.send(msg)
            if msg.arbitration_id == self._soc_id and self._counter_dbc is not None:
                decoded: Any = self._soc_msg.decode(bytes(msg.data), decode_choices=False)
                self.soc_sent.append((time.time(), int(decoded[self._counter_dbc])))

    def _charge_limits(self) -> dict[str, float]:
        cfg = self.nv_ram("config", DEFAULT_CONFIG[1])
        temps = self.battery.temperatures()
        hot = max(temps) if temps else 25.0
        cold = min(temps) if temps else 25.0
        derate = 0.5 if hot > float(cfg.get("temp_max_C", 55)) - 10 else 1.0
        charge = float(cfg.get("max_charge_A", 100)) * derate
        if cold < float(cfg.get("cold_charge_below_C", 10)):
            # Cold cells plate lithium when charged hard: the active profile sets how hard.
            source = DEFAULT_CONFIG[1] if self.defects.has("cold_charge_limit_ignores_profile") else cfg
            charge = min(charge, float(source.get("cold_charge_A", charge)))
        if self.charge_inhibit or self.update_state() in (UpdateState.ACTIVATION_PENDING, UpdateState.INSTALLING,
                                                          UpdateState.TESTING):
            charge = 0.0  # no charging while an update installs; resumed once the new image confirms
        cells = self.profile.soc_core.cells
        return {contract.SIG_MAX_CHARGE_CURRENT: charge,
                contract.SIG_MAX_DISCHARGE_CURRENT: float(cfg.get("max_discharge_A", 200)) * derate,
                contract.SIG_MAX_CHARGE_VOLTAGE: cells * float(cfg.get("cell_ov_mV", 4200)) / 1000.0,
                contract.SIG_MIN_DISCHARGE_VOLTAGE: cells * float(cfg.get("cell_uv_mV", 2800)) / 1000.0}

    def _update_status_signals(self) -> dict[str, int]:
        rec = self.update_record(self.diag.progress if self.diag is not None else 0, from_ram=True)
        version = self.running_image.version_tuple if self.running_image is not None else (0, 0, 0)
        p = self.profile
        return {contract.SIG_UPDATE_STATE: p.encode(rec.state), contract.SIG_UPDATE_REASON: p.encode(rec.reason),
                contract.SIG_UPDATE_PROGRESS: rec.progress, contract.SIG_BOOT_MODE: p.encode(BootMode.APPLICATION),
                contract.SIG_BOOT_COUNT: int(self.nv_ram("boot_count", 0)) % 65536,
                contract.SIG_SW_MAJOR: version[0], contract.SIG_SW_MINOR: version[1]}
