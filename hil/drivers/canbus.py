"""CAN bus factory, frame-time arithmetic and `PacedBus` (a virtual bus that takes real time per frame).

Frame lengths follow docs/can-limits.md: classic CAN 2.0A with worst-case (or no)
bit stuffing; CAN FD with bit-rate switch, arbitration + tail at the nominal rate and the data
phase + CRC field at the data rate. `isotp_ceiling_kib_s` is the per-TransferData-block ceiling a
flasher's throughput is compared against.
"""

from __future__ import annotations

import collections
import copy
import ctypes
import logging
import os
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable, Literal

import can
import cantools
from can.interfaces.udp_multicast import UdpMulticastBus
from can.interfaces.udp_multicast.utils import pack_message, unpack_message
from can.interfaces.virtual import VirtualBus

from hil.bench.config import CanConfig
from hil.errors import BenchBroken, BenchConfigError

log = logging.getLogger(__name__)

Stuffing = Literal["worst", "none"]

#: Valid CAN FD payload lengths above 8 bytes (DLC 9..15).
FD_LENGTHS = (12, 16, 20, 24, 32, 48, 64)
#: Python's sleep overshoot that PacedBus absorbs so the long-run frame rate stays exact.
ABSORB_S = 0.002
#: prctl(2) option that sets the calling thread's timer slack.
PR_SET_TIMERSLACK = 29
#: Receive buffer of a udp_multicast socket: the default (~212 KB) drops bursts.
UDP_RCVBUF_BYTES = 4 * 1024 * 1024
#: A udp_multicast receiver holds a frame stamped with a crossing time still ahead by at most this (see
#: `PacedBus` early forwarding); a stamp further ahead is no pacing (another clock) and is delivered at once.
HOLD_MAX_S = 0.05
#: The last stretch of such a hold is spent polling the clock, not asleep: a sleep ends 40-120 us late on a
#: shared 2-core host (p50-p99, measured), and the frame that ends a turnaround would reach its receiver that late.
HOLD_SPIN_S = 80e-6


def fd_length(n_bytes: int) -> int:
    """Bytes a CAN FD frame carries for `n_bytes` of payload (DLC rounding up to 12/16/20/24/32/48/64)."""
    if n_bytes < 0 or n_bytes > 64:
        raise ValueError(f"a CAN FD frame carries 0..64 bytes, got {n_bytes}")
    if n_bytes <= 8:
        return n_bytes
    return next(size for size in FD_LENGTHS if size >= n_bytes)


def _stuff(stuffable_bits: int, stuffing: Stuffing) -> int:
    """Worst-case stuff bits: one per 4 bits after the first of a stuffable region."""
    if stuffing == "none":
        return 0
    if stuffing == "worst":
        return (stuffable_bits - 1) // 4
    raise ValueError(f"stuffing must be 'worst' or 'none', got {stuffing!r}")


def fd_phase_bits(n_bytes: int, *, stuffing: Stuffing = "worst") -> tuple[int, int]:
    """CAN FD (11-bit ID): (bits at the nominal rate, bits at the data rate)."""
    n = fd_length(n_bytes)
    crc_field = 27 if n <= 16 else 32  # stuff count + CRC-17/21 + fixed stuff bits
    nominal = 17 + _stuff(17, stuffing) + 13  # SOF..BRS, then CRC delimiter, ACK, EOF, intermission
    data = 5 + 8 * n + _stuff(5 + 8 * n, stuffing) + crc_field  # ESI + DLC + data, then the CRC field
    return nominal, data


def frame_bits(n_bytes: int, *, fd: bool = False, stuffing: Stuffing = "worst") -> int:
    """Bits of one 11-bit-ID data frame with `n_bytes` of payload (FD: both phases added)."""
    if fd:
        return sum(fd_phase_bits(n_bytes, stuffing=stuffing))
    if n_bytes < 0 or n_bytes > 8:
        raise ValueError(f"a classic CAN frame carries 0..8 bytes, got {n_bytes}")
    return 8 * n_bytes + 47 + _stuff(34 + 8 * n_bytes, stuffing)


