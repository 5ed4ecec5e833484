"""The update as one object: stage, activate, wait for the outcome - whatever the board's update family.

The steps on the wire are the family's programming sequence (hil/dut/sequence.py, chosen by the DUT
profile's `update.family`); the Flasher owns what every family shares: the fault hooks, the phases,
the transfer loop and the wait for the outcome. Fault injectors attach to its hooks: `on_phase` (a
phase begins), `on_progress` (bytes transferred, the byte-offset hook power cuts use) and
`block_filter` (rewrites the TransferData blocks actually sent: drop, repeat, reorder, wrong counter).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from hil.bench import contract
from hil.bench.config import DutConfig
from hil.bench.contract import ActivationMode, Reason, UpdateState
from hil.drivers.protocols import CanLink, UdsLink
from hil.dut.sequence import BlockFilter, Phase, ProgrammingSequence, StageResult, TransferTiming, sequence_for
from hil.errors import HilTimeout, UdsError, UpdateFailed
from hil.bench.dut_profile import DutProfile
from hil.images.container import ImageContainer, container_for

if TYPE_CHECKING:
    from hil.drivers.vehicle import Vehicle

__all__ = ["BlockFilter", "Flasher", "OpenTransfer", "Phase", "StageResult", "UpdateOutcome"]

TERMINAL_STATES = (UpdateState.SUCCESS, UpdateState.ROLLED_BACK, UpdateState.REJECTED, UpdateState.RECOVERY)


@dataclass
class OpenTransfer:
    """A RequestDownload's transfer in progress: what it carries and where the tester is in it."""

    address: int  # where the download's data start (the RequestDownload asked for address + the first offset)
    data: bytes
    next_offset: int  # the first byte of data not yet sent
    per_block: int  # data bytes per TransferData block (what the board granted)
    counter: int  # the next block's sequence counter
    sent_before: int  # bytes of the image in the downloads before this one
    total: int  # bytes of the whole image (every download)

    def next_block(self) -> tuple[int, bytes]:
        """(counter, data) of the next TransferData block."""
        return self.counter, self.data[self.next_offset:self.next_offset + self.per_block]


@dataclass
class UpdateOutcome:
    """How an update ended, read back from the DUT."""

    state: UpdateState
    reason: Reason
    version: str
    seconds: float
    states_seen: list[str] = field(default_factory=list)

    @property
    def confirmed(self) -> bool:
        return self.state is UpdateState.SUCCESS

    @property
    def rolled_back(self) -> bool:
        return self.state is UpdateState.ROLLED_BACK


def _num(value: object) -> int:
    """cantools decodes VAL_ tables to NamedSignalValue; the contract speaks integers."""
    return int(getattr(value, "value", value))  # type: ignore[call-overload]


def _decode_status(profile: DutProfile, signals: dict) -> tuple[UpdateState, Reason]:
    """State and reason of an update-status frame (framework signal names), in the framework's meanings."""
    return (profile.decode(UpdateState, _num(signals[contract.SIG_UPDATE_STATE])),
            profile.decode(Reason, _num(signals[contract.SIG_UPDATE_REASON])))


