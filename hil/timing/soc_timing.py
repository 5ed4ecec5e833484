"""SOC cycle timing as streamed statistics: constant memory however long the recording.

The SOC core's frames are the only input (black box): receive timestamps of the SOC frame with
its cycle counter (the DUT profile's `soc_core.counter`), and the cycle diagnostics frame (execution
time, start latency). Every
sample is folded into Welford's running mean/variance and a fixed-bin histogram (p99 to one bin
width) and optionally appended to a CSV on disk, so a one-hour soak costs the same memory as a
three-second case. Missed cycles count gaps up to the end of the recording, not only between
frames: a core that stops for good is missed cycles, not silence.

Missed and repeated cycles need the counter: on a board whose profile names none they are not
measured, and the summary says why (`TimingSummary.not_covered`) - the case then ends NOT COVERED,
never with a quiet pass.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import threading
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from hil.bench import contract
from hil.bench.frames import CounterSignal, cycle_counter
from hil.timing.measure import Measurement

log = logging.getLogger(__name__)

#: Histogram bin width of periods (ms) and of execution time / start latency (ms): the p99 resolution.
PERIOD_BIN_MS = 0.02
DIAG_BIN_MS = 0.01
#: A period sample longer than this many nominal periods lands in the overflow bin (p99 then = the max seen).
PERIOD_RANGE = 3.0
#: Execution time / start latency histograms cover 0 .. this many ms (the default board's 16-bit us diagnostics end at 65.5 ms).
DIAG_RANGE_MS = 66.0
#: Columns of the samples CSV (one row per frame; the columns a frame does not carry stay empty).
CSV_COLUMNS = ("time_s", "frame", "counter", "period_ms", "exec_ms", "latency_ms")


class RunningStats:
    """Welford's online mean and variance, with min and max: O(1) memory."""

    __slots__ = ("n", "mean", "_m2", "min", "max")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self._m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, x: float) -> None:
        """Fold in one sample."""
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self._m2 += delta * (x - self.mean)
        self.min = min(self.min, x)
        self.max = max(self.max, x)

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1); 0 for fewer than two samples."""
        return math.sqrt(self._m2 / (self.n - 1)) if self.n > 1 else 0.0


class FixedHistogram:
    """Counts in fixed-width bins over [lo, hi), plus an underflow and an overflow bin: O(bins) memory.

    Quantiles are reported as the upper edge of the bin they fall in (never optimistic by more
    than nothing, pessimistic by at most one bin width), clamped to the extremes actually seen.
    """

    def __init__(self, lo: float, hi: float, width: float) -> None:
        if not hi > lo or not width > 0:
            raise ValueError(f"histogram needs lo < hi and width > 0, got lo={lo} hi={hi} width={width}")
        self.lo = lo
        self.width = width
        self.bins = int(math.ceil((hi - lo) / width))
        self.hi = lo + self.bins * width
        self.counts = array("Q", bytes(8 * (self.bins + 2)))  # [underflow, bins..., overflow]
        self.stats = RunningStats()

    def add(self, x: float) -> None:
        """Count one sample."""
        self.stats.add(x)
        if x < self.lo:
            self.counts[0] += 1
        elif x >= self.hi:
            self.counts[-1] += 1
        else:
            self.counts[1 + int((x - self.lo) / self.width)] += 1

    def quantile(self, q: float) -> float:
        """The q-quantile (0 < q <= 1) to one bin width; NaN without samples."""
        n = self.stats.n
        if n == 0:
            return math.nan
        rank = math.ceil(q * n)
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                if i == 0:
                    return self.stats.min
                if i == len(self.counts) - 1:
                    return self.stats.max
                return min(self.stats.max, self.lo + i * self.width)
        return self.stats.max

    def nonzero_bins(self) -> list[tuple[float, float, int]]:
        """(left edge, right edge, count) of every occupied in-range bin (for plots)."""
        return [(self.lo + (i - 1) * self.width, self.lo + i * self.width, c)
                for i, c in enumerate(self.counts) if 0 < i <= self.bins and c]


@dataclass(frozen=True)
class TimingSummary:
    """What a recording of the SOC core's frames showed (times in ms unless the name says otherwise)."""

    nominal_ms: float
    frames: int
    duration_s: float
    period_mean: float
    period_std: float
    period_p99: float
    period_min: float
    period_max: float
    jitter: float  # largest |period - nominal|
    missed: int
    repeated: int
    lead_gap_ms: float  # recording start to the first frame
    tail_gap_ms: float  # last frame to the recording end
    exec_mean: float
    exec_p99: float
    exec_max: float
    latency_mean: float
    latency_p99: float
    latency_max: float
    diag_frames: int
    #: Why missed and repeated cycles were not measured (no cycle counter on this board); "" when they were.
    counter_missing: str = ""

    @property
    def not_covered(self) -> list[str]:
        """Checks this recording could not make, each a reason for the `not_covered` fixture."""
        return [self.counter_missing] if self.counter_missing else []

    def measurements(self, budgets: Any, prefix: str = "soc") -> list[Measurement]:
        """Every statistic as a Measurement with its limit and marginal band from a hil.config.TimingBudgets
        (missed and repeated cycles only where the board has a cycle counter: see `not_covered`)."""
        nom = budgets.soc_period_ms
        tol = budgets.period_tolerance_ms
        f = budgets.marginal_fraction

        def m(name: str, value: float, unit: str, low: float | None, high: float | None, ref: float) -> Measurement:
            return Measurement.banded(f"{prefix}_{name}", value, unit, low, high, ref, f)

        out = [
            m("period_mean", self.period_mean, "ms", nom - tol / 4, nom + tol / 4, nom),
            m("period_std", self.period_std, "ms", None, budgets.period_std_ms, 0.0),
            m("period_p99", self.period_p99, "ms", None, nom + budgets.period_p99_tolerance_ms, nom),
            m("period_min", self.period_min, "ms", nom - tol, None, nom),
            m("period_max", self.period_max, "ms", None, nom + tol, nom),
            m("period_jitter", self.jitter, "ms", None, tol, 0.0),
            m("missed_cycles", float(self.missed), "cycles", None, float(budgets.max_missed_cycles), 0.0),
            m("repeated_cycles", float(self.repeated), "cycles", None, float(budgets.max_repeated_cycles), 0.0),
            m("exec_mean", self.exec_mean, "ms", None, budgets.max_exec_ms, 0.0),
            m("exec_p99", self.exec_p99, "ms", None, budgets.max_exec_ms, 0.0),
            m("exec_max", self.exec_max, "ms", None, budgets.max_exec_ms, 0.0),
            m("start_latency_mean", self.latency_mean, "ms", None, budgets.max_start_latency_ms, 0.0),
            m("start_latency_p99", self.latency_p99, "ms", None, budgets.max_start_latency_ms, 0.0),
            m("start_latency_max", self.latency_max, "ms", None, budgets.max_start_latency_ms, 0.0),
        ]
        if self.counter_missing:
            out = [x for x in out if not x.name.endswith(("_missed_cycles", "_repeated_cycles"))]
        return out

    def describe(self) -> str:
        """One line for logs and failure messages."""
        return (f"{self.frames} frames in {self.duration_s:.1f} s: period mean {self.period_mean:.3f} ms, "
                f"std {self.period_std:.3f}, p99 {self.period_p99:.3f}, min {self.period_min:.3f}, "
                f"max {self.period_max:.3f}, jitter {self.jitter:.3f}; missed {self.missed}, repeated {self.repeated}; "
                f"exec mean/p99/max {self.exec_mean:.3f}/{self.exec_p99:.3f}/{self.exec_max:.3f} ms; "
                f"start latency mean/p99/max {self.latency_mean:.3f}/{self.latency_p99:.3f}/{self.latency_max:.3f} ms")


