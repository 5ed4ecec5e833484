"""The simulated MCU's own time: what the firmware spends, without the host's scheduling.

The virtual board runs as Python threads on a shared host. A thread that should run now may wait
for a core or for the GIL, and a sleep may return late; on a real MCU the RTOS starts the
highest-priority task on time. So the SOC core keeps its timing on a model timeline made only of the
time it was *charged*: the modelled execution time (the build's `exec_ms`), flash operations
(`Cpu.wait` in hil/sim/board.py), and contended `ModelLock`s (a lock another board task holds while
it erases flash is a real stall of the firmware, and it counts).
The CPU time the host spends running the model's Python is not the MCU's: it grows with the host's
load (cold caches, a shared core), so it is no part of the timeline either. Host scheduling never
shows as SOC jitter or execution time; every model stall does.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

_local = threading.local()


def charge(seconds: float) -> None:
    """Charge the calling thread `seconds` of model time spent waiting (a modelled duration)."""
    _local.charged = charged() + max(0.0, seconds)


def charged() -> float:
    """Model waiting time charged to the calling thread so far."""
    return float(getattr(_local, "charged", 0.0))


def wall_offset(tries: int = 5) -> float:
    """time.time() - time.monotonic(), read so that a preemption between the two reads does not skew it.

    Two reads are two instants: a thread preempted between them (a loaded host) would put the
    scheduling delay into every conversion. Bracketed by monotonic reads; the tightest bracket wins.
    """
    best: tuple[float, float] = (float("inf"), 0.0)
    for _ in range(tries):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        best = min(best, (after - before, wall - (before + after) / 2))
        if best[0] < 20e-6:
            break
    return best[1]


class ModelClock:
    """One task's model timeline: a start time plus the waits charged to its thread since then."""

    def __init__(self, start: float | None = None) -> None:
        self._wall_offset = wall_offset()  # one offset per timeline: frame stamps differ by model time only
        self.start_at(time.monotonic() if start is None else start)

    def start_at(self, start: float) -> None:
        """From now on, model time runs from `start` (monotonic seconds) in the calling thread."""
        self._start = start
        self._charged0 = charged()

    def now(self) -> float:
        """Model time of the calling thread (monotonic seconds; never ahead of the host's clock)."""
        t = self._start + (charged() - self._charged0)
        return min(t, time.monotonic())

    def wall(self, t: float) -> float:
        """A monotonic time as wall-clock seconds (what python-can stamps frames with), by the timeline's one offset."""
        return self._wall_offset + t


class ModelLock:
    """A re-entrant lock of the board's model; time spent waiting for it is charged to the waiter."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; a wait for it is charged to the waiter. `blocking=False`: only if it is free now."""
        if self._lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        t0 = time.monotonic()
        self._lock.acquire()
        charge(time.monotonic() - t0)
        return True

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> "ModelLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
