"""The simulated ECU's UDS server application (application and recovery mode).

Plain-bytes request handling, as udsoncan is a client library only. Every malformed or
out-of-sequence request gets the NRC the bench contract (docs/bench-contract.md) names;
nothing a tester sends can crash it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

from hil.bench import contract
from hil.bench.contract import ActivationMode, Did, Nrc, Reason, Routine, UpdateState
from hil.errors import ImageError
from hil.images.mcuboot import image_extent
from hil.bench.dut_profile import DutProfile, ProfileError, compute_key
from hil.sim.errors import FlashError, PowerLoss
from hil.images.mcuboot import parse_image
from hil.sim import config_packages
from hil.sim.ecu import EcuContext



#: Programmed blocks between two resume records (DID FD0A): fewer NV writes, at most this many blocks resent.
RESUME_RECORD_EVERY = 4


class NegativeResponse(Exception):
    """Raised inside a handler: answer 7F <SID> <NRC>."""

    def __init__(self, nrc: Nrc) -> None:
        self.nrc = nrc
        super().__init__(nrc.name)


def _header_version(data: bytes) -> tuple[int, int, int]:
    """The version an image header claims (for the history of a rejected image; (0, 0, 0) if unreadable)."""
    try:
        return parse_image(data).version_tuple
    except ImageError:
        return (0, 0, 0)


def _is_tester_present(frame: bytes) -> bool:
    """A single ISO-TP frame carrying TesterPresent (classic or CAN FD single frame)."""
    if not frame or frame[0] >> 4 != 0:
        return False
    sid_at = 1 if frame[0] & 0x0F else 2
    return len(frame) > sid_at and frame[sid_at] == 0x3E


def _require(cond: bool, nrc: Nrc) -> None:
    if not cond:
        raise NegativeResponse(nrc)


@dataclass
class _Download:
    address: int
    size: int
    base: int = 0  # slot offset of the first byte (a resumed download starts where the stored data ends)
    received: int = 0
    next_counter: int = 1
    last_counter: int | None = None
    writer: "_FlashWriter | None" = None
    buffer: bytearray | None = None  # a configuration package goes to RAM, not to the image slot


class _FlashWriter:
    """Programs TransferData blocks behind the response, one block in flight (as ECUs double-buffer)."""

    def __init__(self, write: Callable[[int, bytes], None], written: Callable[[int], None] | None = None) -> None:
        self._write = write
        self._written = written  # called with the end offset of every programmed block (resume bookkeeping)
        self._q: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flash-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                return
            if self.error is None:
                try:
                    self._write(*item)
                    if self._written is not None:
                        self._written(item[0] + len(item[1]))
                except BaseException as exc:  # PowerLoss or FlashError: reported to the tester
                    self.error = exc
            self._q.task_done()

    def submit(self, offset: int, data: bytes, timeout: float = 5.0) -> None:
        self._q.put((offset, data), timeout=timeout)

    def stop(self) -> None:
        """Power loss or reset: the writer stops; a block not yet programmed is lost, as in an MCU's RAM."""
        self._stop.set()

    def finish(self, timeout: float = 10.0) -> None:
        """Wait until every submitted block is programmed, then stop the thread."""
        self._q.put(None, timeout=timeout)
        self._thread.join(timeout)


