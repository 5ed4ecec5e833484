"""The virtual board checked over the wire by a second UDS client: can-isotp with hand-written requests.

Nothing of the framework's UDS side is used here - no `UdsClient`, no udsoncan, no `hil.bench.contract`
numbers: the requests are bytes written out by hand and the expected answers are the bytes
docs/bench-contract.md gives for the default DUT profile (section numbers in the comments). The
transport is can-isotp's socket-less `CanStack` on a python-can `virtual` bus of the test's own; a
second bus instance records every frame on the wire, so what must *not* be sent (suppressed positive
responses, functional negative responses) is checked frame by frame, and every frame the board sends
must be well-formed ISO-TP.

The walk runs on classic CAN and on CAN FD, each on a private in-process virtual bench (its own
channel name, flash file and OS-assigned ports). Timing values a board sets - S3, the SecurityAccess
delay, the charge ramp-down - come from the bench file and the DUT profile and are shortened there to
keep the test fast; the walk reads them back from that configuration, never from the board's code.
The same chapters run against defective boards and must fail there (`test_the_walk_catches_a_defective_board`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import socket
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import can
import isotp
import pytest

from hil.bench.config import BenchConfig, load_bench
from hil.images.build import load_image
from hil.sim.bench import running_bench

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ the contract, as the document writes it
REQ_ID, RSP_ID, FUNC_ID = 0x7E0, 0x7E8, 0x7DF  # section 2
VEHICLE_STATE_ID = 0x3C0  # section 1: VCU_VehicleState
SOC_CORE_ID = 0x180
TIMING = bytes.fromhex("0032 01F4")  # section 2: P2 = 50 ms, P2* = 5000 ms in 10 ms units
BLOCK_LENGTH = bytes.fromhex("0FFE")  # section 6: maxNumberOfBlockLength 4094
LAYOUT = bytes.fromhex("00023000 00020000 00001000")  # section 4: FD06 of the virtual board
PROFILE_ADDRESS = bytes.fromhex("C0F10000")  # section 11: PROFILE_DOWNLOAD_ADDRESS
DTC_ROLLED_BACK, DTC_REJECTED, DTC_STATUS = bytes.fromhex("D10001"), bytes.fromhex("D10002"), 0x2B  # section 8

# Section 7: negative response codes.
SNS, SFNS, IMLOIF, CNC, RSE, ROOR, SAD, IK, ENOA, RTDNE, UDNA, TDS, GPF, WBSC, PENDING, SNSIAS, VTL = (
    0x11, 0x12, 0x13, 0x22, 0x24, 0x31, 0x33, 0x35, 0x36, 0x37, 0x70, 0x71, 0x72, 0x73, 0x78, 0x7F, 0x93)
# Section 8: update states and reasons (FD01 bytes 0-1).
IDLE, DOWNLOADING, DOWNLOADED, VERIFIED, REJECTED, PENDING_ACTIVATION, SUCCESS, RECOVERY = 0, 1, 2, 3, 4, 5, 8, 10
NONE, BAD_MAGIC, OVERSIZE, CURRENT_FLOWING, SUPPLY_LOW, NOT_PLUGGED_IN, VEHICLE_NOT_IDLE, DOWNLOAD_ABORTED, \
    NO_VALID_IMAGE = 0x00, 0x10, 0x19, 0x20, 0x21, 0x22, 0x23, 0x30, 0x40
#: CAN FD data lengths (ISO 11898-1).
FD_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)


class Mismatch(AssertionError):
    """The board answered otherwise than the contract says."""


def key_for(secret_hex: str, seed: bytes, level: int) -> bytes:
    """Section 3: key = HMAC-SHA256(secret, seed || level)[0:4]."""
    return hmac.new(bytes.fromhex(secret_hex), seed + bytes([level]), hashlib.sha256).digest()[:4]


# ------------------------------------------------------------------ the second client
@dataclass
class Tester:
    __test__ = False  # not a test class, whatever its name says

    """A tester of our own: can-isotp's CanStack on its own bus, a frame recorder on another."""

    cfg: BenchConfig
    fd: bool
    stack: isotp.CanStack
    bus: can.BusABC
    frames: list[tuple[float, can.Message]] = field(default_factory=list)  # (send time, wall clock; frame)
    log: list[str] = field(default_factory=list)

    @property
    def s3(self) -> float:
        return self.cfg.profile.uds.s3_s

    @property
    def p2_star(self) -> float:
        """P2* of the 0x50 response (5 s), plus the bench file's host margin."""
        return 5.0 + self.cfg.tester.host_margin_ms / 1000

    def _note(self, request: bytes, answer: str) -> None:
        self.log.append(f"{request[:16].hex(' ')}{' ...' if len(request) > 16 else ''} -> {answer}")

    def send(self, request: bytes) -> None:
        while self.stack.available():  # a late answer of an earlier request must not pass for this one's
            self.stack.recv()
        self.stack.send(request)

    def request(self, request: bytes, timeout: float | None = None) -> tuple[bytes, int]:
        """Send; the final response and how many `7F <SID> 78` came before it."""
        self.send(request)
        pending = 0
        deadline = time.monotonic() + (timeout if timeout is not None else self.p2_star)
        while True:
            answer = self.stack.recv(block=True, timeout=max(0.0, deadline - time.monotonic()))
            if answer is None:
                self._note(request, "nothing")
                raise Mismatch(f"no response to {request[:16].hex(' ')}\n" + self.trail())
            answer = bytes(answer)
            if answer[:1] == b"\x7f" and answer[2:3] == bytes([PENDING]):
                pending += 1
                deadline = time.monotonic() + self.p2_star  # each 0x78 restarts P2*
                continue
            self._note(request, answer[:24].hex(" "))
            return answer, pending

    def trail(self) -> str:
        return "exchanges so far (last 12):\n  " + "\n  ".join(self.log[-12:])

    def expect(self, request: bytes, expected: bytes | str, *, why: str = "") -> bytes:
        """The response must be `expected` (bytes), or match it (a regular expression over the hex)."""
        answer, _ = self.request(request)
        ok = answer == expected if isinstance(expected, bytes) else re.fullmatch(expected, answer.hex()) is not None
        if not ok:
            shown = expected.hex(" ") if isinstance(expected, bytes) else expected
            raise Mismatch(f"{request[:16].hex(' ')}: expected {shown}, got {answer[:40].hex(' ')}"
                           f"{' (' + why + ')' if why else ''}\n" + self.trail())
        return answer

    def nrc(self, request: bytes, code: int, *, why: str = "") -> None:
        """A negative response `7F <SID> <code>`."""
        self.expect(request, bytes([0x7F, request[0], code]), why=why)

    def silent(self, request: bytes, *, functional: bool = False, why: str = "", window: float | None = None) -> None:
        """No frame at all from the board within `window` (default P2 + the host margin): a suppressed response."""
        mark = time.time()
        if functional:
            self.raw(FUNC_ID, bytes([len(request)]) + request)
        else:
            self.send(request)
        window = window if window is not None else 0.05 + self.cfg.tester.host_margin_ms / 1000
        answer = self.stack.recv(block=True, timeout=window)
        sent = [m for t, m in list(self.frames) if t >= mark and m.arbitration_id == RSP_ID]
        self._note(request, "nothing" if answer is None and not sent else f"{len(sent)} frame(s)")
        if answer is not None or sent:
            raise Mismatch(f"{request.hex(' ')}: no response expected ({why}), the board sent "
                           f"{bytes(answer or b'').hex(' ') or [m.data.hex(' ') for m in sent]}\n" + self.trail())

    def raw(self, arbitration_id: int, payload: bytes) -> None:
        """One frame, padded as the tester pads (section 2: 0xCC to 8 bytes; FD: to a valid length)."""
        length = 8 if len(payload) <= 8 else next(n for n in FD_LENGTHS if n >= len(payload))
        self.bus.send(can.Message(arbitration_id=arbitration_id, data=payload.ljust(length, b"\xcc"),
                                  is_extended_id=False, is_fd=self.fd and length > 8, bitrate_switch=self.fd and length > 8))

    def idle(self, seconds: float) -> None:
        """Wait while keeping the session: TesterPresent with the suppress bit, every S3/4."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # the silence check is the wait: one TesterPresent every S3/4
            self.silent(b"\x3e\x80", why="TesterPresent with suppressPosRspMsgIndicationBit",
                        window=max(0.0, min(self.s3 / 4, end - time.monotonic())))

    def did(self, did: int) -> bytes:
        """ReadDataByIdentifier: the record (the response must echo the DID)."""
        answer = self.expect(bytes([0x22]) + did.to_bytes(2, "big"), f"62{did:04x}.*")
        return answer[3:]

    def status(self) -> tuple[int, int, int]:
        """FD01: state, reason, progress."""
        record = self.did(0xFD01)
        if len(record) != 6:
            raise Mismatch(f"FD01 is {len(record)} bytes, the contract says 6: {record.hex(' ')}")
        return record[0], record[1], record[2]

    def expect_status(self, state: int, reason: int, *, why: str) -> None:
        got = self.status()[:2]
        if got != (state, reason):
            raise Mismatch(f"FD01 state/reason {got[0]:#04x}/{got[1]:#04x}, expected {state:#04x}/{reason:#04x} ({why})\n"
                           + self.trail())

    def unlock(self, level: int = 0x01) -> None:
        secret = (self.cfg.dut.security if level == 0x01 else self.cfg.dut.bench_security)
        assert secret is not None and secret.secret is not None
        seed = self.expect(bytes([0x27, level]), f"67{level:02x}" + "[0-9a-f]{8}")[2:]
        if any(seed):
            self.expect(bytes([0x27, level + 1]) + key_for(secret.secret, seed, level), bytes([0x67, level + 1]))

    def wait_up(self, timeout: float = 20.0) -> None:
        """TesterPresent until the board answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send(b"\x3e\x00")
            answer = self.stack.recv(block=True, timeout=0.2)
            if answer is not None and bytes(answer) == b"\x7e\x00":
                return
        raise Mismatch(f"the board did not answer TesterPresent within {timeout:g} s\n" + self.trail())

    def boots(self) -> int:
        """FD02, the boot counter."""
        return int.from_bytes(self.did(0xFD02), "big")

    def reset(self, request: bytes, response: bytes | None, timeout: float = 30.0) -> None:
        """ECUReset: its response (or none, suppressed), then a new boot (FD02 advances) within `timeout`."""
        before = self.boots()
        if response is None:
            self.silent(request, why="suppressPosRspMsgIndicationBit on 0x11")
        else:
            self.expect(request, response)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send(b"\x22\xfd\x02")
            answer = self.stack.recv(block=True, timeout=0.2)
            if answer is not None and bytes(answer)[:3] == b"\x62\xfd\x02" and int.from_bytes(bytes(answer)[3:], "big") > before:
                self._note(request, f"reset: boot {before} -> {int.from_bytes(bytes(answer)[3:], 'big')}")
                return
        raise Mismatch(f"{request.hex(' ')}: no new boot within {timeout:g} s (FD02 stays {before})\n" + self.trail())

    def scpi(self, resource: str, command: str) -> str:
        """One command to an instrument of the bench (raw SCPI over TCP), then its error queue."""
        host, port = re.match(r"TCPIP0::([^:]+)::(\d+)::SOCKET", resource).groups()  # type: ignore[union-attr]
        with socket.create_connection((host, int(port)), timeout=2.0) as s, s.makefile("rw", newline="\n") as f:
            f.write(command + "\n")
            f.write("SYST:ERR?\n")
            f.flush()
            return f.readline().strip()

    def check_frames(self) -> None:
        """Every frame the board sent on the response id is well-formed ISO-TP, padded or not, FD lengths valid."""
        for _t, m in list(self.frames):
            if m.arbitration_id != RSP_ID:
                continue
            data, kind = bytes(m.data), m.data[0] >> 4
            if len(data) not in (FD_LENGTHS if self.fd else range(1, 9)) or kind > 3:
                raise Mismatch(f"malformed frame from the board on 0x{RSP_ID:X}: {data.hex(' ')}")
            if (m.is_fd and not self.fd) or (len(data) > 8 and not m.is_fd):
                raise Mismatch(f"frame {data.hex(' ')}: is_fd={m.is_fd} on a {'FD' if self.fd else 'classic'} bus")


