"""The simulated ECU's UDS server application (application and recovery mode).

Plain-bytes request handling, as udsoncan is a client library only. Every malformed or
out-of-sequence request gets the NRC the bench contract (docs/bench-contract.md) names;
nothing a tester sends can crash it.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from hil import contract
from hil.config import compute_key
from hil.contract import ActivationMode, Did, Nrc, Reason, Routine, UpdateState
from hil.errors import FlashError, ImageError, PowerLoss
from hil.images.mcuboot import image_extent

if TYPE_CHECKING:
    from hil.sim.board import Board as EcuContext


class NegativeResponse(Exception):
    """Raised inside a handler: answer 7F <SID> <NRC>."""

    def __init__(self, nrc: Nrc) -> None:
        self.nrc = nrc
        super().__init__(nrc.name)


def _require(cond: bool, nrc: Nrc) -> None:
    if not cond:
        raise NegativeResponse(nrc)


@dataclass
class _Download:
    address: int
    size: int
    received: int = 0
    next_counter: int = 1
    last_counter: int | None = None
    writer: "_FlashWriter | None" = None


class _FlashWriter:
    """Programs TransferData blocks behind the response, one block in flight (as ECUs double-buffer)."""

    def __init__(self, write: Callable[[int, bytes], None]) -> None:
        self._write = write
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

    ecu: "EcuContext"
    recovery: bool = False
    session: int = contract.SESSION_DEFAULT
    unlocked_level: int = 0
    _seed: tuple[int, bytes] | None = None
    _last_request: float = field(default_factory=time.monotonic)
    _download: _Download | None = None
    _erased: bool = False
    _progress: int = 0
    _staged_size: int | None = None

    # ------------------------------------------------------------------ dispatch
    def handle(self, request: bytes) -> bytes | None:
        """Answer one request; None = no response (suppressed, or the board lost power)."""
        if not request:
            return None
        sid = request[0]
        now = time.monotonic()
        if self.session != contract.SESSION_DEFAULT and now - self._last_request > contract.S3_SERVER_S:
            self._to_default_session()
        self._last_request = now
        handler = self._handlers().get(sid)
        try:
            if handler is None:
                raise NegativeResponse(Nrc.SERVICE_NOT_SUPPORTED)
            return handler(request)
        except NegativeResponse as nr:
            return bytes([0x7F, sid, int(nr.nrc)])
        except PowerLoss:
            return None

    def touch(self) -> None:
        """A frame of a request arrived: the S3 timer restarts (ISO 14229-2), however long reassembly takes."""
        self._last_request = time.monotonic()

    def _handlers(self) -> dict[int, Callable[[bytes], bytes | None]]:
        return {0x10: self._session_control, 0x11: self._ecu_reset, 0x22: self._read_did, 0x27: self._security_access,
                0x2E: self._write_did, 0x31: self._routine_control, 0x34: self._request_download,
                0x36: self._transfer_data, 0x37: self._transfer_exit, 0x3E: self._tester_present,
                0x28: self._communication_control, 0x85: self._control_dtc_setting}

    def close(self) -> None:
        """The boot ends (power loss or reset): stop background work without touching flash."""
        if self._download is not None and self._download.writer is not None:
            self._download.writer.stop()

    @property
    def progress(self) -> int:
        return self._progress

    def _to_default_session(self) -> None:
        self.session = contract.SESSION_DEFAULT
        self.unlocked_level = 0
        self._seed = None
        self._abort_download()

    def _abort_download(self) -> None:
        if self._download is not None:
            if self._download.writer is not None:
                self._download.writer.finish(timeout=2.0)
            self._download = None
            self.ecu.set_update(UpdateState.IDLE, Reason.DOWNLOAD_ABORTED)

    # ------------------------------------------------------------------ 0x10 0x11 0x3E 0x28 0x85
    def _session_control(self, req: bytes) -> bytes:
        _require(len(req) == 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        sub = req[1] & 0x7F
        _require(sub in (contract.SESSION_DEFAULT, contract.SESSION_PROGRAMMING, contract.SESSION_EXTENDED),
                 Nrc.SUBFUNCTION_NOT_SUPPORTED)
        # Entering any session, the same one included, re-initialises it (ISO 14229-1): security is
        # relocked and a half-done download is abandoned, which is how a new tester restarts.
        self._to_default_session()
        self.session = sub
        return bytes([0x50, sub]) + struct.pack(">HH", contract.P2_SERVER_MS, contract.P2_STAR_SERVER_MS // 10)

    def _ecu_reset(self, req: bytes) -> bytes | None:
        _require(len(req) == 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        sub = req[1] & 0x7F
        _require(sub in (0x01, 0x02, 0x03), Nrc.SUBFUNCTION_NOT_SUPPORTED)
        self._abort_download()
        self.ecu.request_reset_after_response()
        return None if req[1] & 0x80 else bytes([0x51, sub])

    def _tester_present(self, req: bytes) -> bytes | None:
        _require(len(req) == 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(req[1] & 0x7F == 0x00, Nrc.SUBFUNCTION_NOT_SUPPORTED)
        return None if req[1] & 0x80 else b"\x7E\x00"

    def _communication_control(self, req: bytes) -> bytes | None:
        _require(len(req) == 3, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(self.session != contract.SESSION_DEFAULT, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(req[1] & 0x7F in (0, 1, 2, 3), Nrc.SUBFUNCTION_NOT_SUPPORTED)
        return None if req[1] & 0x80 else bytes([0x68, req[1] & 0x7F])

    def _control_dtc_setting(self, req: bytes) -> bytes | None:
        _require(len(req) >= 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(self.session != contract.SESSION_DEFAULT, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(req[1] & 0x7F in (1, 2), Nrc.SUBFUNCTION_NOT_SUPPORTED)
        return None if req[1] & 0x80 else bytes([0xC5, req[1] & 0x7F])

    # ------------------------------------------------------------------ 0x27
    def _security_access(self, req: bytes) -> bytes:
        _require(len(req) >= 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(self.session != contract.SESSION_DEFAULT, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        sub = req[1]
        level = sub if sub % 2 else sub - 1
        security = self.ecu.security_level(level)
        _require(security is not None, Nrc.SUBFUNCTION_NOT_SUPPORTED)
        assert security is not None
        if sub % 2:  # requestSeed
            _require(len(req) == 2, Nrc.INCORRECT_MESSAGE_LENGTH)
            _require(time.monotonic() >= self.ecu.sa_lockout_until, Nrc.REQUIRED_TIME_DELAY_NOT_EXPIRED)
            if self.unlocked_level == level:
                return bytes([0x67, sub]) + bytes(contract.SA_SEED_LENGTH)
            seed = os.urandom(contract.SA_SEED_LENGTH)
            self._seed = (level, seed)
            return bytes([0x67, sub]) + seed
        _require(len(req) == 2 + contract.SA_KEY_LENGTH, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(self._seed is not None and self._seed[0] == level, Nrc.REQUEST_SEQUENCE_ERROR)
        assert self._seed is not None
        algorithm, secret = security
        expected = compute_key(algorithm, secret, self._seed[1], level)
        self._seed = None
        if req[2:] != expected:
            self.ecu.sa_attempts += 1
            if self.ecu.sa_attempts >= contract.SA_MAX_ATTEMPTS:
                self.ecu.sa_attempts = 0
                self.ecu.sa_lockout_until = time.monotonic() + self.ecu.sim.sa_lockout_s
                raise NegativeResponse(Nrc.EXCEEDED_NUMBER_OF_ATTEMPTS)
            raise NegativeResponse(Nrc.INVALID_KEY)
        self.ecu.sa_attempts = 0
        self.unlocked_level = level
        return bytes([0x67, sub])

    # ------------------------------------------------------------------ 0x22 0x2E
    def did_value(self, did: int) -> bytes:
        """Current value of a DID (also used by the console and tests of the model)."""
        ecu = self.ecu
        try:
            d = Did(did)
        except ValueError:
            raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE) from None
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
            return contract.BootInfo(contract.BootMode.RECOVERY if self.recovery else contract.BootMode.APPLICATION,
                                     0, ecu.bootloader.is_confirmed(), int(ecu.reset_cause)).encode()
        if d is Did.UPDATE_STATUS:
            return ecu.update_record(self._progress).encode()
        if d is Did.BOOT_COUNTER:
            return struct.pack(">I", int(ecu.nv_get("boot_count", 0)))
        if d is Did.CONFIG_VERSION:
            cfg = ecu.nv_get("config", {})
            crc = zlib.crc32(json.dumps(cfg, sort_keys=True).encode())
            return struct.pack(">HI", int(ecu.nv_get("config_schema", 1)), crc)
        if d is Did.SECURITY_COUNTER:
            return struct.pack(">I", int(ecu.nv_get("security_counter", 0)))
        if d is Did.BACKUP_IMAGE:
            backup = ecu.bootloader.backup_image()
            return backup.version_str.encode() if backup is not None else b""
        if d is Did.FLASH_LAYOUT:
            lay = ecu.layout
            return struct.pack(">III", lay.secondary_offset, lay.slot_size, lay.sector_size)
        if d is Did.CONFIGURATION:
            return json.dumps(ecu.nv_get("config", {}), sort_keys=True, separators=(",", ":")).encode()
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
        _require(did == Did.CONFIGURATION, Nrc.REQUEST_OUT_OF_RANGE)
        _require(not self.recovery, Nrc.CONDITIONS_NOT_CORRECT)
        _require(self.session != contract.SESSION_DEFAULT, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(self.unlocked_level != 0, Nrc.SECURITY_ACCESS_DENIED)
        try:
            value = json.loads(req[3:].decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE) from None
        _require(isinstance(value, dict) and all(isinstance(k, str) for k in value), Nrc.REQUEST_OUT_OF_RANGE)
        self.ecu.nv_update(config=value)
        return bytes([0x6E]) + req[1:3]

    # ------------------------------------------------------------------ 0x31
    def _routine_control(self, req: bytes) -> bytes:
        _require(len(req) >= 4, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(req[1] & 0x7F == 0x01, Nrc.SUBFUNCTION_NOT_SUPPORTED)
        rid = int.from_bytes(req[2:4], "big")
        _require(rid in {int(r) for r in Routine}, Nrc.REQUEST_OUT_OF_RANGE)
        _require(self.session == contract.SESSION_PROGRAMMING, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(self.unlocked_level != 0, Nrc.SECURITY_ACCESS_DENIED)
        head = bytes([0x71, 0x01]) + req[2:4]
        if rid == Routine.ERASE_MEMORY:
            _require(len(req) == 4, Nrc.INCORRECT_MESSAGE_LENGTH)
            _require(self._download is None, Nrc.CONDITIONS_NOT_CORRECT)
            self.ecu.log("UPD: erasing secondary slot")
            try:
                self.ecu.bootloader.erase_secondary()
            except FlashError:
                raise NegativeResponse(Nrc.GENERAL_PROGRAMMING_FAILURE) from None
            self._erased = True
            self._progress = 0
            self.ecu.set_update(UpdateState.IDLE, Reason.NONE)
            return head + b"\x00"
        if rid == Routine.CHECK_PROGRAMMING_DEPENDENCIES:
            _require(len(req) == 4, Nrc.INCORRECT_MESSAGE_LENGTH)
            state = self.ecu.update_state()
            _require(state in (UpdateState.DOWNLOADED, UpdateState.VERIFIED, UpdateState.REJECTED), Nrc.REQUEST_SEQUENCE_ERROR)
            try:
                extent = image_extent(self.ecu.bootloader.staged_image())
                if self._staged_size is not None and extent is not None and extent > self._staged_size:
                    # The slot is erased past the download, so the TLV area may parse; the size tells the truth.
                    raise ImageError(f"image claims {extent} bytes, only {self._staged_size} were downloaded",
                                     reason=Reason.TRUNCATED)
                image = self.ecu.bootloader.verify_staged(allow_downgrade=self.unlocked_level == contract.SA_LEVEL_BENCH)
            except ImageError as exc:
                reason = Reason(exc.reason)
                self.ecu.log(f"UPD: verify failed reason={reason.name}: {exc}")
                self.ecu.set_update(UpdateState.REJECTED, reason)
                return head + bytes([0x01, int(reason)])
            self.ecu.log(f"UPD: verify ok version={image.version_str}")
            self.ecu.set_update(UpdateState.VERIFIED, Reason.NONE, target=image.version_tuple)
            return head + bytes([0x00, int(Reason.NONE)])
        # ACTIVATE_UPDATE
        _require(len(req) == 5, Nrc.INCORRECT_MESSAGE_LENGTH)
        try:
            mode = ActivationMode(req[4])
        except ValueError:
            raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE) from None
        if mode is ActivationMode.RESTORE:
            _require(self.unlocked_level == contract.SA_LEVEL_BENCH, Nrc.SECURITY_ACCESS_DENIED)
        if self.recovery:
            _require(mode is not ActivationMode.TEST, Nrc.REQUEST_OUT_OF_RANGE)
        _require(self.ecu.update_state() == UpdateState.VERIFIED, Nrc.REQUEST_SEQUENCE_ERROR)
        current = abs(self.ecu.battery.pack_current())
        if current > self.ecu.sim.activation_max_current_a:
            self.ecu.log(f"UPD: activation refused, pack current {current:.1f} A")
            self.ecu.set_update(UpdateState.VERIFIED, Reason.CURRENT_FLOWING)
            raise NegativeResponse(Nrc.CONDITIONS_NOT_CORRECT)
        volts = self.ecu.supply_voltage()
        if volts < self.ecu.sim.activation_min_supply_v:
            self.ecu.log(f"UPD: activation refused, supply {volts:.2f} V")
            self.ecu.set_update(UpdateState.VERIFIED, Reason.SUPPLY_LOW)
            raise NegativeResponse(Nrc.VOLTAGE_TOO_LOW)
        if not self.recovery:
            # Back up the configuration before install; the bootloader restores it on rollback.
            self.ecu.nv_update(config_backup=self.ecu.nv_get("config", {}),
                               config_schema_backup=self.ecu.nv_get("config_schema", 1))
        self.ecu.bootloader.request_upgrade(mode)
        self.ecu.log(f"UPD: activation accepted mode={mode.name}")
        self.ecu.set_update(UpdateState.ACTIVATION_PENDING, Reason.NONE)
        return head + b"\x00"

    # ------------------------------------------------------------------ 0x34 0x36 0x37
    def _request_download(self, req: bytes) -> bytes:
        _require(len(req) >= 3, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(self.session == contract.SESSION_PROGRAMMING, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(self.unlocked_level != 0, Nrc.SECURITY_ACCESS_DENIED)
        dfi, alfid = req[1], req[2]
        _require(dfi == 0x00, Nrc.REQUEST_OUT_OF_RANGE)  # no compression/encryption supported
        n_size, n_addr = alfid >> 4, alfid & 0x0F
        _require(1 <= n_addr <= 4 and 1 <= n_size <= 4, Nrc.REQUEST_OUT_OF_RANGE)
        _require(len(req) == 3 + n_addr + n_size, Nrc.INCORRECT_MESSAGE_LENGTH)
        address = int.from_bytes(req[3:3 + n_addr], "big")
        size = int.from_bytes(req[3 + n_addr:], "big")
        _require(self._download is None, Nrc.CONDITIONS_NOT_CORRECT)
        lay = self.ecu.layout
        _require(address == lay.secondary_offset and size > 0, Nrc.REQUEST_OUT_OF_RANGE)
        if size > lay.slot_size:
            self.ecu.log(f"UPD: download refused, {size} bytes exceed the slot ({lay.slot_size})")
            self.ecu.set_update(UpdateState.REJECTED, Reason.OVERSIZE)
            raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE)
        _require(self._erased, Nrc.UPLOAD_DOWNLOAD_NOT_ACCEPTED)
        self._erased = False  # a second download needs a fresh erase: NOR cannot be rewritten
        self._staged_size = None
        self._download = _Download(address, size)
        self._download.writer = _FlashWriter(self.ecu.bootloader.write_secondary)
        self._progress = 0
        self.ecu.log(f"UPD: download started size={size}")
        self.ecu.set_update(UpdateState.DOWNLOADING, Reason.NONE)
        return b"\x74\x20" + struct.pack(">H", contract.MAX_BLOCK_LENGTH)

    def _transfer_data(self, req: bytes) -> bytes:
        _require(len(req) >= 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        dl = self._download
        _require(dl is not None, Nrc.REQUEST_SEQUENCE_ERROR)
        assert dl is not None and dl.writer is not None
        _require(len(req) <= contract.MAX_BLOCK_LENGTH, Nrc.INCORRECT_MESSAGE_LENGTH)
        counter, data = req[1], req[2:]
        if dl.last_counter is not None and counter == dl.last_counter:
            return bytes([0x76, counter])  # a repeated block is acknowledged, not written twice (ISO 14229)
        _require(counter == dl.next_counter, Nrc.WRONG_BLOCK_SEQUENCE_COUNTER)
        _require(len(data) > 0, Nrc.INCORRECT_MESSAGE_LENGTH)
        if dl.received + len(data) > dl.size:
            self.ecu.log("UPD: transfer suspended, data beyond the announced size")
            raise NegativeResponse(Nrc.TRANSFER_DATA_SUSPENDED)
        if dl.writer.error is not None:
            raise NegativeResponse(Nrc.GENERAL_PROGRAMMING_FAILURE)
        dl.writer.submit(dl.received, bytes(data))
        dl.received += len(data)
        dl.last_counter = counter
        dl.next_counter = (counter + 1) & 0xFF
        self._progress = dl.received * 100 // dl.size
        return bytes([0x76, counter])

    def _transfer_exit(self, req: bytes) -> bytes:
        dl = self._download
        _require(dl is not None, Nrc.REQUEST_SEQUENCE_ERROR)
        assert dl is not None and dl.writer is not None
        _require(dl.received == dl.size, Nrc.REQUEST_SEQUENCE_ERROR)
        dl.writer.finish()
        self._download = None
        if isinstance(dl.writer.error, PowerLoss):
            raise dl.writer.error
        if dl.writer.error is not None:
            self.ecu.set_update(UpdateState.IDLE, Reason.DOWNLOAD_ABORTED)
            raise NegativeResponse(Nrc.GENERAL_PROGRAMMING_FAILURE)
        self._staged_size = dl.size
        self.ecu.log(f"UPD: download complete {dl.size} bytes")
        self.ecu.set_update(UpdateState.DOWNLOADED, Reason.NONE)
        return b"\x77"
