"""`UdsClient`: udsoncan over ISO-TP (can-isotp's NotifierBasedCanStack on the bench's one notifier).

Every negative response becomes `UdsError` (service, NRC name from the contract, `nrc`); every
missing response becomes `HilTimeout` naming the request.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Iterator

import isotp
import udsoncan
from udsoncan.client import Client
from udsoncan.connections import PythonIsoTpConnection
from udsoncan.exceptions import (ConfigError, InvalidResponseException, NegativeResponseException, TimeoutException,
                                 UnexpectedResponseException)

from hil import contract
from hil.config import DutConfig
from hil.drivers.can import CanChannel
from hil.errors import HilTimeout, UdsError

log = logging.getLogger(__name__)

#: ΔP2: bus and scheduling delay the tester allows on top of the server's P2/P2* (ISO 14229-2).
P2_MARGIN_S = 0.2
#: Wall against a server that answers 0x78 forever (each 0x78 restarts P2*).
OVERALL_TIMEOUT_S = 120.0
#: ISO-TP frames larger than a TransferData block are refused by the receiver; leave headroom.
MAX_FRAME_SIZE = 8192


class BytesCodec(udsoncan.DidCodec):
    """A DID record as raw bytes: fixed `length`, or (None) whatever remains of the response."""

    def __init__(self, length: int | None) -> None:
        self.length = length

    def encode(self, *values: Any) -> bytes:
        data = bytes(values[0])
        if self.length is not None and len(data) != self.length:
            raise ValueError(f"DID record must be {self.length} bytes, got {len(data)}")
        return data

    def decode(self, payload: bytes) -> bytes:
        return bytes(payload)

    def __len__(self) -> int:
        if self.length is None:
            raise udsoncan.DidCodec.ReadAllRemainingData
        return self.length


def nrc_name(code: int) -> str:
    """Name of a negative response code, from the contract when it knows it."""
    try:
        return contract.Nrc(code).name
    except ValueError:
        return udsoncan.Response.Code.get_name(code) or "UNKNOWN"


def isotp_params(fd: bool, bitrate_switch: bool, *, blocking_send: bool) -> dict[str, Any]:
    """ISO-TP parameters for the bench: no STmin, one flow control per message, padded 8-byte short frames."""
    return {
        "stmin": 0,  # STmin is slept per frame: 1 ms would cut throughput by 25x
        "blocksize": 0,
        "tx_data_length": 64 if fd else 8,
        "tx_data_min_length": 8 if fd else None,
        "tx_padding": 0xCC,
        "max_frame_size": MAX_FRAME_SIZE,
        "can_fd": fd,
        "bitrate_switch": bitrate_switch,
        "blocking_send": blocking_send,  # P2 must start after the last frame, not while a 4 KiB request is segmented
        "rx_flowcontrol_timeout": 1000,
        "rx_consecutive_frame_timeout": 1000,
    }


class UdsClient:
    """The tester's UDS client for one DUT."""

    def __init__(self, can: CanChannel, dut: DutConfig) -> None:
        self.dut = dut
        fd = can.cfg.fd
        self._stack = isotp.NotifierBasedCanStack(
            can.bus, can.notifier,
            address=isotp.Address(isotp.AddressingMode.Normal_11bits, txid=dut.tx_id, rxid=dut.rx_id),
            params=isotp_params(fd, fd and can.cfg.data_bitrate is not None, blocking_send=True))
        codecs: dict[Any, Any] = {int(did): BytesCodec(length) for did, length in contract.DID_LENGTH.items()}
        codecs["default"] = BytesCodec(None)  # DIDs outside the contract (negative tests)
        config = dict(udsoncan.configs.default_client_config)
        config.update({
            "data_identifiers": codecs,
            "use_server_timing": True,
            "p2_timeout": contract.P2_SERVER_MS / 1000 + P2_MARGIN_S,
            "p2_star_timeout": contract.P2_STAR_SERVER_MS / 1000 + P2_MARGIN_S,
            "request_timeout": OVERALL_TIMEOUT_S,
        })
        self._conn = PythonIsoTpConnection(self._stack, name=f"uds-{dut.name}")
        self._client = Client(self._conn, config=config)
        self._lock = threading.RLock()  # one request at a time (TesterPresent may come from another thread)
        self._client.open()
        self._open = True

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _request(self, what: str) -> Iterator[Client]:
        """Serialise one request and translate udsoncan/isotp failures into the framework's errors."""
        with self._lock:
            try:
                yield self._client
            except NegativeResponseException as exc:
                code = int(exc.response.code)
                service = exc.response.service.get_name() if exc.response.service else "?"
                raise UdsError(f"{what}: {service} refused with NRC 0x{code:02X} {nrc_name(code)}", nrc=code) from None
            except TimeoutException as exc:
                raise HilTimeout(f"{what}: no response from {self.dut.name} ({exc})") from None
            except isotp.BlockingSendFailure as exc:
                raise HilTimeout(f"{what}: request could not be sent to {self.dut.name} "
                                 f"(no flow control within 1 s): {exc}") from None
            except (InvalidResponseException, UnexpectedResponseException, ConfigError) as exc:
                raise UdsError(f"{what}: {exc}") from None

    def _timing(self) -> tuple[float, float]:
        timing = self._client.session_timing
        p2 = timing.p2_server_max if timing.p2_server_max is not None else self._client.config["p2_timeout"]
        p2s = timing.p2_star_server_max if timing.p2_star_server_max is not None else self._client.config["p2_star_timeout"]
        return p2, p2s

    # ------------------------------------------------------------------ sessions and security
    def session(self, n: int) -> None:
        """DiagnosticSessionControl; adopts the server's P2/P2* plus the tester's ΔP2 margin."""
        with self._request(f"DiagnosticSessionControl 0x{n:02X}") as c:
            response = c.change_session(n)
            data = getattr(response, "service_data", None)
            if data is not None and data.p2_server_max is not None:
                c.session_timing.p2_server_max = data.p2_server_max + P2_MARGIN_S
                c.session_timing.p2_star_server_max = data.p2_star_server_max + P2_MARGIN_S

    def unlock(self, security: Any) -> None:
        """SecurityAccess: requestSeed at `security.level`, key = `security.compute_key(seed)`, sendKey."""
        level = int(security.level)
        with self._request(f"SecurityAccess level 0x{level:02X}") as c:
            seed = bytes(c.request_seed(level).service_data.seed)
            if any(seed):  # an all-zero seed means already unlocked
                c.send_key(level + 1, security.compute_key(seed))

    # ------------------------------------------------------------------ data identifiers
    def read_did(self, did: int) -> bytes:
        """ReadDataByIdentifier: the DID's record bytes."""
        with self._request(f"ReadDataByIdentifier 0x{int(did):04X}") as c:
            return bytes(c.read_data_by_identifier_first(int(did)))

    def read_str(self, did: int) -> str:
        """A text DID (ASCII/UTF-8, trailing NULs dropped)."""
        return self.read_did(did).decode("utf-8", errors="replace").rstrip("\x00")

    def software_version(self) -> str:
        """DID 0xF189."""
        return self.read_str(contract.Did.SOFTWARE_VERSION)

    def update_status(self) -> contract.UpdateStatusRecord:
        """DID 0xFD01."""
        return contract.UpdateStatusRecord.decode(self.read_did(contract.Did.UPDATE_STATUS))

    def boot_info(self) -> contract.BootInfo:
        """DID 0xFD00."""
        return contract.BootInfo.decode(self.read_did(contract.Did.BOOT_INFO))

    def write_did(self, did: int, data: bytes) -> None:
        """WriteDataByIdentifier with a raw record."""
        with self._request(f"WriteDataByIdentifier 0x{int(did):04X}") as c:
            c.write_data_by_identifier(int(did), bytes(data))

    # ------------------------------------------------------------------ fault memory
    def read_dtcs(self, status_mask: int = 0xFF) -> list[tuple[int, int]]:
        """ReadDTCInformation reportDTCByStatusMask (0x19 0x02): [(DTC number, status byte)]."""
        with self._request(f"ReadDTCInformation 0x02 mask 0x{status_mask:02X}") as c:
            response = c.get_dtc_by_status_mask(status_mask)
            assert response is not None
            return [(int(d.id), int(d.status.get_byte_as_int())) for d in response.service_data.dtcs]

    def clear_dtcs(self, group: int = 0xFFFFFF) -> None:
        """ClearDiagnosticInformation (0x14) of `group` (all DTCs by default)."""
        with self._request(f"ClearDiagnosticInformation 0x{group:06X}") as c:
            c.clear_dtc(group)

    # ------------------------------------------------------------------ routines and programming
    def routine(self, rid: int, data: bytes = b"") -> bytes:
        """RoutineControl startRoutine; returns the routine status record."""
        with self._request(f"RoutineControl start 0x{int(rid):04X}") as c:
            response = c.start_routine(int(rid), bytes(data) or None)
            return bytes(response.service_data.routine_status_record or b"")

    def request_download(self, address: int, size: int) -> int:
        """RequestDownload (32-bit address and size); returns maxNumberOfBlockLength."""
        location = udsoncan.MemoryLocation(address, size, address_format=32, memorysize_format=32)
        with self._request(f"RequestDownload 0x{address:08X} +{size}") as c:
            return int(c.request_download(location).service_data.max_length)

    def transfer_data(self, counter: int, data: bytes) -> None:
        """TransferData block `counter` (0..255)."""
        with self._request(f"TransferData block 0x{counter & 0xFF:02X} ({len(data)} bytes)") as c:
            c.transfer_data(counter & 0xFF, bytes(data))

    def request_transfer_exit(self) -> None:
        """RequestTransferExit."""
        with self._request("RequestTransferExit") as c:
            c.request_transfer_exit()

    def ecu_reset(self, hard: bool = True) -> None:
        """ECUReset hardReset (or softReset)."""
        kind = 0x01 if hard else 0x03
        with self._request(f"ECUReset 0x{kind:02X}") as c:
            c.ecu_reset(kind)

    def tester_present(self) -> None:
        """TesterPresent (keeps a non-default session alive)."""
        with self._request("TesterPresent") as c:
            c.tester_present()

    def raw(self, request: bytes) -> bytes:
        """Send any bytes; return the final raw response, negative ones included (0x78 pending is waited out)."""
        p2, p2_star = self._timing()
        with self._request(f"raw request {bytes(request).hex()}"):
            self._conn.empty_rxqueue()
            self._conn.send(bytes(request))
            timeout = p2
            while True:
                response = self._conn.wait_frame(timeout=timeout, exception=True)
                assert response is not None
                if len(response) >= 3 and response[0] == 0x7F and response[2] == contract.Nrc.RESPONSE_PENDING:
                    timeout = p2_star
                    continue
                return bytes(response)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop the ISO-TP stack (detaches from the notifier)."""
        with self._lock:
            if self._open:
                self._open = False
                self._client.close()

    def __enter__(self) -> "UdsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
