"""Power-fail-safe journaled key/value store in the NV sectors of the simulated flash.

Every record is the complete state (a JSON object) with a sequence number and a CRC32, padded to
the write alignment and programmed with ONE flash operation. A torn record fails its CRC and is
ignored; the newest valid record (highest sequence) wins. Records are appended in the sector that
holds the newest record; when it is full - or its free space is not clean because a record was torn
or a sector only partly erased - the next sector is erased (only if it is not blank) and a full record
is written there. The sector holding the newest valid record is never erased, so a cut at any
operation leaves either the old or the new state.

Keys other modules use: boot_count, security_counter, update (state, reason, target), config,
config_backup, config_schema, soc.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from hil.bench.config import FlashLayout
from hil.sim.errors import FlashError
from hil.sim.flash import FlashModel

RECORD_MAGIC = b"NVR1"
#: magic, sequence, payload length, CRC32 over sequence + length + payload.
HEADER = struct.Struct("<4sIII")


@dataclass(frozen=True)
class _Scan:
    """What the NV area holds: the newest valid state and where the next record may go."""

    raw: bytes
    state: dict[str, Any]
    seq: int
    sector: int  # sector index (within the NV area) holding the newest record; -1 if none
    append_at: int | None  # offset within that sector where the next record may go; None = sector unusable


class NvStore:
    """Journaled key/value store; `load()` re-reads the flash, so it always reflects what survived."""

    def __init__(self, flash: FlashModel, layout: FlashLayout) -> None:
        self.flash = flash
        self.layout = layout
        self._base = layout.nv_offset
        self._sector = layout.sector_size
        self._count = layout.nv_sectors
        self._size = self._sector * self._count
        self._cache: _Scan | None = None

    # ------------------------------------------------------------------ reading
    def _scan(self) -> _Scan:
        raw = self.flash.read(self._base, self._size)
        if self._cache is not None and self._cache.raw == raw:
            return self._cache  # nothing in the NV area changed since the last scan
        best_seq, best_state, best_sector, best_end = -1, {}, -1, 0
        ends: dict[int, int | None] = {}
        for s in range(self._count):
            base = s * self._sector
            off = 0
            clean_end: int | None = None
            while off + HEADER.size <= self._sector:
                head = raw[base + off:base + off + HEADER.size]
                if head == b"\xff" * HEADER.size:
                    clean_end = off  # first blank header: records end here
                    break
                magic, seq, length, crc = HEADER.unpack(head)
                end = off + self._padded(HEADER.size + length)
                if magic != RECORD_MAGIC or end > self._sector:
                    break  # torn or foreign: nothing after this is trusted for appending
                payload = raw[base + off + HEADER.size:base + off + HEADER.size + length]
                if zlib.crc32(struct.pack("<II", seq, length) + payload) != crc:
                    break
                try:
                    state = json.loads(payload)
                except ValueError:
                    break
                if isinstance(state, dict) and seq > best_seq:
                    best_seq, best_state, best_sector, best_end = seq, state, s, end
                off = end
            else:
                clean_end = None if off < self._sector else off
            ends[s] = clean_end
        append_at = ends.get(best_sector) if best_sector >= 0 else None
        if append_at is not None and append_at < best_end:
            append_at = None  # newer junk after the newest record: never append behind it
        scan = _Scan(raw, best_state, max(best_seq, 0), best_sector, append_at)
        self._cache = scan
        return scan

    def load(self) -> dict[str, Any]:
        """The newest valid state (a fresh copy; {} on a blank or unreadable NV area)."""
        return json.loads(json.dumps(self._scan().state))

    def get(self, key: str, default: Any = None) -> Any:
        """One value of the newest state."""
        value = self._scan().state.get(key, default)
        return json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value

    # ------------------------------------------------------------------ writing
    def update(self, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into the state and persist it with one record (no write if nothing changes).

        May raise PowerLoss from the flash choke point; the store then holds the old or the new state.
        """
        scan = self._scan()
        state = json.loads(json.dumps(scan.state))
        state.update(json.loads(json.dumps(changes)))  # JSON round trip: what is stored is what is returned
        if state == scan.state and scan.sector >= 0:
            return state
        payload = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
        seq = scan.seq + 1
        head = HEADER.pack(RECORD_MAGIC, seq, len(payload), zlib.crc32(struct.pack("<II", seq, len(payload)) + payload))
        record = head + payload
        record += b"\xff" * (self._padded(len(record)) - len(record))
        if len(record) > self._sector:
            raise FlashError(f"NV state is {len(record)} bytes, larger than one {self._sector}-byte NV sector")
        sector, off = scan.sector, scan.append_at
        fits = sector >= 0 and off is not None and off + len(record) <= self._sector \
            and self.flash.is_erased(self._base + sector * self._sector + off, len(record))
        if not fits:
            # Rotate: the next sector only ever holds older records, so erasing it loses nothing current.
            sector = (sector + 1) % self._count
            off = 0
            start = self._base + sector * self._sector
            if not self.flash.is_erased(start, self._sector):
                self.flash.erase_sector(start)
        assert off is not None
        self.flash.program(self._base + sector * self._sector + off, record)
        return state

    def _padded(self, n: int) -> int:
        align = self.layout.write_align
        return -(-n // align) * align
