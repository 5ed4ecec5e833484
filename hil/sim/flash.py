"""NOR flash model of the simulated BMS board: sector erase, aligned programming, power-loss tearing.

Every erase and program passes ONE choke point (`FlashModel._operate`). It numbers the operation,
computes how long it takes, and asks the `interrupter` whether power survives it. The real-time
board's interrupter waits the operation's duration on its power-off event (so a supply cut tears
whatever is in flight); the exhaustive sweep's interrupter is a countdown. A cut may tear the
operation: a program leaves a prefix of whole phrases, an erase leaves a prefix of the sector
erased and the rest as it was. Then `PowerLoss` is raised - the code that was running stops there.

The memory is a `bytearray` (in memory) or an `mmap` of a file (a killed bench process keeps
everything written so far, as a real part does).
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Union

from hil.bench.config import FlashLayout
from hil.sim.errors import FlashError, PowerLoss

ERASED = 0xFF
OpKind = Literal["erase", "program"]
Backing = Union[bytearray, mmap.mmap]


@dataclass(frozen=True)
class FlashOp:
    """One erase or program operation as the choke point sees it (before it takes effect)."""

    index: int
    kind: OpKind
    offset: int
    length: int
    #: What a program writes (None for an erase); excluded from equality so ops compare by place.
    data: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Cut:
    """Power is lost during an operation. `torn`: the operation was partly done (`fraction` of it)."""

    torn: bool = False
    fraction: float = 0.0


Interrupter = Callable[[FlashOp, float], Union[Cut, None]]
Observer = Callable[[FlashOp], None]


class FlashModel:
    """NOR flash: erase sets a whole sector to 0xFF, program only writes aligned phrases onto 0xFF bytes."""

    def __init__(self, layout: FlashLayout, backing: Backing, *, erase_s: float = 0.0,
                 program_s_per_phrase: float = 0.0, interrupter: Interrupter | None = None) -> None:
        if len(backing) != layout.total_size:
            raise FlashError(f"flash backing is {len(backing)} bytes, layout needs {layout.total_size}")
        self.layout = layout
        self.erase_s = erase_s
        self.program_s_per_phrase = program_s_per_phrase
        #: Asked before every erase/program whether power survives it (see module docstring).
        self.interrupter: Interrupter | None = interrupter
        #: Called after every completed erase/program (progress and phase logging).
        self.observer: Observer | None = None
        #: Erase/program operations started so far (a cut operation counts).
        self.ops = 0
        self._mem = backing
        self._erased_sector = bytes([ERASED]) * layout.sector_size
        self._path: Path | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def in_memory(cls, layout: FlashLayout, data: bytes | None = None, **timing: float) -> "FlashModel":
        """A flash held in memory: erased, or a copy of `data` (e.g. a snapshot)."""
        if data is None:
            mem = bytearray([ERASED]) * layout.total_size
        else:
            mem = bytearray(data)
        return cls(layout, mem, **timing)  # type: ignore[arg-type]

    @classmethod
    def open_file(cls, path: str | os.PathLike[str], layout: FlashLayout, **timing: float) -> "FlashModel":
        """Map a flash image file (created erased if missing); a file of another size is an error."""
        p = Path(path)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(bytes([ERASED]) * layout.total_size)
        size = p.stat().st_size
        if size != layout.total_size:
            raise FlashError(f"flash file {p} is {size} bytes but the flash layout needs {layout.total_size} "
                             f"({layout.sector_size}-byte sectors: {layout.nv_sectors} NV, 2 x {layout.slot_sectors + 1} "
                             f"slot, {layout.scratch_sectors} scratch); delete the file to start from a blank flash")
        with open(p, "r+b") as fh:
            mem = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_WRITE)
        flash = cls(layout, mem, **timing)  # type: ignore[arg-type]
        flash._path = p
        return flash

    def close(self) -> None:
        """Flush a file-backed flash to disk and unmap it; an in-memory flash just stays as it is."""
        if isinstance(self._mem, mmap.mmap) and not self._mem.closed:
            self._mem.flush()
            self._mem.close()

    @property
    def size(self) -> int:
        return len(self._mem)

    # ------------------------------------------------------------------ reading
    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` (reads have no side effects and are never interrupted)."""
        self._check_range(offset, length)
        return bytes(self._mem[offset:offset + length])

    def is_erased(self, offset: int, length: int) -> bool:
        """True when every byte in the range is 0xFF."""
        self._check_range(offset, length)
        erased = self._erased_sector if length <= len(self._erased_sector) else bytes([ERASED]) * length
        return self._mem[offset:offset + length] == erased[:length]

    def snapshot(self) -> bytes:
        """A copy of the whole flash."""
        return bytes(self._mem)

    def restore(self, snapshot: bytes | bytearray) -> None:
        """Put back a snapshot (not a flash operation: nothing is counted or interrupted)."""
        if len(snapshot) != len(self._mem):
            raise FlashError(f"snapshot is {len(snapshot)} bytes, flash is {len(self._mem)}")
        self._mem[:] = snapshot

    # ------------------------------------------------------------------ erase / program
    def erase_sector(self, offset: int) -> None:
        """Erase the sector starting at `offset` (all bytes become 0xFF)."""
        sector = self.layout.sector_size
        if offset % sector:
            raise FlashError(f"erase at 0x{offset:x} is not sector aligned ({sector}-byte sectors)")
        self._check_range(offset, sector)
        self._operate("erase", offset, sector, None)

    def program(self, offset: int, data: bytes) -> None:
        """Program `data` at `offset`: aligned to write_align, every target byte must be erased (0xFF)."""
        align = self.layout.write_align
        if offset % align or len(data) % align:
            raise FlashError(f"program of {len(data)} bytes at 0x{offset:x} is not aligned to {align}-byte phrases")
        n = len(data)
        if not n:
            return
        if offset < 0 or offset + n > len(self._mem):
            raise FlashError(f"range 0x{offset:x}+{n} is outside the {len(self._mem)}-byte flash")
        erased = self._erased_sector if n <= len(self._erased_sector) else bytes([ERASED]) * n
        if self._mem[offset:offset + n] != erased[:n]:
            # NOR can only clear bits: find the first byte that is not erased for the message.
            current = self._mem[offset:offset + len(data)]
            first = next(i for i, b in enumerate(current) if b != ERASED)
            raise FlashError(f"program at 0x{offset:x}: byte 0x{offset + first:x} is 0x{current[first]:02x}, "
                             "not erased (NOR can only clear bits; erase the sector first)")
        self._operate("program", offset, len(data), bytes(data))

    def _operate(self, kind: OpKind, offset: int, length: int, data: bytes | None) -> None:
        """The choke point: every erase and program passes here, and only here."""
        op = FlashOp(self.ops, kind, offset, length, data)
        self.ops += 1
        if kind == "erase":
            duration = self.erase_s
        else:
            duration = (length // self.layout.write_align) * self.program_s_per_phrase
        cut = self.interrupter(op, duration) if self.interrupter is not None else None
        if cut is None:
            self._mem[offset:offset + length] = self._erased_sector if data is None else data
            if self.observer is not None:
                self.observer(op)
            return
        if cut.torn:
            self.apply_partial(op, cut.fraction)
        raise PowerLoss(f"power lost during {kind} of {length} bytes at 0x{offset:x} (op {op.index}"
                        f"{f', torn at {cut.fraction:.0%}' if cut.torn else ', not started'})")

    def apply_partial(self, op: FlashOp, fraction: float) -> None:
        """What a torn `op` leaves behind: a prefix of whole phrases programmed, or a prefix of the sector erased."""
        fraction = min(max(fraction, 0.0), 1.0)
        if op.kind == "program":
            assert op.data is not None
            align = self.layout.write_align
            done = math.floor(fraction * (op.length // align)) * align
            self._mem[op.offset:op.offset + done] = op.data[:done]
        else:
            done = math.floor(fraction * op.length)
            self._mem[op.offset:op.offset + done] = self._erased_sector[:done]

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > len(self._mem):
            raise FlashError(f"range 0x{offset:x}+{length} is outside the {len(self._mem)}-byte flash")
