"""The simulated board's bootloader: MCUboot semantics (swap using scratch, test/confirm/revert).

Flash layout (hil.config.FlashLayout): NV | primary slot | secondary slot | scratch. Each slot is
`slot_sectors` image sectors plus one trailer sector. The trailer is NOT swapped (a simplification
of MCUboot, see docs/flash-and-boot.md). Every step of `boot()` is power-cut safe: each effect is
idempotent or detectable, and the exhaustive sweep (hil.sim.sweep) proves it at every operation,
including torn writes and partial erases.

Trailer sector (offsets from its start; U = max(8, write_align), M = 16 rounded up to write_align):

    0          magic, 16 bytes, written LAST; valid only if all 16 bytes match (a torn magic is invalid).
               It sits at the sector start so a partly done erase (which clears a prefix) kills it first.
    M          swap_info: type (SwapType), flags (bit 0 restore), revert reason
    M+U        swap_size: number of image sectors the swap covers (u32)
    M+2U       copy_done
    M+3U       image_ok
    M+4U+kU    swap status entry k (3 per image sector: A, B, C)

Every field is a write-once unit: erased = all 0xFF, set = any byte programmed.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from hil.bench import contract
from hil.bench.config import FlashLayout
from hil.bench.dut_profile import DutProfile
from hil.bench.contract import ActivationMode, BootMode, Reason, ResetCause, UpdateState
from hil.errors import ImageError
from hil.images.container import BootImage
from hil.sim.errors import FlashError
from hil.images.mcuboot import ParsedImage, TrustedKey, image_extent, parse_image, verify_image
from hil.sim.defects import Defects
from hil.sim.flash import FlashModel
from hil.sim.nvstore import NvStore

#: MCUboot's boot_img_magic.
TRAILER_MAGIC = bytes([0x77, 0xC2, 0x95, 0xF3, 0x60, 0xD2, 0xEF, 0x7F,
                       0x35, 0x52, 0x50, 0x0F, 0x2C, 0xB6, 0x79, 0x80])
FLAG_RESTORE = 0x01


class SwapType(enum.IntEnum):
    """What a trailer asks the bootloader to do (MCUboot's swap types)."""

    NONE = 0
    TEST = 1
    PERM = 2
    REVERT = 3


@dataclass
class BootResult:
    """What one boot decided: which image runs (None in recovery), whether it is on its trial boot."""

    mode: BootMode
    image: BootImage | None
    trial: bool
    reverted: bool
    reason: Reason
    log: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Trailer:
    """A slot trailer as read from flash."""

    magic_ok: bool
    blank: bool
    swap_type: int | None  # None = swap_info unset
    flags: int
    reason: int
    swap_size: int | None  # None = unset
    copy_done: bool
    image_ok: bool
    status: tuple[bool, ...]

    @property
    def consistent(self) -> bool:
        """Magic valid and the fields written before it present (magic is always written last)."""
        return self.magic_ok and self.swap_type is not None and self.swap_size is not None


class TrailerLayout:
    """Offsets of the trailer fields within a trailer sector for a given FlashLayout."""

    def __init__(self, layout: FlashLayout) -> None:
        align = layout.write_align
        self.unit = max(8, align)
        self.magic_len = -(-len(TRAILER_MAGIC) // align) * align
        self.swap_info = self.magic_len
        self.swap_size = self.swap_info + self.unit
        self.copy_done = self.swap_size + self.unit
        self.image_ok = self.copy_done + self.unit
        self.status0 = self.image_ok + self.unit
        self.entries = 3 * layout.slot_sectors
        self.end = self.status0 + self.entries * self.unit
        self.status_offsets = [self.status0 + k * self.unit for k in range(self.entries)]
        if self.end > layout.sector_size:
            raise FlashError(f"trailer needs {self.end} bytes for {layout.slot_sectors} image sectors, "
                             f"a sector has {layout.sector_size}")

    def status(self, k: int) -> int:
        return self.status0 + k * self.unit


def revert_reason(cause: ResetCause, nv: NvStore, defects: Defects) -> Reason:
    """Why a trial boot that was not confirmed is reverted, from the reset that ended it (every family's
    bootloader): a watchdog, a fault, a failed self-test (the application recorded it), else not confirmed."""
    if defects.has("wrong_revert_reason_reported"):
        return Reason.NOT_CONFIRMED
    if cause is ResetCause.WATCHDOG:
        return Reason.WATCHDOG_RESET
    if cause is ResetCause.FAULT:
        return Reason.CRASHED_AT_BOOT
    upd = nv.get("update", {}) or {}
    if cause is ResetCause.SOFTWARE and upd.get("reason") == int(Reason.SELFTEST_FAILED):
        return Reason.SELFTEST_FAILED
    return Reason.NOT_CONFIRMED


class Bootloader:
    """MCUboot-style bootloader over a FlashModel; see the module docstring and docs/flash-and-boot.md."""

    def __init__(self, flash: FlashModel, layout: FlashLayout, nv: NvStore, trusted: Sequence[TrustedKey],
                 hardware_id: str, *, log: Callable[[str], None] = lambda line: None, chunk: int = 1024,
                 defects: Defects | None = None, profile: DutProfile | None = None) -> None:
        if chunk <= 0 or chunk % layout.write_align or layout.sector_size % chunk:
            raise FlashError(f"copy chunk {chunk} must divide the sector ({layout.sector_size}) "
                             f"and be a multiple of write_align ({layout.write_align})")
        self.flash = flash
        self.layout = layout
        self.nv = nv
        self.trusted = list(trusted)
        self.hardware_id = hardware_id
        self.chunk = chunk
        self.defects = defects or Defects()
        self._log = log
        #: The console lines this board prints at its events (the DUT profile's, see contract.CONSOLE_LINES).
        self.lines: dict[str, str] = {**contract.CONSOLE_LINES, **(profile.console.effective_lines() if profile else {})}
        self._lines: list[str] = []
        self.tl = TrailerLayout(layout)
        self._sector = layout.sector_size
        self._primary = layout.primary_offset
        self._secondary = layout.secondary_offset
        self._scratch = layout.scratch_offset
        self._slot_bytes = layout.slot_size
        # Verification results by (content digest, checks); the same bytes verify the same way.
        self._verified: dict[tuple[bytes, tuple[object, ...]], ParsedImage | tuple[str, int]] = {}
        # Unaligned tail of the download, kept in RAM until the next block or a flush (NOR phrases).
        self._tail_off: int | None = None
        self._tail = b""

    # ------------------------------------------------------------------ small helpers
    def log(self, line: str) -> None:
        self._lines.append(line)
        self._log(line)

    def say(self, event: str, **fields: Any) -> None:
        """The console line of a named event (its template from the DUT profile), as this board prints it."""
        self.log(self.lines[event].format(**fields))

    def _trailer_off(self, slot: int) -> int:
        return slot + self._slot_bytes

    def read_trailer(self, slot: int) -> Trailer:
        """Decode the trailer of the slot at flash offset `slot` (primary_offset or secondary_offset)."""
        raw = self.flash.read(self._trailer_off(slot), self.tl.end)
        tl, u = self.tl, self.tl.unit
        blank_unit = b"\xff" * u

        def unit(off: int) -> bytes | None:
            b = raw[off:off + u]
            return None if b == blank_unit else b

        info, size = unit(tl.swap_info), unit(tl.swap_size)
        return Trailer(
            magic_ok=raw[:len(TRAILER_MAGIC)] == TRAILER_MAGIC,
            blank=self.flash.is_erased(self._trailer_off(slot), self._sector),
            swap_type=info[0] if info is not None else None,
            flags=info[1] if info is not None else 0,
            reason=info[2] if info is not None else 0,
            swap_size=int.from_bytes(size[:4], "little") if size is not None else None,
            copy_done=unit(tl.copy_done) is not None,
            image_ok=unit(tl.image_ok) is not None,
            status=tuple(raw[o:o + u] != blank_unit for o in tl.status_offsets),
        )

    def _set(self, slot: int, field_off: int, value: bytes = b"\x01") -> None:
        """Program one write-once trailer unit (skipped if already set: resuming must not rewrite it)."""
        off = self._trailer_off(slot) + field_off
        if self.flash.is_erased(off, self.tl.unit):
            self.flash.program(off, value.ljust(self.tl.unit, b"\x00"))

    def _erase_trailer(self, slot: int) -> None:
        self.flash.erase_sector(self._trailer_off(slot))

    def _ensure_blank_trailer(self, slot: int) -> None:
        off = self._trailer_off(slot)
        if not self.flash.is_erased(off, self._sector):
            self.flash.erase_sector(off)  # also repairs a partly done erase

    def _write_request(self, slot: int, swap_type: SwapType, flags: int, reason: int, sectors: int) -> None:
        """swap_info, swap_size, then the magic last: the request exists only once the magic is whole."""
        self._set(slot, self.tl.swap_info, bytes([int(swap_type), flags, reason]))
        self._set(slot, self.tl.swap_size, sectors.to_bytes(4, "little"))
        off = self._trailer_off(slot)
        self.flash.program(off, TRAILER_MAGIC.ljust(self.tl.magic_len, b"\xff"))

    def _slot_data(self, slot: int) -> bytes:
        return self.flash.read(slot, self._slot_bytes)

    def _verify(self, slot: int, *, min_counter: int = 0, current: tuple[int, int, int] | None = None,
                allow_downgrade: bool = False, config_schema: int | None = None) -> ParsedImage:
        """verify_image on a slot, cached by the digest of the image's bytes and the checks asked for."""
        data = self._slot_data(slot)
        extent = image_extent(data)
        digest = hashlib.sha256(data[:extent] if extent is not None else data).digest()
        key = (digest, (extent, min_counter, current, allow_downgrade, config_schema))
        hit = self._verified.get(key)
        if hit is None:
            try:
                hit = verify_image(data, self.trusted, hardware_id=self.hardware_id, min_security_counter=min_counter,
                                   current_version=current, allow_downgrade=allow_downgrade,
                                   config_schema=config_schema, slot_size=self._slot_bytes)
            except ImageError as exc:
                hit = (str(exc), int(exc.reason))
                if self._waived(Reason(exc.reason)):
                    try:
                        hit = parse_image(data)  # the defective board installs what it should have refused
                    except ImageError:
                        pass
            if len(self._verified) > 64:
                self._verified.clear()  # bounded: a sweep sees few distinct images
            self._verified[key] = hit
        if isinstance(hit, tuple):
            raise ImageError(hit[0], reason=hit[1])
        return hit

    def _waived(self, reason: Reason) -> bool:
        """Defective boards only: a check this board skips (hil/sim/defects.py)."""
        waived = {Reason.HASH_MISMATCH: "hash_check_skipped", Reason.UNSIGNED: "unsigned_image_accepted",
                  Reason.UNKNOWN_KEY: "unknown_key_accepted", Reason.DOWNGRADE_VERSION: "downgrade_accepted",
                  Reason.DOWNGRADE_SECURITY_COUNTER: "downgrade_accepted",
                  Reason.WRONG_HARDWARE: "wrong_hardware_accepted",
                  Reason.CONFIG_INCOMPATIBLE: "config_incompatible_accepted",
                  Reason.TRUNCATED: "check_routine_passes_truncated_download"}
        name = waived.get(reason)
        return name is not None and self.defects.has(name)

    def _try_verify(self, slot: int, **checks: object) -> ParsedImage | None:
        try:
            return self._verify(slot, **checks)  # type: ignore[arg-type]
        except ImageError:
            return None

    def _swap_sectors(self) -> int:
        """Image sectors a swap must cover: those holding either image (the whole slot if unsure)."""
        extents = [image_extent(self._slot_data(s)) for s in (self._primary, self._secondary)]
        longest = max((e for e in extents if e is not None), default=self._slot_bytes)
        return max(1, min(self.layout.slot_sectors, -(-min(longest, self._slot_bytes) // self._sector)))

    def _set_update(self, state: UpdateState, reason: Reason, target: tuple[int, int, int] | None = None,
                    **extra: Any) -> None:
        current = self.nv.get("update", {}) or {}
        record = {**current, "state": int(state), "reason": int(reason)}
        if target is not None:
            record["target"] = list(target)
        record.setdefault("target", [0, 0, 0])
        self.nv.update(update=record, **extra)

    # ------------------------------------------------------------------ boot
    def boot(self, reset_cause: ResetCause) -> BootResult:
        """Decide what runs: resume / revert / install / validate, as in docs/flash-and-boot.md.

        May raise PowerLoss from the flash choke point (the next boot continues); nothing else.
        """
        self._lines = []
        self._tail_off, self._tail = None, b""
        reverted, reason = False, Reason.NONE
        primary = self.read_trailer(self._primary)

        swapping = primary.consistent and not primary.copy_done and bool(primary.swap_size) \
            and primary.swap_type in (SwapType.TEST, SwapType.PERM, SwapType.REVERT)
        if swapping:
            # 1. A swap was under way when power went: finish it.
            self.say("swap_resume", type=_type_name(primary.swap_type))
            self._ensure_blank_trailer(self._secondary)
            reverted = self._run_swap(primary)
        elif primary.consistent and not primary.image_ok:
            # 2. The trial boot already happened and the image did not confirm itself: revert.
            reason = self._revert_reason(reset_cause)
            if reason is Reason.SELFTEST_FAILED and self.defects.has("no_revert_on_self_test_failure"):
                self._set(self._primary, self.tl.image_ok)  # the defective board keeps the failed image
            else:
                reverted = self._revert(reason)
        else:
            secondary = self.read_trailer(self._secondary)
            if secondary.magic_ok:
                # 3. A request in the secondary trailer: validate, then install (or reject).
                reverted = self._handle_request(secondary)
            elif not secondary.blank:
                # A request whose magic never got written whole (or a partly erased trailer): not a request.
                self.log("BOOT: incomplete request in the secondary trailer, erased")
                self._erase_trailer(self._secondary)

        # 4. Validate what is in the primary slot now.
        return self._boot_primary(reverted)

    def _revert_reason(self, cause: ResetCause) -> Reason:
        return revert_reason(cause, self.nv, self.defects)

    def _revert(self, reason: Reason) -> bool:
        """Step 2: REVERT request in the secondary trailer first (it survives the primary trailer's erase)."""
        secondary = self.read_trailer(self._secondary)
        if secondary.consistent and secondary.swap_type == SwapType.REVERT:
            reason = _reason(secondary.reason)  # a revert begun by an earlier boot keeps its reason
        else:
            if self._try_verify(self._secondary) is None:
                # Nothing to go back to: keep the new image rather than brick (it is the only valid one).
                self.log("BOOT: revert impossible, no valid image in the secondary slot; keeping the primary")
                self._set(self._primary, self.tl.image_ok)
                return False
            self.say("revert", reason=reason.name)
            self._ensure_blank_trailer(self._secondary)
            self._write_request(self._secondary, SwapType.REVERT, 0, int(reason), self._swap_sectors())
        return self._start_swap(SwapType.REVERT, 0, int(reason))

    def _handle_request(self, secondary: Trailer) -> bool:
        stype = secondary.swap_type
        if not secondary.consistent or stype not in (SwapType.TEST, SwapType.PERM, SwapType.REVERT):
            self.log("BOOT: malformed request in the secondary trailer, erased")
            self._erase_trailer(self._secondary)
            return False
        restore = bool(secondary.flags & FLAG_RESTORE)
        try:
            if stype == SwapType.REVERT:
                image = self._verify(self._secondary)
            else:
                image = self._verify(self._secondary, **self._install_checks(restore=restore))
        except ImageError as exc:
            reason = Reason(exc.reason)
            self.log(f"BOOT: rejected reason={reason.name}")
            if stype != SwapType.REVERT:
                self._set_update(UpdateState.REJECTED, reason)
            self._erase_trailer(self._secondary)
            return False
        if stype == SwapType.REVERT:
            self.say("revert", reason=_reason(secondary.reason).name)
        else:
            self._set_update(UpdateState.INSTALLING, Reason.NONE, image.version_tuple)
        return self._start_swap(SwapType(stype), secondary.flags, secondary.reason)

    def _install_checks(self, *, restore: bool) -> dict[str, Any]:
        """The checks an install request must pass (RESTORE: bench level, older images and lower counters allowed)."""
        if restore:
            return {}
        current = self._try_verify(self._primary)
        schema = self.nv.get("config_schema")
        return {"min_counter": int(self.nv.get("security_counter", 0) or 0),
                "current": current.version_tuple if current is not None else None,
                "config_schema": int(schema) if schema is not None else None}

    def _start_swap(self, stype: SwapType, flags: int, reason: int) -> bool:
        """Move the request into the primary trailer (magic last), clear the secondary's, then swap."""
        sectors = self._swap_sectors()
        self.log("BOOT: trailer update")
        self._erase_trailer(self._primary)
        self._write_request(self._primary, stype, flags, reason, sectors)
        self._erase_trailer(self._secondary)
        return self._run_swap(self.read_trailer(self._primary))

    def _run_swap(self, primary: Trailer) -> bool:
        """Swap (or resume swapping) sector by sector through scratch, then finish; True if it was a revert."""
        assert primary.swap_type is not None and primary.swap_size is not None
        stype = SwapType(primary.swap_type)
        sectors = max(1, min(primary.swap_size, self.layout.slot_sectors))
        done = primary.status
        start = next((k for k in range(3 * sectors) if not done[k]), 3 * sectors)
        if start and start < 3 * sectors and self.defects.has("swap_resumed_from_wrong_step"):
            start += 1  # the defective board skips the step it was cut in
        self.say("swap_start", type=stype.name, sectors=sectors, resume=f" resume={start}" if start else "")
        for k in range(start, 3 * sectors):
            if k % 3 == 0 or k == start:
                self.say("swap_progress", sector=k // 3 + 1, total=sectors)
            self._swap_step(k)
        self.say("swap_done")
        self._finish(stype, primary.flags, _reason(primary.reason))
        return stype == SwapType.REVERT

    def _swap_step(self, k: int) -> None:
        """Step k of the swap (sector k // 3, step A/B/C), then its status entry.

        The status is written only after the copy: a cut before it makes the next boot redo the step,
        and every step leaves its own source untouched, so redoing it is harmless.
        """
        i, step = divmod(k, 3)
        p, s = self._primary + i * self._sector, self._secondary + i * self._sector
        early = self.defects.has("swap_status_written_before_copy")
        if early:
            self._set(self._primary, self.tl.status(k))
        if step == 0:
            self._copy(s, self._scratch)  # A: new -> scratch
        elif step == 1:
            self._copy(p, s)  # B: old -> secondary
        else:
            self._copy(self._scratch, p)  # C: scratch (new) -> primary
        if not early:
            self._set(self._primary, self.tl.status(k))

    def _copy(self, src: int, dst: int) -> None:
        """Erase the destination sector and copy one sector in `chunk`-byte programs."""
        data = self.flash.read(src, self._sector)
        self.flash.erase_sector(dst)
        for off in range(0, self._sector, self.chunk):
            self.flash.program(dst + off, data[off:off + self.chunk])

    def _finish(self, stype: SwapType, flags: int, reason: Reason) -> None:
        """Record the outcome in NV, then image_ok (PERM/REVERT) before copy_done: no cut can look like a trial."""
        image = self._try_verify(self._primary)
        if stype == SwapType.TEST:
            if image is not None:
                self._set_update(UpdateState.TESTING, Reason.NONE, image.version_tuple)
                if self.defects.has("counter_advanced_at_swap"):
                    self._advance_counter(image)
        elif stype == SwapType.REVERT:
            backup = self.nv.get("config_backup")
            extra: dict[str, Any] = {}
            if backup is not None and not self.defects.has("config_not_restored_on_revert"):
                extra["config"] = backup
                schema = self.nv.get("config_schema_backup")
                if schema is not None:
                    extra["config_schema"] = schema
            self._set_update(UpdateState.ROLLED_BACK, reason, **extra)
        elif flags & FLAG_RESTORE and image is not None:
            # Bench-level restore: the stored counter follows the restored image (may go down).
            self.nv.update(security_counter=int(image.security_counter or 0))
        if stype != SwapType.TEST:
            self._set(self._primary, self.tl.image_ok)
        self._set(self._primary, self.tl.copy_done)
        self.log("BOOT: trailer update done")

    def _boot_primary(self, reverted: bool) -> BootResult:
        trailer = self.read_trailer(self._primary)
        image = self._try_verify(self._primary)
        if image is None:
            self.log("BOOT: no valid image, entering recovery")
            self._set_update(UpdateState.RECOVERY, Reason.NO_VALID_IMAGE)
            return BootResult(BootMode.RECOVERY, None, False, reverted, Reason.NO_VALID_IMAGE, list(self._lines))
        if not trailer.consistent:
            # A valid image without a valid trailer (factory state lost): it is the only image, keep it confirmed.
            self.log("BOOT: primary trailer repaired")
            self._write_confirmed_trailer()
            trailer = self.read_trailer(self._primary)
        trial = trailer.copy_done and not trailer.image_ok
        if trailer.image_ok:
            self._advance_counter(image)
        upd = self.nv.get("update", {}) or {}
        reason = _reason(int(upd.get("reason", 0))) if reverted else Reason.NONE
        self.log(f"BOOT: booting {image.version_str}" + (" (trial)" if trial else ""))
        return BootResult(BootMode.APPLICATION, image, trial, reverted, reason, list(self._lines))

    def _advance_counter(self, image: ParsedImage) -> None:
        stored = int(self.nv.get("security_counter", 0) or 0)
        if (image.security_counter or 0) > stored:
            self.nv.update(security_counter=int(image.security_counter or 0))

    def _write_confirmed_trailer(self) -> None:
        self._ensure_blank_trailer(self._primary)
        self._set(self._primary, self.tl.swap_info, bytes([int(SwapType.NONE), 0, 0]))
        self._set(self._primary, self.tl.swap_size, (0).to_bytes(4, "little"))
        self._set(self._primary, self.tl.copy_done)
        self._set(self._primary, self.tl.image_ok)
        self.flash.program(self._trailer_off(self._primary), TRAILER_MAGIC.ljust(self.tl.magic_len, b"\xff"))

    # ------------------------------------------------------------------ application-side API
    def erase_secondary(self) -> None:
        """Erase the secondary slot: image sectors (only those not blank) and its trailer."""
        self._tail_off, self._tail = None, b""
        for i in range(self.layout.slot_sectors + 1):
            off = self._secondary + i * self._sector
            if not self.flash.is_erased(off, self._sector):
                self.flash.erase_sector(off)

    def write_secondary(self, offset: int, data: bytes) -> None:
        """Program download bytes at `offset` within the secondary slot.

        Blocks need not be phrase aligned (UDS blocks are 4094 bytes): an unaligned tail is kept in
        RAM and programmed with the next contiguous block, or padded with 0xFF on a flush.
        """
        if offset < 0 or offset + len(data) > self._slot_bytes:
            raise FlashError(f"write of {len(data)} bytes at slot offset 0x{offset:x} exceeds the "
                             f"{self._slot_bytes}-byte slot")
        align = self.layout.write_align
        if self._tail_off is not None:
            if offset != self._tail_off + len(self._tail):
                self._flush_tail()
            else:
                offset, data = self._tail_off, self._tail + bytes(data)
                self._tail_off, self._tail = None, b""
        if offset % align:
            # Only the continuation of the previous block may start mid-phrase.
            raise FlashError(f"write at slot offset 0x{offset:x} is neither phrase aligned nor contiguous "
                             "with the previous block")
        whole = len(data) - len(data) % align
        if whole:
            self.flash.program(self._secondary + offset, bytes(data[:whole]))
        if whole < len(data):
            self._tail_off, self._tail = offset + whole, bytes(data[whole:])

    def programmed_extent(self) -> int:
        """Bytes of the secondary slot programmed so far by the download: the tail held in RAM is not counted."""
        return self._tail_off if self._tail_off is not None else -1

    def resume_secondary(self, offset: int) -> None:
        """A download resumes at `offset` (phrase aligned): drop a RAM tail of the interrupted one, never flush it."""
        if offset % self.layout.write_align:
            raise FlashError(f"resume offset 0x{offset:x} is not aligned to {self.layout.write_align}-byte phrases")
        self._tail_off, self._tail = None, b""

    def write_secondary_resumed(self, offset: int, data: bytes) -> None:
        """As `write_secondary`, but phrases already programmed with the same bytes are skipped: after a cut
        between programming a block and recording it, the resumed download sends that block again."""
        align = self.layout.write_align
        if self._tail_off is not None and offset == self._tail_off + len(self._tail):
            # Continue the unaligned remainder of the previous block, then compare whole phrases.
            offset, data = self._tail_off, self._tail + bytes(data)
            self._tail_off, self._tail = None, b""
        if self._tail_off is None and offset % align == 0:
            existing = self.flash.read(self._secondary + offset, len(data))
            erased = b"\xff" * align
            skip = 0
            while skip + align <= len(data):
                have, want = existing[skip:skip + align], bytes(data[skip:skip + align])
                if have == want:
                    skip += align  # programmed already (or erased and the data is erased-looking)
                elif have == erased:
                    break
                else:
                    raise FlashError(f"resume at slot offset 0x{offset + skip:x}: programmed bytes differ from the "
                                     "resent block")
            if skip:
                offset, data = offset + skip, bytes(data[skip:])
                if not data:
                    return
        self.write_secondary(offset, data)

    def _flush_tail(self) -> None:
        if self._tail_off is None:
            return
        off, tail = self._tail_off, self._tail
        self._tail_off, self._tail = None, b""
        padded = tail + b"\xff" * (-len(tail) % self.layout.write_align)
        self.flash.program(self._secondary + off, padded)

    def staged_image(self) -> bytes:
        """The secondary slot's bytes up to the image extent (the whole slot if no header is found)."""
        self._flush_tail()
        data = self._slot_data(self._secondary)
        extent = image_extent(data)
        return data[:extent] if extent is not None else data

    def verify_staged(self, *, allow_downgrade: bool = False) -> ParsedImage:
        """The install checks of boot step 3 on the staged image; raises ImageError with the Reason.

        `allow_downgrade` (bench level, the restore path) also waives the counter and config checks,
        as a RESTORE activation does at boot.
        """
        self._flush_tail()
        return self._verify(self._secondary, **self._install_checks(restore=allow_downgrade))

    def request_upgrade(self, mode: ActivationMode) -> None:
        """Write the install request (TEST, PERMANENT or RESTORE) into the secondary trailer; it acts at the next boot."""
        self._flush_tail()
        stype = SwapType.TEST if mode is ActivationMode.TEST else SwapType.PERM
        flags = FLAG_RESTORE if mode is ActivationMode.RESTORE else 0
        self._ensure_blank_trailer(self._secondary)
        self._write_request(self._secondary, stype, flags, 0, self._swap_sectors())

    def confirm(self) -> None:
        """The running image confirms itself: image_ok in the primary trailer, then advance the counter."""
        trailer = self.read_trailer(self._primary)
        if trailer.consistent:
            self._set(self._primary, self.tl.image_ok)
        else:
            self._write_confirmed_trailer()
        image = self._try_verify(self._primary)
        if image is not None:
            self._advance_counter(image)

    def primary_image(self) -> ParsedImage | None:
        """The verified image in the primary slot, or None."""
        return self._try_verify(self._primary)

    def backup_image(self) -> ParsedImage | None:
        """The image in the secondary slot (parsed, not verified), or None if there is none."""
        try:
            return parse_image(self._slot_data(self._secondary))
        except ImageError:
            return None

    def slot_image_hash(self, primary: bool) -> bytes:
        """SHA-256 of a slot's image bytes up to its extent, as flash holds them (32 zero bytes: no image)."""
        data = self._slot_data(self._primary if primary else self._secondary)
        extent = image_extent(data)
        return hashlib.sha256(data[:extent]).digest() if extent is not None else bytes(32)

    def is_confirmed(self) -> bool:
        """True when the primary trailer is valid with image_ok set."""
        t = self.read_trailer(self._primary)
        return t.consistent and t.image_ok

    @staticmethod
    def factory_program(flash: FlashModel, layout: FlashLayout, image: bytes, profile: DutProfile | None = None) -> None:
        """Blank flash -> `image` in the primary slot with a confirmed trailer (what production programming does)."""
        if len(image) > layout.slot_size:
            raise FlashError(f"image of {len(image)} bytes does not fit the {layout.slot_size}-byte slot")
        sec = layout.sector_size
        for i in range(layout.slot_sectors + 1):
            off = layout.primary_offset + i * sec
            if not flash.is_erased(off, sec):
                flash.erase_sector(off)
        padded = image + b"\xff" * (-len(image) % layout.write_align)
        flash.program(layout.primary_offset, padded)
        nv = NvStore(flash, layout)
        Bootloader(flash, layout, nv, [], "")._write_confirmed_trailer()


def _type_name(value: int | None) -> str:
    try:
        return SwapType(value).name if value is not None else "NONE"
    except ValueError:
        return f"0x{value:02x}"


def _reason(value: int) -> Reason:
    try:
        return Reason(value)
    except ValueError:
        return Reason.NONE
