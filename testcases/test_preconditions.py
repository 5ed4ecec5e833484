"""Activation is refused while the pack carries current or the supply is low, and nothing is erased.

Fault-matrix row 14 (R156 7.2.2.1.2 enough power, 7.2.2.1.3 safe state, 7.2.2.5 preconditions).
"""

from __future__ import annotations

import pytest

from hil.dut.checks import Expected, check_final_state
from hil.bench.contract import Nrc, Reason, UpdateState
from hil.errors import UdsError

pytestmark = [pytest.mark.destructive]


@pytest.mark.fault(row=14, expect="NRC 0x22 while current flows; nothing erased; accepted once the pack rests")
@pytest.mark.requirement("R156-safe-state", "R156-preconditions", "ISO24089-preconditions")
def test_activation_refused_while_pack_current_flows(dut, flasher, load, images, bench_config, measure):
    baseline = dut.version()
    config = dut.config()
    staged = flasher.stage(images["update"])
    assert staged.accepted
    load.set_pack_current(-40.0)  # driving: 40 A discharge
    with pytest.raises(UdsError) as refused:
        flasher.activate()
    assert refused.value.nrc == Nrc.CONDITIONS_NOT_CORRECT, str(refused.value)
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.VERIFIED, Reason.CURRENT_FLOWING, config), measure)
    # Nothing was erased: the staged image is still there and activates once the pack rests.
    load.set_pack_current(0.0)
    flasher.unlock()
    flasher.activate()
    outcome = flasher.wait_outcome()
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, Reason.NONE, config), measure)


@pytest.mark.fault(row=14, expect="NRC 0x93 while the supply is low; nothing erased")
@pytest.mark.requirement("R156-power", "R156-preconditions", "ISO24089-preconditions")
def test_activation_refused_while_supply_is_low(dut, flasher, psu, images, bench_config, measure):
    baseline = dut.version()
    config = dut.config()
    staged = flasher.stage(images["update"])
    assert staged.accepted
    psu.set_voltage(bench_config.psu.low_voltage)
    try:
        with pytest.raises(UdsError) as refused:
            flasher.activate()
    finally:
        psu.set_voltage(bench_config.psu.nominal_voltage)
    assert refused.value.nrc == Nrc.VOLTAGE_TOO_LOW, str(refused.value)
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.VERIFIED, Reason.SUPPLY_LOW, config), measure)
