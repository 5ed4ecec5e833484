"""The SOC core keeps its cycle timing: idle, under a full-speed download, during the erase of the inactive
slot, through activation/install/first boot, after resets and a brown-out, on the new firmware; builds that
overrun or stall on the flash erase are caught.

Fault-matrix row 17. Timing comes from the DUT's own frames (CAN receive timestamps, the SOC frame's
cycle counter, the start latency and execution time the core reports), never from host sleeps. Periods
and budgets are the bench file's `timing`; a board whose profile names no cycle counter cannot show
missed or repeated cycles, so its cases end NOT COVERED with that reason once everything else passed.
Statistics are streamed (hil.timing); every case leaves a CSV of its samples and period plots with
the budget band in its evidence directory.
"""

from __future__ import annotations

import statistics
import time

import pytest

from hil.drivers.canbus import isotp_ceiling_kib_s
from hil.bench.contract import UpdateState
from hil.dut.flasher import Phase
from hil.timing.measure import Measurement
from hil.timing.soc_timing import TimingCase, TimingSummary, measurement_names

IDLE_S = 5.0
AFTER_BOOT_S = 3.0
#: Cycles a window must hold at least for its statistics to mean anything.
MIN_CYCLES = 15


def _window(budgets, seconds: float) -> float:
    """An observation window of at least `seconds` that holds MIN_CYCLES and a few more of this board's periods."""
    return max(seconds, (MIN_CYCLES + 5) * budgets.soc_period_ms / 1000.0)


def _judge(measure, summary: TimingSummary, budgets, prefix: str = "soc", what: str = "",
           not_covered=None) -> list[Measurement]:
    """Record every statistic with its limit; fail naming each one outside its budget. A statistic this board
    cannot show (no cycle counter) goes to `not_covered`: the case ends NOT COVERED, never a quiet PASS."""
    results = [measure(m) for m in summary.measurements(budgets, prefix)]
    bad = [m for m in results if not m.passed]
    assert not bad, f"SOC timing {what} outside budget ({summary.describe()}):\n" + "\n".join(str(m) for m in bad)
    for reason in summary.not_covered:
        assert not_covered is not None, reason
        not_covered(reason)
    return results


def _enough(summary: TimingSummary, what: str, cycles: int = MIN_CYCLES) -> None:
    assert summary.frames >= cycles, f"only {summary.frames} SOC frames {what}; at least {cycles} needed to judge timing"


def _first_frame(measure, seg, budget_s: float, name: str) -> float:
    """The reset-to-first-SOC-frame delay of a boot segment as a measurement."""
    value = seg.first_frame_s if seg.first_frame_s is not None else float("inf")
    m = measure(Measurement(name, value, "s", 0.0, budget_s))
    assert m.passed, f"{seg.label}: {m}" + ("" if seg.first_frame_s is not None else " (no SOC frame after the reset)")
    return value


def _wait_new_boot(tc: TimingCase, timeout: float) -> None:
    """Wait (with a timeout) until the newest segment has seen its first SOC frame."""
    deadline = time.monotonic() + timeout
    while not tc.segments[-1].open:
        if time.monotonic() > deadline:
            return  # _first_frame fails with the figure
        time.sleep(0.05)


@pytest.mark.fault(row=17, expect="cycle timing within budget while idle")
@pytest.mark.requirement("BMS-soc-timing")
def test_soc_cycle_timing_idle(can, bench_config, measure, evidence, not_covered):
    with TimingCase(can, bench_config.timing, evidence, "idle") as tc:
        time.sleep(_window(bench_config.timing, IDLE_S))  # a fixed observation window
    _enough(tc.summary, "while idle")
    _judge(measure, tc.summary, bench_config.timing, what="while idle", not_covered=not_covered)


