"""Fidelity of the timing measurement: periods measured from CAN receive timestamps against the simulator's truth.

The virtual board records when its SOC task really handed each BMS_SocCore frame to the CAN controller
(`Board.soc_trace`, a sim_only backdoor read here in-process; no validation-suite verdict reads it).
On the default virtual bench's transport (udp_multicast on loopback, paced at 500 kbit/s) the measured
periods must agree with the true ones to 0.2 ms at the 99th percentile. Also the stall mechanism of the
single-bank build: a held stall costs whole cycles, which the streamed statistics count.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import cantools
import pytest

from hil.bench.bench import Bench
from hil.bench.config import BenchConfig, load_bench
from hil.bench.contract import MSG_SOC_CORE
from hil.sim.bench import running_bench
from hil.sim.soc import CpuStall, SocCore, SocEstimator, new_release_trace
from hil.timing.soc_timing import CycleTimingStream

from bench_ports import private_config, private_ports

ROOT = Path(__file__).resolve().parents[1]
#: The acceptance figure (issue 12): p99 of |measured period - true period|.
FIDELITY_P99_MS = 0.2
WINDOW_S = 8.0


def _udp_bench(tmp_path: Path) -> BenchConfig:
    """The in-process bench on the default bench's transport: udp_multicast on loopback, own group and port."""
    cfg = private_config(load_bench(ROOT / "benches/sim-inproc.yaml"), tmp_path, prefix="fidelity", flash_timing="fast")
    ports = private_ports()
    can = cfg.can.model_copy(update={"interface": "udp_multicast", "channel": ports.group,
                                     "args": {"port": ports.udp_port}, "pacing": True})
    return cfg.model_copy(update={"can": can})


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def _period_errors(frames: list, truth: list[tuple[int, float]]) -> tuple[list[float], list[float]]:
    """|measured period - true period| of consecutive cycles, and receive timestamp - true instant (ms).

    `truth` is (rolling counter, wall time) per cycle. Each received frame is paired with the true
    instant nearest its receive time (one clock: both are time.time()) that has the same counter.
    """
    pairs: list[tuple[float, float]] = []
    for f in frames:
        counter = int(f.signals["RollingCounter"])
        cands = [t for c, t in truth if c == counter and abs(t - f.timestamp) < 0.8]  # 16 cycles = 1.6 s apart
        if cands:
            pairs.append((min(cands, key=lambda t: abs(t - f.timestamp)), f.timestamp))
    period = 0.1
    errors = [abs((m1 - m0) - (t1 - t0)) * 1000.0 for (t0, m0), (t1, m1) in zip(pairs, pairs[1:])
              if abs((t1 - t0) - period) < period / 2]  # consecutive cycles only
    return errors, [(m - t) * 1000.0 for t, m in pairs]


def _figures(errors: list[float], delays: list[float]) -> str:
    return (f"{len(errors)} periods: |measured - true| p50 {_p(errors, 0.5):.3f} ms, p99 {_p(errors, 0.99):.3f} ms, "
            f"max {max(errors):.3f} ms; true instant to receive timestamp p50 {_p(delays, 0.5):.3f} ms, "
            f"p99 {_p(delays, 0.99):.3f} ms")


@pytest.mark.integration
def test_measured_periods_match_the_true_release_times(tmp_path: Path) -> None:
    with running_bench(_udp_bench(tmp_path)) as (vb, effective), \
            Bench.open(effective, start_virtual=False, evidence_dir=tmp_path) as b:
        b.can.wait_for(MSG_SOC_CORE, timeout=15.0)
        frames = b.can.collect(MSG_SOC_CORE, WINDOW_S)
        assert vb.board is not None
        # sim_only backdoor: the in-process board's own record of its SOC task and CAN controller.
        # The board's threads append while we read: copy each deque in one step (list() of a deque runs in C
        # under the GIL), then walk the copies; a comprehension over the live deque races its appends.
        released = [(r.cycle % 16, r.queued) for r in list(vb.board.soc_trace)]
        on_bus = [(c, t) for t, c in list(vb.board.soc_sent)]
    task_err, task_delay = _period_errors(frames, released)
    bus_err, bus_delay = _period_errors(frames, on_bus)
    assert len(task_err) >= 0.8 * WINDOW_S * 10, f"only {len(task_err)} of {len(frames)} frames matched the truth"
    report = (f"against the SOC task's frame hand-off: {_figures(task_err, task_delay)}\n"
              f"against the frame's transmission by the CAN controller: {_figures(bus_err, bus_delay)}")
    print(report)
    p99 = _p(task_err, 0.99)
    assert p99 <= FIDELITY_P99_MS, f"measurement fidelity p99 {p99:.3f} ms > {FIDELITY_P99_MS} ms\n{report}"


class _Pack:
    def pack_current(self) -> float:
        return 0.0

    def temperatures(self) -> list[float]:
        return [25.0] * 8

    def cell_voltages(self) -> list[float]:
        return [3.7] * 12


def test_a_stall_held_over_an_erase_costs_whole_cycles_and_the_statistics_count_them() -> None:
    stop = threading.Event()

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise SystemExit  # ends the core's loop like a power loss

    trace = new_release_trace()
    stall = CpuStall()
    core = SocCore(transmit=lambda msg: None, db=cantools.database.load_file(str(ROOT / "benches/dbc/bms.dbc")),
                   pack=_Pack(), estimator=SocEstimator(50.0, 50.0), sleep=sleep, period_s=0.05, flash_stall=stall, trace=trace,
                   charge_limits=lambda: {"MaxChargeCurrent": 0, "MaxDischargeCurrent": 0, "MaxChargeVoltage": 0,
                                          "MinDischargeVoltage": 0},
                   update_status=lambda: {"State": 0, "Reason": 0, "Progress": 0, "BootMode": 0, "BootCount": 0,
                                          "SwMajor": 1, "SwMinor": 0})
    thread = threading.Thread(target=lambda: pytest.raises(SystemExit, core.run), daemon=True)
    start = time.time()
    thread.start()
    time.sleep(0.5)
    with stall.held():  # an erase on a single-bank part: 6 periods without the task
        time.sleep(0.3)
    time.sleep(0.5)
    stop.set()
    thread.join(5.0)
    end = time.time()
    stream = CycleTimingStream(50.0, counter_modulo=16, start_time=start)
    for r in trace:
        stream.on_soc(r.queued, r.cycle % 16)
    summary = stream.finish(end)
    assert summary.missed >= 4, summary.describe()
    assert summary.period_max >= 250.0, summary.describe()
