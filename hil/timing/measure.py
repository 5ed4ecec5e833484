"""Measurements declared with their limits (OpenHTF style) and the SOC core's cycle timing.

A measurement carries value, unit and limits; the report shows them side by side and the
verdict comes from the limits, never from a hard-coded result.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from hil.bench import contract


@dataclass(frozen=True)
class Measurement:
    """One measured value against its declared limits (inclusive; None = unbounded)."""

    name: str
    value: float
    unit: str
    low: float | None = None
    high: float | None = None
    #: Marginal band (OpenHTF's marginal limits): a value that passes but lies beyond these is MARGINAL.
    marginal_low: float | None = None
    marginal_high: float | None = None

    @classmethod
    def banded(cls, name: str, value: float, unit: str, low: float | None, high: float | None, reference: float,
               fraction: float) -> "Measurement":
        """A measurement whose marginal band starts at `fraction` of the way from `reference` to each limit."""
        return cls(name, value, unit, low, high,
                   None if low is None else reference + fraction * (low - reference),
                   None if high is None else reference + fraction * (high - reference))

    @property
    def passed(self) -> bool:
        """Within the limits (a NaN value - nothing was measured - never passes)."""
        if self.value != self.value:
            return False
        return (self.low is None or self.value >= self.low) and (self.high is None or self.value <= self.high)

    @property
    def marginal(self) -> bool:
        """Passed, but outside the marginal band: close to a limit."""
        return self.passed and ((self.marginal_low is not None and self.value < self.marginal_low)
                                or (self.marginal_high is not None and self.value > self.marginal_high))

    def limits_text(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "+inf" if self.high is None else f"{self.high:g}"
        return f"[{lo} .. {hi}] {self.unit}"

    def __str__(self) -> str:
        verdict = "MARGINAL" if self.marginal else "PASS" if self.passed else "FAIL"
        return f"{self.name} = {self.value:.4g} {self.unit}  limits {self.limits_text()}  {verdict}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "marginal": self.marginal}


def max_gap_ms(frames: Sequence[Any]) -> float:
    """Longest silence of a periodic message in a recording, ms: between frames, and from the start of the
    recording to the first frame and from the last frame to its end (a message that stops is a gap too).

    Between frames the bus timestamps are compared; the edges compare `Frame.received` with the window
    of a `hil.drivers.can.Recording` (`started`, `ended`, both monotonic). No frame: the whole window.
    """
    started = getattr(frames, "started", None) or None
    ended = getattr(frames, "ended", None)
    if not frames:
        return (ended - started) * 1000.0 if started is not None and ended is not None else float("inf")
    gaps = [(b.timestamp - a.timestamp) * 1000.0 for a, b in zip(frames, frames[1:])]
    if started is not None:
        gaps.append((frames[0].received - started) * 1000.0)
    if ended is not None:
        gaps.append((ended - frames[-1].received) * 1000.0)
    return max(gaps, default=float("inf"))


@dataclass(frozen=True)
class CycleTiming:
    """Timing of the SOC core from its own frames: periods between SOC frames and the cycle diagnostics' contents.

    `timestamps` are CAN receive times (s); `exec_us` / `latency_us` come from the cycle diagnostics;
    `counters` are the CycleDiag cycle counters, whose gaps reveal cycles the core skipped.
    """

    timestamps: Sequence[float]
    exec_us: Sequence[int]
    latency_us: Sequence[int]
    counters: Sequence[int]
    #: Silence after the last SOC frame up to the end of the recording, ms (0 when unknown).
    tail_gap_ms: float = 0.0

    @classmethod
    def from_frames(cls, soc_frames: Sequence[Any], diag_frames: Sequence[Any]) -> "CycleTiming":
        ended = getattr(soc_frames, "ended", None)
        tail = (float(ended) - float(soc_frames[-1].received)) * 1000.0 if ended is not None and soc_frames else 0.0
        return cls([f.timestamp for f in soc_frames], [int(f.signals[contract.SIG_DIAG_EXEC_TIME]) for f in diag_frames],
                   [int(f.signals[contract.SIG_DIAG_START_LATENCY]) for f in diag_frames],
                   [int(f.signals[contract.SIG_DIAG_CYCLE_COUNTER]) for f in diag_frames], max(0.0, tail))

    @property
    def periods_ms(self) -> list[float]:
        ts = self.timestamps
        return [(b - a) * 1000.0 for a, b in zip(ts, ts[1:])]

    def missed_cycles(self, period_ms: float) -> int:
        """Cycles lost: gaps in the core's own counter, or frame gaps of 1.5 periods or more."""
        by_counter = sum(max(0, b - a - 1) for a, b in zip(self.counters, self.counters[1:]))
        gaps = [*self.periods_ms, self.tail_gap_ms]  # a core that falls silent is missing cycles up to the end
        by_gap = sum(max(0, round(p / period_ms) - 1) for p in gaps if p >= 1.5 * period_ms)
        return max(by_counter, by_gap)

    def measurements(self, budgets: Any) -> list[Measurement]:
        """Measurements against a hil.config.TimingBudgets."""
        periods = self.periods_ms or [float("nan")]
        nominal = budgets.soc_period_ms
        tol = budgets.period_tolerance_ms
        mean = statistics.fmean(periods)
        return [
            Measurement("soc_period_mean", mean, "ms", nominal - tol / 4, nominal + tol / 4),
            Measurement("soc_period_min", min(periods), "ms", nominal - tol, None),
            Measurement("soc_period_max", max(periods), "ms", None, nominal + tol),
            Measurement("soc_exec_max", max(self.exec_us or [0]) / 1000.0, "ms", 0.0, budgets.max_exec_ms),
            Measurement("soc_start_latency_max", max(self.latency_us or [0]) / 1000.0, "ms", 0.0, budgets.max_start_latency_ms),
            Measurement("soc_missed_cycles", float(self.missed_cycles(nominal)), "cycles", 0.0, float(budgets.max_missed_cycles)),
        ]
