"""An update succeeds and is confirmed; an update whose firmware fails is rolled back automatically.

Fixtures only: these cases run unchanged on the virtual bench and on a real BMS bench.
"""

from __future__ import annotations

import pytest

from hil.dut.checks import Expected, check_evidence, check_final_state
from hil.bench.contract import MSG_SOC_CORE, Reason, UpdateState

pytestmark = [pytest.mark.destructive]


def _console_shows(console, dut_profile, name: str, timeout: float = 5.0) -> None:
    """Where the bench has a console and the profile a pattern for `name`, the console must show it."""
    pattern = dut_profile.console_pattern(name)
    if console is not None and pattern is not None:
        console.expect(pattern, timeout=timeout)


@pytest.mark.requirement("R156-integrity", "R156-inform-result", "ISO24089-reporting", "BMS-config-preserved")
def test_update_succeeds_and_is_confirmed(dut, flasher, images, can, bench_config, measure, evidence, console_if_any,
                                          dut_profile):
    from hil.timing.measure import Measurement, max_gap_ms

    baseline = dut.version()
    config = dut.config()
    budgets = bench_config.timing
    with can.recorder(MSG_SOC_CORE) as frames:
        staged = flasher.stage(images["update"])
    assert staged.accepted, f"the DUT rejected a valid image: {staged.reason.name}"
    measure(Measurement("download_throughput", staged.kib_per_s, "KiB/s", 1.0, None))
    # Background download: the SOC core kept running, no cycle lost while the image streamed in. As many frames
    # as whole budget periods fit in the staging (a fast download on a slow cycle may hold only one), and no gap.
    window_s = frames.ended - frames.started
    whole_periods = int(window_s * 1000.0 // (budgets.soc_period_ms + budgets.period_tolerance_ms))
    assert len(frames) >= whole_periods, (f"only {len(frames)} SOC frames while staging for {window_s:.2f} s "
                                          f"(download {staged.seconds:.2f} s; a period of {budgets.soc_period_ms} ms "
                                          f"wants at least {whole_periods})")
    gap = measure(Measurement("soc_max_gap_during_download", max_gap_ms(frames), "ms", 0.0,
                              budgets.soc_period_ms + budgets.period_tolerance_ms))
    assert gap.passed, str(gap)
    assert dut.version() == baseline, "staging must not change the running image"

    flasher.activate()
    outcome = flasher.wait_outcome()
    assert outcome.state is UpdateState.SUCCESS, f"update ended {outcome.state.name}/{outcome.reason.name}: {outcome.states_seen}"
    check_final_state(dut, budgets, Expected(images.version("update"), UpdateState.SUCCESS, Reason.NONE, config), measure)
    assert dut.backup_version() == baseline, "the previous image must survive as the backup"
    _console_shows(console_if_any, dut_profile, "selftest_passed")
    check_evidence(evidence, console_if_any)


@pytest.mark.requirement("R156-recovery", "ISO24089-recovery", "R156-inform-result")
@pytest.mark.fault(row=9, expect="automatic revert to the old image, failure reported with a reason")
@pytest.mark.parametrize(
    ("recipe", "reason"),
    [
        pytest.param("selftest_fail", Reason.SELFTEST_FAILED, id="firmware-self_test_fails"),
        pytest.param("crash_at_boot", Reason.CRASHED_AT_BOOT, id="firmware-crashes_at_boot"),
        pytest.param("hang", Reason.WATCHDOG_RESET, id="firmware-hangs_until_the_watchdog_fires"),
    ],
)
def test_failed_update_is_rolled_back(recipe, reason, dut, flasher, images, bench_config, measure, evidence,
                                      console_if_any, dut_profile):
    baseline = dut.version()
    config = dut.config()
    staged = flasher.stage(images[recipe])
    assert staged.accepted, f"{recipe} is signed correctly and must stage: {staged.reason.name}"
    flasher.activate()
    outcome = flasher.wait_outcome()
    assert outcome.state is UpdateState.ROLLED_BACK, f"{recipe}: ended {outcome.state.name}: {outcome.states_seen}"
    assert outcome.reason is reason, f"{recipe}: reason {outcome.reason.name}, expected {reason.name}"
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.ROLLED_BACK, reason, config), measure)
    _console_shows(console_if_any, dut_profile, "revert")
    check_evidence(evidence, console_if_any)