def frame_time_s(n_bytes: int, *, fd: bool = False, bitrate: int, data_bitrate: int | None = None,
                 stuffing: Stuffing = "worst") -> float:
    """Seconds one frame occupies the bus. FD without `data_bitrate` (no bit-rate switch) runs at `bitrate`."""
    if not fd:
        return frame_bits(n_bytes, stuffing=stuffing) / bitrate
    nominal, data = fd_phase_bits(n_bytes, stuffing=stuffing)
    return nominal / bitrate + data / (data_bitrate or bitrate)


def isotp_frames(block_len: int, *, fd: bool) -> int:
    """CAN frames of one ISO-TP message of `block_len` bytes (first frame + consecutive frames), normal addressing."""
    tx_dl = 64 if fd else 8
    ff_payload = tx_dl - 2 if block_len <= 0xFFF else tx_dl - 6  # lengths > 4095 need the 32-bit escape
    if block_len <= tx_dl - (1 if tx_dl == 8 else 2):
        return 1
    rest = block_len - ff_payload
    return 1 + -(-rest // (tx_dl - 1))


def isotp_ceiling_kib_s(block_len: int, *, fd: bool, bitrate: int, data_bitrate: int | None = None,
                        stuffing: Stuffing = "worst") -> float:
    """Firmware KiB/s ceiling of TransferData blocks of `block_len` bytes (SID + counter + data).

    Per block: first frame and consecutive frames (all full-size: 8 bytes classic, 64 FD), one
    flow-control frame (block size 0) and the positive response (8-byte frames); L - 2 firmware bytes.
    """
    tx_dl = 64 if fd else 8
    full = frame_time_s(tx_dl, fd=fd, bitrate=bitrate, data_bitrate=data_bitrate, stuffing=stuffing)
    short = frame_time_s(8, fd=fd, bitrate=bitrate, data_bitrate=data_bitrate, stuffing=stuffing)
    seconds = isotp_frames(block_len, fd=fd) * full + 2 * short
    return (block_len - 2) / seconds / 1024.0


class _BusWrapper(can.BusABC):
    """A python-can bus wrapping another: filters, fileno and shutdown go to the inner bus."""

    def __init__(self, inner: can.BusABC, channel_info: str) -> None:
        self._inner = inner
        self.channel_info = channel_info
        self._can_protocol = inner.protocol
        super().__init__(channel=getattr(inner, "channel", None))  # type: ignore[arg-type]

    @property
    def inner(self) -> can.BusABC:
        """The wrapped bus."""
        return self._inner

    def _apply_filters(self, filters: Any) -> None:
        self._inner.set_filters(filters)

    def fileno(self) -> int:
        return self._inner.fileno()

    def shutdown(self) -> None:
        """Shut the inner bus down too."""
        super().shutdown()
        self._inner.shutdown()

    def release(self) -> None:
        """Done with the wrapper; the inner bus stays open for whoever opened it (python-can's `__del__`
        would otherwise warn, and shut the inner bus down with the wrapper whenever it is collected)."""
        can.BusABC.shutdown(self)


def _fine_timer_slack() -> None:
    """Linux: the calling thread's sleeps end within ~1 us of their deadline instead of the default 50 us.

    A paced frame is forwarded when its sleep ends: with Linux's timer slack every flow control,
    response and first frame reached the peer 50-90 us after it crossed (measured), and a classic
    sender with 270 us per frame spent a fifth of each frame oversleeping.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)  # nanoseconds, this thread only
        except (OSError, AttributeError):
            pass  # no prctl: sleeps keep the default slack


def _fine_timer_slack_once(thread_state: threading.local) -> None:
    """`_fine_timer_slack` for the calling thread, the first time it gets here (`thread_state` remembers)."""
    if not getattr(thread_state, "fine_slack", False):
        thread_state.fine_slack = True
        _fine_timer_slack()


def _hold_until(wall_deadline: float, fine: threading.local) -> None:
    """Return when the wall clock reaches `wall_deadline` (at most `HOLD_MAX_S` ahead): sleep, then poll the clock."""
    ahead = wall_deadline - time.time()
    if ahead <= 0 or ahead > HOLD_MAX_S:
        return
    deadline = time.monotonic() + ahead  # the monotonic clock from here: the wall clock may be stepped
    if ahead > HOLD_SPIN_S:
        _fine_timer_slack_once(fine)
        time.sleep(ahead - HOLD_SPIN_S)
    while time.monotonic() < deadline:
        pass  # at most HOLD_SPIN_S (plus nothing when the sleep overslept): holds this process's GIL that long


class PacedBus(_BusWrapper):
    """Wraps a (virtual) bus so `send()` returns only once the frame would have crossed a real bus.

    Bus time is kept as `free_at` on the monotonic clock: a frame starts when the bus is free (or now,
    if the sender was idle), and is forwarded to the inner bus at its end. A sender less than
    `ABSORB_S` behind `free_at` keeps the schedule, so sleep overshoot does not lower the long-run
    rate. Frames received from other nodes mark the bus busy until their arrival (they have crossed
    by then); the next frame after one starts no earlier than when it is sent, so turnaround time
    (flow control, responses) is real bus idle time. Thread-safe: several senders share one schedule.

    `early_forward` (udp_multicast between processes, whose receivers hold frames: `_SenderStampedUdpBus`):
    a frame without a timestamp is handed to the inner bus when it *starts*, stamped with the wall-clock
    time at which it has crossed, and `send()` still returns only once it has crossed. The receiving
    process delivers it at that time, not before - so the peer sees it exactly when a real bus would
    have carried it, instead of a host hop (~0.1 ms of loopback UDP and a wake-up) later. Every
    turnaround of an ISO-TP transfer (first frame -> flow control, last frame -> response) paid that hop
    twice per block. A frame the sender stamped itself (the virtual board's CAN controller, see
    hil/sim/board.py `_can_tx`) keeps its stamp and is forwarded once it has crossed, as without the flag.
    """

    def __init__(self, inner: can.BusABC, *, bitrate: int, data_bitrate: int | None = None,
                 stuffing: Stuffing = "worst", echoes_own: bool = False, early_forward: bool = False,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__(inner, f"paced {getattr(inner, 'channel_info', inner)}")
        self.bitrate = bitrate
        self.data_bitrate = data_bitrate
        self.stuffing: Stuffing = stuffing
        self._clock = clock
        self._sleep = sleep
        # Wall clock = monotonic + this, taken once: a stamp read from both clocks per frame is off by whatever
        # preempts the thread between the two reads, and consecutive stamps would not keep the frames' spacing.
        self._wall_offset = wall() - clock()
        self.early_forward = early_forward
        self._lock = threading.Lock()
        self._sender = threading.local()  # per sending thread: its timer slack is set
        #: Monotonic time at which the bus is free again.
        self.free_at = 0.0
        #: Accounting: frames paced and the bus time they took.
        self.frames_sent = 0
        self.busy_s = 0.0
        #: Accounting: frames received from other nodes and the bus time they took (at this bus's bit rates).
        self.foreign_frames = 0
        self.foreign_busy_s = 0.0
        self._after_rx = False  # free_at was last set by a received frame, not by our own schedule
        # An inner bus that hands its own frames back (receive_own_messages): those are not foreign traffic.
        self._own: collections.deque[tuple[int, bytes]] | None = collections.deque(maxlen=256) if echoes_own else None

    def frame_time(self, msg: can.Message) -> float:
        """Bus time of `msg` at this bus's bit rates."""
        return frame_time_s(len(msg.data), fd=msg.is_fd, bitrate=self.bitrate,
                            data_bitrate=self.data_bitrate if msg.bitrate_switch else None, stuffing=self.stuffing)

    def reserve(self, msg: can.Message) -> float:
        """Book the bus for `msg`; return the monotonic time at which it has crossed."""
        return self._book(msg)[1]

    def _book(self, msg: can.Message) -> tuple[float, float]:
        """Book the bus for `msg`: the monotonic times at which it starts and has crossed."""
        duration = self.frame_time(msg)
        with self._lock:
            now = self._clock()
            # Absorb only our own sleep overshoot: after a foreign frame the bus was idle until we send.
            start = self.free_at if now - self.free_at < ABSORB_S and not self._after_rx else max(now, self.free_at)
            self._after_rx = False
            self.free_at = start + duration
            self.frames_sent += 1
            self.busy_s += duration
            if self._own is not None:
                self._own.append((msg.arbitration_id, bytes(msg.data)))
            return start, self.free_at

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Block until `msg` has crossed the bus; the inner bus has it then (or, `early_forward`, from its start)."""
        if msg.is_fd and self._can_protocol is can.CanProtocol.CAN_20:
            raise can.CanOperationError("cannot send a CAN FD frame on a classic CAN bus (fd: false)")
        start, crossed = self._book(msg)
        if self.early_forward and not msg.timestamp:
            self._wait_until(start)  # another sender's frame of this process may still be on the bus
            stamped = copy.copy(msg)
            stamped.timestamp = crossed + self._wall_offset
            self._inner.send(stamped, timeout)
            self._wait_until(crossed)
            return
        self._wait_until(crossed)
        self._inner.send(msg, timeout)

    def _wait_until(self, deadline: float) -> None:
        delay = deadline - self._clock()
        if delay > 0:
            _fine_timer_slack_once(self._sender)
            self._sleep(delay)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        msg = self._inner.recv(timeout)  # the inner bus applies the filters (see _apply_filters)
        if msg is not None:
            self._note_received(msg)
        return msg, True

    def _note_received(self, msg: can.Message) -> None:
        with self._lock:
            if self._own is not None:
                key = (msg.arbitration_id, bytes(msg.data))
                if key in self._own:
                    self._own.remove(key)
                    return
            self.foreign_frames += 1
            self.foreign_busy_s += self.frame_time(msg)
            now = self._clock()
            if now >= self.free_at:
                self.free_at = now
                self._after_rx = True


class TxTap(_BusWrapper):
    """Wraps the tester's bus so every frame it transmits is also handed to `on_sent` (for the trace).

    python-can interfaces differ: `virtual` never echoes a sender's own frames, SocketCAN/PCAN/Kvaser
    only with `receive_own_messages` (`open_bus`'s udp_multicast drops its loopback echoes). So the
    tester's frames are traced from the sending side on every interface, and `is_echo` tells the
    receive path which received frames are those echoes (to be left out of the trace, not counted twice).
    """

    def __init__(self, inner: can.BusABC, on_sent: Callable[[can.Message], None], *, echoes_own: bool) -> None:
        super().__init__(inner, getattr(inner, "channel_info", str(inner)))
        self._on_sent = on_sent
        self._echoes: collections.deque[tuple[int, bytes]] | None = collections.deque(maxlen=256) if echoes_own else None
        self._echo_lock = threading.Lock()

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Send on the inner bus, then report the frame as transmitted (`is_rx=False`, send time)."""
        if self._echoes is not None:
            with self._echo_lock:
                self._echoes.append((msg.arbitration_id, bytes(msg.data)))
        self._inner.send(msg, timeout)
        sent = copy.copy(msg)
        sent.is_rx = False
        sent.timestamp = time.time()
        self._on_sent(sent)

    def is_echo(self, msg: can.Message) -> bool:
        """True for a received frame that is this bus's own transmission coming back."""
        if not msg.is_rx:
            return True  # receive_own_messages: the interface marks its echoes
        if self._echoes is None:
            return False
        key = (msg.arbitration_id, bytes(msg.data))
        with self._echo_lock:
            if key in self._echoes:
                self._echoes.remove(key)
                return True
        return False

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        return self._inner.recv(timeout), True  # the inner bus applies the filters


def echoes_own_frames(cfg: CanConfig) -> bool:
    """Whether the bus `open_bus` makes for `cfg` hands a sender its own frames back: only when the bench file
    asks (`receive_own_messages`); udp_multicast's loopback echoes are dropped by the bus itself."""
    return bool(cfg.args.get("receive_own_messages"))


def load_dbc(path: str | os.PathLike[str]) -> cantools.database.can.Database:
    """The bench's DBC as a cantools CAN database (a diagnostics database is refused by name)."""
    db = cantools.database.load_file(str(path))
    if not isinstance(db, cantools.database.can.Database):
        raise BenchConfigError(f"{path}: not a CAN database (DBC/KCD/ARXML), got {type(db).__name__}")
    return db


def _tune_multicast_socket(bus: can.BusABC) -> None:
    """Give a udp_multicast bus (python-can keeps the socket at `_multicast._socket`) a big receive buffer, and
    keep its frames on the loopback interface.

    The default receive buffer (~212 KB) drops bursts. python-can joins the group on the interface of the
    default route and sends there: every frame of a virtual bench went out on the host's network link (TTL 1).
    Looped back, the frames stay on this host; a client that joined the group the default way (scapy, a plain
    python-can bus) still receives them and is still received (Linux delivers a group's datagrams to every
    socket bound to its port: IP_MULTICAST_ALL, on by default).
    """
    multicast = getattr(bus, "_multicast", None)
    sock = getattr(multicast, "_socket", None)
    if not isinstance(sock, socket.socket):
        log.warning("udp_multicast: no socket found to tune; bursts may be dropped, frames take the default route")
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF_BYTES)
    try:
        group = socket.inet_pton(sock.family, multicast.group)  # type: ignore[union-attr]
        if sock.family == socket.AF_INET:
            loopback = socket.inet_aton("127.0.0.1")
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, loopback)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group + loopback)
        else:
            index = socket.if_nametoindex("lo")
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group + struct.pack("@I", index))
    except OSError as exc:
        log.warning("udp_multicast: cannot keep group %s on loopback (%s); frames take the default route",
                    multicast.group, exc)  # type: ignore[union-attr]


