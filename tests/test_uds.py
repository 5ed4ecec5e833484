"""UdsClient against a tiny handler on UdsServerTransport over python-can's in-process `virtual` bus."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import can
import pytest

from hil.bench import contract
from hil.bench.config import CanConfig, DutConfig, SecurityConfig
from hil.drivers.can import CanChannel
from hil.drivers.uds import UdsClient
from hil.errors import HilTimeout, UdsError
from hil.sim.uds_server import UdsServerTransport

ROOT = Path(__file__).resolve().parents[1]
SECRET = "00112233445566778899aabbccddeeff"


class TinyEcu:
    """Just enough of a UDS server to exercise the client: DIDs, a slow routine, security access."""

    def __init__(self) -> None:
        self.slow_s = 0.0
        self.seed = b"\x11\x22\x33\x44"
        self.sec = SecurityConfig(level=1, secret=SECRET)
        self.unlocked = False
        self.blocks: list[tuple[int, int]] = []

    def handle(self, req: bytes) -> bytes | None:
        sid = req[0]
        if sid == 0x22:
            if len(req) != 3:
                return bytes([0x7F, 0x22, contract.Nrc.INCORRECT_MESSAGE_LENGTH])
            did = int.from_bytes(req[1:3], "big")
            records = {contract.Did.SOFTWARE_VERSION: b"1.1.0",
                       contract.Did.UPDATE_STATUS: contract.UpdateStatusRecord(
                           contract.UpdateState.VERIFIED, contract.Reason.NONE, 100, (1, 1, 0)).encode(),
                       contract.Did.CONFIGURATION: b'{"profile":"default","text":"' + b"x" * 200 + b'"}'}
            if did not in records:
                return bytes([0x7F, 0x22, contract.Nrc.REQUEST_OUT_OF_RANGE])
            return b"\x62" + req[1:3] + records[did]
        if sid == 0x31:
            time.sleep(self.slow_s)  # a long erase: the transport must send 0x78 meanwhile
            return b"\x71" + req[1:4] + b"\x00"
        if sid == 0x27:
            if req[1] == 0x01:
                return b"\x67\x01" + self.seed
            ok = req[2:] == self.sec.compute_key(self.seed)
            self.unlocked = ok
            return b"\x67\x02" if ok else bytes([0x7F, 0x27, contract.Nrc.INVALID_KEY])
        if sid == 0x36:
            self.blocks.append((req[1], len(req) - 2))
            return b"\x76" + req[1:2]
        if sid == 0x3E:
            return None if req[1] & 0x80 else b"\x7E\x00"
        if sid == 0x10:
            return bytes([0x50, req[1], 0x00, contract.P2_SERVER_MS, (contract.P2_STAR_SERVER_MS // 10) >> 8,
                          (contract.P2_STAR_SERVER_MS // 10) & 0xFF])
        if sid == 0x99:
            raise RuntimeError("handler bug")
        return bytes([0x7F, sid, contract.Nrc.SERVICE_NOT_SUPPORTED])


@pytest.fixture
def rig() -> Iterator[tuple[UdsClient, TinyEcu, CanChannel, UdsServerTransport]]:
    channel = f"test-uds-{uuid.uuid4().hex}"
    cfg = CanConfig(interface="virtual", channel=channel, dbc=ROOT / "benches/dbc/bms.dbc")
    ecu_bus = can.Bus(interface="virtual", channel=channel)
    ecu_notifier = can.Notifier(ecu_bus, [], timeout=0.05)
    ecu = TinyEcu()
    server = UdsServerTransport(ecu_bus, ecu_notifier, handler=ecu.handle)
    server.start()
    tester = CanChannel(cfg)
    dut = DutConfig(hardware_number="BMS-HW-A2", security=SecurityConfig(level=1, secret=SECRET))
    client = UdsClient(tester, dut)
    try:
        yield client, ecu, tester, server
    finally:
        client.close()
        tester.close()
        server.stop()
        ecu_notifier.stop()
        ecu_bus.shutdown()


def test_read_did_fixed_and_variable_length(rig) -> None:
    client, _, _, _ = rig
    assert client.software_version() == "1.1.0"
    status = client.update_status()
    assert status.state is contract.UpdateState.VERIFIED and status.target == (1, 1, 0)
    config = client.read_did(contract.Did.CONFIGURATION)  # multi-frame response, variable length
    assert config.startswith(b'{"profile"') and len(config) > 200


def test_negative_response_maps_to_uds_error_with_nrc(rig) -> None:
    client, _, _, _ = rig
    with pytest.raises(UdsError) as refused:
        client.read_did(contract.Did.SERIAL_NUMBER)
    assert refused.value.nrc == contract.Nrc.REQUEST_OUT_OF_RANGE
    assert "REQUEST_OUT_OF_RANGE" in str(refused.value) and "0xF18C" in str(refused.value)


def test_security_access_uses_the_key_function(rig) -> None:
    client, ecu, _, _ = rig
    client.unlock(ecu.sec)
    assert ecu.unlocked

    class Wrong:
        level = 1

        @staticmethod
        def compute_key(seed: bytes) -> bytes:
            return b"\x00\x00\x00\x00"

    with pytest.raises(UdsError) as refused:
        client.unlock(Wrong())
    assert refused.value.nrc == contract.Nrc.INVALID_KEY


def test_slow_handler_gets_response_pending_and_the_client_waits(rig) -> None:
    client, ecu, tester, _ = rig
    ecu.slow_s = 0.35  # far beyond P2 (50 ms + margin): only 0x78 keeps the client waiting
    pending: list[bytes] = []
    listener = lambda m: pending.append(bytes(m.data)) if m.arbitration_id == 0x7E8 and m.data[1:4] == b"\x7F\x31\x78" else None
    tester.notifier.add_listener(listener)
    try:
        status = client.routine(contract.Routine.ERASE_MEMORY)
    finally:
        tester.notifier.remove_listener(listener)
    assert status == b"\x00"
    assert pending, "no 7F 31 78 was sent while the handler worked"


def test_silent_server_times_out_naming_the_request(rig) -> None:
    client, _, _, server = rig
    server.stop()
    start = time.monotonic()
    with pytest.raises(HilTimeout) as timed_out:
        client.software_version()
    assert "ReadDataByIdentifier 0xF189" in str(timed_out.value)
    assert time.monotonic() - start < 2.0


def test_raw_returns_negative_responses_of_malformed_requests(rig) -> None:
    client, _, _, _ = rig
    assert client.raw(b"\x22\xF1") == bytes([0x7F, 0x22, contract.Nrc.INCORRECT_MESSAGE_LENGTH])
    assert client.raw(b"\x3E\x00") == b"\x7E\x00"
    # a handler that raises is answered generalReject; the server keeps serving
    assert client.raw(b"\x99") == bytes([0x7F, 0x99, contract.Nrc.GENERAL_REJECT])
    assert client.software_version() == "1.1.0"


def test_transfer_data_blocks_of_full_length(rig) -> None:
    client, ecu, _, _ = rig
    client.transfer_data(1, bytes(contract.TRANSFER_DATA_PER_BLOCK))
    client.transfer_data(0x102, b"\xAA" * 10)  # the counter wraps to one byte
    assert ecu.blocks == [(1, contract.TRANSFER_DATA_PER_BLOCK), (2, 10)]


def test_functional_tester_present_is_answered(rig) -> None:
    _, _, tester, _ = rig
    answered = threading.Event()
    tester.notifier.add_listener(lambda m: answered.set() if m.arbitration_id == 0x7E8 and m.data[1:3] == b"\x7E\x00" else None)
    tester.bus.send(can.Message(arbitration_id=contract.UDS_FUNC_REQUEST_ID, data=b"\x02\x3E\x00\xCC\xCC\xCC\xCC\xCC",
                                is_extended_id=False))
    assert answered.wait(1.0), "functional TesterPresent got no response"


def test_response_code_names_are_udsoncans_own() -> None:
    """`hil.drivers.uds` names response codes from a table instead of udsoncan's walk over the class members
    on every response; the names are the same for every code (an unknown one: its number)."""
    import inspect

    from udsoncan.ResponseCode import ResponseCode

    def walked(code: int) -> str:  # udsoncan 1.x's ResponseCode.get_name
        for name, value in inspect.getmembers(ResponseCode):
            if isinstance(value, int) and value == code:
                return name
        return str(code)

    assert getattr(ResponseCode.get_name, "_hil_lookup", False)
    assert all(ResponseCode.get_name(code) == walked(code) for code in range(256))
    assert ResponseCode.get_name(None) == ""  # type: ignore[arg-type]
