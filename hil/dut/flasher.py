"""The UDS programming sequence as one object: stage, activate, wait for the outcome.

Fault injectors attach to its hooks: `on_phase` (a phase begins), `on_progress` (bytes
transferred, the byte-offset hook power cuts use) and `block_filter` (rewrites the TransferData
blocks actually sent: drop, repeat, reorder, wrong counter).
"""

from __future__ import annotations

import collections
import enum
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from hil.bench import contract
from hil.bench.config import DutConfig
from hil.bench.contract import ActivationMode, Did, Reason, Routine, UpdateState
from hil.drivers.protocols import CanLink, UdsLink
from hil.errors import HilTimeout, UdsError, UpdateFailed
from hil.bench.dut_profile import DutProfile


class Phase(str, enum.Enum):
    """Phases of an update as the tester sees them (names used in evidence and fault ids)."""

    UNLOCK = "unlock"
    ERASE = "erase"
    DOWNLOAD = "download"
    TRANSFER_EXIT = "transfer_exit"
    VERIFY = "verify"
    ACTIVATE = "activate"
    RESET = "reset"
    INSTALL = "install"  # ECU silent: bootloader swapping
    FIRST_BOOT = "first_boot"  # new image running its self-test
    DONE = "done"


#: (counter, data) pairs actually sent for one block; the default sends the block unchanged.
BlockFilter = Callable[[int, bytes], Iterable[tuple[int, bytes]]]

TERMINAL_STATES = (UpdateState.SUCCESS, UpdateState.ROLLED_BACK, UpdateState.REJECTED, UpdateState.RECOVERY)


@dataclass
class StageResult:
    """Outcome of the background download and the ECU's check of the staged image."""

    size: int
    seconds: float
    accepted: bool
    reason: Reason
    resumed_from: int = 0  # bytes the DUT already had (a resumed download sent only the rest)
    #: Firmware bytes per TransferData block, and each block's round trip (request sent to response, s):
    #: what this board's block length and turnaround allow, measured.
    block_bytes: int = 0
    block_seconds: list[float] = field(default_factory=list)
    download_seconds: float = 0.0  # first TransferData sent to the last one answered

    @property
    def kib_per_s(self) -> float:
        return (self.size - self.resumed_from) / 1024 / self.seconds if self.seconds > 0 else 0.0


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
    """Drives one DUT through the bench contract's programming sequence (docs/bench-contract.md)."""

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

    def _phase(self, phase: Phase) -> None:
        self.phases.append((phase, time.monotonic()))
        for hook in list(self.on_phase):
            hook(phase)

    def unlock(self, bench_level: bool = False) -> None:
        """Programming session and SecurityAccess (the bench level for restores)."""
        self._phase(Phase.UNLOCK)
        self.uds.session(contract.SESSION_PROGRAMMING)
        security = self.dut.bench_security if bench_level else self.dut.security
        if security is None:
            raise UpdateFailed("this bench has no bench_security level configured; restores need it")
        self.uds.unlock(security)

    def resume_offset(self, image: bytes) -> int:
        """Where a download of `image` can resume: the bytes the DUT reports stored (DID FD0A), if they are
        this image's first bytes (same size, same CRC-32); 0 when it must start over."""
        import zlib

        size, stored, crc = struct.unpack(">III", self.uds.read_did(Did.DOWNLOAD_RESUME))
        if size == len(image) and 0 < stored < size and zlib.crc32(image[:stored]) == crc:
            return stored
        return 0

    def stage(self, image: bytes, *, bench_level: bool = False, check: bool = True, resume: bool = False) -> StageResult:
        """Background download into the inactive slot, then the ECU's check routine.

        `resume`: continue an interrupted download of the same image from the last block the DUT has
        stored (no erase); falls back to a full download when there is nothing to resume."""
        start = time.monotonic()
        self.staged.append((time.time(), image))
        self.unlock(bench_level)
        address, slot_size, _sector = struct.unpack(">III", self.uds.read_did(Did.FLASH_LAYOUT))
        offset = self.resume_offset(image) if resume else 0
        if offset == 0:
            self._phase(Phase.ERASE)
            self.uds.routine(Routine.ERASE_MEMORY)
        self._phase(Phase.DOWNLOAD)
        block_len = self.uds.request_download(address + offset, len(image) - offset)
        per_block = block_len - 2
        counter = 1
        sent = offset
        rounds: list[float] = []
        download_start = time.monotonic()
        for block_start in range(offset, len(image), per_block):
            chunk = image[block_start:block_start + per_block]
            frames = self.block_filter(counter, chunk) if self.block_filter else [(counter, chunk)]
            for c, data in frames:
                t = time.monotonic()
                self.uds.transfer_data(c, data)
                rounds.append(time.monotonic() - t)
            sent = block_start + len(chunk)
            for hook in list(self.on_progress):
                hook(sent, len(image))
            counter = (counter + 1) & 0xFF
        download_s = time.monotonic() - download_start
        self._phase(Phase.TRANSFER_EXIT)
        self.uds.request_transfer_exit()
        if not check:
            return StageResult(len(image), time.monotonic() - start, True, Reason.NONE, offset, per_block, rounds, download_s)
        self._phase(Phase.VERIFY)
        status = self.uds.routine(Routine.CHECK_PROGRAMMING_DEPENDENCIES)
        accepted = len(status) >= 1 and status[0] == 0
        reason = self.profile.decode(Reason, status[1]) if len(status) >= 2 else Reason.NONE
        return StageResult(len(image), time.monotonic() - start, accepted, reason, offset, per_block, rounds, download_s)

    def discard(self) -> None:
        """Throw away whatever the inactive slot holds (a staged, rejected or reverted image): the erase
        routine, then the default session. Afterwards the update status is IDLE and there is no backup."""
        self.unlock()
        self._phase(Phase.ERASE)
        self.uds.routine(Routine.ERASE_MEMORY)
        self.uds.session(contract.SESSION_DEFAULT)

    def activate(self, mode: ActivationMode = ActivationMode.TEST) -> None:
        """Activation routine, then ECUReset: the bootloader installs at the reset."""
        self._phase(Phase.ACTIVATE)
        self.uds.routine(Routine.ACTIVATE_UPDATE, bytes([self.profile.encode(mode)]))
        self._phase(Phase.RESET)
        self.uds.ecu_reset()
        self._phase(Phase.INSTALL)

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
                    self._phase(Phase.FIRST_BOOT)

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
                    self._phase(Phase.DONE)
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
