"""Nightly timing soak: the SOC core keeps its cycle budget for many minutes, idle and under downloads.

Runs only with `--nightly` (or HIL_NIGHTLY=1); its length is `--soak-s` (default 600 s). Fault-matrix
row 17 over a long window: rare overruns and missed cycles that a 3-second case cannot see.
"""

from __future__ import annotations

import time

import pytest

from hil.bench.contract import MSG_CYCLE_DIAG, MSG_SOC_CORE
from hil.timing.measure import CycleTiming


@pytest.mark.nightly
@pytest.mark.slow
@pytest.mark.fault(row=17, expect="cycle timing within budget over a long soak, idle and during downloads")
@pytest.mark.requirement("BMS-soc-timing")
def test_soc_cycle_timing_soak(request, can, flasher, images, bench_config, measure):
    soak_s = float(request.config.getoption("--soak-s"))
    end = time.monotonic() + soak_s
    windows = 0
    failed = []
    while time.monotonic() < end:
        # Alternate: 10 s idle, then one background download; each window is judged on its own.
        for busy in (False, True):
            with can.recorder(MSG_SOC_CORE) as soc, can.recorder(MSG_CYCLE_DIAG) as diag:
                if busy:
                    flasher.stage(images["largest"])
                else:
                    can.collect(MSG_SOC_CORE, 10.0)
            timing = CycleTiming.from_frames(list(soc), list(diag))
            windows += 1
            failed += [f"window {windows} ({'download' if busy else 'idle'}): {m}"
                       for m in (measure(m) for m in timing.measurements(bench_config.timing)) if not m.passed]
    assert windows >= 2, f"only {windows} windows in {soak_s:.0f} s"
    assert not failed, "\n".join(failed)
