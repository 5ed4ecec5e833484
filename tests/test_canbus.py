"""Frame times and ceilings vs the reference, PacedBus arithmetic, open_bus, CanChannel waits and traces."""

from __future__ import annotations

import gc
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import can
import pytest

from hil.bench import contract
from hil.drivers.canbus import (PacedBus, fd_length, frame_bits, frame_time_s, isotp_ceiling_kib_s, isotp_frames, open_bus)
from hil.bench.config import CanConfig
from hil.drivers.can import CanChannel
from hil.errors import BenchBroken, HilTimeout

from bench_ports import private_ports

ROOT = Path(__file__).resolve().parents[1]
DBC = ROOT / "benches/dbc/bms.dbc"


# ---------------------------------------------------------------------- frame arithmetic (can-bus-limits.md)
def test_classic_frame_bits_and_times() -> None:
    assert frame_bits(8, stuffing="none") == 111
    assert frame_bits(8) == 135
    assert frame_time_s(8, bitrate=500_000, stuffing="none") == pytest.approx(222e-6)
    assert frame_time_s(8, bitrate=500_000) == pytest.approx(270e-6)
    assert 1 / frame_time_s(8, bitrate=500_000) == pytest.approx(3704, abs=1)
    with pytest.raises(ValueError):
        frame_bits(9)


def test_fd_frame_times_with_bit_rate_switch() -> None:
    kw = dict(fd=True, bitrate=500_000, data_bitrate=2_000_000)
    assert frame_time_s(64, stuffing="none", **kw) == pytest.approx(334.5e-6)
    assert frame_time_s(64, **kw) == pytest.approx(407e-6)
    # DLC rounding: 33..48 bytes cost a 48-byte frame; CRC-17 up to 16 bytes, CRC-21 above
    assert fd_length(33) == 48 and fd_length(7) == 7 and fd_length(13) == 16
    assert frame_time_s(33, **kw) == frame_time_s(48, **kw)
    assert frame_bits(16, fd=True, stuffing="none") == 30 + 5 + 128 + 27
    assert frame_bits(20, fd=True, stuffing="none") == 30 + 5 + 160 + 32
    # without a data bit rate (no BRS) the whole frame runs at the nominal rate
    assert frame_time_s(64, fd=True, bitrate=500_000) == pytest.approx(frame_bits(64, fd=True) / 500_000)


def test_isotp_payload_ceilings_per_frame() -> None:
    classic = [7 / frame_time_s(8, bitrate=500_000, stuffing=s) / 1024 for s in ("none", "worst")]
    fd = [63 / frame_time_s(64, fd=True, bitrate=500_000, data_bitrate=2_000_000, stuffing=s) / 1024 for s in ("none", "worst")]
    assert classic == pytest.approx([30.8, 25.3], abs=0.05)
    assert fd == pytest.approx([183.9, 151.2], abs=0.05)


@pytest.mark.parametrize(("block", "fd", "expected"), [
    (4094, False, (30.67, 25.21)),
    (4094, True, (182.0, 149.6)),
    (4095, False, (30.6, 25.2)),
    (4095, True, (179.3, 147.4)),
])
def test_transfer_data_block_ceilings_match_the_reference(block: int, fd: bool, expected: tuple[float, float]) -> None:
    kw = dict(fd=fd, bitrate=500_000, data_bitrate=2_000_000 if fd else None)
    best = isotp_ceiling_kib_s(block, stuffing="none", **kw)
    worst = isotp_ceiling_kib_s(block, stuffing="worst", **kw)
    tol = 0.005 if (block, fd) == (4094, False) else 0.05  # as many decimals as the reference gives
    assert (best, worst) == pytest.approx(expected, abs=tol)


def test_isotp_frame_counts() -> None:
    assert isotp_frames(4094, fd=False) == 1 + 584  # 4094 fills the last consecutive frame
    assert isotp_frames(4094, fd=True) == 1 + 64
    assert isotp_frames(7, fd=False) == 1
    assert isotp_frames(4096, fd=False) == 1 + 585  # > 4095: 32-bit first frame carries only 2 bytes


# ---------------------------------------------------------------------- PacedBus with an injected clock
class FakeClock:
    """Monotonic clock and sleep for PacedBus; `overshoot` models a late wake-up."""

    def __init__(self, overshoot: float = 0.0) -> None:
        self.now = 100.0
        self.overshoot = overshoot
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds + self.overshoot
        self.slept += seconds


