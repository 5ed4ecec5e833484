"""A readable excerpt of a test's CAN trace for the report: the frames around each failure and each injected fault.

The whole trace stays in the evidence folder (`can.blf` and `can.asc`); the report carries the `.blf`
(any CAN tool reads it, a fraction of the text's size) and this excerpt, decoded with the DBC, so an
auditor sees at once what the bus did when the fault was injected or the test failed. Windows are
bounded in time and in frames (a download runs at thousands of frames a second), and the excerpt
says what it left out.
"""

from __future__ import annotations

import bisect
import collections
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import can

#: The window around a mark: what led to it matters more than what followed.
BEFORE_S = 2.0
AFTER_S = 1.0
#: At most this many lines are shown on each side of a mark (the ones nearest to it).
MAX_BEFORE = 40
MAX_AFTER = 20
#: At most this many marks get a window (a sweep injects dozens of cuts; the trace has them all).
MAX_MARKS = 8
#: A run of more frames than this of one id the DBC does not decode (an ISO-TP download) shows its first and
#: last `RUN_ENDS` frames and how many lie between.
MAX_RUN = 3
RUN_ENDS = 1


@dataclass(frozen=True)
class Mark:
    """A moment the excerpt is about: a failure or an injected fault (wall-clock time, as frames are stamped)."""

    at: float
    title: str


def _clock(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")


class _Decoder:
    """A frame as one line: time, id, direction, message name and signals (DBC) or the raw bytes."""

    def __init__(self, db: Any, labels: Mapping[int, str]) -> None:
        self.by_id = {m.frame_id: m for m in db.messages} if db is not None else {}
        self.labels = dict(labels)

    def name(self, msg: can.Message) -> str:
        spec = self.by_id.get(msg.arbitration_id)
        return spec.name if spec is not None else self.labels.get(msg.arbitration_id, f"0x{msg.arbitration_id:03X}")

    def line(self, msg: can.Message, origin: float) -> str:
        head = (f"{msg.timestamp - origin:+10.6f}  {msg.arbitration_id:>8X}  {'Rx' if msg.is_rx else 'Tx'}  "
                f"{self.name(msg)}")
        spec = self.by_id.get(msg.arbitration_id)
        if spec is not None and not msg.is_error_frame and not msg.is_remote_frame:
            try:
                signals = spec.decode(bytes(msg.data), decode_choices=True)
                return head + "  " + " ".join(f"{k}={v}" for k, v in signals.items())
            except Exception:  # a frame the DBC cannot decode is shown raw: it is evidence too
                pass
        return head + "  " + bytes(msg.data).hex(" ")


    def rows(self, frames: Sequence[can.Message], origin: float) -> list[str]:
        """The frames as lines; a long run of one undecoded id (ISO-TP data) keeps its ends and counts the rest."""
        out: list[str] = []
        i = 0
        while i < len(frames):
            j = i
            if frames[i].arbitration_id not in self.by_id:
                while j + 1 < len(frames) and frames[j + 1].arbitration_id == frames[i].arbitration_id:
                    j += 1
            if j - i + 1 > MAX_RUN:
                out += ["  " + self.line(m, origin) for m in frames[i:i + RUN_ENDS]]
                out.append(f"  {'':>10}  ... {j - i + 1 - 2 * RUN_ENDS} more {self.name(frames[i])} frames ...")
                out += ["  " + self.line(m, origin) for m in frames[j + 1 - RUN_ENDS:j + 1]]
            else:
                out += ["  " + self.line(m, origin) for m in frames[i:j + 1]]
            i = j + 1
        return out


def read_trace(path: Path) -> list[can.Message]:
    """Every frame of a .blf (or .asc) trace, in time order."""
    reader: Iterable[can.Message] = can.BLFReader(str(path)) if path.suffix == ".blf" else can.ASCReader(str(path))
    return sorted(reader, key=lambda m: m.timestamp)


def excerpt(frames: Sequence[can.Message], marks: Sequence[Mark], *, db: Any = None,
            labels: Mapping[int, str] | None = None, source: str = "can.blf") -> str:
    """The excerpt's text: a summary of the whole trace, then a window of decoded frames around each mark."""
    decoder = _Decoder(db, labels or {})
    lines = [f"# CAN excerpt of {source}: the frames around each failure and injected fault, decoded with the DBC",
             f"# (the whole trace: {source} here, {Path(source).with_suffix('.asc').name} in the evidence folder)"]
    if not frames:
        return "\n".join(lines + ["# the trace holds no frames"]) + "\n"
    counts = collections.Counter(decoder.name(m) for m in frames)
    lines.append(f"# {len(frames):,} frames, {_clock(frames[0].timestamp)} .. {_clock(frames[-1].timestamp)}; by message: "
                 + ", ".join(f"{name} {n:,}" for name, n in counts.most_common()))
    shown = sorted(marks, key=lambda m: m.at)
    if len(shown) > MAX_MARKS:
        # The failure (the last mark) always gets its window; the first faults show how the sweep began.
        lines.append(f"# {len(shown)} marks: windows for the first {MAX_MARKS - 1} and the last; the trace has them all")
        shown = shown[:MAX_MARKS - 1] + shown[-1:]
    if not shown:
        lines.append("# no failure and no injected fault: nothing to show closer (the whole trace is the .blf)")
        return "\n".join(lines) + "\n"
    times = [m.timestamp for m in frames]
    for mark in shown:
        lo, hi = bisect.bisect_left(times, mark.at - BEFORE_S), bisect.bisect_right(times, mark.at + AFTER_S)
        split = bisect.bisect_left(times, mark.at)
        before, after = decoder.rows(frames[lo:split], mark.at), decoder.rows(frames[split:hi], mark.at)
        lines.append("")
        lines.append(f"== {mark.title} at {_clock(mark.at)}")
        lines.append(f"-- times relative to it; window -{BEFORE_S:g} s .. +{AFTER_S:g} s ({split - lo} frames before, "
                     f"{hi - split} after; runs of undecoded frames folded): the {min(len(before), MAX_BEFORE)} lines "
                     f"before it and the {min(len(after), MAX_AFTER)} after it nearest to it")
        lines += before[-MAX_BEFORE:]
        lines.append(f"  {0:+10.6f}  ---- {mark.title}")
        lines += after[:MAX_AFTER]
    return "\n".join(lines) + "\n"


def write_excerpt(trace: Path, out: Path, marks: Sequence[Mark], *, db: Any = None,
                  labels: Mapping[int, str] | None = None) -> Path:
    """Read `trace`, write its excerpt around `marks` to `out`; a trace that cannot be read is said so in `out`."""
    try:
        frames = read_trace(trace)
    except Exception as exc:  # python-can raises what its parser meets; the evidence must still be written
        out.write_text(f"# CAN excerpt of {trace.name}: the trace could not be read: {type(exc).__name__}: {exc}\n")
        return out
    out.write_text(excerpt(frames, marks, db=db, labels=labels, source=trace.name))
    return out
