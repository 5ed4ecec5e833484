"""`CanChannel`: one python-can bus and ONE notifier per bench, DBC decoding, waits, recorders, traces.

Everything else that reads the bus (the ISO-TP stack of the UDS client, trace loggers) attaches to
`CanChannel.notifier`, so no reader steals frames from another.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import can

from hil.drivers.canbus import TxTap, echoes_own_frames, load_dbc, open_bus
from hil.bench.config import CanConfig
from hil.errors import BenchConfigError, HilError, HilTimeout
from hil.bench.dut_profile import DutProfile

log = logging.getLogger(__name__)

#: Decoded frames kept per message (SOC frames at 10 Hz: ~100 s), and of any message (for `seen`).
HISTORY_PER_MESSAGE = 1000
RECENT_ANY = 20
SEEN_SHOWN = 10


@dataclass(frozen=True)
class Frame:
    """One decoded DBC frame. `timestamp` is the bus receive time (s, as python-can reports it);
    `received` is when this channel decoded it, on the monotonic clock (what `since` compares)."""

    name: str
    signals: dict[str, Any]
    timestamp: float
    raw: can.Message
    received: float = 0.0

    def describe(self) -> str:
        """One line for error messages and logs."""
        stamp = datetime.fromtimestamp(self.timestamp).strftime("%H:%M:%S.%f")[:-3]
        values = " ".join(f"{k}={_show(v)}" for k, v in self.signals.items())
        return f"{stamp} {self.name} {values}"


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _same(actual: Any, expected: Any) -> bool:
    """Signal comparison: numbers by value (enums and cantools named values included), names by name."""
    if isinstance(expected, str) and not hasattr(expected, "value"):
        return str(actual) == expected
    a = getattr(actual, "value", actual)
    e = getattr(expected, "value", expected)
    if isinstance(a, float) or isinstance(e, float):
        return math.isclose(float(a), float(e), rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == e)


class Recording(list):  # type: ignore[type-arg]
    """The frames `CanChannel.recorder` collected, with the window they were recorded in.

    `started` / `ended` are time.monotonic() values (the clock of `Frame.received`); `ended` is None
    while recording. Silence before the first and after the last frame is part of the window: a
    message that stops is a gap up to the end of the recording, not a shorter recording.
    """

    started: float = 0.0
    ended: float | None = None


class _Tap(can.Listener):
    """The channel's single listener on the notifier; never raises into the notifier thread."""

    def __init__(self, channel: "CanChannel") -> None:
        self._channel = channel

    def on_message_received(self, msg: can.Message) -> None:
        try:
            self._channel._on_frame(msg)
        except Exception:  # a decoder or writer bug must not kill the notifier thread
            log.exception("CAN channel: frame %s dropped", msg)

    def on_error(self, exc: Exception) -> None:
        log.warning("CAN channel: receive error: %s", exc)

    def stop(self) -> None:
        pass


class _CallbackSink:
    """A recorder sink that hands each frame to a callback instead of keeping it (`CanChannel.tap`)."""

    def __init__(self, callback: Callable[[Frame], None]) -> None:
        self._callback = callback

    def append(self, frame: Frame) -> None:
        try:
            self._callback(frame)
        except Exception:  # a statistics bug must not cost the other recorders this frame
            log.exception("CAN channel: tap callback failed on %s", frame.name)


