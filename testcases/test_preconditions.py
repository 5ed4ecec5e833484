"""Activation is refused while the pack carries current or the supply is low, and nothing is erased.

Fault-matrix row 14 (R156 7.2.2.1.2 enough power, 7.2.2.1.3 safe state, 7.2.2.5 preconditions).
The board measures its pack current and supply at its own pace: a case asks for the activation
only once the board has seen the new value (the DUT profile's `settling` times).
"""

from __future__ import annotations

import time

import pytest

from hil.bench import contract
from hil.dut.checks import Expected, check_final_state
from hil.bench.contract import Nrc, Reason, UpdateState
from hil.dut.settle import settle_signal
from hil.errors import UdsError

pytestmark = [pytest.mark.destructive]

#: The pack current's resolution on CAN plus the board's sensing.
CURRENT_TOLERANCE_A = 0.5


def _pack_current(amps: float, label: str, can, load, dut_profile, measure) -> None:
    """Set the emulator's pack current and wait until the board reports it (its SOC frame), measured."""
    since = time.monotonic()
    load.set_pack_current(amps)
    seen = settle_signal(can, contract.MSG_SOC_CORE, contract.SIG_PACK_CURRENT, amps, tolerance=CURRENT_TOLERANCE_A,
                         name=f"pack_current_{label}", since=since, limit_s=dut_profile.settling.pack_s)
    measure(seen.measurement)
    assert seen.settled, seen.describe()


@pytest.mark.fault(row=14, expect="NRC 0x22 while current flows; nothing erased; accepted once the pack rests")
@pytest.mark.requirement("R156-safe-state", "R156-preconditions", "ISO24089-preconditions")
def test_activation_refused_while_pack_current_flows(dut, flasher, can, load, images, bench_config, dut_profile, measure):
    baseline = dut.version()
    config = dut.config()
    staged = flasher.stage(images["update"])
    assert staged.accepted
    _pack_current(-40.0, "driving", can, load, dut_profile, measure)  # driving: 40 A discharge
    with pytest.raises(UdsError) as refused:
        flasher.activate()
    assert refused.value.nrc == Nrc.CONDITIONS_NOT_CORRECT, str(refused.value)
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.VERIFIED, Reason.CURRENT_FLOWING, config), measure)
    # Nothing was erased: the staged image is still there and activates once the pack rests.
    _pack_current(0.0, "resting", can, load, dut_profile, measure)
    flasher.unlock()
    flasher.activate()
    outcome = flasher.wait_outcome()
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, Reason.NONE, config), measure)


@pytest.mark.fault(row=14, expect="NRC 0x93 while the supply is low; nothing erased")
@pytest.mark.requirement("R156-power", "R156-preconditions", "ISO24089-preconditions")
def test_activation_refused_while_supply_is_low(dut, flasher, psu, images, bench_config, dut_profile, measure):
    baseline = dut.version()
    config = dut.config()
    staged = flasher.stage(images["update"])
    assert staged.accepted
    psu.set_voltage(bench_config.psu.low_voltage)
    try:
        # The board measures its supply within its settling time; only the activation's verdict shows it, and
        # an activation it accepted would install, so the case lets that time pass before it asks.
        time.sleep(dut_profile.settling.supply_s)
        with pytest.raises(UdsError) as refused:
            flasher.activate()
    finally:
        psu.set_voltage(bench_config.psu.nominal_voltage)
    assert refused.value.nrc == Nrc.VOLTAGE_TOO_LOW, str(refused.value)
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.VERIFIED, Reason.SUPPLY_LOW, config), measure)
