"""The active profile changes what the BMS does: its cold-charge current limit on CAN, measured.

Fault-matrix row 20. The battery emulator holds the cells cold; the case reads the charge-limit frame
from CAN after each of a vehicle group's packages (the bench file's `config_packages`) and after a
rolled-back firmware update (the configuration comes back from its backup, so the limit must too).
The board samples its temperatures and applies a package at its own pace: every value is read once
it has settled, and the time it took is measured against the DUT profile's `settling` times
(hil/dut/settle.py) - never the first frame after the change.
"""

from __future__ import annotations

import time

import pytest

from hil.bench import contract
from hil.bench.contract import UpdateState
from hil.bench.frames import temperature_layout
from hil.drivers.load import TEMPERATURE
from hil.dut.settle import settle, settle_signal
from hil.timing.measure import Measurement

pytestmark = [pytest.mark.destructive]

COLD_C = 2.0  # below every profile's cold_charge_below_C
WARM_C = 25.0
#: Resolution of the charge current limit on CAN (0.1 A) plus rounding.
TOLERANCE_A = 0.1
#: The temperature message carries whole degrees.
TEMPERATURE_TOLERANCE_C = 1.0


def _hold_cells_at(celsius: float, can, load, measure, settling, label: str) -> None:
    """Set the emulator's cell temperatures, then wait until the board reports them for every sensor of the pack
    (every group of the temperature message, as the DUT profile and its DBC lay it out: its temperature scan has
    seen them), measured against the profile's settling time."""
    layout = temperature_layout(can.db, can.profile)
    since = time.monotonic()
    load.set_temperature(celsius)

    def reported(signals: dict) -> bool:
        temps = layout.values(signals)
        return bool(temps) and all(abs(v - celsius) <= TEMPERATURE_TOLERANCE_C for v in temps.values())

    cells = settle(can, contract.MSG_TEMPERATURES, reported, name=f"cell_temperature_{celsius:g}C_{label}",
                   what=f"{contract.MSG_TEMPERATURES} reporting {celsius:g} degC", since=since,
                   limit_s=settling.temperature_s, hold=len(layout.groups()))
    measure(cells.measurement)
    assert cells.settled, cells.describe()


def _measure_limit(can, measure, name: str, expected: float, since: float, limit_s: float) -> float:
    """The charge current limit once it has settled after the input change at `since` (never the first frame
    after it): its settling time and its value, each a measurement with its limits."""
    signal = contract.SIG_MAX_CHARGE_CURRENT
    limit = settle_signal(can, contract.MSG_CHARGE_LIMITS, signal, expected, tolerance=TOLERANCE_A,
                          name=name, since=since, limit_s=limit_s)
    measure(limit.measurement)
    value = limit.signal(signal)
    measure(Measurement(name, value, "A", expected - TOLERANCE_A, expected + TOLERANCE_A))
    assert abs(value - expected) <= TOLERANCE_A, \
        f"{name}: charge current limit on CAN = {value} A, profile says {expected} A; {limit.describe()}"
    return value


def _cold_limit(config_packages, name: str) -> float:
    return float(config_packages.values(name)["cold_charge_A"])


@pytest.mark.fault(row=20, expect="cold-charge limit on CAN follows each of a group's packages in turn")
@pytest.mark.requirement("BMS-profile-behaviour", "BMS-config-profiles")
def test_cold_charge_limit_follows_the_profile(dut, can, load, config_packages, dut_profile, measure):
    load.require(TEMPERATURE)
    settling = dut_profile.settling
    for group in config_packages.groups:
        sequence = config_packages.sequence(group)
        limits = {_cold_limit(config_packages, n) for n in sequence}
        if len(sequence) > 1:
            assert len(limits) > 1, (f"the packages of group {group} ({', '.join(sequence)}) all set the same "
                                     "cold_charge_A: the case could not tell whether the limit follows the profile")
        config_packages.reset_profile_version(dut)
        dut.provision_vehicle_group(group)
        _hold_cells_at(COLD_C, can, load, measure, settling, group)
        for name in sequence:
            since = time.monotonic()
            assert config_packages.apply(name).applied
            _measure_limit(can, measure, f"cold_charge_limit_{name}", _cold_limit(config_packages, name), since,
                           settling.configuration_s)
        # Warm cells: the last package's normal charge limit applies instead, once the board's temperature scan
        # has seen them.
        since = time.monotonic()
        load.set_temperature(WARM_C)
        _measure_limit(can, measure, f"warm_charge_limit_{sequence[-1]}",
                       float(config_packages.values(sequence[-1])["max_charge_A"]), since, settling.temperature_s)


@pytest.mark.fault(row=20, expect="after a rolled-back update the profile's limit is back on CAN")
@pytest.mark.requirement("BMS-profile-behaviour", "BMS-config-preserved", "R156-recovery")
def test_cold_charge_limit_survives_a_rollback(dut, can, load, config_packages, flasher, images, dut_profile, measure):
    load.require(TEMPERATURE)
    settling = dut_profile.settling
    group = config_packages.groups[0]
    name = config_packages.sequence(group)[0]
    dut.provision_vehicle_group(group)
    _hold_cells_at(COLD_C, can, load, measure, settling, group)
    since = time.monotonic()
    assert config_packages.apply(name).applied
    expected = _cold_limit(config_packages, name)
    _measure_limit(can, measure, "cold_charge_limit_before_update", expected, since, settling.configuration_s)
    outcome = flasher.update(images["selftest_fail"])
    assert outcome.state is UpdateState.ROLLED_BACK, outcome.states_seen
    # The revert restored the configuration backup: the board applies it from its first cycles on.
    _measure_limit(can, measure, "cold_charge_limit_after_rollback", expected, time.monotonic(), settling.configuration_s)
    assert dut.profile_status()["profile"] == name