class _SenderStampedUdpBus(UdpMulticastBus):
    """udp_multicast that keeps the sender's frame timestamp when it set one (else the kernel's receive time),
    and never hands this bus its own frames back.

    The virtual board's CAN controller stamps each periodic frame with the end of its transmission
    (hil/sim/board.py `_can_tx`), as a real interface's hardware timestamp marks the end of the frame
    on the wire. The kernel's receive time would add the host's scheduling of the sending process,
    which is no property of the board. Frames sent without a timestamp (0) get the receive time as
    before. udp_multicast only carries virtual benches, so no real interface is affected.

    Frames stamped ahead of now (at most `HOLD_MAX_S`) are held until their stamp: a `PacedBus` with
    `early_forward` sends each frame at its start, stamped with its end on the bus. A receiver that is
    no `_SenderStampedUdpBus` (another client of the group, such as scapy or a raw python-can bus) may
    see such a frame up to one frame time early; its timestamp still says when it crossed.

    Own frames: the multicast socket receives everything sent to the group, its own sends included
    (python-can documents `receive_own_messages` as unsupported, the kernel loops them back anyway).
    Each echo cost a received frame's whole path - unpacking, the notifier, every listener, the
    ISO-TP stack's relay and main threads - and a tester's 4 KiB TransferData block is 585 of them,
    CPU that the paced sender and the receiver need on a 2-core host. They are dropped on arrival by
    their packed bytes, before anything is decoded.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._receiver = threading.local()  # per receiving thread: its timer slack is set
        #: Packed frames sent and not yet seen coming back (bounded: an echo lost to a full socket buffer ages out).
        self._unechoed: collections.deque[bytes] = collections.deque(maxlen=256)
        self._unechoed_lock = threading.Lock()

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        # python-can's UdpMulticastBus.send, remembering the packed bytes to recognise the echo.
        if self._can_protocol is not can.CanProtocol.CAN_FD and msg.is_fd:
            raise can.CanOperationError("cannot send FD message over bus with CAN FD disabled")
        data = pack_message(msg)
        with self._unechoed_lock:
            self._unechoed.append(data)
        self._multicast.send(data, timeout)

    def _own_echo(self, data: bytes) -> bool:
        with self._unechoed_lock:
            if data in self._unechoed:
                self._unechoed.remove(data)
                return True
        return False

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        # python-can's UdpMulticastBus._recv_internal, except that a sender's timestamp is kept and own frames dropped.
        result = self._multicast.recv(timeout)
        if not result:
            return None, False
        data, _, received = result
        if self._own_echo(data):
            return None, False  # BusABC.recv waits on for the rest of its timeout
        try:
            msg = unpack_message(data, check=True)
        except Exception as exc:
            raise can.CanOperationError("could not unpack received message") from exc
        if not msg.timestamp:
            msg.timestamp = received
        if self._can_protocol is not can.CanProtocol.CAN_FD and msg.is_fd:
            return None, False
        _hold_until(msg.timestamp, self._receiver)  # an early-forwarded frame (PacedBus): not before it has crossed
        return msg, False


class _SenderStampedVirtualBus(VirtualBus):
    """python-can's `virtual` bus delivering the sender's timestamp (frames sent without one: the send time)."""

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if not msg.timestamp:
            msg = copy.copy(msg)
            msg.timestamp = time.time()
        super().send(msg, timeout)


def open_bus(cfg: CanConfig, *, sender_stamps: bool = False) -> can.BusABC:
    """Open the python-can bus a bench file describes (paced when `cfg.pacing`).

    `sender_stamps` (the virtual board's side of an in-process `virtual` bus): frames keep the
    timestamp the board's CAN controller gave them (see `_SenderStampedUdpBus` for udp_multicast,
    where the receiving side keeps them).
    """
    args = dict(cfg.args)
    try:
        if cfg.interface == "udp_multicast":
            bus: can.BusABC = _SenderStampedUdpBus(channel=cfg.channel, fd=cfg.fd, **args)
            _tune_multicast_socket(bus)
        elif cfg.interface == "virtual":
            virtual = _SenderStampedVirtualBus if sender_stamps else VirtualBus
            bus = virtual(channel=cfg.channel, receive_own_messages=False, preserve_timestamps=sender_stamps,
                          protocol=can.CanProtocol.CAN_FD if cfg.fd else can.CanProtocol.CAN_20, **args)
        else:
            extra: dict[str, Any] = {"data_bitrate": cfg.data_bitrate} if cfg.data_bitrate is not None else {}
            timing = cfg.bit_timing()
            if timing is not None:
                extra["timing"] = timing  # python-can: takes precedence over the bare bit rates
            bus = can.Bus(interface=cfg.interface, channel=cfg.channel, bitrate=cfg.bitrate, fd=cfg.fd, **extra, **args)
    except (can.CanError, OSError, ImportError, ValueError, TypeError) as exc:
        raise BenchBroken(f"cannot open CAN interface {cfg.interface!r} channel {cfg.channel!r}: "
                          f"{type(exc).__name__}: {exc}") from exc
    if cfg.pacing:
        return PacedBus(bus, bitrate=cfg.bitrate, data_bitrate=cfg.data_bitrate, echoes_own=echoes_own_frames(cfg),
                        early_forward=isinstance(bus, _SenderStampedUdpBus))
    return bus
