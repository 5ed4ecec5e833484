"""The active profile changes what the BMS does: its cold-charge current limit on CAN, measured.

Fault-matrix row 20. The battery emulator holds the cells cold; the case reads BMS_ChargeLimits
from CAN after each profile and after a rolled-back firmware update (the configuration comes back
from its backup, so the limit must too).
"""

from __future__ import annotations

import time

import pytest

from hil.bench import contract
from hil.bench.contract import UpdateState
from hil.timing.measure import Measurement

pytestmark = [pytest.mark.destructive]

COLD_C = 2.0  # below every profile's cold_charge_below_C
#: Resolution of MaxChargeCurrent on CAN (0.1 A) plus rounding.
TOLERANCE_A = 0.1


def _charge_limit(can, since: float) -> float:
    """MaxChargeCurrent of the first BMS_ChargeLimits frame sent after `since` (sent once a second)."""
    frame = can.wait_for(contract.MSG_CHARGE_LIMITS, timeout=3.0, since=since)
    return float(frame.signals["MaxChargeCurrent"])


def _measure_limit(can, measure, name: str, expected: float) -> float:
    value = _charge_limit(can, time.monotonic())
    measure(Measurement(name, value, "A", expected - TOLERANCE_A, expected + TOLERANCE_A))
    assert abs(value - expected) <= TOLERANCE_A, f"{name}: BMS_ChargeLimits.MaxChargeCurrent = {value} A, profile says {expected} A"
    return value


@pytest.mark.fault(row=20, expect="cold-charge limit on CAN follows the active profile; winter stricter than summer")
@pytest.mark.requirement("BMS-profile-behaviour", "BMS-config-profiles")
@pytest.mark.parametrize("group", ["north", "south"])
def test_cold_charge_limit_follows_the_profile(group, dut, can, load, config_packages, measure):
    dut.provision_vehicle_group(group)
    load.set_temperature(COLD_C)
    limits = {}
    for season in ("winter", "summer"):
        name = f"{season}-{group}"
        assert config_packages.apply(name).applied
        limits[season] = _measure_limit(can, measure, f"cold_charge_limit_{name}", float(config_packages.values(name)["cold_charge_A"]))
    measure(Measurement(f"cold_charge_limit_summer_minus_winter_{group}", limits["summer"] - limits["winter"], "A", 1.0, None))
    assert limits["winter"] < limits["summer"], f"winter must be stricter than summer: {limits}"
    # Warm cells: the profile's normal charge limit applies instead.
    load.set_temperature(25.0)
    _measure_limit(can, measure, f"warm_charge_limit_summer-{group}", float(config_packages.values(f"summer-{group}")["max_charge_A"]))


@pytest.mark.fault(row=20, expect="after a rolled-back update the profile's limit is back on CAN")
@pytest.mark.requirement("BMS-profile-behaviour", "BMS-config-preserved", "R156-recovery")
def test_cold_charge_limit_survives_a_rollback(dut, can, load, config_packages, flasher, images, measure):
    dut.provision_vehicle_group("north")
    load.set_temperature(COLD_C)
    assert config_packages.apply("winter-north").applied
    expected = float(config_packages.values("winter-north")["cold_charge_A"])
    _measure_limit(can, measure, "cold_charge_limit_before_update", expected)
    outcome = flasher.update(images["selftest_fail"])
    assert outcome.state is UpdateState.ROLLED_BACK, outcome.states_seen
    _measure_limit(can, measure, "cold_charge_limit_after_rollback", expected)
    assert dut.profile_status()["profile"] == "winter-north"
