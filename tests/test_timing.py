"""Streamed SOC timing statistics: exact against a batch computation, cycles counted from counter and clock."""

from __future__ import annotations

import csv
import math
import random
import statistics
import tracemalloc
from pathlib import Path

import pytest

from hil.bench.config import TimingBudgets
from hil.timing.measure import Measurement
from hil.timing.soc_timing import CycleTimingStream, FixedHistogram, RunningStats, reset_to_first_frame_s


def _feed(stream: CycleTimingStream, times: list[float], counters: list[int] | None = None) -> None:
    for i, t in enumerate(times):
        stream.on_soc(t, None if counters is None else counters[i])


def test_running_stats_match_the_batch_figures() -> None:
    rng = random.Random(1)
    xs = [rng.gauss(100.0, 0.7) for _ in range(5000)]
    s = RunningStats()
    for x in xs:
        s.add(x)
    assert s.n == len(xs)
    assert s.mean == pytest.approx(statistics.fmean(xs), abs=1e-9)
    assert s.std == pytest.approx(statistics.stdev(xs), rel=1e-9)
    assert (s.min, s.max) == (min(xs), max(xs))


def test_histogram_p99_is_within_one_bin_and_never_below_the_true_value() -> None:
    rng = random.Random(2)
    xs = [rng.uniform(95.0, 105.0) for _ in range(10000)] + [140.0] * 50
    h = FixedHistogram(0.0, 300.0, 0.02)
    for x in xs:
        h.add(x)
    true_p99 = sorted(xs)[math.ceil(0.99 * len(xs)) - 1]
    assert true_p99 <= h.quantile(0.99) <= true_p99 + 0.02
    h.add(1e6)  # overflow: the quantile of the top is the max seen
    assert h.quantile(1.0) == 1e6


def test_missed_and_repeated_cycles_from_counter_and_clock(tmp_path) -> None:
    s = CycleTimingStream(100.0, counter_modulo=16, start_time=0.0, csv_path=tmp_path / "t.csv")
    # cycles 0..4, cycle 5 lost, 6, 7 sent twice, then a gap of 20 cycles (counter wraps past 16)
    times = [0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 0.8003, 2.8]
    counters = [0, 1, 2, 3, 4, 6, 7, 7, 27 % 16]
    _feed(s, times, counters)
    summary = s.finish(2.85)
    assert summary.repeated == 1
    assert summary.missed == 1 + 19
    assert summary.frames == 8
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [r["frame"] for r in rows].count("soc_repeat") == 1
    assert rows[5]["period_ms"] and float(rows[5]["period_ms"]) == pytest.approx(200.0)


def test_a_core_that_stops_counts_missed_cycles_up_to_the_end_of_the_recording() -> None:
    s = CycleTimingStream(100.0, counter_modulo=16, start_time=0.0)
    _feed(s, [0.05 + 0.1 * i for i in range(10)], list(range(10)))
    summary = s.finish(0.95 + 1.0)  # silent for the last second
    assert summary.missed == 9
    assert summary.tail_gap_ms == pytest.approx(1000.0)
    silent = CycleTimingStream(100.0, start_time=0.0).finish(3.0)
    assert silent.missed == 29 and silent.frames == 0
    assert not any(m.passed for m in silent.measurements(TimingBudgets()) if m.name == "soc_period_mean")


def test_measurements_carry_limits_and_a_marginal_band() -> None:
    s = CycleTimingStream(100.0, counter_modulo=16, start_time=0.0)
    _feed(s, [0.1 * i for i in range(1, 31)], [i % 16 for i in range(1, 31)])
    for i in range(30):
        s.on_diag(0.1 * i, 2000 + 10 * i, 100, i)
    budgets = TimingBudgets(max_exec_ms=2.5, marginal_fraction=0.8)
    by_name = {m.name: m for m in s.finish(3.05).measurements(budgets)}
    assert by_name["soc_missed_cycles"].passed and by_name["soc_period_jitter"].passed
    exec_max = by_name["soc_exec_max"]
    assert exec_max.value == pytest.approx(2.29) and exec_max.passed and exec_max.marginal  # beyond 0.8 x 2.5 ms
    assert "MARGINAL" in str(exec_max)
    assert Measurement.banded("x", 9.0, "ms", None, 10.0, 0.0, 0.8).marginal
    assert not Measurement.banded("x", 7.0, "ms", None, 10.0, 0.0, 0.8).marginal