def _paced(clock: FakeClock, **kw: object) -> tuple[PacedBus, can.BusABC]:
    channel = f"paced-{uuid.uuid4().hex}"
    inner = can.Bus(interface="virtual", channel=channel)
    return PacedBus(inner, bitrate=500_000, clock=clock, sleep=clock.sleep, **kw), can.Bus(interface="virtual", channel=channel)


def test_paced_bus_accounts_exactly_the_frame_times_despite_sleep_overshoot() -> None:
    clock = FakeClock(overshoot=80e-6)  # every wake-up 80 us late, as time.sleep is
    bus, peer = _paced(clock)
    try:
        start = clock.now
        frames = [can.Message(arbitration_id=0x7E0, data=bytes(8), is_extended_id=False)] * 500
        for msg in frames:
            bus.send(msg)
        ft = frame_time_s(8, bitrate=500_000)
        assert bus.free_at - start == pytest.approx(500 * ft, rel=1e-9)
        assert bus.busy_s == pytest.approx(500 * ft, rel=1e-9) and bus.frames_sent == 500
        # overshoot was absorbed: the sender's clock ends within one overshoot of the schedule
        assert clock.now - bus.free_at == pytest.approx(80e-6, abs=1e-9)
        assert sum(1 for _ in iter(lambda: peer.recv(0), None)) == 500  # all forwarded
    finally:
        bus.shutdown()
        peer.shutdown()


def test_paced_bus_restarts_after_an_idle_sender_and_queues_behind_a_busy_bus() -> None:
    clock = FakeClock()
    bus, peer = _paced(clock)
    try:
        msg = can.Message(arbitration_id=0x180, data=bytes(8), is_extended_id=False)
        ft = frame_time_s(8, bitrate=500_000)
        bus.send(msg)
        clock.now += 0.010  # idle for 10 ms (> 2 ms): the next frame starts now, not at the old free_at
        bus.send(msg)
        assert bus.free_at == pytest.approx(clock.now)
        assert bus.free_at == pytest.approx(100.0 + ft + 0.010 + ft)
        # a frame from another node marks the bus busy until it arrived
        clock.now += 0.005
        bus._note_received(can.Message(arbitration_id=0x7E8, data=bytes(8), is_extended_id=False))
        assert bus.free_at == pytest.approx(clock.now)
        # turnaround after a received frame is idle bus time, not absorbed like sleep overshoot
        clock.now += 0.0005
        bus.send(msg)
        assert bus.free_at == pytest.approx(clock.now)
        assert clock.now - 0.0005 - ft == pytest.approx(100.0 + 2 * ft + 0.015)
    finally:
        bus.shutdown()
        peer.shutdown()


def test_paced_bus_mixed_fd_frame_times_and_classic_refusal() -> None:
    clock = FakeClock()
    bus, peer = _paced(clock, data_bitrate=2_000_000)
    try:
        with pytest.raises(can.CanOperationError):
            bus.send(can.Message(arbitration_id=0x7E0, data=bytes(64), is_fd=True, bitrate_switch=True))
    finally:
        bus.shutdown()
        peer.shutdown()
    fd_inner = can.Bus(interface="virtual", channel=f"fd-{uuid.uuid4().hex}", protocol=can.CanProtocol.CAN_FD)
    fd_bus = PacedBus(fd_inner, bitrate=500_000, data_bitrate=2_000_000, clock=clock, sleep=clock.sleep)
    try:
        before = fd_bus.free_at = clock.now
        fd_bus.send(can.Message(arbitration_id=0x7E0, data=bytes(64), is_fd=True, bitrate_switch=True))
        fd_bus.send(can.Message(arbitration_id=0x7E0, data=bytes(8), is_fd=True, bitrate_switch=True))
        expected = sum(frame_time_s(n, fd=True, bitrate=500_000, data_bitrate=2_000_000) for n in (64, 8))
        assert fd_bus.free_at - before == pytest.approx(expected)
    finally:
        fd_bus.shutdown()


def test_paced_bus_ignores_its_own_echoes() -> None:
    clock = FakeClock()
    bus, peer = _paced(clock, echoes_own=True)
    try:
        msg = can.Message(arbitration_id=0x7E0, data=b"\x01" * 8, is_extended_id=False)
        bus.send(msg)
        free = bus.free_at
        clock.now += 0.001
        bus._note_received(msg)  # udp_multicast hands our own frame back: not foreign traffic
        assert bus.free_at == free
        assert bus.foreign_frames == 0 and bus.foreign_busy_s == 0.0
        bus._note_received(can.Message(arbitration_id=0x7E8, data=bytes(8), is_extended_id=False))
        assert bus.foreign_frames == 1 and bus.foreign_busy_s == pytest.approx(frame_time_s(8, bitrate=500_000))
    finally:
        bus.shutdown()
        peer.shutdown()