@contextlib.contextmanager
def second_client(cfg: BenchConfig, *, fd: bool) -> Iterator[Tester]:
    """The tester's own bus, ISO-TP stack and frame recorder on the bench's `virtual` channel."""
    protocol = can.CanProtocol.CAN_FD if fd else can.CanProtocol.CAN_20
    bus = can.Bus(interface="virtual", channel=cfg.can.channel, protocol=protocol, receive_own_messages=False)
    spy = can.Bus(interface="virtual", channel=cfg.can.channel, protocol=protocol, receive_own_messages=False)
    frames: list[tuple[float, can.Message]] = []
    # Stamped with the send time (python-can's virtual bus: the sender's wall clock), never with when this
    # recorder's thread got to it - a late recorder must not move an earlier frame after a mark.
    notifier = can.Notifier(spy, [lambda m: frames.append((m.timestamp, m))
                                  if m.arbitration_id in (REQ_ID, RSP_ID, FUNC_ID, SOC_CORE_ID) else None],
                            timeout=0.05)
    params = {"stmin": 0, "blocksize": 0, "tx_padding": 0xCC, "tx_data_length": 64 if fd else 8,
              "tx_data_min_length": 8 if fd else None, "can_fd": fd, "bitrate_switch": fd, "blocking_send": True,
              "max_frame_size": 8192, "rx_flowcontrol_timeout": 1000, "rx_consecutive_frame_timeout": 1000}
    stack = isotp.CanStack(bus, address=isotp.Address(isotp.AddressingMode.Normal_11bits, txid=REQ_ID, rxid=RSP_ID),
                           params=params)
    stack.start()
    try:
        yield Tester(cfg, fd, stack, bus, frames)
    finally:
        stack.stop()
        notifier.stop()
        spy.shutdown()
        bus.shutdown()


