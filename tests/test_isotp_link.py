"""`IsoTpLink`: can-isotp's protocol logic driven by the threads that use it, over python-can's `virtual` bus."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Iterator

import can
import isotp
import pytest

from hil.bench.dut_profile import DutProfile
from hil.drivers.isotp_link import IsoTpLink

TESTER, ECU = 0x7E0, 0x7E8


class _Node:
    """One end: a virtual bus, its notifier and a link."""

    def __init__(self, channel: str, txid: int, rxid: int, **params: object) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.notifier = can.Notifier(self.bus, [], timeout=0.05)
        self.frames: list[can.Message] = []
        self.notifier.add_listener(self.frames.append)
        isotp_params = {**DutProfile().isotp_params(False, False, blocking_send=True, timeout_ms=300), **params}
        self.link = IsoTpLink(self.bus, self.notifier, isotp.Address(isotp.AddressingMode.Normal_11bits, txid=txid, rxid=rxid),
                              isotp_params, name=f"node-{txid:X}")
        self.link.start()

    def close(self) -> None:
        self.link.stop()
        self.notifier.stop()
        self.bus.shutdown()


@pytest.fixture
def pair() -> Iterator[tuple[_Node, _Node]]:
    channel = f"link-{uuid.uuid4().hex}"
    tester, ecu = _Node(channel, TESTER, ECU), _Node(channel, ECU, TESTER)
    try:
        yield tester, ecu
    finally:
        tester.close()
        ecu.close()


def _serve_once(node: _Node, answer: bytes, seen: list[bytes]) -> threading.Thread:
    def run() -> None:
        request = node.link.recv(2.0)
        if request is not None:
            seen.append(request)
            node.link.send(answer, 2.0)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_multi_frame_request_and_response_each_driven_by_its_own_thread(pair: tuple[_Node, _Node]) -> None:
    tester, ecu = pair
    request, answer = bytes(range(256)) * 16, b"\x76" + bytes(300)
    seen: list[bytes] = []
    server = _serve_once(ecu, answer, seen)
    tester.link.send(request, 5.0)  # blocks until the last consecutive frame is out: the ECU's flow control came
    assert tester.link.recv(2.0) == answer
    server.join(2.0)
    assert seen == [request]
    # the wire: the tester's first frame, the ECU's flow control, consecutive frames; then the same the other way
    first = [m for m in tester.frames if m.arbitration_id == ECU][0]
    assert first.data[0] >> 4 == 3, f"the ECU's first frame on the wire is no flow control: {first}"


def test_recv_times_out_with_none_and_ignores_frames_for_other_addresses(pair: tuple[_Node, _Node]) -> None:
    tester, ecu = pair
    tester.bus.send(can.Message(arbitration_id=0x7DF, data=b"\x02\x3E\x00" + bytes(5), is_extended_id=False))
    started = time.monotonic()
    assert ecu.link.recv(0.2) is None
    assert time.monotonic() - started == pytest.approx(0.2, abs=0.1)


def test_send_without_flow_control_fails_after_n_bs(pair: tuple[_Node, _Node]) -> None:
    tester, ecu = pair
    ecu.link.stop()  # nobody answers the first frame
    started = time.monotonic()
    with pytest.raises(isotp.BlockingSendFailure):
        tester.link.send(bytes(100), 5.0)
    assert 0.25 < time.monotonic() - started < 1.5  # N_Bs is 300 ms here, not the 5 s wall


def test_stop_ends_a_send_waiting_for_flow_control_at_once(pair: tuple[_Node, _Node]) -> None:
    tester, ecu = pair
    ecu.link.stop()
    slow = _Node(f"link-{uuid.uuid4().hex}", TESTER, ECU, rx_flowcontrol_timeout=10_000)
    failure: list[BaseException] = []

    def send() -> None:
        try:
            slow.link.send(bytes(100), 30.0)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            failure.append(exc)
    t = threading.Thread(target=send, daemon=True)
    t.start()
    time.sleep(0.1)  # the first frame is out, the sender waits for flow control (10 s)
    started = time.monotonic()
    slow.close()
    t.join(2.0)
    assert not t.is_alive() and time.monotonic() - started < 1.0
    assert failure and isinstance(failure[0], isotp.BlockingSendFailure) and "stopped" in str(failure[0])


def test_a_waiting_receiver_does_not_keep_another_thread_from_sending(pair: tuple[_Node, _Node],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    tester, ecu = pair
    monkeypatch.setattr(IsoTpLink, "POLL_S", 10.0)  # a receiver that held the protocol lock would hold it 10 s
    got: list[bytes | None] = []
    waiter = threading.Thread(target=lambda: got.append(ecu.link.recv(10.0)), daemon=True)
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    ecu.link.send(b"\x7F\x31\x78", 5.0)  # a response-pending answer while the serving thread waits for frames
    assert time.monotonic() - started < 5.0
    assert tester.link.recv(1.0) == b"\x7F\x31\x78"
    ecu.link.stop()  # ends the waiter's wait at once
    waiter.join(2.0)
    assert got == [None]


def test_discard_received_drops_what_arrived_before_a_request(pair: tuple[_Node, _Node]) -> None:
    tester, ecu = pair
    ecu.link.send(b"\x7E\x00", 1.0)  # a late answer nobody waits for
    time.sleep(0.05)
    tester.link.discard_received()
    assert tester.link.recv(0.1) is None


def test_backlog_drops_the_oldest_frames_and_says_so(pair: tuple[_Node, _Node], caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tester, ecu = pair
    monkeypatch.setattr(IsoTpLink, "BACKLOG", 4)
    with caplog.at_level(logging.WARNING, logger="hil.drivers.isotp_link"):
        for n in range(6):
            ecu.bus.send(can.Message(arbitration_id=ECU, data=bytes([0x01, n]) + bytes(6), is_extended_id=False))
        deadline = time.monotonic() + 2.0
        while tester.link._dropped < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert tester.link._dropped == 2
    assert "4 frames unread" in caplog.text
    assert [tester.link.recv(0.1) for _ in range(4)] == [bytes([n]) for n in (2, 3, 4, 5)]
