"""hil.dut.settle: a value read once settled, its settling time a measurement - never the first frame after t."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import pytest

from hil.dut.settle import settle, settle_signal, settle_until
from hil.errors import HilTimeout


@dataclass(frozen=True)
class _Frame:
    name: str
    signals: dict
    received: float
    timestamp: float = 0.0

    def describe(self) -> str:
        return f"{self.name} {self.signals}"


class _Bus:
    """A channel whose frames arrive on a script: (delay after start s, signals)."""

    def __init__(self, script: list[tuple[float, dict]]) -> None:
        self.frames: list[_Frame] = []
        self._cond = threading.Condition()
        self.start = time.monotonic()
        self._thread = threading.Thread(target=self._play, args=(script,), daemon=True)
        self._thread.start()

    def _play(self, script: list[tuple[float, dict]]) -> None:
        for delay, signals in script:
            time.sleep(max(0.0, self.start + delay - time.monotonic()))
            with self._cond:
                self.frames.append(_Frame("M", signals, time.monotonic()))
                self._cond.notify_all()

    def frames_since(self, message: str, since: float) -> list[_Frame]:
        with self._cond:
            return [f for f in self.frames if f.received >= since]

    def wait_for(self, message, signals=None, predicate=None, timeout=2.0, since=None):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                new = [f for f in self.frames if since is None or f.received >= since]
                if new:
                    return new[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HilTimeout("nothing", "")
                self._cond.wait(left)


def test_a_stale_first_frame_is_not_the_value_and_the_settling_time_is_measured():
    bus = _Bus([(0.05, {"X": 50.0}), (0.15, {"X": 20.0}), (0.25, {"X": 20.0}), (0.35, {"X": 20.0})])
    result = settle_signal(bus, "M", "X", 20.0, tolerance=0.1, name="limit", since=bus.start, limit_s=1.0)
    assert result.settled and result.signal("X") == 20.0, result.describe()
    assert 0.14 <= result.seconds <= 0.3, result.seconds  # the first of the two agreeing frames, not the stale one
    m = result.measurement
    assert m.name == "limit_settle_time" and m.high == 1.0 and m.passed, str(m)


def test_a_value_that_never_comes_fails_its_measurement_and_shows_what_came_instead():
    bus = _Bus([(0.02 * i, {"X": 50.0}) for i in range(1, 12)])
    result = settle_signal(bus, "M", "X", 20.0, tolerance=0.1, name="limit", since=bus.start, limit_s=0.3)
    assert not result.settled and math.isinf(result.seconds)
    assert not result.measurement.passed and result.signal("X") == 50.0
    assert "did not settle within 0.3 s" in result.describe() and "'X': 50.0" in result.describe()


def test_one_agreeing_frame_is_not_settled_and_a_flapping_value_never_is():
    bus = _Bus([(0.05, {"X": 20.0}), (0.1, {"X": 50.0}), (0.15, {"X": 20.0}), (0.2, {"X": 50.0})])
    result = settle_signal(bus, "M", "X", 20.0, tolerance=0.1, name="limit", since=bus.start, limit_s=0.35)
    assert not result.settled, result.describe()


def test_a_run_begun_in_time_may_complete_after_the_limit():
    bus = _Bus([(0.05, {"X": 50.0}), (0.25, {"X": 20.0}), (0.45, {"X": 20.0})])
    result = settle_signal(bus, "M", "X", 20.0, tolerance=0.1, name="limit", since=bus.start, limit_s=0.3)
    assert result.settled and 0.2 <= result.seconds <= 0.3, result.describe()


def test_a_multiplexed_message_settles_when_every_group_agrees():
    script = [(0.05, {"G": 0, "T1": 25}), (0.1, {"G": 1, "T2": 2}), (0.15, {"G": 0, "T1": 2}), (0.2, {"G": 1, "T2": 2})]
    bus = _Bus(script)
    cold = settle(bus, "M", lambda s: all(v == 2 for k, v in s.items() if k != "G"), name="t", what="cold cells",
                  since=bus.start, limit_s=1.0, hold=2)
    assert cold.settled and 0.09 <= cold.seconds <= 0.2, cold.describe()  # from group 1 on: both groups agree
    with pytest.raises(ValueError):
        settle(bus, "M", lambda s: True, name="t", what="x", since=bus.start, limit_s=1.0, hold=0)


def test_settle_until_asks_again_until_the_board_says_yes_and_measures_it():
    answers = iter([(False, "refused"), (False, "refused"), (True, "accepted")])
    since = time.monotonic()
    m, seen = settle_until(lambda: next(answers), name="window", what="activation", since=since, limit_s=2.0,
                           poll_s=0.01)
    assert m.passed and seen == "accepted" and m.name == "window_settle_time", str(m)
    m, seen = settle_until(lambda: (False, "refused"), name="window", what="activation", since=time.monotonic(),
                           limit_s=0.05, poll_s=0.01)
    assert not m.passed and math.isinf(m.value) and seen == "activation: refused"
