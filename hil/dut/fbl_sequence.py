"""The OEM flash-bootloader programming sequence (ISO 14229), as the `flash_bootloader` family has it.

    10 <programming>          programming session (the application keeps running: a dual-bank part
                              programs its inactive bank in the background)
    27 <level> / 27 <level+1> SecurityAccess
    2E <FINGERPRINT>          who programmed the board: BCD date (YY MM DD), then the tester id
    per logical block of the image (the DUT profile's `update.blocks`, in address order):
      31 01 <ERASE_MEMORY> <addressAndLengthFormatIdentifier> <address> <size>   the whole logical block
    per logical block of the image:
      34 / 36 ... / 37        RequestDownload at the block's address, TransferData, RequestTransferExit
    31 01 <CHECK_MEMORY> <signature record>                      the board verifies the detached signature
    31 01 <CHECK_PROGRAMMING_DEPENDENCIES>                       hardware, anti-rollback, version, configuration
    11 01                     hardReset: the bootloader switches to the programmed bank (the activation)

Identifiers come from the DUT profile; the signature record and the blocks from the image container
(hil/images/fbl.py). Both check routines answer a status record (result 0 = accepted, reason code).
Every block is erased before the first download, so a download interrupted in any block resumes
(DID DOWNLOAD_RESUME) without erasing anything again.
"""

from __future__ import annotations

import datetime as _dt
import time
import zlib
from typing import TYPE_CHECKING

from hil.bench import contract
from hil.bench.contract import ActivationMode, Did, Reason, Routine
from hil.dut.sequence import (Phase, SequenceContext, StageResult, read_resume_record, reset_to_install,
                              unlock_programming)
from hil.errors import UpdateFailed

if TYPE_CHECKING:
    from hil.bench.dut_profile import LogicalBlock
    from hil.images.fbl import FblContainer

#: Who the fingerprint says programmed the board (the tester's id; the date is today's).
TESTER_ID = "bms-ota-hil"


def _bcd(n: int) -> int:
    return ((n // 10) << 4) | (n % 10)


class FblSequence:
    """The `flash_bootloader` family's programming steps (module docstring)."""

    def __init__(self, ctx: SequenceContext) -> None:
        self.ctx = ctx
        self.update = ctx.profile.update

    @property
    def container(self) -> "FblContainer":
        return self.ctx.container  # type: ignore[return-value]

    # ------------------------------------------------------------------ single steps
    def unlock(self, bench_level: bool = False) -> None:
        unlock_programming(self.ctx, bench_level)

    def fingerprint(self) -> bytes:
        """The fingerprint record: BCD date, then the tester id, padded with NULs to the profile's length."""
        today = _dt.date.today()
        record = bytes([_bcd(today.year % 100), _bcd(today.month), _bcd(today.day)]) + TESTER_ID.encode("ascii")
        n = self.update.fingerprint_length
        return record[:n].ljust(n, b"\x00")

    def write_fingerprint(self) -> None:
        self.ctx.phase(Phase.FINGERPRINT)
        self.ctx.uds.write_did(Did.FINGERPRINT, self.fingerprint())

    def erase_record(self, address: int, size: int) -> bytes:
        """The erase routine's option record: addressAndLengthFormatIdentifier, address, size."""
        alfid = self.update.address_length_format
        n_size, n_addr = alfid >> 4, alfid & 0x0F
        return bytes([alfid]) + address.to_bytes(n_addr, "big") + size.to_bytes(n_size, "big")

    def erase_block(self, block: "LogicalBlock") -> None:
        self.ctx.phase(Phase.ERASE)
        self.ctx.uds.routine(Routine.ERASE_MEMORY, self.erase_record(block.address, block.size))

    def erase(self) -> None:
        for block in self.update.blocks:
            self.erase_block(block)

    def downloads(self, image: bytes) -> list[tuple[int, bytes]]:
        return [(block.address, data) for block, data in self.container.blocks_of(image)]

    def capacity(self) -> tuple[int, int]:
        first = self.update.blocks[0]
        return first.address, first.size

    def resume_offset(self, image: bytes) -> int:
        return self._resume_point(image)[1]

    def _resume_point(self, image: bytes) -> tuple[int, int]:
        """(index of the block to resume, bytes of the image already stored); (0, 0) when nothing resumes.

        The board's resume record (DID DOWNLOAD_RESUME) names the interrupted block's size, the bytes of it
        stored and their CRC-32; the blocks before it are complete on the board (it keeps that in NV)."""
        size, stored, crc = read_resume_record(self.ctx.uds)
        before = 0
        for i, (_block, data) in enumerate(self.container.blocks_of(image)):
            if size == len(data) and 0 < stored < size and zlib.crc32(data[:stored]) == crc:
                return i, before + stored
            before += len(data)
        return 0, 0

    # ------------------------------------------------------------------ the whole download
    def stage(self, image: bytes, *, bench_level: bool = False, check: bool = True, resume: bool = False) -> StageResult:
        start = time.monotonic()
        blocks = self.container.blocks_of(image)
        total = sum(len(d) for _b, d in blocks)
        self.unlock(bench_level)
        first, resumed = self._resume_point(image) if resume else (0, 0)
        if resumed == 0:
            first = 0
            self.write_fingerprint()
            for block, _data in blocks:
                self.erase_block(block)
        sent = 0
        for i, (block, data) in enumerate(blocks):
            if i < first:
                sent += len(data)  # complete on the board before the interruption
                continue
            offset = resumed - sent if i == first and resumed else 0
            self.ctx.download(block.address, data, offset=offset, sent_before=sent, total=total)
            sent += len(data)
        if not check:
            return StageResult(total, time.monotonic() - start, True, Reason.NONE, resumed)
        accepted, reason = self.verify(image)
        return StageResult(total, time.monotonic() - start, accepted, reason, resumed)

    def _status(self, status: bytes) -> tuple[bool, Reason]:
        accepted = len(status) >= 1 and status[0] == 0
        reason = self.ctx.profile.decode(Reason, status[1]) if len(status) >= 2 else Reason.NONE
        return accepted, reason

    def verify(self, image: bytes) -> tuple[bool, Reason]:
        """checkMemory with the detached signature, then checkProgrammingDependencies (only if memory passed)."""
        ctx = self.ctx
        ctx.phase(Phase.VERIFY)
        accepted, reason = self._status(ctx.uds.routine(Routine.CHECK_MEMORY, self.container.signature(image)))
        if not accepted:
            return accepted, reason
        return self._status(ctx.uds.routine(Routine.CHECK_PROGRAMMING_DEPENDENCIES))

    def activate(self, mode: ActivationMode = ActivationMode.TEST, *, reset: bool = True) -> None:
        """The reset is the activation: the bootloader switches to the verified bank and trial-boots it. A restore
        is what the board verified at the bench level; a permanent install without a trial boot does not exist."""
        if mode is ActivationMode.PERMANENT:
            raise UpdateFailed("the flash_bootloader family has no permanent activation: every install runs its "
                               "self-test on a trial boot (use test, or restore at the bench level)")
        ctx = self.ctx
        ctx.phase(Phase.ACTIVATE)
        if reset:
            reset_to_install(ctx)

    def discard(self) -> None:
        self.unlock()
        self.erase()
        self.ctx.uds.session(contract.SESSION_DEFAULT)