@dataclass
class DiagServer:
    """UDS request handler bound to one boot of the ECU."""

    ecu: EcuContext
    recovery: bool = False
    session: int = -1  # the profile's default session (set in __post_init__)
    unlocked_level: int = 0
    _seed: tuple[int, bytes] | None = None
    #: S3server (ISO 14229-2): restarted by every frame of a request and when a request has been served;
    #: stopped while one is served. It runs out on the board's own clock (`run_s3_timer`), not when the
    #: next request arrives.
    _s3_since: float = field(default_factory=time.monotonic)
    _s3_lapsed: bool = False  # S3 ran out before a frame arrived that the timer task had not yet seen
    _serving: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)  # one request, or the S3 expiry, at a time
    _download: _Download | None = None
    _erased: bool = False
    _progress: int = 0
    _staged_size: int | None = None
    _profile: bytes | None = None  # a downloaded configuration package, waiting for routine FF02
    _resetting: bool = False  # an ECUReset was answered: the ECU is going down and answers nothing more

    def __post_init__(self) -> None:
        self.profile: DutProfile = self.ecu.profile
        if self.session < 0:
            self.session = self.profile.sessions.default

    # ------------------------------------------------------------------ dispatch
    def handle(self, request: bytes) -> bytes | None:
        """Answer one request; None = no response (suppressed, or the board lost power)."""
        if not request or self._resetting:
            return None  # after the ECUReset response a real ECU is resetting: a request gets no answer
        sid = request[0]
        with self._lock:
            self._serving = True  # S3 is stopped while a request is served
            try:
                if self._s3_lapsed:
                    self._s3_expire()  # S3 ran out before this request's first frame: it finds the default session
                handler = self._handlers().get(sid)
                if handler is None:
                    raise NegativeResponse(Nrc.SERVICE_NOT_SUPPORTED)
                return handler(request)
            except NegativeResponse as nr:
                return bytes([0x7F, sid, int(nr.nrc)])
            except PowerLoss:
                return None
            finally:
                self._serving = False
                if not (sid == 0x3E and self.ecu.defects.has("tester_present_ignored")):
                    self._s3_since = time.monotonic()  # restarted as the response goes out

    # ------------------------------------------------------------------ S3 (session timer)
    def touch(self, frame: bytes = b"") -> None:
        """A frame of a request arrived (physical or functional): the S3 timer restarts (ISO 14229-2), however
        long reassembly takes. If S3 had already run out, the request finds the default session."""
        if _is_tester_present(frame) and self.ecu.defects.has("tester_present_ignored"):
            return
        now = time.monotonic()
        if self._s3_due(now):
            self._s3_lapsed = True
        self._s3_since = now

    def _s3_due(self, now: float) -> bool:
        return (self.session != self.profile.sessions.default and not self._serving
                and now - self._s3_since > self.profile.uds.s3_s and not self.ecu.defects.has("s3_never_expires"))

    def run_s3_timer(self, wait: Callable[[float], bool]) -> None:
        """The board's S3 task: with no request for longer than S3 the session falls back to the default one,
        without waiting for a request. `wait(seconds)` is the board's wait; True ends the task (reset, power loss)."""
        tick = min(0.05, self.profile.uds.s3_s / 20)
        while not wait(tick):
            if not self._lock.acquire(blocking=False):
                continue  # a request is being served: S3 is stopped meanwhile
            try:
                if self._s3_lapsed or self._s3_due(time.monotonic()):
                    self._s3_expire()
            finally:
                self._lock.release()

    def _s3_expire(self) -> None:
        """S3 ran out: default session, security relocked, an open download abandoned (what is stored stays)."""
        self._s3_lapsed = False
        if self.session == self.profile.sessions.default:
            return
        self.ecu.log(f"UDS: S3 expired ({self.profile.uds.s3_s:g} s without a request), default session")
        self._to_default_session(why="S3 expired")

    def _handlers(self) -> dict[int, Callable[[bytes], bytes | None]]:
        return {0x10: self._session_control, 0x11: self._ecu_reset, 0x22: self._read_did, 0x27: self._security_access,
                0x2E: self._write_did, 0x31: self._routine_control, 0x34: self._request_download,
                0x36: self._transfer_data, 0x37: self._transfer_exit, 0x3E: self._tester_present,
                0x28: self._communication_control, 0x85: self._control_dtc_setting,
                0x19: self._read_dtc_information, 0x14: self._clear_dtc}

    def close(self) -> None:
        """The boot ends (power loss or reset): stop background work without touching flash."""
        if self._download is not None and self._download.writer is not None:
            self._download.writer.stop()

    @property
    def downloading(self) -> bool:
        """A RequestDownload is open (TransferData expected)."""
        return self._download is not None

    @property
    def progress(self) -> int:
        return self._progress

    def _to_default_session(self, why: str = "session change") -> None:
        self.session = self.profile.sessions.default
        self.unlocked_level = 0
        self._seed = None
        self._abort_download(why)

    def _abort_download(self, why: str) -> None:
        """Abandon an open download: blocks in flight are programmed, the resume record (FD0A) is kept."""
        if self._download is not None and self._download.buffer is not None:
            self._download = None  # a configuration package in RAM: nothing to abandon in flash
            return
        if self._download is not None:
            if self._download.writer is not None:
                self._download.writer.finish(timeout=2.0)
            self._download = None
            self.ecu.log(f"UPD: download abandoned ({why}), {self.resume_record()[1]} bytes stored for a resume")
            self.ecu.set_update(UpdateState.IDLE, Reason.DOWNLOAD_ABORTED)

    @property
    def _default(self) -> bool:
        return self.session == self.profile.sessions.default

    # ------------------------------------------------------------------ 0x10 0x11 0x3E 0x28 0x85
    def _session_control(self, req: bytes) -> bytes:
        _require(len(req) == 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        sub = req[1] & 0x7F
        sessions = self.profile.sessions
        _require(sub in (sessions.default, sessions.programming, sessions.extended), Nrc.SUBFUNCTION_NOT_SUPPORTED)
        # Entering any session, the same one included, re-initialises it (ISO 14229-1): security is
        # relocked and a half-done download is abandoned, which is how a new tester restarts.
        self._to_default_session(f"session 0x{sub:02X} entered")
        self.session = sub
        return bytes([0x50, sub]) + struct.pack(">HH", self.profile.uds.p2_ms, self.profile.uds.p2_star_ms // 10)

    def _ecu_reset(self, req: bytes) -> bytes | None:
        _require(len(req) == 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        sub = req[1] & 0x7F
        _require(sub in (0x01, 0x02, 0x03), Nrc.SUBFUNCTION_NOT_SUPPORTED)
        self._abort_download("ECUReset")
        self.ecu.request_reset_after_response()
        self._resetting = True
        return None if req[1] & 0x80 else bytes([0x51, sub])

    def _tester_present(self, req: bytes) -> bytes | None:
        _require(len(req) == 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(req[1] & 0x7F == 0x00, Nrc.SUBFUNCTION_NOT_SUPPORTED)
        return None if req[1] & 0x80 else b"\x7E\x00"

    def _communication_control(self, req: bytes) -> bytes | None:
        _require(len(req) == 3, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(not self._default, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(req[1] & 0x7F in (0, 1, 2, 3), Nrc.SUBFUNCTION_NOT_SUPPORTED)
        return None if req[1] & 0x80 else bytes([0x68, req[1] & 0x7F])

    def _control_dtc_setting(self, req: bytes) -> bytes | None:
        _require(len(req) >= 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(not self._default, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(req[1] & 0x7F in (1, 2), Nrc.SUBFUNCTION_NOT_SUPPORTED)
        return None if req[1] & 0x80 else bytes([0xC5, req[1] & 0x7F])

    def _bench_level(self) -> bool:
        """Unlocked at the profile's bench (restore) level."""
        bench = self.profile.security.bench_level
        return bench is not None and self.unlocked_level == bench
    # ------------------------------------------------------------------ 0x19 0x14
    def _read_dtc_information(self, req: bytes) -> bytes:
        _require(len(req) >= 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        sub = req[1] & 0x7F
        avail = contract.DTC_STATUS_FAILED
        dtcs = sorted(self.ecu.dtcs().items())
        if sub in (0x01, 0x02):
            _require(len(req) == 3, Nrc.INCORRECT_MESSAGE_LENGTH)
            hits = [(d, st) for d, st in dtcs if st & req[2]]
            if sub == 0x01:  # reportNumberOfDTCByStatusMask, format ISO 14229-1 DTC format (0x01)
                return bytes([0x59, 0x01, avail, 0x01]) + struct.pack(">H", len(hits))
            return bytes([0x59, 0x02, avail]) + b"".join(d.to_bytes(3, "big") + bytes([st]) for d, st in hits)
        if sub == 0x0A:  # reportSupportedDTC
            _require(len(req) == 2, Nrc.INCORRECT_MESSAGE_LENGTH)
            return bytes([0x59, 0x0A, avail]) + b"".join(int(d).to_bytes(3, "big") + bytes([self.ecu.dtcs().get(int(d), 0)])
                                                       for d in contract.Dtc)
        raise NegativeResponse(Nrc.SUBFUNCTION_NOT_SUPPORTED)

    def _clear_dtc(self, req: bytes) -> bytes:
        _require(len(req) == 4, Nrc.INCORRECT_MESSAGE_LENGTH)
        group = int.from_bytes(req[1:4], "big")
        _require(group == 0xFFFFFF or group in {int(d) for d in contract.Dtc}, Nrc.REQUEST_OUT_OF_RANGE)
        if group == 0xFFFFFF:
            self.ecu.clear_dtcs()
        else:
            self.ecu.nv_update(dtcs={str(k): v for k, v in self.ecu.dtcs().items() if k != group})
        self.ecu.log(f"DTC: cleared group 0x{group:06X}")
        return b"\x54"

    # ------------------------------------------------------------------ 0x27
    def _security_access(self, req: bytes) -> bytes:
        _require(len(req) >= 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(not self._default, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        sec = self.profile.security
        sub = req[1]
        level = sub if sub % 2 else sub - 1
        security = self.ecu.security_level(level)
        _require(security is not None, Nrc.SUBFUNCTION_NOT_SUPPORTED)
        assert security is not None
        if sub % 2:  # requestSeed
            _require(len(req) == 2, Nrc.INCORRECT_MESSAGE_LENGTH)
            _require(time.monotonic() >= self.ecu.sa_lockout_until, Nrc.REQUIRED_TIME_DELAY_NOT_EXPIRED)
            if self.unlocked_level == level:
                return bytes([0x67, sub]) + bytes(sec.seed_length)
            seed = os.urandom(sec.seed_length)
            self._seed = (level, seed)
            return bytes([0x67, sub]) + seed
        _require(len(req) == 2 + sec.key_length, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(self._seed is not None and self._seed[0] == level, Nrc.REQUEST_SEQUENCE_ERROR)
        assert self._seed is not None
        algorithm, secret = security
        expected = compute_key(algorithm, secret, self._seed[1], level, sec.key_length)
        self._seed = None
        if req[2:] != expected:
            self.ecu.sa_attempts += 1
            if self.ecu.sa_attempts >= sec.max_attempts and not self.ecu.defects.has("security_access_never_locks_out"):
                self.ecu.sa_attempts = 0
                self.ecu.sa_lockout_until = time.monotonic() + self.ecu.sa_delay_s
                raise NegativeResponse(Nrc.EXCEEDED_NUMBER_OF_ATTEMPTS)
            raise NegativeResponse(Nrc.INVALID_KEY)
        self.ecu.sa_attempts = 0
        self.unlocked_level = level
        return bytes([0x67, sub])

    # ------------------------------------------------------------------ 0x22 0x2E
    def did_value(self, did: int) -> bytes:
        """Current value of a DID by the board's identifier (also used by the console and tests of the model)."""
        ecu = self.ecu
        d = self.profile.did_role(did)
        if d is None:
            raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE)
        image = ecu.running_image
        version = image.version_str if image is not None and not self.recovery else "RECOVERY"
        if d is Did.ACTIVE_SESSION:
            return bytes([self.session])
        if d is Did.SPARE_PART_NUMBER:
            return b"BMS-MASTER-12S"
        if d is Did.SOFTWARE_VERSION:
            return version.encode()
        if d is Did.SERIAL_NUMBER:
            return ecu.serial_number.encode()
        if d is Did.HARDWARE_NUMBER:
            return ecu.hardware_number.encode()
        if d is Did.SUPPLIER_SW_VERSION:
            build = ecu.descriptor.build if ecu.descriptor is not None and not self.recovery else "recovery"
            return f"{version}+{build}".encode()
        if d is Did.RXSWIN:
            rxswin = ecu.descriptor.rxswin if ecu.descriptor is not None and not self.recovery else ""
            return rxswin.encode()
        if d is Did.BOOT_INFO:
            return self.profile.encode_boot_info(contract.BootInfo(
                contract.BootMode.RECOVERY if self.recovery else contract.BootMode.APPLICATION,
                0, ecu.bootloader.is_confirmed(), int(ecu.reset_cause)))
        if d is Did.UPDATE_STATUS:
            return self.profile.encode_status(ecu.update_record(self._progress))
        if d is Did.BOOT_COUNTER:
            return struct.pack(">I", int(ecu.nv_get("boot_count", 0)))
        if d is Did.CONFIG_VERSION:
            cfg = ecu.nv_get("config", {})
            crc = zlib.crc32(json.dumps(cfg, sort_keys=True).encode())
            return struct.pack(">HI", int(ecu.nv_get("config_schema", 1)), crc)
        if d is Did.SECURITY_COUNTER:
            return struct.pack(">I", int(ecu.nv_get("security_counter", 0)))
        if d is Did.BACKUP_IMAGE:
            # Only after a swap does the secondary slot hold the previous image. While it holds a
            # download (staged, verified, rejected, pending) or a reverted image, there is no backup.
            if ecu.update_state() not in (UpdateState.SUCCESS, UpdateState.TESTING):
                return b""
            backup = ecu.bootloader.backup_image()
            return backup.version_str.encode() if backup is not None else b""
        if d is Did.ACTIVE_IMAGE_HASH:
            return ecu.bootloader.slot_image_hash(primary=True)
        if d is Did.BACKUP_IMAGE_HASH:
            return ecu.bootloader.slot_image_hash(primary=False)
        if d is Did.FLASH_LAYOUT:
            lay = ecu.layout
            return struct.pack(">III", lay.secondary_offset, lay.slot_size, lay.sector_size)
        if d is Did.CONFIGURATION:
            return json.dumps(ecu.nv_get("config", {}), sort_keys=True, separators=(",", ":")).encode()
        if d is Did.PROFILE_STATUS:
            return json.dumps(config_packages.status(ecu), sort_keys=True, separators=(",", ":")).encode()
        if d is Did.VEHICLE_GROUP:
            return ecu.vehicle_group().encode()
        if d is Did.VIN:
            return ecu.vin().encode()
        if d is Did.UPDATE_HISTORY:
            return ecu.history_record()
        if d is Did.DOWNLOAD_RESUME:
            return struct.pack(">III", *self.resume_record())
        raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE)

    def _read_did(self, req: bytes) -> bytes:
        _require(len(req) >= 3 and len(req) % 2 == 1, Nrc.INCORRECT_MESSAGE_LENGTH)
        out = bytearray(b"\x62")
        for i in range(1, len(req), 2):
            did = int.from_bytes(req[i:i + 2], "big")
            out += req[i:i + 2] + self.did_value(did)
        return bytes(out)

    def _write_did(self, req: bytes) -> bytes:
        _require(len(req) >= 4, Nrc.INCORRECT_MESSAGE_LENGTH)
        did = int.from_bytes(req[1:3], "big")
        role = self.profile.did_role(did)
        _require(role in (Did.CONFIGURATION, Did.VEHICLE_GROUP, Did.VIN), Nrc.REQUEST_OUT_OF_RANGE)
        _require(not self.recovery, Nrc.CONDITIONS_NOT_CORRECT)
        _require(not self._default, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        # Unsigned configuration and provisioning writes are the development restore path only; in the
        # field configuration arrives as a signed package (RequestDownload + routine APPLY_PROFILE).
        _require(self._bench_level(), Nrc.SECURITY_ACCESS_DENIED)
        if role is Did.VEHICLE_GROUP:
            group = req[3:]
            _require(1 <= len(group) <= 16 and all(0x21 <= b <= 0x7E for b in group), Nrc.REQUEST_OUT_OF_RANGE)
            self.ecu.nv_update(vehicle_group=group.decode())
            self.ecu.log(f"CFG: vehicle group provisioned {group.decode()}")
            return bytes([0x6E]) + req[1:3]
        if role is Did.VIN:
            vin = req[3:].decode("ascii", errors="replace")
            _require(contract.is_vin(vin), Nrc.REQUEST_OUT_OF_RANGE)
            self.ecu.nv_update(vin=vin)
            self.ecu.log(f"CFG: VIN provisioned {vin}")
            return bytes([0x6E]) + req[1:3]
        try:
            value = json.loads(req[3:].decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE) from None
        _require(isinstance(value, dict) and all(isinstance(k, str) for k in value), Nrc.REQUEST_OUT_OF_RANGE)
        self.ecu.nv_update(config=value, profile_status={})  # restored by hand: no package result applies
        return bytes([0x6E]) + req[1:3]

    # ------------------------------------------------------------------ 0x31
    def _routine_control(self, req: bytes) -> bytes:
        _require(len(req) >= 4, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(req[1] & 0x7F == 0x01, Nrc.SUBFUNCTION_NOT_SUPPORTED)
        role = self.profile.routine_role(int.from_bytes(req[2:4], "big"))
        _require(role is not None, Nrc.REQUEST_OUT_OF_RANGE)
        _require(self.session == self.profile.sessions.programming, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(self.unlocked_level != 0, Nrc.SECURITY_ACCESS_DENIED)
        head = bytes([0x71, 0x01]) + req[2:4]
        if role is Routine.APPLY_PROFILE:
            _require(len(req) == 4, Nrc.INCORRECT_MESSAGE_LENGTH)
            _require(not self.recovery, Nrc.CONDITIONS_NOT_CORRECT)
            _require(self._profile is not None, Nrc.REQUEST_SEQUENCE_ERROR)
            assert self._profile is not None
            package, self._profile = self._profile, None  # one package, one attempt
            outcome, why = config_packages.apply_package(self.ecu, package)
            return head + bytes([int(outcome), int(why)])
        if role is Routine.ERASE_MEMORY:
            _require(len(req) == 4, Nrc.INCORRECT_MESSAGE_LENGTH)
            _require(self._download is None, Nrc.CONDITIONS_NOT_CORRECT)
            self.ecu.log("UPD: erasing secondary slot")
            try:
                self.ecu.erase_secondary()
            except FlashError:
                raise NegativeResponse(Nrc.GENERAL_PROGRAMMING_FAILURE) from None
            self._erased = True
            self._progress = 0
            self.ecu.nv_update(download=None)  # a fresh erase: nothing to resume
            self.ecu.set_update(UpdateState.IDLE, Reason.NONE)
            return head + b"\x00"
        if role is Routine.CHECK_PROGRAMMING_DEPENDENCIES:
            _require(len(req) == 4, Nrc.INCORRECT_MESSAGE_LENGTH)
            state = self.ecu.update_state()
            _require(state in (UpdateState.DOWNLOADED, UpdateState.VERIFIED, UpdateState.REJECTED), Nrc.REQUEST_SEQUENCE_ERROR)
            try:
                extent = image_extent(self.ecu.bootloader.staged_image())
                if (self._staged_size is not None and extent is not None and extent > self._staged_size
                        and not self.ecu.defects.has("check_routine_passes_truncated_download")):
                    # The slot is erased past the download, so the TLV area may parse; the size tells the truth.
                    raise ImageError(f"image claims {extent} bytes, only {self._staged_size} were downloaded",
                                     reason=Reason.TRUNCATED)
                image = self.ecu.bootloader.verify_staged(allow_downgrade=self._bench_level())
            except ImageError as exc:
                reason = Reason(exc.reason)
                self.ecu.log(f"UPD: verify failed reason={reason.name}: {exc}")
                self.ecu.set_update(UpdateState.REJECTED, reason, target=_header_version(self.ecu.bootloader.staged_image()))
                return head + bytes([0x01, self.profile.encode(reason)])
            self.ecu.log(f"UPD: verify ok version={image.version_str}")
            self.ecu.set_update(UpdateState.VERIFIED, Reason.NONE, target=image.version_tuple)
            return head + bytes([0x00, self.profile.encode(Reason.NONE)])
        # ACTIVATE_UPDATE
        _require(len(req) == 5, Nrc.INCORRECT_MESSAGE_LENGTH)
        try:
            mode = self.profile.decode(ActivationMode, req[4])
        except ProfileError:
            raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE) from None
        if mode is ActivationMode.RESTORE:
            _require(self._bench_level(), Nrc.SECURITY_ACCESS_DENIED)
        if self.recovery:
            _require(mode is not ActivationMode.TEST, Nrc.REQUEST_OUT_OF_RANGE)
        _require(self.ecu.update_state() == UpdateState.VERIFIED, Nrc.REQUEST_SEQUENCE_ERROR)
        if not self.recovery:
            self._charging_window()
        volts = self.ecu.supply_voltage()
        if volts < self.ecu.sim.activation_min_supply_v and not self.ecu.defects.has("supply_precondition_ignored"):
            self.ecu.charge_inhibit = False
            self.ecu.log(f"UPD: activation refused, supply {volts:.2f} V")
            self.ecu.set_update(UpdateState.VERIFIED, Reason.SUPPLY_LOW)
            raise NegativeResponse(Nrc.VOLTAGE_TOO_LOW)
        if not self.recovery and not self.ecu.defects.has("config_not_backed_up"):
            # Back up the configuration before install; the bootloader restores it on rollback.
            self.ecu.nv_update(config_backup=self.ecu.nv_get("config", {}),
                               config_schema_backup=self.ecu.nv_get("config_schema", 1))
        self.ecu.bootloader.request_upgrade(mode)
        self.ecu.log(f"UPD: activation accepted mode={mode.name}")
        self.ecu.set_update(UpdateState.ACTIVATION_PENDING, Reason.NONE)
        self.ecu.charge_inhibit = False  # the update state holds the charge limit at 0 A from here
        return head + b"\x00"

    def _charging_window(self) -> None:
        """Install only when plugged in and idle; stop charging (limit 0 A) and wait for the current to fall.

        Raises NegativeResponse 0x22 with the reason recorded (state stays VERIFIED) otherwise."""
        ecu = self.ecu
        plugged, idle, said = ecu.vehicle_window()
        refusal = Reason.VEHICLE_NOT_IDLE if not idle else Reason.NOT_PLUGGED_IN if not plugged else None
        if refusal is not None and not ecu.defects.has("install_outside_charging_window"):
            ecu.log(f"UPD: activation refused, not in the charging window ({said})")
            ecu.set_update(UpdateState.VERIFIED, refusal)
            raise NegativeResponse(Nrc.CONDITIONS_NOT_CORRECT)
        # Defect: the activation's wait starves the SOC task until the current has fallen - no BMS_SocCore and
        # no 0 A BMS_ChargeLimits meanwhile, so the charger stops only on its own timeout.
        starved = ecu.defects.has("soc_starved_during_charge_rampdown")
        with ecu.cpu_stall.held() if starved else contextlib.nullcontext():
            # BMS_ChargeLimits goes to 0 A at the next SOC cycle. The starving board decides that only once the
            # current has fallen: a cycle already under way when the stall began must not carry the 0 A.
            ecu.charge_inhibit = not starved
            limit = ecu.sim.activation_max_current_a
            deadline = time.monotonic() + ecu.sim.charge_rampdown_s
            current = abs(ecu.battery.pack_current())
            while current > limit and time.monotonic() < deadline:
                ecu.pause(0.05)
                current = abs(ecu.battery.pack_current())
            ecu.charge_inhibit = True
        if current > limit and not ecu.defects.has("pack_current_precondition_ignored"):
            ecu.charge_inhibit = False
            ecu.log(f"UPD: activation refused, pack current {current:.1f} A")
            ecu.set_update(UpdateState.VERIFIED, Reason.CURRENT_FLOWING)
            raise NegativeResponse(Nrc.CONDITIONS_NOT_CORRECT)
        ecu.log("UPD: charge current stopped for the install")

    # ------------------------------------------------------------------ 0x34 0x36 0x37
    def _request_download(self, req: bytes) -> bytes:
        _require(len(req) >= 3, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(self.session == self.profile.sessions.programming, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(self.unlocked_level != 0, Nrc.SECURITY_ACCESS_DENIED)
        dfi, alfid = req[1], req[2]
        _require(dfi == 0x00, Nrc.REQUEST_OUT_OF_RANGE)  # no compression/encryption supported
        n_size, n_addr = alfid >> 4, alfid & 0x0F
        _require(1 <= n_addr <= 4 and 1 <= n_size <= 4, Nrc.REQUEST_OUT_OF_RANGE)
        _require(len(req) == 3 + n_addr + n_size, Nrc.INCORRECT_MESSAGE_LENGTH)
        address = int.from_bytes(req[3:3 + n_addr], "big")
        size = int.from_bytes(req[3 + n_addr:], "big")
        _require(self._download is None, Nrc.CONDITIONS_NOT_CORRECT)
        if address == contract.PROFILE_DOWNLOAD_ADDRESS:
            _require(not self.recovery, Nrc.CONDITIONS_NOT_CORRECT)
            _require(0 < size <= contract.PROFILE_MAX_SIZE, Nrc.REQUEST_OUT_OF_RANGE)
            self._profile = None
            self._download = _Download(address, size, buffer=bytearray())
            self.ecu.log(f"CFG: profile download started size={size}")
            return b"\x74\x20" + struct.pack(">H", self.profile.uds.max_block_length)
        lay = self.ecu.layout
        if address != lay.secondary_offset and size > 0:
            return self._resume_download(address, size)
        _require(address == lay.secondary_offset and size > 0, Nrc.REQUEST_OUT_OF_RANGE)
        self.ecu.begin_attempt()
        if size > lay.slot_size:
            self.ecu.log(f"UPD: download refused, {size} bytes exceed the slot ({lay.slot_size})")
            self.ecu.set_update(UpdateState.REJECTED, Reason.OVERSIZE)
            raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE)
        _require(self._erased, Nrc.UPLOAD_DOWNLOAD_NOT_ACCEPTED)
        self._erased = False  # a second download needs a fresh erase: NOR cannot be rewritten
        self._staged_size = None
        self._download = _Download(address, size)
        self._download.writer = _FlashWriter(self.ecu.bootloader.write_secondary, self._stored(size))
        self.ecu.nv_update(download={"size": size, "stored": 0, "crc": 0})
        self._progress = 0
        self.ecu.log(f"UPD: download started size={size}")
        self.ecu.set_update(UpdateState.DOWNLOADING, Reason.NONE)
        return b"\x74\x20" + struct.pack(">H", self.profile.uds.max_block_length)

    def _transfer_data(self, req: bytes) -> bytes:
        _require(len(req) >= 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        dl = self._download
        _require(dl is not None, Nrc.REQUEST_SEQUENCE_ERROR)
        assert dl is not None
        _require(len(req) <= self.profile.uds.max_block_length, Nrc.INCORRECT_MESSAGE_LENGTH)
        if dl.buffer is not None:
            return self._transfer_profile(dl, req[1], req[2:])
        assert dl.writer is not None
        counter, data = req[1], req[2:]
        if dl.last_counter is not None and counter == dl.last_counter:
            return bytes([0x76, counter])  # a repeated block is acknowledged, not written twice (ISO 14229)
        _require(counter == dl.next_counter or self.ecu.defects.has("wrong_block_sequence_accepted"),
                 Nrc.WRONG_BLOCK_SEQUENCE_COUNTER)
        _require(len(data) > 0, Nrc.INCORRECT_MESSAGE_LENGTH)
        if dl.received + len(data) > dl.size and not self.ecu.defects.has("endless_transfer_data_accepted"):
            self.ecu.log("UPD: transfer suspended, data beyond the announced size")
            raise NegativeResponse(Nrc.TRANSFER_DATA_SUSPENDED)
        if dl.writer.error is not None:
            raise NegativeResponse(Nrc.GENERAL_PROGRAMMING_FAILURE)
        dl.writer.submit(dl.base + dl.received, bytes(data))
        dl.received += len(data)
        dl.last_counter = counter
        dl.next_counter = (counter + 1) & 0xFF
        self._progress = (dl.base + dl.received) * 100 // (dl.base + dl.size)
        return bytes([0x76, counter])

    def _stored(self, total: int) -> Callable[[int], None]:
        """Resume bookkeeping: after each programmed block, record how much of the image is safely in flash."""
        blocks = [0]

        def record(_end: int) -> None:
            blocks[0] += 1
            if blocks[0] % RESUME_RECORD_EVERY or self.ecu.defects.has("download_progress_forgotten"):
                return  # a resume resends these blocks; the board skips what it already programmed
            bootloader = self.ecu.bootloader
            extent = bootloader.programmed_extent()
            stored = extent if extent >= 0 else _end
            stored -= stored % self.ecu.layout.write_align
            crc = zlib.crc32(bootloader.flash.read(self.ecu.layout.secondary_offset, stored))
            self.ecu.nv_update(download={"size": total, "stored": stored, "crc": crc})
        return record

    def resume_record(self) -> tuple[int, int, int]:
        """DID FD0A: announced size, bytes stored (the resume offset), CRC-32 of those bytes; zeros if nothing to resume."""
        rec = self.ecu.nv_get("download") or {}
        return int(rec.get("size", 0)), int(rec.get("stored", 0)), int(rec.get("crc", 0))

    def _resume_download(self, address: int, size: int) -> bytes:
        """RequestDownload at slot address + k: continue an interrupted download whose first k bytes are stored."""
        lay = self.ecu.layout
        total, stored, _crc = self.resume_record()
        offset = address - lay.secondary_offset
        if not (0 < stored == offset and offset + size == total):
            self.ecu.log(f"UPD: resume refused at offset {offset} +{size} (stored {stored} of {total})")
            raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE)
        self._erased = False
        self._staged_size = None
        self.ecu.bootloader.resume_secondary(offset)
        self._download = _Download(address, size, base=offset)
        self._download.writer = _FlashWriter(self.ecu.bootloader.write_secondary_resumed, self._stored(total))
        self._progress = offset * 100 // total
        self.ecu.log(f"UPD: download resumed at {offset} of {total} bytes")
        self.ecu.set_update(UpdateState.DOWNLOADING, Reason.NONE)
        return b"\x74\x20" + struct.pack(">H", self.profile.uds.max_block_length)

    def _transfer_profile(self, dl: _Download, counter: int, data: bytes) -> bytes:
        assert dl.buffer is not None
        if dl.last_counter is not None and counter == dl.last_counter:
            return bytes([0x76, counter])
        _require(counter == dl.next_counter, Nrc.WRONG_BLOCK_SEQUENCE_COUNTER)
        _require(len(data) > 0, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(len(dl.buffer) + len(data) <= dl.size, Nrc.TRANSFER_DATA_SUSPENDED)
        dl.buffer += data
        dl.received = len(dl.buffer)
        dl.last_counter = counter
        dl.next_counter = (counter + 1) & 0xFF
        return bytes([0x76, counter])

    def _transfer_exit(self, req: bytes) -> bytes:
        dl = self._download
        _require(dl is not None, Nrc.REQUEST_SEQUENCE_ERROR)
        assert dl is not None
        _require(dl.received == dl.size or self.ecu.defects.has("short_download_accepted"), Nrc.REQUEST_SEQUENCE_ERROR)
        if dl.buffer is not None:
            self._download = None
            self._profile = bytes(dl.buffer)
            self.ecu.log(f"CFG: profile download complete {dl.size} bytes")
            return b"\x77"
        assert dl.writer is not None
        dl.writer.finish()
        self._download = None
        if isinstance(dl.writer.error, PowerLoss):
            raise dl.writer.error
        if dl.writer.error is not None:
            self.ecu.set_update(UpdateState.IDLE, Reason.DOWNLOAD_ABORTED)
            raise NegativeResponse(Nrc.GENERAL_PROGRAMMING_FAILURE)
        self._staged_size = dl.base + dl.size
        self.ecu.nv_update(download=None)  # complete: nothing left to resume
        self.ecu.log(f"UPD: download complete {dl.base + dl.size} bytes")
        self.ecu.set_update(UpdateState.DOWNLOADED, Reason.NONE)
        return b"\x77"