#: Names of the statistics `TimingSummary.measurements` records (after the prefix).
STATISTICS = ("period_mean", "period_std", "period_p99", "period_min", "period_max", "period_jitter", "missed_cycles",
              "repeated_cycles", "exec_mean", "exec_p99", "exec_max", "start_latency_mean", "start_latency_p99",
              "start_latency_max")


def measurement_names(prefix: str = "soc") -> tuple[str, ...]:
    """Every measurement name a TimingSummary records under `prefix` (for cases that expect violations)."""
    return tuple(f"{prefix}_{name}" for name in STATISTICS)


class CycleTimingStream:
    """Folds SOC frames into running statistics as they arrive; `finish(end)` closes the recording.

    Cycles are counted from time and the SOC frame's rolling counter together: the counter says
    how many cycles passed modulo its range, the receive time says which multiple. A frame with
    the previous counter and no time between is a repeated cycle (not a period sample).
    """

    def __init__(self, period_ms: float, *, counter_modulo: int | None = None,
                 start_time: float | None = None, csv_path: Path | None = None, counter_missing: str = "") -> None:
        if period_ms <= 0:
            raise ValueError(f"period_ms must be > 0, got {period_ms}")
        self.period_ms = period_ms
        self.modulo = counter_modulo
        self.counter_missing = counter_missing
        #: When the recording ended (set by `record_timing` at the block's exit; `finish` defaults to it).
        self.end_time: float | None = None
        self.start_time = time.time() if start_time is None else start_time
        self.periods = FixedHistogram(0.0, PERIOD_RANGE * period_ms, PERIOD_BIN_MS)
        self.exec = FixedHistogram(0.0, DIAG_RANGE_MS, DIAG_BIN_MS)
        self.latency = FixedHistogram(0.0, DIAG_RANGE_MS, DIAG_BIN_MS)
        self.frames = 0
        self.missed = 0
        self.repeated = 0
        self.jitter = 0.0
        self.first: float | None = None
        self.last: float | None = None
        self._last_counter: int | None = None
        self._lock = threading.Lock()
        self._csv_file: IO[str] | None = None
        self._csv: Any = None
        if csv_path is not None:
            Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
            self._csv_file = open(csv_path, "w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._csv_file)
            self._csv.writerow(CSV_COLUMNS)

    def open_at(self, first_frame: float) -> None:
        """Start the recording at `first_frame` (a new boot's first frame: no lead gap)."""
        self.start_time = first_frame

    def _elapsed_cycles(self, dt_ms: float, counter: int | None) -> int:
        by_time = max(0, round(dt_ms / self.period_ms))
        if counter is None or self._last_counter is None or not self.modulo:
            return by_time
        step = (counter - self._last_counter) % self.modulo
        # The multiple of the counter range closest to what the clock says.
        wraps = max(0, round((by_time - step) / self.modulo))
        if step == 0 and wraps == 0:
            return 0  # the counter did not move: the same cycle again
        # The counter counts frames the core sent (lost frames show as jumps); the clock counts deadlines
        # (a core that skips activations keeps its counter running): the larger says how many passed.
        return max(by_time, step + wraps * self.modulo)

    def on_soc(self, timestamp: float, counter: int | None = None) -> None:
        """One SOC frame (receive time in s, its cycle counter if the board has one)."""
        with self._lock:
            period: float | None = None
            if self.last is None:
                self.first = timestamp
            else:
                dt_ms = (timestamp - self.last) * 1000.0
                cycles = self._elapsed_cycles(dt_ms, counter)
                if cycles == 0:
                    self.repeated += 1
                    self._row(timestamp, "soc_repeat", counter, None, None, None)
                    if round(dt_ms / self.period_ms) == 0:
                        return  # a duplicate: no period sample
                    cycles = round(dt_ms / self.period_ms)  # a stuck counter one or more periods later
                self.missed += cycles - 1
                period = dt_ms
                self.periods.add(dt_ms)
                self.jitter = max(self.jitter, abs(dt_ms - self.period_ms))
            self.frames += 1
            self.last = timestamp
            self._last_counter = counter
            self._row(timestamp, "soc", counter, period, None, None)

    def on_diag(self, timestamp: float, exec_us: float, latency_us: float, counter: int | None = None) -> None:
        """One cycle-diagnostics frame (execution time and start latency in us, as the core reports them)."""
        with self._lock:
            self.exec.add(exec_us / 1000.0)
            self.latency.add(latency_us / 1000.0)
            self._row(timestamp, "diag", counter, None, exec_us / 1000.0, latency_us / 1000.0)

    def _row(self, t: float, kind: str, counter: int | None, period: float | None, exec_ms: float | None,
             latency_ms: float | None) -> None:
        if self._csv is None:
            return
        self._csv.writerow([f"{t - self.start_time:.6f}", kind, "" if counter is None else counter,
                            "" if period is None else f"{period:.4f}", "" if exec_ms is None else f"{exec_ms:.3f}",
                            "" if latency_ms is None else f"{latency_ms:.3f}"])

    def _silent_cycles(self, gap_ms: float) -> int:
        """Cycles due in a silent stretch at an edge of the recording (half a period of grace)."""
        return max(0, math.floor(gap_ms / self.period_ms - 0.5))

    def finish(self, end_time: float | None = None) -> TimingSummary:
        """Close the recording at `end_time` (default: when `record_timing` ended, else now) and summarise;
        silent stretches at both edges count as missed cycles."""
        end = end_time if end_time is not None else self.end_time if self.end_time is not None else time.time()
        with self._lock:
            if self._csv_file is not None:
                self._csv_file.close()
                self._csv_file = None
                self._csv = None
            if self.first is None or self.last is None:
                lead = tail = max(0.0, (end - self.start_time) * 1000.0)
                missed = self._silent_cycles(lead)
            else:
                lead = max(0.0, (self.first - self.start_time) * 1000.0)
                tail = max(0.0, (end - self.last) * 1000.0)
                missed = self.missed + self._silent_cycles(lead) + self._silent_cycles(tail)
            p = self.periods.stats
            nan = math.nan
            return TimingSummary(
                nominal_ms=self.period_ms, frames=self.frames, duration_s=max(0.0, end - self.start_time),
                period_mean=p.mean if p.n else nan, period_std=p.std if p.n else nan,
                period_p99=self.periods.quantile(0.99), period_min=p.min if p.n else nan,
                period_max=p.max if p.n else nan, jitter=self.jitter if p.n else nan,
                missed=missed, repeated=self.repeated, lead_gap_ms=lead, tail_gap_ms=tail,
                exec_mean=self.exec.stats.mean if self.exec.stats.n else nan, exec_p99=self.exec.quantile(0.99),
                exec_max=self.exec.stats.max if self.exec.stats.n else nan,
                latency_mean=self.latency.stats.mean if self.latency.stats.n else nan,
                latency_p99=self.latency.quantile(0.99),
                latency_max=self.latency.stats.max if self.latency.stats.n else nan,
                diag_frames=self.exec.stats.n, counter_missing=self.counter_missing)


def _num(value: Any) -> int:
    return int(getattr(value, "value", value))


@contextlib.contextmanager
def record_timing(can: Any, period_ms: float, csv_path: Path | None = None) -> Iterator[CycleTimingStream]:
    """Stream the SOC core's frames from a CanChannel into a CycleTimingStream for the with-block.

    Call `finish()` on the yielded stream after the block (the recording ends at the block's exit).
    """
    counter, missing = board_counter(can)
    stream = CycleTimingStream(period_ms, counter_modulo=counter.modulo if counter else None, csv_path=csv_path,
                               counter_missing=missing)

    def soc(frame: Any) -> None:
        value = frame.signals.get(counter.signal) if counter is not None else None
        stream.on_soc(frame.timestamp, None if value is None else _num(value))

    def diag(frame: Any) -> None:
        stream.on_diag(frame.timestamp, *_diag(frame.signals))

    with can.tap(contract.MSG_SOC_CORE, soc), can.tap(contract.MSG_CYCLE_DIAG, diag):
        try:
            yield stream
        finally:
            stream.end_time = time.time()


def _diag(s: Any) -> tuple[float, float, int]:
    """Execution time (us), start latency (us) and cycles since boot of one cycle-diagnostics frame."""
    return (float(s[contract.SIG_DIAG_EXEC_TIME]), float(s[contract.SIG_DIAG_START_LATENCY]),
            _num(s[contract.SIG_DIAG_CYCLE_COUNTER]))


def board_counter(can: Any) -> tuple[CounterSignal | None, str]:
    """The SOC frame's cycle counter as the channel's DUT profile names it (`soc_core.counter`, its range from
    the DBC), and - when the board has none - why missed and repeated cycles cannot be measured."""
    counter = cycle_counter(can.db, can.profile)
    if counter is not None:
        return counter, ""
    return None, (f"counter signal missing: profile {can.profile.name} names no cycle counter in its SOC frame "
                  f"({can.profile.can.dbc_message(contract.MSG_SOC_CORE)}; soc_core.counter is null): missed and "
                  "repeated SOC cycles not checked")


def reset_to_first_frame_s(timestamps: Sequence[float], reset_time: float, period_ms: float) -> float | None:
    """Seconds from `reset_time` to the first SOC frame of the new boot; None if none came.

    The new boot's first frame is the first one after `reset_time` that follows a silent gap of
    more than 1.5 periods: frames the old boot still sent between the reset request and the reset
    itself are not it.
    """
    gap_s = 1.5 * period_ms / 1000.0
    previous: float | None = None
    for t in timestamps:
        if t > reset_time:
            # Without an earlier frame the reset itself is the start of the silence.
            anchor = reset_time if previous is None else previous
            if t - anchor > gap_s:
                return t - reset_time
        previous = t
    return None


@dataclass
class _Segment:
    """Frames of one boot of the DUT inside a TimingCase: from its first SOC frame to the next reset."""

    label: str
    stream: CycleTimingStream
    reset_time: float | None  # None: the segment is open from the case's start
    open: bool
    first_frame_s: float | None = None  # reset to this boot's first SOC frame
    end: float | None = None


class TimingCase:
    """One timing case: streams the SOC frames into statistics, a CSV and plots in the evidence directory.

    `reset(label)` (called just before a reset, power-on or install is triggered) closes the current
    boot's segment and opens the next one at the new boot's first SOC frame, whose delay after the
    reset is measured. The new boot shows by a silence of more than 1.5 periods before its first
    frame, or - for a boot quick enough to leave none - by the cycle diagnostics' cycles-since-boot counter
    falling. Each segment is judged against the budgets on its own; the CSV and plots
    show the whole case with the resets marked.
    """

    def __init__(self, can: Any, budgets: Any, evidence_dir: Path | None, title: str, stem: str = "timing") -> None:
        self.can = can
        self.budgets = budgets
        self.evidence_dir = Path(evidence_dir) if evidence_dir is not None else None
        self.title = title
        self.stem = stem
        self.period_ms = float(budgets.soc_period_ms)
        self.counter, self.counter_missing = board_counter(can)
        self.modulo = self.counter.modulo if self.counter is not None else None
        self.marks: list[tuple[str, float]] = []
        self.segments: list[_Segment] = []
        self.plots: list[Path] = []
        self._lock = threading.Lock()
        self._last_soc: float | None = None
        self._last_soc_frame: tuple[float, int | None] | None = None
        self._last_diag: int | None = None
        self._stack = contextlib.ExitStack()
        self.whole: CycleTimingStream | None = None
        self.start_time = 0.0

    @property
    def csv_path(self) -> Path | None:
        return self.evidence_dir / f"{self.stem}.csv" if self.evidence_dir is not None else None

    def __enter__(self) -> "TimingCase":
        self.start_time = time.time()
        self.whole = self._stream(self.start_time, self.csv_path)
        self.segments.append(_Segment("boot 1", self._stream(self.start_time), None, True))
        self._stack.enter_context(self.can.tap(contract.MSG_SOC_CORE, self._on_soc))
        self._stack.enter_context(self.can.tap(contract.MSG_CYCLE_DIAG, self._on_diag))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        end = time.time()
        assert self.whole is not None
        self.whole.end_time = end
        with self._lock:
            for seg in self.segments:
                if seg.end is None:
                    seg.end = end
        self.summary = self.whole.finish(end)
        if self.evidence_dir is not None and self.csv_path is not None:
            from hil.report.plots import plot_timing  # matplotlib only when plots are wanted

            try:
                self.plots = plot_timing(self.csv_path, self.evidence_dir, self.budgets, self.title, self.marks,
                                         stem=self.stem)
            except Exception as exc:  # a plot problem must not hide the case's verdict; the CSV is kept
                log.warning("timing plots for %s failed: %s: %s", self.title, type(exc).__name__, exc)

    def _stream(self, start_time: float, csv_path: Path | None = None) -> CycleTimingStream:
        return CycleTimingStream(self.period_ms, counter_modulo=self.modulo, start_time=start_time, csv_path=csv_path,
                                 counter_missing=self.counter_missing)

    def mark(self, label: str) -> float:
        """Note a phase boundary (seconds since the case started, drawn on the plot); returns the wall time."""
        now = time.time()
        self.marks.append((label, now - self.start_time))
        return now

    def reset(self, label: str) -> float:
        """Call just before a reset is triggered: the current boot's segment ends, the next opens at its first frame."""
        now = self.mark(label)
        with self._lock:
            self.segments[-1].end = now
            self.segments.append(_Segment(f"boot {len(self.segments) + 1} ({label})", self._stream(now), now, False))
        return now

    def _on_soc(self, frame: Any) -> None:
        value = frame.signals.get(self.counter.signal) if self.counter is not None else None
        counter = None if value is None else _num(value)
        ts = frame.timestamp
        assert self.whole is not None
        self.whole.on_soc(ts, counter)
        with self._lock:
            for seg in self.segments:
                if seg.end is not None and ts > seg.end:
                    continue
                if not seg.open and seg.reset_time is not None:
                    # The new boot's first frame follows a silence (see reset_to_first_frame_s).
                    anchor = seg.reset_time if self._last_soc is None else self._last_soc
                    if ts > seg.reset_time and ts - anchor > 1.5 * self.period_ms / 1000.0:
                        seg.open = True
                        seg.first_frame_s = ts - seg.reset_time
                        seg.stream.open_at(ts)
                if seg.open:
                    seg.stream.on_soc(ts, counter)
            self._last_soc = ts
            self._last_soc_frame = (ts, counter)

    def _on_diag(self, frame: Any) -> None:
        exec_us, latency_us, counter = _diag(frame.signals)
        args = (frame.timestamp, exec_us, latency_us, counter)
        assert self.whole is not None
        self.whole.on_diag(*args)
        with self._lock:
            # The cycles-since-boot counter of the diagnostics: when it falls, a new boot began, even one quick enough to
            # leave no silence; its first SOC frame is the one just received (sent before this frame).
            restarted = self._last_diag is not None and counter < self._last_diag
            self._last_diag = counter
            for seg in self.segments:
                if (restarted and not seg.open and seg.reset_time is not None and self._last_soc_frame is not None
                        and self._last_soc_frame[0] > seg.reset_time):
                    ts, soc_counter = self._last_soc_frame
                    seg.open = True
                    seg.first_frame_s = ts - seg.reset_time
                    seg.stream.open_at(ts)
                    seg.stream.on_soc(ts, soc_counter)
                if seg.open and (seg.end is None or frame.timestamp <= seg.end):
                    seg.stream.on_diag(*args)

    def segment_summaries(self) -> list[tuple[_Segment, TimingSummary]]:
        """Each boot's statistics (after the with-block)."""
        return [(seg, seg.stream.finish(seg.end)) for seg in self.segments]
