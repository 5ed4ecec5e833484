"""The active profile changes what the BMS does: its cold-charge current limit on CAN, measured.

Fault-matrix row 20. The battery emulator holds the cells cold; the case reads the charge-limit frame
from CAN after each of a vehicle group's packages (the bench file's `config_packages`) and after a
rolled-back firmware update (the configuration comes back from its backup, so the limit must too).
"""

from __future__ import annotations

import time

import pytest

from hil.bench import contract
from hil.bench.contract import UpdateState
from hil.drivers.load import TEMPERATURE
from hil.timing.measure import Measurement

pytestmark = [pytest.mark.destructive]

COLD_C = 2.0  # below every profile's cold_charge_below_C
WARM_C = 25.0
#: Resolution of the charge current limit on CAN (0.1 A) plus rounding.
TOLERANCE_A = 0.1


def _charge_limit(can, since: float, bench_config) -> float:
    """The charge current limit of the first charge-limit frame sent after `since` (every `slow_every_cycles`)."""
    period_s = bench_config.timing.soc_period_ms / 1000.0 * bench_config.profile.soc_core.slow_every_cycles
    frame = can.wait_for(contract.MSG_CHARGE_LIMITS, timeout=max(3.0, 3 * period_s), since=since)
    return float(frame.signals[contract.SIG_MAX_CHARGE_CURRENT])


def _measure_limit(can, measure, bench_config, name: str, expected: float) -> float:
    value = _charge_limit(can, time.monotonic(), bench_config)
    measure(Measurement(name, value, "A", expected - TOLERANCE_A, expected + TOLERANCE_A))
    assert abs(value - expected) <= TOLERANCE_A, f"{name}: charge current limit on CAN = {value} A, profile says {expected} A"
    return value


def _cold_limit(config_packages, name: str) -> float:
    return float(config_packages.values(name)["cold_charge_A"])


@pytest.mark.fault(row=20, expect="cold-charge limit on CAN follows each of a group's packages in turn")
@pytest.mark.requirement("BMS-profile-behaviour", "BMS-config-profiles")
def test_cold_charge_limit_follows_the_profile(dut, can, load, config_packages, bench_config, measure):
    load.require(TEMPERATURE)
    for group in config_packages.groups:
        sequence = config_packages.sequence(group)
        limits = {_cold_limit(config_packages, n) for n in sequence}
        if len(sequence) > 1:
            assert len(limits) > 1, (f"the packages of group {group} ({', '.join(sequence)}) all set the same "
                                     "cold_charge_A: the case could not tell whether the limit follows the profile")
        config_packages.reset_profile_version(dut)
        dut.provision_vehicle_group(group)
        load.set_temperature(COLD_C)
        for name in sequence:
            assert config_packages.apply(name).applied
            _measure_limit(can, measure, bench_config, f"cold_charge_limit_{name}", _cold_limit(config_packages, name))
        # Warm cells: the last package's normal charge limit applies instead.
        load.set_temperature(WARM_C)
        _measure_limit(can, measure, bench_config, f"warm_charge_limit_{sequence[-1]}",
                       float(config_packages.values(sequence[-1])["max_charge_A"]))


@pytest.mark.fault(row=20, expect="after a rolled-back update the profile's limit is back on CAN")
@pytest.mark.requirement("BMS-profile-behaviour", "BMS-config-preserved", "R156-recovery")
def test_cold_charge_limit_survives_a_rollback(dut, can, load, config_packages, flasher, images, bench_config, measure):
    load.require(TEMPERATURE)
    group = config_packages.groups[0]
    name = config_packages.sequence(group)[0]
    dut.provision_vehicle_group(group)
    load.set_temperature(COLD_C)
    assert config_packages.apply(name).applied
    expected = _cold_limit(config_packages, name)
    _measure_limit(can, measure, bench_config, "cold_charge_limit_before_update", expected)
    outcome = flasher.update(images["selftest_fail"])
    assert outcome.state is UpdateState.ROLLED_BACK, outcome.states_seen
    _measure_limit(can, measure, bench_config, "cold_charge_limit_after_rollback", expected)
    assert dut.profile_status()["profile"] == name