def test_paced_bus_early_forward_hands_a_frame_over_at_its_start_stamped_with_its_crossing() -> None:
    clock = FakeClock(overshoot=30e-6)
    channel = f"early-{uuid.uuid4().hex}"
    inner = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
    handed: list[tuple[float, float]] = []  # (fake time of the hand-over, the frame's stamp)
    real_send = inner.send
    inner.send = lambda msg, timeout=None: (handed.append((clock.now, msg.timestamp)), real_send(msg, timeout))[1]  # type: ignore[method-assign]
    bus = PacedBus(inner, bitrate=500_000, early_forward=True, clock=clock, sleep=clock.sleep, wall=clock)
    peer = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
    try:
        ft = frame_time_s(8, bitrate=500_000)
        msg = can.Message(arbitration_id=0x7E0, data=bytes(8), is_extended_id=False)
        bus.send(msg)
        assert handed == [(100.0, pytest.approx(100.0 + ft))]  # handed over at its start, stamped with its end
        assert clock.now >= 100.0 + ft  # send() still returns once it has crossed
        assert msg.timestamp == 0.0  # the caller's message is not changed
        got = peer.recv(1.0)
        assert got is not None and got.timestamp == pytest.approx(100.0 + ft)
        # a frame its sender stamped (the board's CAN controller) keeps its stamp and goes once it has crossed
        stamped = can.Message(arbitration_id=0x180, data=bytes(8), is_extended_id=False, timestamp=42.0)
        before = clock.now
        bus.send(stamped)
        assert handed[-1] == (pytest.approx(clock.now), 42.0) and clock.now >= before + ft
    finally:
        bus.shutdown()
        peer.shutdown()


def _udp_pair(pacing: bool, fd: bool = False) -> tuple[can.BusABC, can.BusABC]:
    from bench_ports import udp_bus_pair

    kw: dict[str, Any] = {"fd": True, "data_bitrate": 2_000_000} if fd else {}
    return udp_bus_pair(DBC, pacing=pacing, **kw)


def test_udp_multicast_holds_a_frame_stamped_ahead_until_its_stamp() -> None:
    bus, peer = _udp_pair(pacing=False)
    try:
        ahead = time.time() + 0.03
        bus.send(can.Message(arbitration_id=0x7E0, data=bytes(8), is_extended_id=False, timestamp=ahead))
        got = peer.recv(2.0)
        assert got is not None and got.timestamp == ahead
        assert time.time() >= ahead, "delivered before the time it was stamped with"
        # a stamp further ahead than any frame is long is no pacing (another clock): delivered at once, stamp kept
        far = time.time() + 10.0
        bus.send(can.Message(arbitration_id=0x7E0, data=bytes(8), is_extended_id=False, timestamp=far))
        got = peer.recv(2.0)
        assert got is not None and got.timestamp == far and time.time() < far
    finally:
        bus.shutdown()
        peer.shutdown()


def test_paced_udp_multicast_never_delivers_a_frame_before_it_has_crossed() -> None:
    """Early forwarding hides the host's hop, not bus time: every frame reaches the peer at or after the end
    of its transmission, and the stamps are at least one frame time apart."""
    bus, peer = _udp_pair(pacing=True, fd=True)
    assert isinstance(bus, PacedBus) and bus.early_forward
    received: list[tuple[float, float]] = []
    try:
        frames = [can.Message(arbitration_id=0x7E0, data=bytes([n]) * 64, is_fd=True, bitrate_switch=True) for n in range(20)]
        sender = threading.Thread(target=lambda: [bus.send(m) for m in frames], daemon=True)
        sender.start()
        for _ in frames:
            got = peer.recv(2.0)
            assert got is not None
            received.append((time.time(), got.timestamp))
        sender.join(2.0)
        ft = frame_time_s(64, fd=True, bitrate=500_000, data_bitrate=2_000_000)
        assert all(arrival >= stamp for arrival, stamp in received), received
        stamps = [stamp for _, stamp in received]
        assert all(b - a >= ft * 0.999 for a, b in zip(stamps, stamps[1:])), stamps
    finally:
        bus.shutdown()
        peer.shutdown()