def test_memory_does_not_grow_with_the_recording() -> None:
    s = CycleTimingStream(100.0, counter_modulo=16, start_time=0.0)
    t = 0.0
    for i in range(2000):  # warm-up
        t += 0.1
        s.on_soc(t, i % 16)
        s.on_diag(t, 2000, 50, i)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(2000, 38000):  # one hour at 10 Hz
        t += 0.1
        s.on_soc(t, i % 16)
        s.on_diag(t, 2000, 50, i)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 64 * 1024, f"streamed statistics grew by {grown} bytes over an hour of frames"


def test_reset_to_first_frame_skips_frames_of_the_old_boot() -> None:
    old = [0.0, 0.1, 0.2, 0.3]  # reset requested at 0.25; the old boot still sends at 0.3
    new = [1.2, 1.3, 1.4]
    assert reset_to_first_frame_s(old + new, 0.25, 100.0) == pytest.approx(0.95)
    assert reset_to_first_frame_s([0.9, 1.0], 0.5, 100.0) == pytest.approx(0.4)
    assert reset_to_first_frame_s(old, 0.35, 100.0) is None


def test_measurement_names_list_every_statistic_recorded() -> None:
    from hil.timing.soc_timing import measurement_names

    summary = CycleTimingStream(100.0, start_time=0.0).finish(1.0)
    assert tuple(m.name for m in summary.measurements(TimingBudgets(), "x")) == measurement_names("x")


class _FakeFrame:
    def __init__(self, name: str, t: float, **signals: float) -> None:
        self.name, self.timestamp, self.signals = name, t, signals


class _FakeCan:
    """Just enough of CanChannel for TimingCase: the DBC and `tap`."""

    def __init__(self) -> None:
        import contextlib

        import cantools

        from hil.bench.dut_profile import DutProfile

        self.db = cantools.database.load_file(str(Path(__file__).resolve().parents[1] / "benches" / "dbc" / "bms.dbc"))
        self.profile = DutProfile()
        self.taps: dict[str, object] = {}
        self._ctx = contextlib

    def tap(self, message: str, callback):  # noqa: ANN001, ANN201
        @self._ctx.contextmanager
        def cm():  # noqa: ANN202
            self.taps[message] = callback
            try:
                yield
            finally:
                del self.taps[message]
        return cm()

    def emit(self, t: float, n: int) -> None:
        self.taps["BMS_SocCore"](_FakeFrame("BMS_SocCore", t, RollingCounter=n % 16))
        self.taps["BMS_CycleDiag"](_FakeFrame("BMS_CycleDiag", t + 0.0002, CycleCounter=n, ExecTime=2000, StartLatency=50))


def test_timing_case_splits_boots_and_measures_reset_to_first_frame(tmp_path, monkeypatch) -> None:
    import hil.timing.soc_timing as timing
    from hil.timing.soc_timing import TimingCase

    clock = [1000.0]
    monkeypatch.setattr(timing.time, "time", lambda: clock[0])
    can = _FakeCan()
    with TimingCase(can, TimingBudgets(), tmp_path, "unit") as tc:
        for n in range(10):  # boot 1: cycles at 1000.1 .. 1001.0
            can.emit(1000.1 + 0.1 * n, n)
        clock[0] = 1001.03
        tc.reset("ECUReset")
        can.emit(1001.1, 10)  # the old boot's last cycle before the reset takes effect
        for n in range(20):  # boot 2 starts 0.77 s after the reset request, counter from 0
            can.emit(1001.8 + 0.1 * n, n)
        clock[0] = 1003.75
    (b1, s1), (b2, s2) = tc.segment_summaries()
    assert s1.frames == 10 and s1.missed == 0
    assert b2.first_frame_s == pytest.approx(0.77)
    assert s2.frames == 20 and s2.missed == 0 and s2.lead_gap_ms == 0.0
    assert s2.period_mean == pytest.approx(100.0)
    assert tc.summary.missed >= 5  # the whole case sees the reset's silence
    assert (tmp_path / "timing.csv").is_file() and (tmp_path / "timing-period.png").is_file()


def test_timing_case_finds_a_boot_too_quick_to_leave_a_silence(tmp_path, monkeypatch) -> None:
    import hil.timing.soc_timing as timing
    from hil.timing.soc_timing import TimingCase

    clock = [1000.0]
    monkeypatch.setattr(timing.time, "time", lambda: clock[0])
    can = _FakeCan()
    with TimingCase(can, TimingBudgets(), None, "unit") as tc:
        for n in range(30):
            can.emit(1000.1 + 0.1 * n, 40 + n)  # cycles since boot 40..69
        clock[0] = 1003.03
        tc.reset("ECUReset")
        for n in range(20):  # the new boot's first frame 0.1 s after the old boot's last: no silence
            can.emit(1003.1 + 0.1 * n, n)
        clock[0] = 1005.05
    (_, s1), (b2, s2) = tc.segment_summaries()
    assert b2.first_frame_s == pytest.approx(0.07)
    assert s2.frames == 20 and s2.missed == 0 and s1.frames == 30