class CanChannel:
    """The bench's CAN channel: bus, notifier, DBC database and decoded frames.

    Messages and signals are named as the framework names them (hil.contract.MSG_*); the DUT
    profile maps those names to the board's DBC, whose frame ids are what goes on the wire.
    """

    def __init__(self, cfg: CanConfig, bus: can.BusABC | None = None, profile: DutProfile | None = None) -> None:
        self.cfg = cfg
        self.profile = profile if profile is not None else DutProfile()
        dbc = cfg.dbc or self.profile.can.dbc
        if dbc is None:
            raise BenchConfigError("no DBC: set can.dbc in the bench file or can.dbc in the DUT profile")
        self.db = load_dbc(dbc)
        self._by_id = {m.frame_id: m for m in self.db.messages}
        self._names = {m.name: self.profile.can.framework_message(m.name) for m in self.db.messages}
        self._owns_bus = bus is None
        raw = bus if bus is not None else open_bus(cfg)
        # Every frame the tester sends (ISO-TP, `send`) goes through the tap, so traces hold both directions.
        self.bus: TxTap = TxTap(raw, self._on_sent, echoes_own=echoes_own_frames(cfg))
        self._cond = threading.Condition()
        self._history: dict[str, collections.deque[Frame]] = {
            name: collections.deque(maxlen=HISTORY_PER_MESSAGE) for name in self._names.values()}
        self._recent: collections.deque[Frame] = collections.deque(maxlen=RECENT_ANY)
        self._recorders: list[tuple[str, Recording]] = []
        self.undecoded = 0  # frames not in the DBC (ISO-TP): traced, not decoded
        self._trace_lock = threading.Lock()
        self._writers: list[can.Listener] = []
        self._closed = threading.Event()
        self.notifier = can.Notifier(self.bus, [_Tap(self)], timeout=0.05)

    # ------------------------------------------------------------------ receive path (notifier thread)
    def _on_sent(self, msg: can.Message) -> None:
        """A frame the tester transmitted (is_rx False): traced; never decoded as if the DUT sent it."""
        if self._writers:
            self._trace(msg)

    def _on_frame(self, msg: can.Message) -> None:
        if self.bus.is_echo(msg):
            return  # already traced when it was sent
        if self._writers:
            self._trace(msg)
        spec = self._by_id.get(msg.arbitration_id)
        if spec is None or msg.is_error_frame or msg.is_remote_frame:
            self.undecoded += 1
            return
        try:
            signals = spec.decode(bytes(msg.data), decode_choices=True)
        except Exception as exc:  # a malformed frame is evidence, not a crash
            log.debug("CAN channel: cannot decode %s: %s", spec.name, exc)
            self.undecoded += 1
            return
        fw = self._names[spec.name]
        frame = Frame(fw, self.profile.can.to_framework_signals(fw, dict(signals)),  # type: ignore[arg-type]
                      msg.timestamp, msg, time.monotonic())
        with self._cond:
            self._history[fw].append(frame)
            self._recent.append(frame)
            for name, sink in self._recorders:
                if name == fw:
                    sink.append(frame)
            self._cond.notify_all()

    def _trace(self, msg: can.Message) -> None:
        # Loggers turn the channel name into a number (BLF: u16); a virtual bus's name is not one.
        traced = msg
        if msg.channel is not None and not isinstance(msg.channel, int):
            traced = copy.copy(msg)
            traced.channel = None
        with self._trace_lock:
            for writer in self._writers:
                try:
                    writer.on_message_received(traced)
                except Exception as exc:  # a trace problem must not cost the decoders this frame
                    log.warning("CAN trace: %s cannot write %s: %s", type(writer).__name__, msg, exc)

    # ------------------------------------------------------------------ queries
    def _check_name(self, message: str) -> None:
        if message not in self._history:
            raise ValueError(f"unknown CAN message {message!r}; the DBC (through the DUT profile) has: "
                             f"{', '.join(sorted(self._history))}")

    def wait_for(self, message: str, signals: dict[str, Any] | None = None,
                 predicate: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 2.0,
                 since: float | None = None) -> Frame:
        """The newest frame of `message` received at/after `since` (a time.monotonic() value; default: now)
        whose signals equal `signals` and satisfy `predicate`; waits up to `timeout` s for one.

        Raises HilTimeout listing the last frames of that message (or of any message) seen instead.
        """
        self._check_name(message)
        start = time.monotonic()
        floor = start if since is None else since
        deadline = start + timeout

        def matches(frame: Frame) -> bool:
            if signals and not all(k in frame.signals and _same(frame.signals[k], v) for k, v in signals.items()):
                return False
            return predicate is None or bool(predicate(frame.signals))

        with self._cond:
            while True:
                for frame in reversed(self._history[message]):
                    if frame.received < floor:
                        break
                    if matches(frame):
                        return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed.is_set():
                    break
                self._cond.wait(remaining)
            seen = self._seen(message)
        wanted = f"{message}" + (f" with {signals}" if signals else "") + (" matching the predicate" if predicate else "")
        raise HilTimeout(f"no {wanted} within {timeout:g} s on {self.cfg.interface}:{self.cfg.channel}", seen)

    def _seen(self, message: str) -> str:
        own = list(self._history[message])[-SEEN_SHOWN:]
        frames = own or list(self._recent)[-SEEN_SHOWN:]
        lines = [f.describe() for f in frames]
        if not own:
            lines.insert(0, f"(no {message} frames at all; last frames of any message:)" if frames
                         else f"(no DBC frames at all; {self.undecoded} other frames)")
        return "\n".join(lines)

    def frames_since(self, message: str, since: float) -> list[Frame]:
        """Every kept frame of `message` received at/after `since` (time.monotonic()), oldest first."""
        self._check_name(message)
        with self._cond:
            return [f for f in self._history[message] if f.received >= since]

    def latest(self, name: str) -> Frame | None:
        """The last decoded frame of `name`, if any."""
        self._check_name(name)
        with self._cond:
            history = self._history[name]
            return history[-1] if history else None

    @contextlib.contextmanager
    def recorder(self, message: str) -> Iterator[Recording]:
        """Collect every frame of `message` received until the block exits (the list grows live; a `Recording`)."""
        self._check_name(message)
        sink = Recording()
        with self._cond:
            sink.started = time.monotonic()
            self._recorders.append((message, sink))
        try:
            yield sink
        finally:
            with self._cond:
                # By identity: two recorders of one message hold equal lists, and list equality is by value.
                self._recorders = [e for e in self._recorders if e[1] is not sink]
                sink.ended = time.monotonic()

    @contextlib.contextmanager
    def tap(self, message: str, callback: Callable[[Frame], None]) -> Iterator[None]:
        """Call `callback(frame)` for every frame of `message` until the block exits, keeping nothing.

        For streamed statistics over long recordings (constant memory). The callback runs on the
        notifier thread and must be quick; an exception in it is logged and costs only that frame.
        """
        self._check_name(message)
        entry = (message, _CallbackSink(callback))
        with self._cond:
            self._recorders.append(entry)  # type: ignore[arg-type]
        try:
            yield
        finally:
            with self._cond:
                self._recorders.remove(entry)  # type: ignore[arg-type]

    def collect(self, message: str, duration_s: float) -> list[Frame]:
        """Every frame of `message` received during the next `duration_s` seconds."""
        with self.recorder(message) as frames:
            self._closed.wait(duration_s)  # a fixed observation window; ends early only on close()
        return list(frames)

    # ------------------------------------------------------------------ transmit
    def send(self, message: str, signals: dict[str, Any]) -> None:
        """Encode `signals` with the DBC and send `message` (framework names, mapped by the profile)."""
        self._check_name(message)
        spec = self.db.get_message_by_name(self.profile.can.dbc_message(message))
        data = spec.encode(self.profile.can.to_dbc_signals(message, signals))
        self.bus.send(can.Message(arbitration_id=spec.frame_id, data=data, is_extended_id=spec.is_extended_frame,
                                  is_fd=len(data) > 8))

    # ------------------------------------------------------------------ traces
    def start_trace(self, paths: Sequence[Path]) -> None:
        """Write every frame on the bus to `paths` (python-can loggers by suffix: .blf, .asc, ...): what the
        channel receives (Rx) and what the tester sends (Tx), on every interface."""
        writers: list[can.Listener] = []
        try:
            for path in paths:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                writer = can.Logger(str(path))
                if isinstance(writer, can.ASCWriter):
                    # The .asc counts time from its first entry, and python-can writes an entry stamped before
                    # it as an absolute time: the board stamps a frame with the end of its transmission, which
                    # can precede a frame logged just before it. A start entry a second early keeps all relative.
                    writer.log_event("trace started", timestamp=time.time() - 1.0)
                writers.append(writer)
        except (OSError, ValueError) as exc:
            for w in writers:
                w.stop()
            raise HilError(f"cannot open CAN trace {path}: {exc}") from exc
        old = self._detach_writers()
        with self._trace_lock:
            self._writers = writers
        self._stop_writers(old)

    def stop_trace(self) -> None:
        """Close the trace files (flushes them)."""
        self._stop_writers(self._detach_writers())

    def _detach_writers(self) -> list[can.Listener]:
        with self._trace_lock:
            writers, self._writers = self._writers, []
        return writers

    @staticmethod
    def _stop_writers(writers: list[can.Listener]) -> None:
        for w in writers:
            try:
                w.stop()
            except Exception as exc:  # one broken trace must not keep the others open
                log.warning("CAN trace: closing %s failed: %s", w, exc)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop the notifier and traces; shut the bus down if this channel opened it."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        self.notifier.stop(timeout=2.0)
        self.stop_trace()
        if self._owns_bus:
            self.bus.shutdown()
        else:
            self.bus.release()

    def __enter__(self) -> "CanChannel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