# ---------------------------------------------------------------------- open_bus
def test_open_bus_virtual_paced_and_unknown_interface() -> None:
    cfg = CanConfig(interface="virtual", channel=f"ob-{uuid.uuid4().hex}", pacing=True, dbc=DBC)
    bus = open_bus(cfg)
    try:
        assert isinstance(bus, PacedBus) and bus.bitrate == 500_000
    finally:
        bus.shutdown()
    broken = CanConfig(interface="slcan", channel="/dev/does-not-exist-hil", dbc=DBC)
    with pytest.raises(BenchBroken, match="slcan.*does-not-exist-hil"):
        open_bus(broken)


def test_open_bus_udp_multicast_enlarges_receive_buffer_and_refuses_fd_frames() -> None:
    import socket

    # python-can refuses port 0 for multicast (senders must know the port): a private group and port instead
    ports = private_ports()
    cfg = CanConfig(interface="udp_multicast", channel=ports.group, args={"port": ports.udp_port}, dbc=DBC)
    try:
        bus = open_bus(cfg)
    except BenchBroken as exc:  # pragma: no cover - a host without multicast on loopback
        pytest.skip(str(exc))
    try:
        sock = bus._multicast._socket  # type: ignore[attr-defined]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 1024 * 1024
        with pytest.raises(can.CanOperationError):
            bus.send(can.Message(arbitration_id=0x7E0, data=bytes(64), is_fd=True))
    finally:
        bus.shutdown()


def test_open_bus_udp_multicast_drops_its_own_frames_only() -> None:
    """The kernel loops a multicast socket's sends back to it; the bench's bus drops those echoes (each cost a
    received frame's whole path) and still receives a peer's frame, even one with the same bytes."""
    from bench_ports import udp_bus_pair

    bus, peer = udp_bus_pair(DBC)
    try:
        frame = can.Message(arbitration_id=0x7E0, data=b"\x21\x01\x02\x03\x04\x05\x06\x07", is_extended_id=False)
        bus.send(frame)
        got = peer.recv(2.0)
        assert got is not None and bytes(got.data) == bytes(frame.data)
        assert bus.recv(0.2) is None, "the bus handed its own frame back"
        peer.send(frame)  # the same bytes from another node are traffic
        got = bus.recv(2.0)
        assert got is not None and bytes(got.data) == bytes(frame.data)
        assert bus.recv(0.1) is None and peer.recv(0.1) is None
    finally:
        bus.shutdown()
        peer.shutdown()


def test_open_bus_udp_multicast_keeps_the_bench_on_loopback() -> None:
    """A virtual bench's frames go through the loopback interface, never out on the host's network link
    (python-can's default route); a client that joined the group the default way still hears them, and is heard.

    The plain client's own frames are sent on loopback too (its socket's IP_MULTICAST_IF): tests talk to
    loopback only, and which interface a client sends on does not matter to a bus that joined on loopback.
    """
    from bench_ports import udp_bus_pair
    from can.interfaces.udp_multicast import UdpMulticastBus

    bus, peer = udp_bus_pair(DBC)
    group, port = bus._multicast.group, bus._multicast.port  # type: ignore[attr-defined]
    plain = UdpMulticastBus(channel=group, port=port)  # python-can as it comes: joined on the default route
    plain._multicast._socket.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,  # type: ignore[attr-defined]
                                        socket.inet_aton("127.0.0.1"))
    try:
        frame = can.Message(arbitration_id=0x7E0, data=bytes(range(8)), is_extended_id=False)
        bus.send(frame)
        received = peer._multicast.recv(2.0)  # type: ignore[attr-defined]  # (datagram, sender address, time)
        assert received is not None and received[1][0] == "127.0.0.1", received
        got = plain.recv(2.0)
        assert got is not None and bytes(got.data) == bytes(range(8))
        plain.send(can.Message(arbitration_id=0x7E8, data=b"\x02\x7e\x00", is_extended_id=False))
        got = bus.recv(2.0)
        assert got is not None and got.arbitration_id == 0x7E8
    finally:
        plain.shutdown()
        bus.shutdown()
        peer.shutdown()