class Flasher:
    """Drives one DUT through its update family's programming sequence (docs/bench-contract.md)."""

    def __init__(self, uds: UdsLink, can: CanLink, dut: DutConfig, profile: DutProfile | None = None) -> None:
        self.uds = uds
        self.can = can
        self.dut = dut
        self.profile: DutProfile = profile or getattr(uds, "profile", None) or DutProfile()
        self.on_phase: list[Callable[[Phase], None]] = []
        self.on_progress: list[Callable[[int, int], None]] = []
        self.block_filter: BlockFilter | None = None
        self.phases: list[tuple[Phase, float]] = []
        #: The last images `stage` sent and the blocks the block_filter changed, with wall-clock times:
        #: evidence for reports (hil.allure_audit). Bounded, so a long sweep does not pile up images.
        self.staged: collections.deque[tuple[float, bytes]] = collections.deque(maxlen=16)
        self.transport_faults: collections.deque[tuple[float, str]] = collections.deque(maxlen=256)
        #: The board's image format and programming steps (its update family).
        self.container: ImageContainer = container_for(self.profile)
        self.sequence: ProgrammingSequence = sequence_for(self)
        self._transfer = TransferTiming()  # the TransferData blocks of the stage under way
        #: The download whose TransferData blocks are under way (None after its RequestTransferExit).
        self.open_transfer: OpenTransfer | None = None
        #: The bench's vehicle emulation (`hil.drivers.vehicle.Vehicle`), when it has one: its state is announced
        #: right before an activation, the moment the board decides on its charging window.
        self.vehicle: Vehicle | None = None

    # ------------------------------------------------------------------ what sequences use
    def phase(self, phase: Phase) -> None:
        """A phase begins: recorded with its time, then every on_phase hook runs."""
        self.phases.append((phase, time.monotonic()))
        for hook in list(self.on_phase):
            hook(phase)

    def download(self, address: int, data: bytes, *, offset: int = 0, sent_before: int = 0,
                 total: int | None = None) -> None:
        """RequestDownload of data[offset:] at address + offset, the TransferData blocks (through `block_filter`,
        reporting sent_before + bytes sent of `total` to `on_progress`), RequestTransferExit."""
        total = total if total is not None else len(data)
        self.phase(Phase.DOWNLOAD)
        block_len = self.uds.request_download(address + offset, len(data) - offset)
        per_block = block_len - 2
        self._transfer.block_bytes = max(self._transfer.block_bytes, per_block)
        self._send_blocks(OpenTransfer(address, data, offset, per_block, 1, sent_before, total))

    def _send_blocks(self, transfer: OpenTransfer) -> None:
        """The TransferData blocks of `transfer` from its next byte on, then RequestTransferExit. Until the exit the
        transfer is `open_transfer` (a hook that raises leaves it open on the board, to finish or abandon)."""
        self.open_transfer = transfer
        download_start = time.monotonic()
        try:
            while transfer.next_offset < len(transfer.data):
                counter, chunk = transfer.next_block()
                frames = self.block_filter(counter, chunk) if self.block_filter else [(counter, chunk)]
                for c, payload in frames:
                    t = time.monotonic()
                    self.uds.transfer_data(c, payload)
                    self._transfer.block_seconds.append(time.monotonic() - t)
                transfer.next_offset += len(chunk)
                transfer.counter = (counter + 1) & 0xFF  # 0xFF wraps to 0x00 (ISO 14229-1)
                for hook in list(self.on_progress):
                    hook(transfer.sent_before + transfer.next_offset, transfer.total)
        finally:
            self._transfer.download_seconds += time.monotonic() - download_start
        self.phase(Phase.TRANSFER_EXIT)
        self.uds.request_transfer_exit()
        self.open_transfer = None

    def finish_stage(self, image: bytes, *, check: bool = True) -> StageResult:
        """Go on with a `stage(image)` that a progress hook interrupted while its transfer is still open on the board:
        the rest of the open download's blocks with the counters that follow (no new RequestDownload), its exit, the
        family's remaining downloads, then the ECU's check. UpdateFailed when no transfer of `image` is open."""
        transfer = self.open_transfer
        downloads = self.downloads(image)
        index = next((i for i, (address, data) in enumerate(downloads)
                      if transfer is not None and (address, data) == (transfer.address, transfer.data)), None)
        if transfer is None or index is None:
            raise UpdateFailed("no transfer of this image is open to finish: finish_stage follows a stage() that a "
                               "progress hook interrupted")
        start, before = time.monotonic(), transfer.sent_before + transfer.next_offset
        self._send_blocks(transfer)
        sent = transfer.sent_before + len(transfer.data)
        for address, data in downloads[index + 1:]:
            self.download(address, data, sent_before=sent, total=transfer.total)
            sent += len(data)
        accepted, reason = self.verify(image) if check else (True, Reason.NONE)
        return StageResult(transfer.total, time.monotonic() - start, accepted, reason, before, self._transfer)

    # ------------------------------------------------------------------ the family's steps
    def unlock(self, bench_level: bool = False) -> None:
        """Programming session and SecurityAccess (the bench level for restores)."""
        self.sequence.unlock(bench_level)

    def erase(self) -> None:
        """Erase what a download fills (after `unlock`): the family's erase step."""
        self.sequence.erase()

    def downloads(self, image: bytes) -> list[tuple[int, bytes]]:
        """(address, data) of each RequestDownload a full download of `image` makes."""
        return self.sequence.downloads(image)

    def capacity(self) -> tuple[int, int]:
        """(address, bytes): where the first download goes and the most the board takes there."""
        return self.sequence.capacity()

    def resume_offset(self, image: bytes) -> int:
        """Where a download of `image` can resume: the bytes the DUT reports stored (DID DOWNLOAD_RESUME), if they
        are this image's first bytes; 0 when it must start over."""
        return self.sequence.resume_offset(image)

    def stage(self, image: bytes, *, bench_level: bool = False, check: bool = True, resume: bool = False) -> StageResult:
        """Background download, then the ECU's check of what arrived.

        `resume`: continue an interrupted download of the same image from the last block the DUT has
        stored (no erase); falls back to a full download when there is nothing to resume."""
        self.staged.append((time.time(), image))
        self._transfer = TransferTiming()
        self.open_transfer = None
        result = self.sequence.stage(image, bench_level=bench_level, check=check, resume=resume)
        result.transfer = self._transfer
        return result

    def verify(self, image: bytes) -> tuple[bool, Reason]:
        """The ECU's check of the downloaded `image` alone: (accepted, reason); UdsError if it refuses to check."""
        return self.sequence.verify(image)

    def discard(self) -> None:
        """Throw away whatever the DUT holds staged (a staged, rejected or reverted image), then the default
        session. Afterwards the update status is IDLE and there is no backup."""
        self.sequence.discard()

    def activate(self, mode: ActivationMode = ActivationMode.TEST, *, reset: bool = True) -> None:
        """Make the verified image install; with `reset`, the reset that starts the install (the bootloader
        installs at the next reset either way, a power cycle included).

        The vehicle's state goes out once more first: a board that booted less than a vehicle-state period ago
        (a fast stage on a slow period) would otherwise decide on a window it has not heard of yet.
        """
        if self.vehicle is not None:
            self.vehicle.announce()
        self.sequence.activate(mode, reset=reset)

    def wait_outcome(self, timeout: float | None = None) -> UpdateOutcome:
        """Wait until the DUT reports a terminal update state (success, rolled back, rejected, recovery).

        Watches BMS_UpdateStatus frames; while the ECU is silent (installing) or sends no application
        frames (recovery), it asks over UDS instead. The timeout error lists the states seen.
        """
        timeout = timeout if timeout is not None else max(60.0, self.dut.boot_timeout_s * 4)
        start = time.monotonic()
        deadline = start + timeout
        seen: list[str] = []
        p = self.profile
        terminal = {p.encode(s) for s in TERMINAL_STATES}

        def note(state: UpdateState, reason: Reason) -> None:
            label = f"{state.name}/{reason.name}"
            if not seen or seen[-1] != label:
                seen.append(label)
                if state is UpdateState.TESTING:
                    self.phase(Phase.FIRST_BOOT)

        with self.can.recorder(contract.MSG_UPDATE_STATUS) as frames:
            done = 0
            while time.monotonic() < deadline:
                state: UpdateState | None = None
                try:
                    frame = self.can.wait_for(contract.MSG_UPDATE_STATUS, timeout=min(2.0, max(0.05, deadline - time.monotonic())),
                                              predicate=lambda s: _num(s[contract.SIG_UPDATE_STATE]) in terminal, since=start)
                    state, reason = _decode_status(p, frame.signals)
                except HilTimeout:
                    # No terminal frame: the ECU is installing (silent) or in recovery (no application frames).
                    state, reason = self._poll_status()
                for f in list(frames)[done:]:
                    note(*_decode_status(p, f.signals))
                done = len(frames)
                if state is not None:
                    note(state, reason)
                if state in TERMINAL_STATES:
                    self.phase(Phase.DONE)
                    return UpdateOutcome(state, reason, self._version(), time.monotonic() - start, seen)
        raise HilTimeout(f"update did not reach a terminal state within {timeout:.0f} s", " -> ".join(seen))

    def _poll_status(self) -> tuple[UpdateState | None, Reason]:
        try:
            rec = self.uds.update_status()
        except (HilTimeout, UdsError, TimeoutError):
            return None, Reason.NONE
        return rec.state, rec.reason

    def _version(self) -> str:
        for _ in range(3):
            try:
                return self.uds.software_version()
            except (HilTimeout, UdsError, TimeoutError):
                time.sleep(0.2)
        return "?"

    def update(self, image: bytes, mode: ActivationMode = ActivationMode.TEST, *, bench_level: bool = False,
               timeout: float | None = None) -> UpdateOutcome:
        """Stage, activate and wait: the whole update. A rejected image raises UpdateFailed with its reason."""
        staged = self.stage(image, bench_level=bench_level)
        if not staged.accepted:
            raise UpdateFailed(f"the DUT rejected the staged image: {staged.reason.name}")
        self.activate(mode)
        return self.wait_outcome(timeout)