def _downloads(flasher, image: bytes, min_s: float, bench_config, measure, prefix: str = "") -> None:
    """Download back to back for at least `min_s` (one image suffices on classic CAN, FD needs several), and show
    that the download ran as fast as this board lets it (the case's premise): at least half the rate its block
    length and its turnaround allow, both measured - each block's round trip, request sent to response."""
    end = time.monotonic() + min_s
    size = seconds = 0.0
    rounds: list[float] = []
    block = 0
    while True:
        staged = flasher.stage(image)
        size, seconds = size + staged.size - staged.resumed_from, seconds + staged.download_seconds
        rounds += staged.block_seconds
        block = staged.block_bytes
        if time.monotonic() >= end:
            break
    assert rounds and seconds > 0, "no TransferData block was sent"
    round_trip = statistics.median(rounds)
    allowed = block / round_trip / 1024
    c = bench_config.can
    ceiling = isotp_ceiling_kib_s(block + 2, fd=c.fd, bitrate=c.bitrate, data_bitrate=c.data_bitrate)
    measure(Measurement(f"{prefix}download_block_round_trip", round_trip * 1000.0, "ms", 0.0, None))
    measure(Measurement(f"{prefix}download_allowed_by_board", allowed, "KiB/s", 0.0, None))
    measure(Measurement(f"{prefix}download_allowed_vs_isotp_ceiling", allowed / ceiling, "ratio", 0.0, None))
    m = measure(Measurement(f"{prefix}download_during_timing", size / 1024 / seconds, "KiB/s", allowed / 2, None))
    assert m.passed, (f"the download ran below half of what this board's {block + 2}-byte blocks and "
                      f"{round_trip * 1000:.1f} ms round trip allow (the case's premise): {m}")


@pytest.mark.fault(row=17, expect="cycle timing within budget during the background download")
@pytest.mark.requirement("BMS-soc-timing")
def test_soc_cycle_timing_during_download(can, flasher, images, bench_config, measure, evidence, not_covered):
    with TimingCase(can, bench_config.timing, evidence, "during a full-speed download") as tc:
        flasher.on_phase.append(lambda phase: tc.mark(phase.value) if phase in (Phase.DOWNLOAD, Phase.VERIFY) else None)
        _downloads(flasher, images["largest"], 3.0, bench_config, measure)
    _enough(tc.summary, "during the download")
    _judge(measure, tc.summary, bench_config.timing, what="during the download", not_covered=not_covered)


def _erase_window(tc: TimingCase, flasher, uds, images) -> None:
    """Fill the inactive slot, then erase it inside the recording with a second of idle either side."""
    flasher.stage(images["update"], check=False)  # a full slot: its erase takes real time
    flasher.unlock()
    time.sleep(1.0)
    tc.mark("erase start")
    flasher.erase()
    tc.mark("erase end")
    time.sleep(1.0)


@pytest.mark.fault(row=17, expect="cycle timing within budget while the inactive slot is erased")
@pytest.mark.requirement("BMS-soc-timing")
def test_soc_cycle_timing_during_erase(can, flasher, uds, images, bench_config, measure, evidence, not_covered):
    with TimingCase(can, bench_config.timing, evidence, "during the erase of the inactive slot") as tc:
        _erase_window(tc, flasher, uds, images)
    _enough(tc.summary, "around the erase")
    _judge(measure, tc.summary, bench_config.timing, what="during the erase", not_covered=not_covered)


@pytest.mark.destructive
@pytest.mark.fault(row=17, expect="cycle timing within budget through activation, install and first boot")
@pytest.mark.requirement("BMS-soc-timing")
def test_soc_cycle_timing_through_install_and_first_boot(can, flasher, images, bench_config, measure, evidence,
                                                         not_covered):
    budgets = bench_config.timing
    staged = flasher.stage(images["update"])
    assert staged.accepted, staged.reason.name
    with TimingCase(can, budgets, evidence, "activation, install and first boot") as tc:
        time.sleep(1.0)
        flasher.on_phase.append(lambda phase: tc.reset("activation reset") if phase is Phase.RESET else
                                tc.mark(phase.value) if phase in (Phase.FIRST_BOOT, Phase.DONE) else None)
        flasher.activate()
        outcome = flasher.wait_outcome()
        time.sleep(_window(budgets, AFTER_BOOT_S))
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    (old, before), (new, after) = tc.segment_summaries()
    _judge(measure, before, budgets, "soc_before_activation", "of the old firmware before the activation", not_covered)
    _first_frame(measure, new, budgets.install_first_frame_s, "soc_install_to_first_frame")
    _enough(after, "of the new firmware after its first boot")
    _judge(measure, after, budgets, "soc_first_boot", "from the new firmware's first frame on (self-test included)",
           not_covered)


RESETS = [
    pytest.param("ecu_reset", id="reset-ecu_reset"),
    pytest.param("power_on", id="reset-power_on"),
    pytest.param("brown_out", id="reset-after_brown_out"),
]