# ---------------------------------------------------------------------- CanChannel
@pytest.fixture
def channel_pair():
    name = f"chan-{uuid.uuid4().hex}"
    cfg = CanConfig(interface="virtual", channel=name, dbc=DBC)
    board = can.Bus(interface="virtual", channel=name)
    chan = CanChannel(cfg)
    try:
        yield chan, board
    finally:
        chan.close()
        board.shutdown()


def test_a_channel_given_a_bus_leaves_it_open_when_closed_and_collected(caplog: pytest.LogCaptureFixture) -> None:
    name = f"given-{uuid.uuid4().hex}"
    given, peer = (can.Bus(interface="virtual", channel=name) for _ in range(2))
    try:
        chan = CanChannel(CanConfig(interface="virtual", channel=name, dbc=DBC), bus=given)
        chan.close()
        del chan
        gc.collect()  # python-can's __del__ shuts a bus down that nobody did (and warns)
        assert "not properly shut down" not in caplog.text
        given.send(can.Message(arbitration_id=0x123, data=b"\x01", is_extended_id=False))
        received = peer.recv(1.0)
        assert received is not None and received.arbitration_id == 0x123, "the caller's bus was shut down"
    finally:
        given.shutdown()
        peer.shutdown()


def _soc(chan: CanChannel, soc: float) -> can.Message:
    spec = chan.db.get_message_by_name(contract.MSG_SOC_CORE)
    signals = {s.name: 0 for s in spec.signals}
    signals["SOC"] = soc
    return can.Message(arbitration_id=spec.frame_id, data=spec.encode(signals), is_extended_id=False)


def test_wait_for_matches_signals_and_since(channel_pair) -> None:
    import time

    chan, board = channel_pair
    t0 = time.monotonic()
    board.send(_soc(chan, 40.0))
    board.send(_soc(chan, 55.0))
    frame = chan.wait_for(contract.MSG_SOC_CORE, signals={"SOC": 55.0}, since=t0, timeout=1.0)
    assert frame.signals["SOC"] == pytest.approx(55.0) and frame.name == contract.MSG_SOC_CORE
    assert chan.wait_for(contract.MSG_SOC_CORE, predicate=lambda s: s["SOC"] < 50, since=t0, timeout=1.0).signals["SOC"] == 40.0
    assert chan.latest(contract.MSG_SOC_CORE) is not None
    # multiplexed: cantools decodes the group's signals only
    spec = chan.db.get_message_by_name(contract.MSG_CELL_VOLTAGES)
    board.send(can.Message(arbitration_id=spec.frame_id, is_extended_id=False,
                           data=spec.encode({"CellGroup": 1, "Cell04": 3.5, "Cell05": 3.6, "Cell06": 3.7})))
    cells = chan.wait_for(contract.MSG_CELL_VOLTAGES, signals={"CellGroup": 1}, since=t0, timeout=1.0)
    assert cells.signals["Cell05"] == pytest.approx(3.6) and "Cell01" not in cells.signals


def test_wait_for_timeout_lists_what_was_seen(channel_pair) -> None:
    chan, board = channel_pair
    board.send(_soc(chan, 12.5))
    chan.wait_for(contract.MSG_SOC_CORE, timeout=1.0, since=0.0)
    with pytest.raises(HilTimeout) as timed_out:
        chan.wait_for(contract.MSG_SOC_CORE, signals={"SOC": 99.0}, timeout=0.2, since=0.0)
    assert "SOC=12.5" in timed_out.value.seen and "BMS_SocCore" in str(timed_out.value)
    with pytest.raises(HilTimeout) as other:
        chan.wait_for(contract.MSG_UPDATE_STATUS, timeout=0.1)
    assert "no BMS_UpdateStatus frames" in other.value.seen and "SOC=12.5" in other.value.seen
    with pytest.raises(ValueError, match="unknown CAN message"):
        chan.wait_for("NoSuchMessage", timeout=0.1)


def test_recorder_and_trace_files(channel_pair, tmp_path: Path) -> None:
    chan, board = channel_pair
    blf, asc = tmp_path / "t/can.blf", tmp_path / "t/can.asc"
    chan.start_trace([blf, asc])
    with chan.recorder(contract.MSG_SOC_CORE) as frames:
        for soc in (10.0, 20.0, 30.0):
            board.send(_soc(chan, soc))
        board.send(can.Message(arbitration_id=0x7E8, data=b"\x03\x7F\x22\x31\xCC\xCC\xCC\xCC", is_extended_id=False))
        chan.wait_for(contract.MSG_SOC_CORE, signals={"SOC": 30.0}, since=0.0, timeout=1.0)
    assert [f.signals["SOC"] for f in frames] == [10.0, 20.0, 30.0]
    board.send(_soc(chan, 40.0))  # after the recorder closed: not collected
    chan.wait_for(contract.MSG_SOC_CORE, signals={"SOC": 40.0}, since=0.0, timeout=1.0)
    assert len(frames) == 3
    chan.stop_trace()
    for reader in (can.BLFReader(str(blf)), can.ASCReader(str(asc))):
        ids = [m.arbitration_id for m in reader]
        assert ids.count(0x180) == 4 and 0x7E8 in ids  # ISO-TP frames are traced though not decoded


