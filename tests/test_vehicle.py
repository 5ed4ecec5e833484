"""The bench's vehicle side: VCU_VehicleState sent periodically, changes carried by the next frame."""

from __future__ import annotations

import uuid
from pathlib import Path

import can

from hil.bench import contract
from hil.bench.config import CanConfig
from hil.drivers.can import CanChannel
from hil.drivers.vehicle import Vehicle

ROOT = Path(__file__).resolve().parents[1]


def test_vehicle_state_is_sent_periodically_and_follows_changes():
    channel_name = f"vehicle-{uuid.uuid4().hex[:8]}"
    cfg = CanConfig(interface="virtual", channel=channel_name, dbc=ROOT / "benches/dbc/bms.dbc")
    buses = [can.Bus(interface="virtual", channel=channel_name) for _ in range(2)]
    tester = CanChannel(cfg, bus=buses[0])
    board_side = CanChannel(cfg, bus=buses[1])
    vehicle = Vehicle(tester)
    try:
        vehicle.start()
        first = board_side.wait_for(contract.MSG_VEHICLE_STATE, timeout=1.0)
        assert (int(first.signals["ChargerConnected"]), int(first.signals["DriveReady"])) == (1, 0)
        vehicle.drive(speed_kmh=42.0)
        moving = board_side.wait_for(contract.MSG_VEHICLE_STATE, timeout=1.0,
                                     predicate=lambda s: int(s["DriveReady"]) == 1)
        assert abs(float(moving.signals["VehicleSpeed"]) - 42.0) < 0.01
        vehicle.safe_state()
        board_side.wait_for(contract.MSG_VEHICLE_STATE, timeout=1.0,
                            predicate=lambda s: int(s["DriveReady"]) == 0 and int(s["ChargerConnected"]) == 1)
        a = board_side.wait_for(contract.MSG_VEHICLE_STATE, timeout=1.0)
        b = board_side.wait_for(contract.MSG_VEHICLE_STATE, timeout=1.0, since=a.received + 1e-6)
        assert 0.05 < b.timestamp - a.timestamp < 0.3, "VCU_VehicleState should come every 100 ms"
    finally:
        vehicle.close()
        tester.close()
        board_side.close()
        for bus in buses:
            bus.shutdown()


class _Emulator:
    """The battery emulator as the charger programs it: the currents set, with their times."""

    def __init__(self) -> None:
        self.currents: list[float] = []

    def set_pack_current(self, amps: float) -> None:
        self.currents.append(amps)


def test_the_charger_logs_why_it_stopped_a_limit_frame_or_its_own_timeout():
    import time

    from hil.drivers.vehicle import ChargerEmulation

    channel_name = f"charger-{uuid.uuid4().hex[:8]}"
    cfg = CanConfig(interface="virtual", channel=channel_name, dbc=ROOT / "benches/dbc/bms.dbc")
    buses = [can.Bus(interface="virtual", channel=channel_name) for _ in range(2)]
    tester = CanChannel(cfg, bus=buses[0])
    bms = CanChannel(cfg, bus=buses[1])
    vehicle = Vehicle(tester)
    limits = {"MaxDischargeCurrent": 200.0, "MaxChargeVoltage": 50.4, "MinDischargeVoltage": 33.6}
    emulator = _Emulator()
    try:
        # Limit frames every 0.2 s: the charger's own timeout is 2.5 of their periods, 0.5 s.
        with ChargerEmulation(tester, emulator, vehicle, 30.0, limits_period_s=0.2) as charger:
            assert charger.comm_loss_s == 0.5
            bms.send(contract.MSG_CHARGE_LIMITS, {"MaxChargeCurrent": 100.0, **limits})
            started = charger.wait_delivering(timeout=2.0)
            assert started.amps == 30.0 and started.cause == "limit"
            before = time.monotonic()
            bms.send(contract.MSG_CHARGE_LIMITS, {"MaxChargeCurrent": 0.0, **limits})
            stop = _wait_stop(charger, before)
            assert stop.cause == "limit" and stop.limit_frame is not None and stop.limit_frame >= before, charger.log
            bms.send(contract.MSG_CHARGE_LIMITS, {"MaxChargeCurrent": 100.0, **limits})
            before = time.monotonic()
            stop = _wait_stop(charger, before)  # the BMS falls silent: the charger stops on its own timeout
            assert stop.cause == "comm_loss" and stop.limit_frame is None, charger.log
            assert stop.time - before >= 0.4, charger.log
    finally:
        vehicle.close()
        tester.close()
        bms.close()
        for bus in buses:
            bus.shutdown()
    assert emulator.currents[:2] == [30.0, 0.0], emulator.currents


def _wait_stop(charger, since: float, timeout: float = 3.0):
    import time

    deadline = time.monotonic() + timeout
    while not charger.stops(since):
        assert time.monotonic() < deadline, f"the charger did not stop: {charger.log}"
        time.sleep(0.02)  # the charger runs in its own thread; its log is the evidence
    return charger.stops(since)[0]
