"""The active profile changes what the BMS does: its cold-charge current limit on CAN, measured.

Fault-matrix row 20. The battery emulator holds the cells cold; the case reads BMS_ChargeLimits
from CAN after each profile and after a rolled-back firmware update (the configuration comes back
from its backup, so the limit must too). The board samples its temperatures and applies a profile at
its own pace: every value is read once it has settled, and the time it took is measured against the
DUT profile's `settling` times (hil/dut/settle.py) - never the first frame after the change.
"""

from __future__ import annotations

import time

import pytest

from hil.bench import contract
from hil.bench.contract import UpdateState
from hil.dut.settle import settle, settle_signal
from hil.timing.measure import Measurement

pytestmark = [pytest.mark.destructive]

COLD_C = 2.0  # below every profile's cold_charge_below_C
WARM_C = 25.0
#: Resolution of MaxChargeCurrent on CAN (0.1 A) plus rounding.
TOLERANCE_A = 0.1
#: BMS_Temperatures carries whole degrees.
TEMPERATURE_TOLERANCE_C = 1.0


def _hold_cells_at(celsius: float, can, load, measure, settling) -> None:
    """Set the emulator's cell temperatures, then wait until the board reports them in every BMS_Temperatures
    group (its temperature scan has seen them), measured against the profile's settling time."""
    since = time.monotonic()
    load.set_temperature(celsius)

    def reported(signals: dict) -> bool:
        temps = [v for k, v in signals.items() if k.startswith("Temp") and k != "TempGroup"]
        return bool(temps) and all(abs(float(v) - celsius) <= TEMPERATURE_TOLERANCE_C for v in temps)

    cells = settle(can, contract.MSG_TEMPERATURES, reported, name=f"cell_temperature_{celsius:g}C",
                   what=f"{contract.MSG_TEMPERATURES} reporting {celsius:g} degC", since=since,
                   limit_s=settling.temperature_s, hold=contract.N_TEMPS // contract.TEMPS_PER_FRAME)
    measure(cells.measurement)
    assert cells.settled, cells.describe()


def _measure_limit(can, measure, name: str, expected: float, since: float, limit_s: float) -> float:
    """MaxChargeCurrent once it has settled after the input change at `since` (never the first frame after it):
    its settling time and its value, each a measurement with its limits."""
    limit = settle_signal(can, contract.MSG_CHARGE_LIMITS, "MaxChargeCurrent", expected, tolerance=TOLERANCE_A,
                          name=name, since=since, limit_s=limit_s)
    measure(limit.measurement)
    value = limit.signal("MaxChargeCurrent")
    measure(Measurement(name, value, "A", expected - TOLERANCE_A, expected + TOLERANCE_A))
    assert abs(value - expected) <= TOLERANCE_A, \
        f"{name}: BMS_ChargeLimits.MaxChargeCurrent = {value} A, profile says {expected} A; {limit.describe()}"
    return value


@pytest.mark.fault(row=20, expect="cold-charge limit on CAN follows the active profile; winter stricter than summer")
@pytest.mark.requirement("BMS-profile-behaviour", "BMS-config-profiles")
@pytest.mark.parametrize("group", ["north", "south"])
def test_cold_charge_limit_follows_the_profile(group, dut, can, load, config_packages, dut_profile, measure):
    settling = dut_profile.settling
    dut.provision_vehicle_group(group)
    _hold_cells_at(COLD_C, can, load, measure, settling)
    limits = {}
    for season in ("winter", "summer"):
        name = f"{season}-{group}"
        since = time.monotonic()
        assert config_packages.apply(name).applied
        limits[season] = _measure_limit(can, measure, f"cold_charge_limit_{name}",
                                        float(config_packages.values(name)["cold_charge_A"]), since,
                                        settling.configuration_s)
    measure(Measurement(f"cold_charge_limit_summer_minus_winter_{group}", limits["summer"] - limits["winter"], "A", 1.0, None))
    assert limits["winter"] < limits["summer"], f"winter must be stricter than summer: {limits}"
    # Warm cells: the profile's normal charge limit applies instead, once the board's temperature scan has seen them.
    since = time.monotonic()
    load.set_temperature(WARM_C)
    _measure_limit(can, measure, f"warm_charge_limit_summer-{group}",
                   float(config_packages.values(f"summer-{group}")["max_charge_A"]), since, settling.temperature_s)


@pytest.mark.fault(row=20, expect="after a rolled-back update the profile's limit is back on CAN")
@pytest.mark.requirement("BMS-profile-behaviour", "BMS-config-preserved", "R156-recovery")
def test_cold_charge_limit_survives_a_rollback(dut, can, load, config_packages, flasher, images, dut_profile, measure):
    settling = dut_profile.settling
    dut.provision_vehicle_group("north")
    _hold_cells_at(COLD_C, can, load, measure, settling)
    since = time.monotonic()
    assert config_packages.apply("winter-north").applied
    expected = float(config_packages.values("winter-north")["cold_charge_A"])
    _measure_limit(can, measure, "cold_charge_limit_before_update", expected, since, settling.configuration_s)
    outcome = flasher.update(images["selftest_fail"])
    assert outcome.state is UpdateState.ROLLED_BACK, outcome.states_seen
    # The revert restored the configuration backup: the board applies it from its first cycles on.
    _measure_limit(can, measure, "cold_charge_limit_after_rollback", expected, time.monotonic(), settling.configuration_s)
    assert dut.profile_status()["profile"] == "winter-north"