def test_collect_gathers_frames_during_the_window(channel_pair) -> None:
    import threading

    chan, board = channel_pair
    timer = threading.Timer(0.05, lambda: board.send(_soc(chan, 77.0)))
    timer.start()
    frames = chan.collect(contract.MSG_SOC_CORE, 0.3)
    timer.join()
    assert [f.signals["SOC"] for f in frames] == [77.0]


def test_trace_has_each_tester_frame_once_on_an_interface_that_echoes(tmp_path: Path) -> None:
    """udp_multicast hands the tester its own frames back: traced once, as Tx, and never decoded as the DUT's."""
    ports = private_ports()
    group = ports.group
    cfg = CanConfig(interface="udp_multicast", channel=group, args={"port": ports.udp_port}, dbc=DBC)
    try:
        chan = CanChannel(cfg)
    except BenchBroken as exc:  # pragma: no cover - a host without multicast on loopback
        pytest.skip(str(exc))
    board = open_bus(cfg)  # the board's side of the bench: on loopback, like the tester's
    try:
        asc = tmp_path / "can.asc"
        chan.start_trace([asc])
        chan.bus.send(can.Message(arbitration_id=0x7E0, data=b"\x02\x10\x02\xCC\xCC\xCC\xCC\xCC", is_extended_id=False))
        chan.send(contract.MSG_SOC_CORE, {s.name: 0 for s in chan.db.get_message_by_name(contract.MSG_SOC_CORE).signals})
        board.send(can.Message(arbitration_id=0x7E8, data=b"\x06\x50\x02\x00\x32\x01\xF4\xCC", is_extended_id=False))
        board.send(_soc(chan, 42.0))
        chan.wait_for(contract.MSG_SOC_CORE, signals={"SOC": 42.0}, since=0.0, timeout=2.0)
        time.sleep(0.2)  # the echoes of the tester's frames arrive too (they must not be traced)
        assert [f.signals["SOC"] for f in chan.collect(contract.MSG_SOC_CORE, 0.0)] == []
        latest = chan.latest(contract.MSG_SOC_CORE)
        assert latest is not None and latest.signals["SOC"] == 42.0, "the tester's own SOC frame decoded as the DUT's"
        chan.stop_trace()
        frames = list(can.ASCReader(str(asc)))
        tx = [(m.arbitration_id, m.is_rx) for m in frames if not m.is_rx]
        rx = [(m.arbitration_id, m.is_rx) for m in frames if m.is_rx]
        assert sorted(tx) == [(0x180, False), (0x7E0, False)], frames
        assert sorted(rx) == [(0x180, True), (0x7E8, True)], frames
    finally:
        chan.close()
        board.shutdown()


def test_fd_bit_timing_reaches_python_can(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PCAN/Kvaser FD bench from YAML alone: open_bus hands python-can the BitTimingFd of the sample points."""
    from hil.drivers import canbus
    from hil.bench.config import CanTiming

    seen: dict[str, object] = {}
    real_bus = can.Bus

    def fake_bus(**kwargs: object) -> can.BusABC:
        seen.update(kwargs)
        return real_bus(interface="virtual", channel=f"fake-{uuid.uuid4().hex}")

    monkeypatch.setattr(canbus.can, "Bus", fake_bus)
    cfg = CanConfig(interface="pcan", channel="PCAN_USBBUS1", fd=True, data_bitrate=2_000_000, dbc=DBC,
                    timing=CanTiming(f_clock=80_000_000, sample_point=80.0, data_sample_point=75.0))
    open_bus(cfg).shutdown()
    timing = seen["timing"]
    assert isinstance(timing, can.BitTimingFd) and seen["interface"] == "pcan" and seen["fd"] is True
    assert timing.f_clock == 80_000_000 and timing.nom_sample_point == pytest.approx(80.0)
