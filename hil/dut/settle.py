"""Values the board derives from an input it samples, read once they have settled - never the first frame after t.

A board scans its temperature sensors, measures its pack current every cycle and applies a
configuration package at its next cycle: a frame sent just after an input changed may still carry
the value from before (on a busy host more so, since frames queue on their way). The DUT profile
declares how long the board may take (`settling:` in its YAML, `DutProfile.settling`). A case
notes the time before it changes the input, then `settle(...)` watches the message until `hold`
frames in a row satisfy the case's condition, and returns the time that took as a `Measurement`
with the profile's limit - so the report shows every settling time next to its limit, and a board
that never settles, or settles late, fails on that measurement with the frames it sent instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from hil.errors import HilTimeout
from hil.timing.measure import Measurement

#: Frames in a row that must agree before a value counts as settled (one more than "the first frame").
HOLD_FRAMES = 2
#: The last frames of the watched message an error shows.
SHOWN = 8


class SettleLink(Protocol):
    """What `settle` needs of a CAN channel (`hil.drivers.can.CanChannel`)."""

    def wait_for(self, message: str, signals: dict[str, Any] | None = None, predicate: Any = None,
                 timeout: float = 2.0, since: float | None = None) -> Any: ...

    def frames_since(self, message: str, since: float) -> list[Any]: ...


@dataclass(frozen=True)
class Settling:
    """How a value settled (or did not): the time from the input's change to the first frame of the settled run."""

    name: str
    what: str
    limit_s: float
    #: Input change to the first of `hold` agreeing frames, s; inf when the value did not settle.
    seconds: float
    #: The last frame seen (the settled value when `settled`), None when the message never came.
    last: Any
    frames: Sequence[Any] = field(default_factory=tuple)

    @property
    def settled(self) -> bool:
        return math.isfinite(self.seconds)

    @property
    def measurement(self) -> Measurement:
        """`<name>_settle_time` in s against [0, the profile's settling time]."""
        return Measurement(f"{self.name}_settle_time", self.seconds, "s", 0.0, self.limit_s)

    def signal(self, name: str) -> float:
        """A signal of the last frame seen, as a number (NaN when no frame came: a measurement of it fails)."""
        if self.last is None:
            return math.nan
        value = self.last.signals[name]
        return float(getattr(value, "value", value))

    def describe(self) -> str:
        """What was awaited and what came instead, for an assertion message."""
        if self.settled:
            return f"{self.what}: settled after {self.seconds:.3f} s (limit {self.limit_s:g} s)"
        shown = [f.describe() for f in list(self.frames)[-SHOWN:]] or ["(no frame at all)"]
        return (f"{self.what}: did not settle within {self.limit_s:g} s (the DUT profile's settling time); "
                f"last frames:\n  " + "\n  ".join(shown))


def settle(can: SettleLink, message: str, condition: Callable[[dict[str, Any]], bool], *, name: str, what: str,
           since: float, limit_s: float, hold: int = HOLD_FRAMES) -> Settling:
    """Watch `message` from `since` (time.monotonic() before the input changed) until `hold` frames in a row
    satisfy `condition` (their framework signals); give up `limit_s` after `since` if no agreeing run has begun
    by then, or `limit_s` after a run began if it cannot complete. Never raises for a value that does not
    settle: the returned `Settling` fails its measurement and describes the frames seen.

    `hold` > 1 is what "settled" means: the first frame after a change may be stale, the second may not
    disagree. For a multiplexed message, `hold` is the number of its groups (each group agrees once).
    """
    if hold < 1:
        raise ValueError(f"hold must be at least one frame, got {hold}")
    deadline = since + limit_s
    frames: list[Any] = []
    known: set[int] = set()
    run_start: Any = None
    run = 0
    cursor = since
    while True:
        for frame in can.frames_since(message, cursor):
            if id(frame) in known:
                continue
            known.add(id(frame))
            frames.append(frame)
            cursor = frame.received
            if condition(frame.signals):
                run_start = run_start if run else frame
                run += 1
            else:
                run, run_start = 0, None
            if run >= hold:
                return Settling(name, what, limit_s, max(0.0, run_start.received - since), frame, tuple(frames))
        now = time.monotonic()
        # A run that began in time may finish after the limit: its first frame is what is measured.
        end = deadline if run == 0 else max(deadline, run_start.received + limit_s)
        if now >= end:
            break
        try:
            can.wait_for(message, timeout=end - now, since=cursor + 1e-6 if frames else cursor)
        except HilTimeout:
            pass
    return Settling(name, what, limit_s, math.inf, frames[-1] if frames else None, tuple(frames))


def settle_signal(can: SettleLink, message: str, signal: str, expected: float, *, tolerance: float, name: str,
                  since: float, limit_s: float, hold: int = HOLD_FRAMES) -> Settling:
    """`settle` until `signal` of `message` is within `tolerance` of `expected`."""

    def near(signals: dict[str, Any]) -> bool:
        value = signals.get(signal)
        return value is not None and abs(float(getattr(value, "value", value)) - expected) <= tolerance

    return settle(can, message, near, name=name, what=f"{message}.{signal} = {expected:g} +/- {tolerance:g}",
                  since=since, limit_s=limit_s, hold=hold)


def settle_until(probe: Callable[[], tuple[bool, str]], *, name: str, what: str, since: float, limit_s: float,
                 poll_s: float = 0.1) -> tuple[Measurement, str]:
    """For a derived value the bus does not show (the board's verdict on a request): call `probe` until it
    returns (True, seen) or `limit_s` after `since` has passed. Returns the settling time as a Measurement
    (inf when it never came) and what the last probe saw."""
    seen = ""
    while True:
        ok, seen = probe()
        now = time.monotonic()
        if ok:
            return Measurement(f"{name}_settle_time", max(0.0, now - since), "s", 0.0, limit_s), seen
        if now - since >= limit_s:
            return Measurement(f"{name}_settle_time", math.inf, "s", 0.0, limit_s), f"{what}: {seen}"
        time.sleep(min(poll_s, max(0.0, since + limit_s - now)))  # the probe is a request; nothing to wait on
