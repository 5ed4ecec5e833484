"""The SOC core keeps its cycle timing: idle, during a background download, and an overrunning build is caught.

Fault-matrix row 17. Timing comes from the DUT's own frames (CAN receive timestamps plus the
cycle counter, start latency and execution time the core reports), never from host sleeps.
"""

from __future__ import annotations

import pytest

from hil.contract import MSG_CYCLE_DIAG, MSG_SOC_CORE, UpdateState
from hil.measure import CycleTiming


def _timing(can, seconds: float, during=None) -> CycleTiming:
    with can.recorder(MSG_SOC_CORE) as soc, can.recorder(MSG_CYCLE_DIAG) as diag:
        if during is not None:
            during()
        else:
            can.collect(MSG_SOC_CORE, seconds)
    return CycleTiming.from_frames(list(soc), list(diag))


@pytest.mark.fault(row=17, expect="cycle timing within budget while idle")
@pytest.mark.requirement("BMS-soc-timing")
def test_soc_cycle_timing_idle(can, bench_config, measure):
    timing = _timing(can, 3.0)
    results = [measure(m) for m in timing.measurements(bench_config.timing)]
    assert all(m.passed for m in results), "\n".join(str(m) for m in results if not m.passed)


@pytest.mark.fault(row=17, expect="cycle timing within budget during the background download")
@pytest.mark.requirement("BMS-soc-timing")
def test_soc_cycle_timing_during_download(can, flasher, images, bench_config, measure):
    import time

    def downloads(min_s: float = 2.0) -> None:
        """Download back to back for at least `min_s` (one image suffices on classic CAN, FD needs several)."""
        end = time.monotonic() + min_s
        while True:
            flasher.stage(images["1.2.0-large"])
            if time.monotonic() >= end:
                return

    timing = _timing(can, 0, during=downloads)
    assert len(timing.timestamps) >= 15, f"only {len(timing.timestamps)} SOC cycles seen during the download"
    results = [measure(m) for m in timing.measurements(bench_config.timing)]
    assert all(m.passed for m in results), "\n".join(str(m) for m in results if not m.passed)


@pytest.mark.destructive
@pytest.mark.expect_violation("soc_exec_max", "soc_period_max", "soc_start_latency_max", "soc_missed_cycles",
                              "soc_period_mean", "soc_period_min",
                              reason="the 1.1.0-timing-overrun build overruns every 5th cycle by 30 ms")
@pytest.mark.fault(row=17, expect="a build that overruns its cycle budget is detected by the timing measurement")
@pytest.mark.requirement("BMS-soc-timing")
def test_overrunning_build_is_detected(can, flasher, images, bench_config, measure):
    outcome = flasher.update(images["1.1.0-timing-overrun"])
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    timing = _timing(can, 3.0)
    results = {m.name: measure(m) for m in timing.measurements(bench_config.timing)}
    assert not results["soc_exec_max"].passed, f"overrun not detected: {results['soc_exec_max']}"
