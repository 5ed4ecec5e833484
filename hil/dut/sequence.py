"""The programming-sequence seam: the steps of an update over UDS, as the board's update family has them.

The `Flasher` (hil/dut/flasher.py) is what tests hold: its hooks, its phases, the outcome wait. The
steps between - which session, which routines with which records, what is downloaded where, how an
image is activated - belong to the board's family (the DUT profile's `update.family`,
hil/images/families.py): `McubootSequence` here (background download into the secondary slot, the
check routine, an activation routine, a reset), the OEM flash-bootloader sequence in
hil/dut/fbl_sequence.py. A sequence does its transfers through the Flasher (`SequenceContext.download`),
so every fault hook works the same in every family.
"""

from __future__ import annotations

import enum
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Protocol, runtime_checkable

from hil.bench import contract
from hil.bench.contract import ActivationMode, Did, Reason, Routine

if TYPE_CHECKING:
    from hil.bench.config import DutConfig
    from hil.bench.dut_profile import DutProfile
    from hil.drivers.protocols import UdsLink
    from hil.images.container import ImageContainer


class Phase(str, enum.Enum):
    """Phases of an update as the tester sees them (names used in evidence and fault ids)."""

    UNLOCK = "unlock"
    FINGERPRINT = "fingerprint"  # who programmed the board, written before anything is erased
    ERASE = "erase"
    DOWNLOAD = "download"
    TRANSFER_EXIT = "transfer_exit"
    VERIFY = "verify"
    ACTIVATE = "activate"
    RESET = "reset"
    INSTALL = "install"  # ECU silent: bootloader installing
    FIRST_BOOT = "first_boot"  # new image running its self-test
    DONE = "done"


#: (counter, data) pairs actually sent for one block; the default sends the block unchanged.
BlockFilter = Callable[[int, bytes], Iterable[tuple[int, bytes]]]


@dataclass
class TransferTiming:
    """The TransferData blocks of one stage, measured: what this board's block length and turnaround allow."""

    block_bytes: int = 0  # firmware bytes per TransferData block (the largest the board granted)
    block_seconds: list[float] = field(default_factory=list)  # each block's round trip, request sent to response
    download_seconds: float = 0.0  # first TransferData sent to the last one answered, summed over the downloads


@dataclass
class StageResult:
    """Outcome of the background download and the ECU's check of the staged image."""

    size: int
    seconds: float
    accepted: bool
    reason: Reason
    resumed_from: int = 0  # bytes the DUT already had (a resumed download sent only the rest)
    transfer: TransferTiming = field(default_factory=TransferTiming)  # filled by the Flasher

    @property
    def block_bytes(self) -> int:
        return self.transfer.block_bytes

    @property
    def block_seconds(self) -> list[float]:
        return self.transfer.block_seconds

    @property
    def download_seconds(self) -> float:
        return self.transfer.download_seconds

    @property
    def kib_per_s(self) -> float:
        return (self.size - self.resumed_from) / 1024 / self.seconds if self.seconds > 0 else 0.0


class SequenceContext(Protocol):
    """What a sequence gets from the Flasher: the UDS client, the profile, the container, phases and transfers."""

    uds: "UdsLink"
    dut: "DutConfig"
    profile: "DutProfile"
    container: "ImageContainer"

    def phase(self, phase: Phase) -> None:
        """A phase begins (hooks run)."""
        ...

    def download(self, address: int, data: bytes, *, offset: int = 0, sent_before: int = 0,
                 total: int | None = None) -> None:
        """RequestDownload of data[offset:] at address + offset, TransferData through the block filter and the
        progress hooks (which see sent_before + bytes sent of `total`), RequestTransferExit."""
        ...


@runtime_checkable
class ProgrammingSequence(Protocol):
    """The steps of an update in one family. Every method talks to the board through the context's UDS client."""

    def unlock(self, bench_level: bool = False) -> None:
        """Programming session and SecurityAccess (the bench level for restores)."""
        ...

    def erase(self) -> None:
        """Erase what a download of an image fills (the board must already be unlocked)."""
        ...

    def downloads(self, image: bytes) -> list[tuple[int, bytes]]:
        """(address, data) of each RequestDownload a full download of `image` makes, in order."""
        ...

    def capacity(self) -> tuple[int, int]:
        """(address, bytes): where the first download goes and the most the board takes there."""
        ...

    def resume_offset(self, image: bytes) -> int:
        """Bytes of `image` the board already stored from an interrupted download (0: start over)."""
        ...

    def stage(self, image: bytes, *, bench_level: bool = False, check: bool = True, resume: bool = False) -> StageResult:
        """Background download and (with `check`) the board's verification of what arrived."""
        ...

    def verify(self, image: bytes) -> tuple[bool, Reason]:
        """The board's check of the downloaded image: (accepted, reason). UdsError when it refuses to check."""
        ...

    def activate(self, mode: ActivationMode = ActivationMode.TEST, *, reset: bool = True) -> None:
        """Make the verified image install; with `reset` also the reset that starts the install."""
        ...

    def discard(self) -> None:
        """Throw away whatever the board holds staged; afterwards the update status is IDLE, no backup kept."""
        ...


