"""The vehicle side of the bench on CAN: the state message a BMS reads to find its charging window.

A real vehicle's VCU sends `VCU_VehicleState` (charger connected, ignition, drive ready, speed); on
the bench the framework sends it, with python-can's periodic send task, so the same code drives a
virtual and a real board. `ChargerEmulation` plays the charger: it follows the BMS's
`BMS_ChargeLimits.MaxChargeCurrent` and programs the battery emulator's pack current accordingly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import can

from hil.bench import contract
from hil.errors import HilTimeout

#: A charger stops when the charge limits have been missing for this many of their periods
#: (the SOC period x the profile's soc_core.slow_every_cycles).
COMM_LOSS_PERIODS = 2.5


@dataclass(frozen=True)
class VehicleState:
    """What VCU_VehicleState says. The default is the charging window: plugged in, parked, ignition off."""

    charger_connected: bool = True
    ignition_on: bool = False
    drive_ready: bool = False
    speed_kmh: float = 0.0

    def signals(self) -> dict[str, float]:
        return {contract.SIG_CHARGER_CONNECTED: int(self.charger_connected), contract.SIG_IGNITION_ON: int(self.ignition_on),
                contract.SIG_DRIVE_READY: int(self.drive_ready), contract.SIG_VEHICLE_SPEED: self.speed_kmh}


class Vehicle:
    """Sends the vehicle state at the DUT profile's `vehicle_state.period_ms`; `set_state` changes what it
    says from the next frame on."""

    def __init__(self, can_channel: Any) -> None:
        self._can = can_channel
        # The board's name and signal names for the framework's VCU_VehicleState (DUT profile).
        self._names = can_channel.profile.can
        self.period_s = can_channel.profile.vehicle_state.period_ms / 1000.0
        self._spec = can_channel.db.get_message_by_name(self._names.dbc_message(contract.MSG_VEHICLE_STATE))
        self.state = VehicleState()
        self._lock = threading.Lock()
        self._task: Any = None

    def _message(self) -> can.Message:
        data = self._spec.encode(self._names.to_dbc_signals(contract.MSG_VEHICLE_STATE, self.state.signals()))
        return can.Message(arbitration_id=self._spec.frame_id, data=data, is_extended_id=self._spec.is_extended_frame,
                           is_fd=len(data) > 8)

    def start(self) -> None:
        """Start the periodic frame (idempotent)."""
        with self._lock:
            if self._task is None:
                self._task = self._can.bus.send_periodic(self._message(), self.period_s)

    def announce(self) -> None:
        """One frame of the current state now, besides the periodic ones (nothing while stopped): a board that
        booted less than a period ago knows the vehicle's state before an install is asked of it."""
        with self._lock:
            if self._task is not None:
                self._can.bus.send(self._message())

    def set_state(self, state: VehicleState) -> None:
        """Change the state; the next periodic frame carries it."""
        with self._lock:
            self.state = state
            if self._task is not None:
                self._task.modify_data(self._message())

    def plug_in(self) -> None:
        self.set_state(replace(self.state, charger_connected=True))

    def unplug(self) -> None:
        self.set_state(replace(self.state, charger_connected=False))

    def drive(self, speed_kmh: float = 30.0) -> None:
        """Ignition on, drive ready, moving."""
        self.set_state(replace(self.state, ignition_on=True, drive_ready=True, speed_kmh=speed_kmh))

    def park(self) -> None:
        """Stopped, drive not ready, ignition off."""
        self.set_state(replace(self.state, ignition_on=False, drive_ready=False, speed_kmh=0.0))

    def safe_state(self) -> None:
        """The known state between tests: the charging window (plugged in, parked)."""
        self.set_state(VehicleState())

    def close(self) -> None:
        with self._lock:
            if self._task is not None:
                self._task.stop()
                self._task = None