class VehicleState:
    """VCU_VehicleState every 100 ms (section 1), as the vehicle sends it: plugged in and parked by default."""

    def __init__(self, tester: Tester) -> None:
        self.tester = tester
        self.plugged, self.drive_ready = True, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vcu", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            # ChargerConnected bit 0, IgnitionOn bit 1 (off), DriveReady bit 2; VehicleSpeed 0
            bits = (1 if self.plugged else 0) | (4 if self.drive_ready else 0)
            self.tester.bus.send(can.Message(arbitration_id=VEHICLE_STATE_ID, data=bytes([bits, 0, 0, 0, 0, 0, 0, 0]),
                                             is_extended_id=False))

    def __enter__(self) -> "VehicleState":
        self._thread.start()
        time.sleep(0.3)  # a few frames on the bus before the board is asked
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)


# ------------------------------------------------------------------ the chapters of the walk
def default_session(t: Tester) -> None:
    """Section 2 (services per session), section 4 (DIDs), section 8 (fault memory) in the default session."""
    t.expect(b"\x22\xf1\x86", b"\x62\xf1\x86\x01")
    t.expect(b"\x22\xf1\x87", b"\x62\xf1\x87" + b"BMS-MASTER-12S")
    version = t.did(0xF189)
    if not re.fullmatch(rb"\d+\.\d+\.\d+", version):
        raise Mismatch(f"F189 {version!r} is not major.minor.revision")
    t.expect(b"\x22\xf1\x8c", b"\x62\xf1\x8c" + (t.cfg.dut.serial_number or "").encode())
    t.expect(b"\x22\xf1\x91", b"\x62\xf1\x91" + t.cfg.dut.hardware_number.encode())
    t.expect(b"\x22\xf1\x95", f"62f195{version.hex()}2b([0-9a-f]{{2}})+")
    t.expect(b"\x22\xf1\xa0", "62f1a0([2-7][0-9a-f])*")
    t.expect(b"\x22\xfd\x00", "62fd00 00 00 0[01] 0[0-4]".replace(" ", ""))
    t.expect(b"\x22\xfd\x01", "62fd01" + "[0-9a-f]{12}")
    t.expect(b"\x22\xfd\x02", "62fd02" + "[0-9a-f]{8}")
    config = json.loads(t.did(0xFD20))
    if not isinstance(config, dict):
        raise Mismatch(f"FD20 is not a JSON object: {config!r}")
    schema_crc = t.did(0xFD03)
    crc = zlib.crc32(json.dumps(config, sort_keys=True).encode())  # section 4: FD03 over sort_keys JSON
    if schema_crc[2:] != crc.to_bytes(4, "big") or len(schema_crc) != 6:
        raise Mismatch(f"FD03 {schema_crc.hex(' ')} does not carry the CRC-32 {crc:08x} of FD20's configuration")
    t.expect(b"\x22\xfd\x04", "62fd04" + "[0-9a-f]{8}")
    t.expect(b"\x22\xfd\x06", b"\x62\xfd\x06" + LAYOUT)
    t.expect(b"\x22\xfd\x07", "62fd07" + "[0-9a-f]{64}")
    t.expect(b"\x22\xfd\x08", "62fd08" + "[0-9a-f]{64}")
    history = t.did(0xFD09)
    if not history or len(history) != 1 + 12 * history[0]:
        raise Mismatch(f"FD09 {history.hex(' ')}: u8 count then 12-byte entries")
    t.expect(b"\x22\xfd\x0a", "62fd0a" + "[0-9a-f]{24}")
    status = json.loads(t.did(0xFD0B))
    if not {"profile", "version", "vehicle_group", "schema", "state", "reason", "last"} <= set(status):
        raise Mismatch(f"FD0B lacks keys of section 4: {sorted(status)}")
    t.expect(b"\x22\xfd\x0c", "62fd0c" + "([2-7][0-9a-f]){1,16}")
    # several DIDs in one request; unknown ones; lengths
    t.expect(b"\x22\xf1\x89\xfd\x01", b"\x62\xf1\x89" + version + b"\xfd\x01" + t.did(0xFD01))
    t.nrc(b"\x22\x12\x34", ROOR, why="unknown DID")
    t.nrc(b"\x22\xf1\x89\x12\x34", ROOR, why="one of several DIDs unknown: the whole request refused")
    t.nrc(b"\x22\xf1", IMLOIF, why="half a DID")
    t.nrc(b"\x22\xf1\x89\xfd", IMLOIF, why="even request length")
    t.nrc(b"\x22", IMLOIF)
    # services the default session does not offer, and unknown services
    for request in (b"\x27\x01", b"\x28\x00\x01", b"\x2e\xfd\x20\x7b\x7d", b"\x31\x01\xff\x00",
                    b"\x34\x00\x44" + bytes(8), b"\x85\x02"):
        t.nrc(request, SNSIAS, why="not in the default session (section 2)")
    t.nrc(b"\x36\x01\x00", RSE, why="no download can exist in the default session")
    t.nrc(b"\x37", RSE)
    for request in (b"\x99\x00", b"\x23\x00", b"\x3d\x00"):
        t.nrc(request, SNS, why="service not in the contract")
    # routine control: checks in the order of section 5
    t.nrc(b"\x31\x01\xff", IMLOIF)
    t.nrc(b"\x31\x02\xff\x00", SFNS, why="only startRoutine")
    t.nrc(b"\x31\x01\x12\x34", ROOR, why="unknown routine")
    # DiagnosticSessionControl and ECUReset framing
    t.nrc(b"\x10", IMLOIF)
    t.nrc(b"\x10\x01\x00", IMLOIF)
    t.nrc(b"\x10\x7a", SFNS)
    t.nrc(b"\x11", IMLOIF)
    t.nrc(b"\x11\x04", SFNS)
    # TesterPresent
    t.expect(b"\x3e\x00", b"\x7e\x00")
    t.silent(b"\x3e\x80", why="suppressPosRspMsgIndicationBit on 0x3E")
    t.nrc(b"\x3e\x01", SFNS)
    t.nrc(b"\x3e\x81", SFNS, why="a negative response is sent despite the suppress bit")
    t.nrc(b"\x3e", IMLOIF)
    # fault memory (section 8)
    stored = t.expect(b"\x19\x02\xff", "59022b(d1000[12]2b)*")
    t.expect(b"\x19\x01\xff", b"\x59\x01\x2b\x01" + ((len(stored) - 3) // 4).to_bytes(2, "big"))
    t.expect(b"\x19\x0a", "590a2bd10001(00|2b)d10002(00|2b)")
    t.nrc(b"\x19\x05\xff", SFNS)
    t.nrc(b"\x19\x01", IMLOIF)
    t.nrc(b"\x19\x0a\x00", IMLOIF)
    t.nrc(b"\x19", IMLOIF)
    t.expect(b"\x14\xd1\x00\x01", b"\x54")
    t.expect(b"\x14\xff\xff\xff", b"\x54")
    t.expect(b"\x19\x02\xff", b"\x59\x02\x2b", why="every DTC cleared")
    t.nrc(b"\x14\x12\x34\x56", ROOR, why="unknown DTC group")
    t.nrc(b"\x14\xff\xff", IMLOIF)


def sessions(t: Tester) -> None:
    """Section 2: session entry (0x50 carries P2/P2*), 0x28, 0x85, the suppress bit where it is honoured."""
    t.expect(b"\x10\x03", b"\x50\x03" + TIMING)
    t.expect(b"\x22\xf1\x86", b"\x62\xf1\x86\x03")
    t.expect(b"\x10\x82", b"\x50\x02" + TIMING, why="the board answers 0x10 despite the suppress bit (section 2)")
    t.expect(b"\x22\xf1\x86", b"\x62\xf1\x86\x02")
    t.expect(b"\x10\x01", b"\x50\x01" + TIMING)
    t.expect(b"\x10\x03", b"\x50\x03" + TIMING)
    t.expect(b"\x28\x00\x01", b"\x68\x00")
    t.expect(b"\x28\x03\x01", b"\x68\x03")
    t.silent(b"\x28\x80\x01", why="suppressPosRspMsgIndicationBit on 0x28")
    t.nrc(b"\x28\x04\x01", SFNS)
    t.nrc(b"\x28\x00", IMLOIF)
    t.expect(b"\x85\x01", b"\xc5\x01")
    t.expect(b"\x85\x02", b"\xc5\x02")
    t.silent(b"\x85\x82", why="suppressPosRspMsgIndicationBit on 0x85")
    t.nrc(b"\x85\x03", SFNS)
    t.nrc(b"\x85", IMLOIF)
    t.nrc(b"\x31\x01\xff\x00", SNSIAS, why="routines need the programming session")
    t.nrc(b"\x34\x00\x44" + bytes(8), SNSIAS, why="RequestDownload needs the programming session")
    t.nrc(b"\x36\x01\x00", RSE)
    t.expect(b"\x10\x01", b"\x50\x01" + TIMING)


def security_access(t: Tester) -> None:
    """Section 3: seeds, keys, attempt counter, delay, levels."""
    assert t.cfg.sim is not None
    t.expect(b"\x10\x03", b"\x50\x03" + TIMING)
    t.nrc(b"\x27\x03", SFNS, why="level 0x03 is not provisioned")
    t.nrc(b"\x27\x01\x00", IMLOIF, why="requestSeed with an extra byte")
    t.nrc(b"\x27\x02" + bytes(4), RSE, why="sendKey without a seed")
    seeds = [t.expect(b"\x27\x01", "6701[0-9a-f]{8}")[2:] for _ in range(2)]
    if seeds[0] == seeds[1] or not any(seeds[1]):
        raise Mismatch(f"seeds must be random: {seeds[0].hex()} then {seeds[1].hex()}")
    t.nrc(b"\x27\x02" + bytes(3), IMLOIF, why="a key of 3 bytes")
    t.nrc(b"\x27\x02" + bytes(4), IK, why="wrong key, attempt 1")
    t.nrc(b"\x27\x02" + bytes(4), RSE, why="a seed is good for one sendKey")
    t.expect(b"\x10\x03", b"\x50\x03" + TIMING)  # a session change does not reset the attempt counter
    t.expect(b"\x27\x01", "6701[0-9a-f]{8}")
    t.nrc(b"\x27\x02" + bytes(4), IK, why="wrong key, attempt 2")
    t.expect(b"\x27\x01", "6701[0-9a-f]{8}")
    t.nrc(b"\x27\x02" + bytes(4), ENOA, why="wrong key, attempt 3: the delay starts")
    t.nrc(b"\x27\x01", RTDNE, why="requestSeed during the delay")
    t.idle(t.cfg.sim.sa_lockout_s + 0.2)
    t.unlock(0x01)
    t.expect(b"\x27\x01", b"\x67\x01" + bytes(4), why="requestSeed while unlocked: a zero seed")
    t.unlock(0x61)  # a development board: the bench level is provisioned
    t.expect(b"\x10\x01", b"\x50\x01" + TIMING)


def write_did(t: Tester) -> None:
    """Section 4: WriteDataByIdentifier checks in their order; FD20 and FD0C written back unchanged."""
    config, group = t.did(0xFD20), t.did(0xFD0C)
    t.nrc(b"\x2e\xfd\x20", IMLOIF, why="shorter than 4 bytes")
    t.nrc(b"\x2e\xf1\x89\x31", ROOR, why="F189 is not writable")
    t.nrc(b"\x2e\xfd\x20\x7b\x7d", SNSIAS, why="default session")
    t.expect(b"\x10\x03", b"\x50\x03" + TIMING)
    t.nrc(b"\x2e\xfd\x20\x7b\x7d", SAD, why="no level unlocked")
    t.unlock(0x01)
    t.nrc(b"\x2e\xfd\x20\x7b\x7d", SAD, why="level 0x01 is not enough for unsigned configuration")
    t.unlock(0x61)
    t.nrc(b"\x2e\xfd\x20" + b"not json", ROOR)
    t.nrc(b"\x2e\xfd\x20" + b"[1, 2]", ROOR, why="not a JSON object")
    t.nrc(b"\x2e\xfd\x0c" + b"no spaces", ROOR, why="vehicle group with a space")
    t.nrc(b"\x2e\xfd\x0c" + b"x" * 17, ROOR, why="vehicle group of 17 characters")
    t.expect(b"\x2e\xfd\x20" + config, b"\x6e\xfd\x20")
    t.expect(b"\x2e\xfd\x0c" + group, b"\x6e\xfd\x0c")
    if t.did(0xFD20) != config or t.did(0xFD0C) != group:
        raise Mismatch("FD20/FD0C differ after writing their own values back")
    t.expect(b"\x10\x03", b"\x50\x03" + TIMING)
    t.nrc(b"\x2e\xfd\x20" + config, SAD, why="entering a session relocks")
    t.expect(b"\x10\x01", b"\x50\x01" + TIMING)


def _programming(t: Tester) -> None:
    t.expect(b"\x10\x02", b"\x50\x02" + TIMING)
    t.unlock(0x01)


def _request_download(address: bytes, size: int) -> bytes:
    return b"\x34\x00\x44" + address + size.to_bytes(4, "big")


def _erase(t: Tester) -> int:
    """FF00 in the programming session; returns how many 0x78 came first."""
    answer, pending = t.request(b"\x31\x01\xff\x00")
    if answer != b"\x71\x01\xff\x00\x00":
        raise Mismatch(f"erase answered {answer.hex(' ')}\n" + t.trail())
    return pending


def download_rules(t: Tester) -> None:
    """Sections 5 and 6: the routines' and the download services' rules and NRCs, and a configuration package."""
    slot = LAYOUT[:4]
    slot_size = int.from_bytes(LAYOUT[4:8], "big")
    t.expect(b"\x10\x02", b"\x50\x02" + TIMING)
    t.nrc(b"\x31\x01\xff\x00", SAD, why="no level unlocked")
    t.nrc(_request_download(slot, 4096), SAD)
    t.unlock(0x01)
    t.expect(b"\x22\xfd\x06", b"\x62\xfd\x06" + LAYOUT)
    t.nrc(b"\x34\x00", IMLOIF)
    t.nrc(b"\x34\x01\x44" + slot + bytes(4), ROOR, why="compression/encryption not supported")
    t.nrc(b"\x34\x00\x54" + slot + bytes(5), ROOR, why="size length nibble 5")
    t.nrc(b"\x34\x00\x44" + slot + bytes(3), IMLOIF, why="length does not match the ALFID")
    t.nrc(_request_download(bytes.fromhex("00000000"), 4096), ROOR, why="not the slot address")
    t.nrc(_request_download((int.from_bytes(slot, "big") + 4096).to_bytes(4, "big"), 4096), ROOR,
          why="a resume at an offset the board has not stored (FD0A says 0)")
    t.nrc(_request_download(slot, 0), ROOR, why="size 0")
    t.nrc(_request_download(PROFILE_ADDRESS, 0), ROOR, why="configuration package of 0 bytes")
    t.nrc(_request_download(PROFILE_ADDRESS, 4097), ROOR, why="configuration package over 4096 bytes")
    t.nrc(_request_download(slot, slot_size + 1), ROOR, why="larger than the slot")
    t.expect_status(REJECTED, OVERSIZE, why="0x34 oversize")
    t.expect(b"\x19\x02\xff", b"\x59\x02\x2b" + DTC_REJECTED + bytes([DTC_STATUS]), why="a REJECTED attempt sets D10002")
    t.expect(b"\x14\xff\xff\xff", b"\x54")
    t.nrc(b"\x31\x01\xff\x00\x00", IMLOIF, why="FF00 takes no option record")
    t.nrc(b"\x31\x01\x03\x01", IMLOIF, why="0301 without its mode")
    t.nrc(b"\x31\x01\x03\x01\x07", ROOR, why="unknown activation mode")
    t.nrc(b"\x31\x01\x03\x01\x02", SAD, why="RESTORE without level 0x61")
    t.nrc(b"\x31\x01\x03\x01\x00", RSE, why="0301 before VERIFIED")
    t.nrc(b"\x31\x01\xff\x02", RSE, why="FF02 without a downloaded configuration package")
    t.nrc(b"\x31\x01\xff\x02\x00", IMLOIF)
    # a configuration package into RAM: refused with a reason in a *positive* response, then consumed
    t.expect(_request_download(PROFILE_ADDRESS, 16), b"\x74\x20" + BLOCK_LENGTH)
    t.expect(b"\x36\x01" + b"\x00" * 16, b"\x76\x01")
    t.expect(b"\x37", b"\x77")
    t.expect(b"\x31\x01\xff\x02", bytes([0x71, 0x01, 0xFF, 0x02, 0x02, BAD_MAGIC]), why="REFUSED/BAD_MAGIC")
    t.nrc(b"\x31\x01\xff\x02", RSE, why="the package is consumed")
    t.nrc(_request_download(slot, 4096), UDNA, why="no fresh erase (NOR cannot be rewritten)")
    _erase(t)
    t.expect_status(IDLE, NONE, why="after FF00")
    t.nrc(b"\x31\x01\xff\x01", RSE, why="FF01 before a complete download")
    # counter rules: 01, 02, ... FF, 00 (not 01); repeats acknowledged; data beyond the size refused
    size = 300 * 16
    t.expect(_request_download(slot, size), b"\x74\x20" + BLOCK_LENGTH)
    t.expect_status(DOWNLOADING, NONE, why="0x34 accepted")
    t.nrc(_request_download(slot, size), CNC, why="a download is in progress")
    t.nrc(b"\x31\x01\xff\x00", CNC, why="FF00 during a download")
    t.nrc(b"\x36\x02" + b"\xa5" * 16, WBSC, why="block 02 before 01")
    t.nrc(b"\x36\x01", IMLOIF, why="TransferData without data")
    t.nrc(b"\x36\x01" + b"\xa5" * 4093, IMLOIF, why="a request longer than 4094 bytes")
    t.nrc(b"\x37", RSE, why="exit before all data")
    for n in range(1, 301):
        counter = n & 0xFF
        t.expect(bytes([0x36, counter]) + bytes([n & 0xFF]) * 16, bytes([0x76, counter]))
        if n == 2:
            t.expect(b"\x36\x02" + b"\x02" * 16, b"\x76\x02", why="a repeated block is acknowledged")
            t.nrc(b"\x36\x04" + b"\x04" * 16, WBSC, why="block 04 after 02")
    t.nrc(b"\x36\x2d" + b"\xa5" * 16, TDS, why="data beyond the announced size")
    t.expect(b"\x37", b"\x77")
    t.expect_status(DOWNLOADED, NONE, why="0x37 accepted")
    if t.status()[2] != 100:
        raise Mismatch(f"FD01 progress {t.status()[2]} in DOWNLOADED, the contract says 100")
    t.nrc(b"\x36\x2d" + b"\xa5" * 16, RSE, why="TransferData after the exit")
    t.nrc(b"\x37", RSE, why="RequestTransferExit after the exit")
    t.nrc(b"\x31\x01\xff\x01\x00", IMLOIF)
    t.expect(b"\x31\x01\xff\x01", bytes([0x71, 0x01, 0xFF, 0x01, 0x01, BAD_MAGIC]), why="a rejection is positive")
    t.expect_status(REJECTED, BAD_MAGIC, why="FF01 rejected the staged bytes")
    t.expect(b"\x19\x01\x08", b"\x59\x01\x2b\x01\x00\x01", why="one DTC with confirmedDTC set")
    t.expect(b"\x14\xff\xff\xff", b"\x54")
    t.expect(b"\x10\x01", b"\x50\x01" + TIMING)


def update_and_activation(t: Tester, image: bytes) -> None:
    """Sections 5, 6, 10: a real image staged, the activation preconditions refused in order, then installed."""
    cfg = t.cfg
    assert cfg.sim is not None and cfg.load is not None
    slot = LAYOUT[:4]
    _programming(t)
    _erase(t)
    t.expect(_request_download(slot, len(image)), b"\x74\x20" + BLOCK_LENGTH)
    for n, start in enumerate(range(0, len(image), 4092), start=1):
        t.expect(bytes([0x36, n & 0xFF]) + image[start:start + 4092], bytes([0x76, n & 0xFF]))
        state, _reason, progress = t.status()
        if (state, progress) != (DOWNLOADING, min(start + 4092, len(image)) * 100 // len(image)):
            raise Mismatch(f"FD01 state {state} progress {progress} after {start + 4092} of {len(image)} bytes")
    t.expect(b"\x37", b"\x77")
    t.expect(b"\x31\x01\xff\x01", b"\x71\x01\xff\x01\x00\x00")
    state, reason, progress = t.status()
    target = t.did(0xFD01)[3:]
    if (state, reason, progress) != (VERIFIED, NONE, 100) or target != bytes([1, 1, 0]):
        raise Mismatch(f"FD01 after the check: {t.did(0xFD01).hex(' ')}, expected 03 00 64 01 01 00")
    # no vehicle state on CAN: not plugged in
    t.nrc(b"\x31\x01\x03\x01\x00", CNC, why="no VCU_VehicleState: not in the charging window")
    t.expect_status(VERIFIED, NOT_PLUGGED_IN, why="activation refused")
    with VehicleState(t) as vehicle:
        vehicle.drive_ready = True
        t.idle(0.3)
        t.nrc(b"\x31\x01\x03\x01\x00", CNC, why="drive ready")
        t.expect_status(VERIFIED, VEHICLE_NOT_IDLE, why="activation refused while driving")
        vehicle.drive_ready = False
        vehicle.plugged = False
        t.idle(0.3)
        t.nrc(b"\x31\x01\x03\x01\x00", CNC, why="charger unplugged")
        t.expect_status(VERIFIED, NOT_PLUGGED_IN, why="activation refused unplugged")
        vehicle.plugged = True
        t.idle(0.3)
        error = t.scpi(cfg.load.resource, "CURR 5")
        assert error.startswith("+0"), error
        try:
            t.nrc(b"\x31\x01\x03\x01\x00", CNC, why="pack current still flowing after the ramp-down")
        finally:
            assert t.scpi(cfg.load.resource, "CURR 0").startswith("+0")
        t.expect_status(VERIFIED, CURRENT_FLOWING, why="activation refused, current flowing")
        low = (cfg.sim.brownout_v + cfg.sim.activation_min_supply_v) / 2
        assert t.scpi(cfg.psu.resource, f"VOLT {low:g},(@{cfg.psu.channel})").startswith("+0")
        try:
            t.nrc(b"\x31\x01\x03\x01\x00", VTL, why="supply below the programming threshold")
        finally:
            assert t.scpi(cfg.psu.resource, f"VOLT {cfg.psu.nominal_voltage:g},(@{cfg.psu.channel})").startswith("+0")
        t.expect_status(VERIFIED, SUPPLY_LOW, why="activation refused, supply low")
        t.expect(b"\x31\x01\x03\x01\x00", b"\x71\x01\x03\x01\x00")
        t.expect_status(PENDING_ACTIVATION, NONE, why="0301 accepted")
        t.reset(b"\x11\x01", b"\x51\x01")
        deadline = time.monotonic() + 30
        while t.status()[0] != SUCCESS:
            if time.monotonic() > deadline:
                raise Mismatch(f"no SUCCESS within 30 s of the activation reset: FD01 {t.did(0xFD01).hex(' ')}")
            time.sleep(0.2)
    t.expect(b"\x22\xf1\x89", b"\x62\xf1\x89" + b"1.1.0")
    t.expect(b"\x22\xfd\x05", b"\x62\xfd\x05" + b"1.0.0", why="the previous image is the backup after a swap")
    t.expect(b"\x22\xfd\x00", "62fd00 00 00 01 01".replace(" ", ""), why="application, confirmed, software reset")
    history = t.did(0xFD09)
    if not history or history[0] < 1 or history[-12:][:7] != bytes([1, 0, 0, 1, 1, 0, SUCCESS]):
        raise Mismatch(f"FD09 {history.hex(' ')}: the last entry must be 1.0.0 -> 1.1.0 SUCCESS")


def s3_and_tester_present(t: Tester, image: bytes) -> None:
    """Section 2: S3 runs out with no request arriving; TesterPresent and every frame of a request restart it."""
    slot = LAYOUT[:4]
    margin = 0.5 + t.cfg.tester.host_margin_ms / 1000
    # a silent tester: the board falls back to the default session on its own
    t.expect(b"\x10\x03", b"\x50\x03" + TIMING)
    time.sleep(t.s3 + margin)  # the stimulus: a tester that says nothing
    t.expect(b"\x22\xf1\x86", b"\x62\xf1\x86\x01", why=f"silent for S3 ({t.s3:g} s) + {margin:g} s")
    # ... and abandons a download, keeping what it stored for a resume
    _programming(t)
    holds_image = any(t.did(0xFD08))  # FD08: SHA-256 of the secondary slot's image, zeros if none
    if not _erase(t) and holds_image:
        raise Mismatch("erasing a slot that holds an image was answered without 0x78 (section 2: response pending)")
    t.expect(_request_download(slot, len(image)), b"\x74\x20" + BLOCK_LENGTH)
    blocks = 5  # the resume record is written every 4th block (section 6)
    for n in range(1, blocks + 1):
        t.expect(bytes([0x36, n]) + image[(n - 1) * 4092:n * 4092], bytes([0x76, n]))
    mark = time.time()
    time.sleep(t.s3 + margin)  # silent again, a download open
    soc = [m for ts, m in list(t.frames) if ts >= mark and m.arbitration_id == SOC_CORE_ID]
    if len(soc) < (t.s3 + margin) * 5:
        raise Mismatch(f"only {len(soc)} SOC frames while the tester was silent")
    t.expect(b"\x22\xf1\x86", b"\x62\xf1\x86\x01", why="S3 expired with a download open")
    t.nrc(b"\x36\x06" + image[5 * 4092:6 * 4092], RSE, why="the transfer was closed by S3")
    t.nrc(b"\x37", RSE, why="the transfer was closed by S3")
    t.expect_status(IDLE, DOWNLOAD_ABORTED, why="a download abandoned by S3")
    size, stored, crc = struct.unpack(">III", t.did(0xFD0A))
    if size != len(image) or not 0 < stored <= blocks * 4092 or crc != zlib.crc32(image[:stored]):
        raise Mismatch(f"FD0A after S3: size {size} stored {stored} crc {crc:08x}: the stored blocks must stay "
                       f"for a resume (image {len(image)} bytes, {blocks * 4092} sent)")
    # TesterPresent keeps the session (physical, then functional), however long
    t.expect(b"\x10\x03", b"\x50\x03" + TIMING)
    end = time.monotonic() + 2 * t.s3
    while time.monotonic() < end:  # the silence check is the wait between two TesterPresent
        t.silent(b"\x3e\x80", why="TesterPresent, suppressed", window=t.s3 / 3)
    t.expect(b"\x22\xf1\x86", b"\x62\xf1\x86\x03", why="TesterPresent every S3/3 keeps the session")
    end = time.monotonic() + 2 * t.s3
    while time.monotonic() < end:
        t.silent(b"\x3e\x80", functional=True, why="functional TesterPresent, suppressed", window=t.s3 / 3)
    t.expect(b"\x22\xf1\x86", b"\x62\xf1\x86\x03", why="functional TesterPresent keeps the session")
    # a request whose frames take longer than S3 to arrive: every frame restarts S3
    per_frame = 0.1
    frames = int(1.5 * t.s3 / per_frame) + 1
    payload_per_cf = 63 if t.fd else 7
    count = ((62 if t.fd else 6) + (frames - 1) * payload_per_cf - 1) // 2
    request = b"\x22" + b"\xf1\x86" * count
    answer = _slow_request(t, request, per_frame)
    if answer != b"\x62" + b"\xf1\x86\x03" * count:
        raise Mismatch(f"a request sent over {frames * per_frame:.1f} s (> S3) found the session "
                       f"{answer[3:4].hex()}: every frame must restart S3\n" + t.trail())
    # 0x72: a resumed download whose bytes differ from what is already programmed
    resume = stored.to_bytes(4, "big")
    _programming(t)
    t.expect(_request_download((int.from_bytes(slot, "big") + stored).to_bytes(4, "big"), len(image) - stored),
             b"\x74\x20" + BLOCK_LENGTH)
    rest = bytes(b ^ 0xFF for b in image[stored:])
    refused = None
    for n, start in enumerate(range(0, len(rest), 4092), start=1):
        answer, _ = t.request(bytes([0x36, n]) + rest[start:start + 4092])
        if answer != bytes([0x76, n]):
            refused = answer
            break
    if refused is None:
        refused, _ = t.request(b"\x37")
    if refused[0] != 0x7F or refused[2] != GPF:
        raise Mismatch(f"resume at {resume.hex()} with different bytes answered {refused.hex(' ')}, expected NRC 0x72")
    t.expect(b"\x10\x01", b"\x50\x01" + TIMING)
    t.expect_status(IDLE, DOWNLOAD_ABORTED, why="a failed write abandons the download")


def _slow_request(t: Tester, request: bytes, gap: float) -> bytes:
    """Send `request` by hand, frame by frame (ISO 15765-2 first and consecutive frames), `gap` s apart."""
    first = 62 if t.fd else 6
    header = bytes([0x10 | len(request) >> 8, len(request) & 0xFF])
    mark = time.time()
    t.raw(REQ_ID, header + request[:first])
    deadline = time.monotonic() + 1.0
    while not any(ts >= mark and m.arbitration_id == RSP_ID and m.data[0] >> 4 == 3 for ts, m in list(t.frames)):
        if time.monotonic() > deadline:
            raise Mismatch("no flow control for a first frame within N_Bs (1 s)")
        time.sleep(0.005)
    sequence = 1
    step = 63 if t.fd else 7
    for start in range(first, len(request), step):
        time.sleep(gap)
        t.raw(REQ_ID, bytes([0x20 | sequence]) + request[start:start + step])
        sequence = (sequence + 1) & 0x0F
    answer = t.stack.recv(block=True, timeout=t.p2_star)
    if answer is None:
        raise Mismatch("no response to a request sent frame by frame\n" + t.trail())
    t._note(request, bytes(answer)[:24].hex(" "))
    return bytes(answer)


def functional_and_resets(t: Tester) -> None:
    """Section 2 (functional requests, **O**) and ECUReset 01/02/03 with and without the suppress bit."""
    t.raw(FUNC_ID, b"\x02\x3e\x00")
    answer = t.stack.recv(block=True, timeout=t.p2_star)
    if answer is None or bytes(answer) != b"\x7e\x00":
        raise Mismatch(f"functional TesterPresent answered {bytes(answer or b'').hex(' ')} on 0x{RSP_ID:X}")
    t.silent(b"\x22\x12\x34", functional=True, why="NRC 0x31 is not sent for functional requests")
    t.silent(b"\x99\x00", functional=True, why="NRC 0x11 is not sent for functional requests")
    t.silent(b"\x10\x7a", functional=True, why="NRC 0x12 is not sent for functional requests")
    for sub in (0x01, 0x02, 0x03):
        t.reset(bytes([0x11, sub]), bytes([0x51, sub]))
    t.reset(b"\x11\x81", None)
    t.expect(b"\x22\xfd\x00", "62fd00 00 00 01 01".replace(" ", ""), why="reset cause software")


def recovery_mode(t: Tester) -> None:
    """Section 10 step 4a and section 2's last column: the minimal server of a board without a valid image."""
    t.expect(b"\x22\xf1\x89", b"\x62\xf1\x89" + b"RECOVERY")
    t.expect(b"\x22\xf1\x95", b"\x62\xf1\x95" + b"RECOVERY+recovery")
    t.expect(b"\x22\xf1\xa0", b"\x62\xf1\xa0")
    t.expect(b"\x22\xfd\x00", "62fd00 01 00 0[01] 0[0-4]".replace(" ", ""))
    t.expect_status(RECOVERY, NO_VALID_IMAGE, why="recovery mode")
    mark = time.time()
    t.expect(b"\x10\x03", b"\x50\x03" + TIMING)
    t.unlock(0x61)
    t.nrc(b"\x2e\xfd\x20\x7b\x7d", CNC, why="0x2E in recovery mode")
    _programming(t)
    t.nrc(b"\x31\x01\x03\x01\x00", ROOR, why="TEST activation in recovery mode")
    t.nrc(b"\x31\x01\xff\x02", CNC, why="FF02 in recovery mode")
    t.nrc(_request_download(PROFILE_ADDRESS, 16), CNC, why="no configuration packages in recovery mode")
    t.expect(b"\x10\x01", b"\x50\x01" + TIMING)
    if any(ts >= mark and m.arbitration_id == SOC_CORE_ID for ts, m in list(t.frames)):
        raise Mismatch("periodic frames in recovery mode")


# ------------------------------------------------------------------ benches
def private_bench(tmp_path: Path, *, fd: bool, defects: tuple[str, ...] = ()) -> BenchConfig:
    """The in-process bench on a `virtual` channel of its own; S3 and the board's delays shortened."""
    cfg = load_bench(ROOT / "benches/sim-inproc.yaml")
    assert cfg.sim is not None
    tag = uuid.uuid4().hex[:10]
    sim = cfg.sim.model_copy(update={"flash_file": tmp_path / f"conformance-{tag}.flash", "flash_timing": "realistic",
                                     "erase_sector_ms": 15.0, "program_us_per_phrase": 1.0, "sa_lockout_s": 1.0,
                                     "charge_rampdown_s": 0.3, "defects": list(defects)})
    can_cfg = cfg.can.model_copy(update={"channel": f"conformance-{tag}", "pacing": False, "fd": fd,
                                         "data_bitrate": 2_000_000 if fd else None})
    profile = cfg.profile.model_copy(update={"uds": cfg.profile.uds.model_copy(update={"s3_s": 2.0})})
    tester = cfg.tester.model_copy(update={"host_margin_ms": 500})
    return cfg.model_copy(update={"bench": f"conformance-{tag}", "sim": sim, "can": can_cfg, "profile": profile,
                                  "tester": tester})


@contextlib.contextmanager
def walking(cfg: BenchConfig, fd: bool) -> Iterator[Tester]:
    with running_bench(cfg, power_on=True) as (_bench, effective), second_client(effective, fd=fd) as tester:
        tester.wait_up()
        try:
            yield tester
        finally:
            tester.check_frames()


CHAPTERS: dict[str, Callable[[Tester], None]] = {
    "default_session": default_session, "sessions": sessions, "security_access": security_access,
    "write_did": write_did, "download_rules": download_rules,
}


@pytest.mark.integration
@pytest.mark.parametrize("fd", [False, True], ids=["classic", "fd"])
def test_a_second_client_walks_every_service_and_nrc_of_the_contract(tmp_path: Path, fd: bool) -> None:
    cfg = private_bench(tmp_path, fd=fd)
    image = load_image("1.1.0", cfg)
    with walking(cfg, fd) as tester:
        for chapter in CHAPTERS.values():
            chapter(tester)
        update_and_activation(tester, image)
        s3_and_tester_present(tester, image)
        functional_and_resets(tester)
        default_session(tester)  # after the update: the same answers, the history and backup filled


@pytest.mark.integration
@pytest.mark.parametrize("fd", [False, True], ids=["classic", "fd"])
def test_a_second_client_finds_the_recovery_server(tmp_path: Path, fd: bool) -> None:
    cfg = private_bench(tmp_path, fd=fd)
    assert cfg.sim is not None
    with running_bench(cfg):
        pass  # a factory-new flash file
    flash = bytearray(Path(cfg.sim.flash_file).read_bytes())
    start = cfg.flash_layout.primary_offset
    flash[start:start + 64] = bytes(64)  # the primary image's header is gone; the secondary slot is empty
    Path(cfg.sim.flash_file).write_bytes(bytes(flash))
    with walking(cfg, fd) as tester:
        recovery_mode(tester)


@pytest.mark.integration
@pytest.mark.parametrize(("defect", "chapter"), [
    ("s3_never_expires", "s3"),
    ("tester_present_ignored", "s3"),
    ("security_access_never_locks_out", "security_access"),
    ("wrong_block_sequence_accepted", "download_rules"),
    ("endless_transfer_data_accepted", "download_rules"),
    ("short_download_accepted", "download_rules"),
])
def test_the_walk_catches_a_defective_board(tmp_path: Path, defect: str, chapter: str) -> None:
    """The walk is no check that cannot fail: each chapter goes red on a board that breaks its promise."""
    cfg = private_bench(tmp_path, fd=False, defects=(defect,))
    image = load_image("1.1.0", cfg)
    with walking(cfg, False) as tester:
        with pytest.raises(Mismatch) as caught:
            if chapter == "s3":
                s3_and_tester_present(tester, image)
            else:
                CHAPTERS[chapter](tester)
    print(f"{defect}: {str(caught.value).splitlines()[0]}")