def sequence_for(ctx: SequenceContext) -> ProgrammingSequence:
    """The programming sequence of the board the context's DUT profile describes."""
    from hil.images.families import family, load

    return load(family(ctx.profile.update.family).sequence)(ctx)  # type: ignore[no-any-return]


def unlock_programming(ctx: SequenceContext, bench_level: bool = False) -> None:
    """Programming session and SecurityAccess at the programming level (the bench level for restores):
    the first step of every family's sequence."""
    from hil.errors import UpdateFailed

    ctx.phase(Phase.UNLOCK)
    ctx.uds.session(contract.SESSION_PROGRAMMING)
    security = ctx.dut.bench_security if bench_level else ctx.dut.security
    if security is None:
        raise UpdateFailed("this bench has no bench_security level configured; restores need it")
    ctx.uds.unlock(security)


def reset_to_install(ctx: SequenceContext) -> None:
    """The ECUReset that starts the install, and the install phase after it (every family's last step)."""
    ctx.phase(Phase.RESET)
    ctx.uds.ecu_reset()
    ctx.phase(Phase.INSTALL)


def read_resume_record(uds: "UdsLink") -> tuple[int, int, int]:
    """DID DOWNLOAD_RESUME: announced size, bytes stored, CRC-32 of them."""
    size, stored, crc = struct.unpack(">III", uds.read_did(Did.DOWNLOAD_RESUME))
    return size, stored, crc


class McubootSequence:
    """The MCUboot family: one image into the secondary slot, the check routine, the activation routine, a reset.

    Programming session, SecurityAccess, erase routine (the whole secondary slot), RequestDownload at the
    slot address (DID FLASH_LAYOUT), TransferData, RequestTransferExit, the check routine (status record:
    accepted, reason), the activation routine (option record: activation mode), ECUReset.
    """

    def __init__(self, ctx: SequenceContext) -> None:
        self.ctx = ctx

    def unlock(self, bench_level: bool = False) -> None:
        unlock_programming(self.ctx, bench_level)

    def erase(self) -> None:
        self.ctx.phase(Phase.ERASE)
        self.ctx.uds.routine(Routine.ERASE_MEMORY)

    def _layout(self) -> tuple[int, int]:
        address, slot_size, _sector = struct.unpack(">III", self.ctx.uds.read_did(Did.FLASH_LAYOUT))
        return address, slot_size

    def downloads(self, image: bytes) -> list[tuple[int, bytes]]:
        return [(self._layout()[0], image)]

    def capacity(self) -> tuple[int, int]:
        return self._layout()

    def resume_offset(self, image: bytes) -> int:
        size, stored, crc = read_resume_record(self.ctx.uds)
        if size == len(image) and 0 < stored < size and zlib.crc32(image[:stored]) == crc:
            return stored
        return 0

    def stage(self, image: bytes, *, bench_level: bool = False, check: bool = True, resume: bool = False) -> StageResult:
        start = time.monotonic()
        self.unlock(bench_level)
        address = self._layout()[0]
        offset = self.resume_offset(image) if resume else 0
        if offset == 0:
            self.erase()
        self.ctx.download(address, image, offset=offset)
        if not check:
            return StageResult(len(image), time.monotonic() - start, True, Reason.NONE, offset)
        accepted, reason = self.verify(image)
        return StageResult(len(image), time.monotonic() - start, accepted, reason, offset)

    def verify(self, image: bytes) -> tuple[bool, Reason]:
        self.ctx.phase(Phase.VERIFY)
        status = self.ctx.uds.routine(Routine.CHECK_PROGRAMMING_DEPENDENCIES)
        accepted = len(status) >= 1 and status[0] == 0
        reason = self.ctx.profile.decode(Reason, status[1]) if len(status) >= 2 else Reason.NONE
        return accepted, reason

    def activate(self, mode: ActivationMode = ActivationMode.TEST, *, reset: bool = True) -> None:
        ctx = self.ctx
        ctx.phase(Phase.ACTIVATE)
        ctx.uds.routine(Routine.ACTIVATE_UPDATE, bytes([ctx.profile.encode(mode)]))
        if reset:
            reset_to_install(ctx)

    def discard(self) -> None:
        self.unlock()
        self.erase()
        self.ctx.uds.session(contract.SESSION_DEFAULT)
