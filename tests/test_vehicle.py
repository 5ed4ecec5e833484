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
