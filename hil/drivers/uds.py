"""`UdsClient`: udsoncan over ISO-TP (can-isotp's protocol logic on the bench's one notifier: `IsoTpLink`).

Every negative response becomes `UdsError` (service, NRC name from the contract, `nrc`); every
missing response becomes `HilTimeout` naming the request.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from typing import Any, Iterator

import isotp
import udsoncan
from udsoncan.client import Client
from udsoncan.connections import BaseConnection
from udsoncan.exceptions import (ConfigError, InvalidResponseException, NegativeResponseException, TimeoutException,
                                 UnexpectedResponseException)

from hil.bench import contract
from hil.bench.config import DutConfig, TesterConfig
from hil.drivers.can import CanChannel
from hil.drivers.isotp_link import IsoTpLink
from hil.errors import HilTimeout, UdsError
from hil.bench.dut_profile import DutProfile

log = logging.getLogger(__name__)

#: Wall against a server that answers 0x78 forever (each 0x78 restarts P2*).
OVERALL_TIMEOUT_S = 120.0


def _name_response_codes_by_lookup() -> None:
    """udsoncan names the code of every response it parses by walking `inspect.getmembers(ResponseCode)`:
    ~40 us per response on a quiet host, 0.1-0.2 ms inside a download (measured), between a TransferData
    response and the next block. The same names - the alphabetically first member with the value, as
    `getmembers` sorts them; str(code) for an unknown one - are looked up in a table built once."""
    from udsoncan.ResponseCode import ResponseCode

    if getattr(ResponseCode.get_name, "_hil_lookup", False):
        return
    names: dict[int, str] = {}
    for name, value in inspect.getmembers(ResponseCode):
        if isinstance(value, int):
            names.setdefault(value, name)

    def get_name(cls: type, given_id: int | None) -> str:
        if given_id is None:
            return ""
        return names.get(given_id, str(given_id))

    get_name._hil_lookup = True  # type: ignore[attr-defined]
    ResponseCode.get_name = classmethod(get_name)  # type: ignore[method-assign, assignment]


_name_response_codes_by_lookup()


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


class _IsoTpConnection(BaseConnection):
    """udsoncan's connection over an `IsoTpLink`: the requesting thread drives ISO-TP itself (no stack thread).

    udsoncan empties the receive side before each request: what arrived since the last one answers
    nothing that is still asked, and a message half received is dropped.
    """

    def __init__(self, link: IsoTpLink, name: str) -> None:
        super().__init__(name)
        self.link = link
        self.opened = False

    def open(self) -> "_IsoTpConnection":
        self.link.start()
        self.opened = True
        return self

    def close(self) -> None:
        self.opened = False
        self.link.stop()

    def is_open(self) -> bool:
        return self.opened

    def specific_send(self, payload: bytes, timeout: float | None = None) -> None:
        # Blocking: P2 starts after the last frame, not while a 4 KiB request is segmented.
        self.link.send(payload, timeout if timeout is not None else OVERALL_TIMEOUT_S)

    def specific_wait_frame(self, timeout: float | None = None) -> bytes | None:
        message = self.link.recv(timeout if timeout is not None else OVERALL_TIMEOUT_S)
        if message is None:
            raise TimeoutException(f"Did not receive IsoTP frame from the Transport layer in time (timeout={timeout} sec)")
        return message

    def empty_rxqueue(self) -> None:
        self.link.discard_received()

    def empty_txqueue(self) -> None:
        self.link.abort_send()


class UdsClient:
    """The tester's UDS client for one DUT.

    Roles (contract.Did, contract.Routine, contract.Session members) are translated to the board's
    numbers through the DUT profile; plain integers go on the wire as given (negative tests).
    """

    def __init__(self, can: CanChannel, dut: DutConfig, profile: DutProfile | None = None,
                 tester: TesterConfig | None = None) -> None:
        self.dut = dut
        self.profile = profile if profile is not None else can.profile
        tester = tester if tester is not None else TesterConfig.model_validate({})
        #: ΔP2 (ISO 14229-2): what the host may add to the server's P2/P2* (bench file `tester.host_margin_ms`).
        self.p2_margin_s = tester.host_margin_ms / 1000.0
        self.isotp_timeout_s = tester.isotp_timeout_ms / 1000.0
        fd = can.cfg.fd
        mode = isotp.AddressingMode.Normal_29bits if self.profile.uds.extended_ids else isotp.AddressingMode.Normal_11bits
        address = isotp.Address(mode, txid=dut.tx_id, rxid=dut.rx_id)
        params = self.profile.isotp_params(fd, fd and can.cfg.data_bitrate is not None, blocking_send=True,
                                           timeout_ms=tester.isotp_timeout_ms)
        codecs: dict[Any, Any] = {self.profile.did(did): BytesCodec(length) for did, length in contract.DID_LENGTH.items()
                                  if did.name in self.profile.dids}  # the roles of the board's update family
        codecs["default"] = BytesCodec(None)  # DIDs outside the profile (negative tests)
        config = dict(udsoncan.configs.default_client_config)
        config.update({
            "data_identifiers": codecs,
            "use_server_timing": True,
            "p2_timeout": self.profile.uds.p2_ms / 1000 + self.p2_margin_s,
            "p2_star_timeout": self.profile.uds.p2_star_ms / 1000 + self.p2_margin_s,
            "request_timeout": OVERALL_TIMEOUT_S,
        })
        self._conn = _IsoTpConnection(IsoTpLink(can.bus, can.notifier, address, params, name=f"uds-{dut.name}"),
                                      name=f"uds-{dut.name}")
        self._client = Client(self._conn, config=config)  # type: ignore[arg-type]
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
                code = int(exc.response.code or 0)
                service = exc.response.service.get_name() if exc.response.service else "?"
                raise UdsError(f"{what}: {service} refused with NRC 0x{code:02X} {nrc_name(code)}", nrc=code) from None
            except TimeoutException as exc:
                raise HilTimeout(f"{what}: no response from {self.dut.name} ({exc})") from None
            except isotp.BlockingSendFailure as exc:
                raise HilTimeout(f"{what}: request could not be sent to {self.dut.name} "
                                 f"(no flow control within {self.isotp_timeout_s:g} s): {exc}") from None
            except (InvalidResponseException, UnexpectedResponseException, ConfigError) as exc:
                raise UdsError(f"{what}: {exc}") from None

    def _timing(self) -> tuple[float, float]:
        timing = self._client.session_timing
        p2 = timing.p2_server_max if timing.p2_server_max is not None else self._client.config["p2_timeout"]
        p2s = timing.p2_star_server_max if timing.p2_star_server_max is not None else self._client.config["p2_star_timeout"]
        return p2, p2s

    # ------------------------------------------------------------------ sessions and security
    def session(self, n: int) -> None:
        """DiagnosticSessionControl (a contract.Session role, or a raw subfunction); adopts the server's
        P2/P2* plus the tester's ΔP2 margin."""
        if isinstance(n, contract.Session):
            n = self.profile.sessions.of(n)
        with self._request(f"DiagnosticSessionControl 0x{n:02X}") as c:
            response = c.change_session(n)
            data = getattr(response, "service_data", None)
            if data is not None and data.p2_server_max is not None:
                c.session_timing.p2_server_max = data.p2_server_max + self.p2_margin_s
                c.session_timing.p2_star_server_max = data.p2_star_server_max + self.p2_margin_s

    def unlock(self, security: Any) -> None:
        """SecurityAccess: requestSeed at `security.level`, key = `security.compute_key(seed)`, sendKey."""
        level = int(security.level if security.level is not None else self.profile.security.programming_level)
        with self._request(f"SecurityAccess level 0x{level:02X}") as c:
            seed = bytes(c.request_seed(level).service_data.seed)
            if any(seed):  # an all-zero seed means already unlocked
                c.send_key(level + 1, security.compute_key(seed))

    # ------------------------------------------------------------------ data identifiers
    def _did(self, did: int) -> int:
        return self.profile.did(did) if isinstance(did, contract.Did) else int(did)

    def read_did(self, did: int) -> bytes:
        """ReadDataByIdentifier (a contract.Did role, or a raw identifier): the DID's record bytes."""
        did = self._did(did)
        with self._request(f"ReadDataByIdentifier 0x{int(did):04X}") as c:
            return bytes(c.read_data_by_identifier_first(int(did)))

    def read_str(self, did: int) -> str:
        """A text DID (ASCII/UTF-8, trailing NULs dropped)."""
        return self.read_did(did).decode("utf-8", errors="replace").rstrip("\x00")

    def software_version(self) -> str:
        """The running software version (DID role SOFTWARE_VERSION)."""
        return self.read_str(contract.Did.SOFTWARE_VERSION)

    def update_status(self) -> contract.UpdateStatusRecord:
        """The update status record (DID role UPDATE_STATUS), decoded through the profile's encodings."""
        return self.profile.decode_status(self.read_did(contract.Did.UPDATE_STATUS))

    def boot_info(self) -> contract.BootInfo:
        """Boot mode, slot, confirmation, reset cause (DID role BOOT_INFO), decoded through the profile."""
        return self.profile.decode_boot_info(self.read_did(contract.Did.BOOT_INFO))

    def write_did(self, did: int, data: bytes) -> None:
        """WriteDataByIdentifier with a raw record."""
        did = self._did(did)
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
        """RoutineControl startRoutine (a contract.Routine role, or a raw id); returns the routine status record."""
        if isinstance(rid, contract.Routine):
            rid = self.profile.routine(rid)
        with self._request(f"RoutineControl start 0x{int(rid):04X}") as c:
            response = c.start_routine(int(rid), bytes(data) or None)
            assert response is not None  # udsoncan raises on a missing response
            return bytes(response.service_data.routine_status_record or b"")

    def request_download(self, address: int, size: int) -> int:
        """RequestDownload (32-bit address and size); returns maxNumberOfBlockLength."""
        location = udsoncan.MemoryLocation(address, size, address_format=32, memorysize_format=32)
        with self._request(f"RequestDownload 0x{address:08X} +{size}") as c:
            response = c.request_download(location)
            assert response is not None  # udsoncan raises on a missing response
            return int(response.service_data.max_length)

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

    def tester_present(self, suppress_response: bool = False) -> None:
        """TesterPresent (keeps a non-default session alive). `suppress_response`: `3E 80`, the
        suppressPosRspMsgIndicationBit set - sent without waiting, as a gateway keeps a session open."""
        with self._request("TesterPresent" + (" (no response)" if suppress_response else "")) as c:
            if suppress_response:
                with c.suppress_positive_response:
                    c.tester_present()
            else:
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