class ChargerChange(NamedTuple):
    """One change of the current the charger delivers, and why it made it."""

    time: float  # time.monotonic() when the battery emulator was programmed
    amps: float
    #: "limit" (a BMS_ChargeLimits frame), "comm_loss" (no limit frame for `comm_loss_s`: the charger's own
    #: timeout), "unplugged" (the vehicle says no charger is connected) or "stop" (the bench stopped it).
    cause: str
    #: The receive time (Frame.received) of the limit frame it followed; None for the other causes.
    limit_frame: float | None = None


class ChargerEmulation:
    """The charger: delivers `request_a` into the pack, never more than the BMS's MaxChargeCurrent.

    Follows every BMS_ChargeLimits frame (sent once a second, and at once when the limit changes) and
    programs the battery emulator's pack current, as a charger obeying the BMS would. Stops (0 A) when
    the vehicle is unplugged, when no limit frame came for `comm_loss_s` (its own timeout), or on
    `stop()`. Every change is logged with its cause (`log`), so a case can tell a charger that obeyed
    the BMS from one that gave up waiting for it. Use as a context manager.
    """

    def __init__(self, can_channel: Any, load: Any, vehicle: Vehicle, request_a: float,
                 limits_period_s: float = 1.0) -> None:
        self._can = can_channel
        #: How long the charger waits without a charge-limit frame before it stops (several of their periods).
        self.comm_loss_s = COMM_LOSS_PERIODS * limits_period_s
        self._load = load
        self._vehicle = vehicle
        self.request_a = request_a
        self.delivered_a = 0.0
        self.log: list[ChargerChange] = []  # every change the charger made, with its cause
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._delivering = threading.Event()
        self._thread = threading.Thread(target=self._run, name="charger", daemon=True)

    def __enter__(self) -> "ChargerEmulation":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._set(0.0, "stop")

    def wait_delivering(self, timeout: float) -> ChargerChange:
        """The change with which the charger started delivering current; HilTimeout with its log otherwise."""
        if not self._delivering.wait(timeout):
            raise HilTimeout(f"the charger delivered no current within {timeout:g} s (it follows BMS_ChargeLimits)",
                             "\n".join(map(str, self.log + [*(f"error: {e}" for e in self.errors)])) or "(no change)")
        return next(c for c in self.log if c.amps > 0)

    def stops(self, since: float) -> list[ChargerChange]:
        """The changes to 0 A made at/after `since` (time.monotonic())."""
        return [c for c in self.log if c.time >= since and c.amps == 0.0]

    def _set(self, amps: float, cause: str, limit_frame: float | None = None) -> None:
        if amps != self.delivered_a:
            self._load.set_pack_current(amps)
            self.delivered_a = amps
            self.log.append(ChargerChange(time.monotonic(), amps, cause, limit_frame))
            if amps > 0:
                self._delivering.set()

    def _run(self) -> None:
        since = time.monotonic()
        last_limit_at = since
        limit = 0.0
        limit_frame: float | None = None
        cause = "limit"
        while not self._stop.is_set():
            try:
                frame = self._can.wait_for(contract.MSG_CHARGE_LIMITS, timeout=0.2, since=since)
                since = frame.received + 1e-6
                last_limit_at = time.monotonic()
                limit = float(frame.signals[contract.SIG_MAX_CHARGE_CURRENT])
                limit_frame, cause = frame.received, "limit"
            except HilTimeout:
                if time.monotonic() - last_limit_at > self.comm_loss_s:
                    # The BMS is silent: a charger without a limit delivers nothing (its own timeout).
                    limit, limit_frame, cause = 0.0, None, "comm_loss"
            plugged = self._vehicle.state.charger_connected
            target = min(self.request_a, limit) if plugged else 0.0
            try:
                self._set(target, cause if plugged else "unplugged", limit_frame if plugged else None)
            except Exception as exc:  # recorded for the test's verdict, never lost in a thread
                self.errors.append(f"{type(exc).__name__}: {exc}")