def _profile_can(counter: str | None, rename: str | None = None, bits: int = 4) -> "_FakeCan":
    """A fake channel whose profile names `counter` (None: no counter), optionally renamed in a DBC of its own."""
    import cantools

    from hil.bench.dut_profile import DutProfile

    can = _FakeCan()
    dbc = (Path(__file__).resolve().parents[1] / "benches" / "dbc" / "bms.dbc").read_text()
    if rename:
        dbc = dbc.replace(" SG_ RollingCounter : 48|4@1+ (1,0) [0|15]", f" SG_ {rename} : 48|{bits}@1+ (1,0) [0|{2**bits - 1}]")
        dbc = dbc.replace(" SG_ CycleExecTime : 52|12@1+", " SG_ CycleExecTime : 56|8@1+")
    can.db = cantools.database.load_string(dbc, "dbc")
    can.profile = DutProfile.model_validate({"soc_core": {"counter": counter}})
    return can


def test_a_renamed_wider_counter_is_read_through_the_profile(tmp_path, monkeypatch) -> None:
    """Counter name and width come from the profile and its DBC: an 8-bit `AliveCtr` that jumps by 3 is 2 missed
    cycles, and a wrap of 256 is no gap (with the default name and 4 bits it would be read wrong, or not at all)."""
    import hil.timing.soc_timing as timing
    from hil.timing.soc_timing import TimingCase

    clock = [1000.0]
    monkeypatch.setattr(timing.time, "time", lambda: clock[0])
    can = _profile_can("AliveCtr", rename="AliveCtr", bits=8)

    def emit(t: float, n: int) -> None:
        can.taps["BMS_SocCore"](_FakeFrame("BMS_SocCore", t, AliveCtr=n % 256))
        can.taps["BMS_CycleDiag"](_FakeFrame("BMS_CycleDiag", t + 0.0002, CycleCounter=n, ExecTime=2000, StartLatency=50))

    with TimingCase(can, TimingBudgets(), None, "unit") as tc:
        cycles = list(range(250, 262)) + [265, 266]  # 255 -> 256 wraps to 0; 261 -> 265 skips 3
        for k, n in enumerate(cycles):
            emit(1000.1 + 0.1 * k, n)  # sent on time: only the counter shows the skipped cycles
        clock[0] = 1000.1 + 0.1 * len(cycles)
    assert tc.counter is not None and tc.counter.signal == "AliveCtr" and tc.counter.modulo == 256
    assert tc.summary.missed == 3 and tc.summary.repeated == 0
    assert tc.summary.not_covered == []


def test_a_board_without_a_counter_is_not_covered_for_missed_cycles(monkeypatch) -> None:
    """No counter in the profile: missed/repeated cycles are not measured at all (no quiet 0), and the summary
    names why - the timing cases hand that to the `not_covered` fixture."""
    import hil.timing.soc_timing as timing
    from hil.timing.soc_timing import TimingCase

    clock = [1000.0]
    monkeypatch.setattr(timing.time, "time", lambda: clock[0])
    can = _profile_can(None)
    with TimingCase(can, TimingBudgets(), None, "unit") as tc:
        for n in range(20):
            can.emit(1000.1 + 0.1 * n, n)
        clock[0] = 1002.05
    (reason,) = tc.summary.not_covered
    assert reason.startswith("counter signal missing: profile default names no cycle counter") and "missed" in reason
    names = {m.name for m in tc.summary.measurements(TimingBudgets())}
    assert "soc_missed_cycles" not in names and "soc_repeated_cycles" not in names
    assert {"soc_period_max", "soc_period_mean", "soc_exec_max"} <= names


def test_a_counter_the_dbc_lacks_is_named() -> None:
    from hil.bench.dut_profile import ProfileError
    from hil.bench.frames import cycle_counter

    can = _profile_can("AliveCtr")
    with pytest.raises(ProfileError, match=r"soc_core.counter names 'AliveCtr', which is not a signal of BMS_SocCore"):
        cycle_counter(can.db, can.profile)
