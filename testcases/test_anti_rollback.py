"""Anti-rollback: downgrades are rejected, and the stored counter moves only when an image is confirmed.

Fault-matrix rows 7 and 8. Confirming an image with a higher security counter is irreversible on
real hardware (fuses), so that case needs --allow-irreversible there; the bench's restore path
(bench security level) brings a development board back.
"""

from __future__ import annotations

import pytest

from hil.dut.checks import Expected, check_final_state
from hil.bench.contract import Reason, UpdateState

pytestmark = [pytest.mark.destructive]


@pytest.mark.fault(row=8, expect="image with a higher counter fails its self-test: old image boots, counter unchanged")
@pytest.mark.requirement("R156-recovery", "ISO24089-recovery")
def test_counter_not_advanced_when_self_test_fails(dut, flasher, images, bench_config, measure):
    baseline = dut.version()
    config = dut.config()
    counter = dut.security_counter()
    outcome = flasher.update(images["higher_security_counter_selftest_fail"])
    assert outcome.state is UpdateState.ROLLED_BACK, outcome.states_seen
    assert dut.security_counter() == counter, "the counter moved for an image that was never confirmed"
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.ROLLED_BACK, Reason.SELFTEST_FAILED, config),
                      measure)


@pytest.mark.irreversible
@pytest.mark.fault(row=7, expect="counter advances on confirm; a lower counter is then rejected as a downgrade")
@pytest.mark.requirement("R156-integrity", "R155-M16")
def test_counter_advances_on_confirm_then_blocks_lower_counter(dut, flasher, images, bench_config, measure):
    config = dut.config()
    counter = dut.security_counter()
    outcome = flasher.update(images["higher_security_counter"])
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    assert dut.security_counter() == images.security_counter("higher_security_counter") > counter
    staged = flasher.stage(images["major_update"])  # newer version, but security counter 1
    assert not staged.accepted
    assert staged.reason is Reason.DOWNGRADE_SECURITY_COUNTER, staged.reason.name
    check_final_state(dut, bench_config.timing, Expected(images.version("higher_security_counter"), UpdateState.REJECTED, Reason.DOWNGRADE_SECURITY_COUNTER, config),
                      measure)