@pytest.mark.fault(row=17, expect="reset to first SOC frame within budget; timing within budget after it")
@pytest.mark.requirement("BMS-soc-timing")
@pytest.mark.parametrize("kind", RESETS)
def test_soc_reset_to_first_frame(kind, can, uds, psu, bench_config, measure, evidence, not_covered):
    budgets = bench_config.timing
    with TimingCase(can, budgets, evidence, f"reset: {kind}") as tc:
        time.sleep(1.0)
        if kind == "ecu_reset":
            tc.reset("ECUReset")
            uds.ecu_reset()
        elif kind == "power_on":
            psu.output(False)
            time.sleep(0.5)
            tc.reset("power on")
            psu.output(True)
        else:
            # A dip below the DUT's brown-out threshold, as the supply's own brown-out action, then nominal again.
            nominal = bench_config.psu.nominal_voltage
            psu.set_voltage(bench_config.psu.brownout_voltage)
            time.sleep(0.3)
            tc.reset("supply back from the brown-out")
            psu.set_voltage(nominal)
        _wait_new_boot(tc, budgets.soc_restart_s * 2)
        time.sleep(_window(budgets, AFTER_BOOT_S))
    new = tc.segments[-1]
    _first_frame(measure, new, budgets.soc_restart_s, "soc_reset_to_first_frame")
    after = tc.segment_summaries()[-1][1]
    _enough(after, "after the reset")
    _judge(measure, after, budgets, "soc_after_reset", f"after {kind}", not_covered)


@pytest.mark.destructive
@pytest.mark.fault(row=17, expect="the new firmware meets the same budgets idle and during a download")
@pytest.mark.requirement("BMS-soc-timing")
def test_soc_cycle_timing_of_the_new_firmware(can, flasher, images, bench_config, measure, evidence, not_covered):
    outcome = flasher.update(images["update"])
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    new = images.version("update")
    with TimingCase(can, bench_config.timing, evidence, f"new firmware {new}, idle", stem="timing-idle") as idle:
        time.sleep(_window(bench_config.timing, IDLE_S))
    with TimingCase(can, bench_config.timing, evidence, f"new firmware {new}, download", stem="timing-download") as dl:
        _downloads(flasher, images["largest"], 3.0, bench_config, measure, "new_firmware_")
    for tc, what in ((idle, "idle"), (dl, "download")):
        _enough(tc.summary, f"of the new firmware ({what})")
        _judge(measure, tc.summary, bench_config.timing, f"soc_new_{what}", f"of the new firmware ({what})", not_covered)


@pytest.mark.destructive
@pytest.mark.expect_violation(*measurement_names("soc"), reason="the 1.1.0-timing-overrun build overruns every 5th "
                              "cycle by 30 ms")
@pytest.mark.fault(row=17, expect="a build that overruns its cycle budget is detected by the timing measurement")
@pytest.mark.requirement("BMS-soc-timing")
def test_overrunning_build_is_detected(can, flasher, images, bench_config, measure, evidence):
    outcome = flasher.update(images["timing_overrun"])
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    with TimingCase(can, bench_config.timing, evidence, "overrunning build") as tc:
        time.sleep(_window(bench_config.timing, 3.0))
    results = {m.name: measure(m) for m in tc.summary.measurements(bench_config.timing)}
    assert not results["soc_exec_max"].passed, f"overrun not detected: {results['soc_exec_max']}"


@pytest.mark.destructive
@pytest.mark.expect_violation(*measurement_names("soc"), reason="the 1.1.0-single-bank-stall build's SOC task "
                              "stalls for the whole erase of the inactive slot")
@pytest.mark.fault(row=17, expect="a single-bank build whose SOC task stalls during the flash erase is caught")
@pytest.mark.requirement("BMS-soc-timing")
def test_build_stalling_on_erase_is_detected(can, flasher, uds, images, bench_config, measure, evidence):
    outcome = flasher.update(images["single_bank_stall"])
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    with TimingCase(can, bench_config.timing, evidence, "single-bank build during the erase") as tc:
        _erase_window(tc, flasher, uds, images)
    results = {m.name: measure(m) for m in tc.summary.measurements(bench_config.timing)}
    caught = [results[n] for n in ("soc_missed_cycles", "soc_period_max") if n in results and not results[n].passed]
    assert caught, ("SOC stall during the flash erase NOT detected: " + tc.summary.describe())
