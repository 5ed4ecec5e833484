"""`IsoTpLink`: can-isotp's protocol logic driven by the thread that uses it, frames from the bench's notifier.

can-isotp's threaded stack (`NotifierBasedCanStack`) runs the protocol in a main thread of its own: a
request is handed over to it, a completed message is handed back, and every received frame is handed to
it by the notifier thread. Each hand-over is a thread wake-up, ~0.1 ms on a shared 2-core host, and a
TransferData block waits on several of them in turn on each side (first frame -> flow control, last
consecutive frame -> response -> next request): a few per cent of the CAN FD ceiling
(benchmarks/README.md, `flash_throughput.py`). Here the same protocol logic - can-isotp's
`TransportLayerLogic`, with its timers, padding, flow control and error reporting - is driven by the thread
that sends and the thread that waits for a message. The notifier thread only queues the frames addressed
to this link; the thread that needs one is woken by it directly.

Used by the tester (`hil.drivers.uds.UdsClient`, through udsoncan's connection) and by the virtual board's
UDS server (`hil.sim.uds_server`), so both ends of the virtual bench speak ISO-TP through can-isotp.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

import can
import isotp

log = logging.getLogger(__name__)


class IsoTpLink:
    """One ISO-TP address pair on a python-can bus + notifier; thread-safe, one protocol pass at a time.

    `send` returns once the last frame of the message has crossed (the caller's thread sends the first
    frame itself and streams the consecutive frames); `recv` waits for a complete message. A thread that
    waits for frames does not hold the protocol lock, so another thread may send meanwhile (a server's
    response-pending answer while its handler works).
    """

    #: How long one wait for a frame lasts before the protocol's timers (N_Bs, N_Cr) are looked at again.
    POLL_S = 0.05
    #: Frames kept while nobody reads (a late response, a stray frame); beyond this the oldest are dropped.
    BACKLOG = 1024

    def __init__(self, bus: can.BusABC, notifier: can.Notifier, address: isotp.Address, params: dict[str, Any], *,
                 error_handler: Callable[[Exception], None] | None = None, name: str = "isotp") -> None:
        self.name = name
        self._bus = bus
        self._notifier = notifier
        self._rxid = address.get_rx_arbitration_id()
        self._frames: collections.deque[isotp.CanMessage] = collections.deque()
        self._arrival = threading.Condition()  # guards _frames; the notifier thread notifies on every frame
        self._dropped = 0
        self._lock = threading.RLock()  # one thread drives the protocol at a time
        self._may_block = False
        self._sending: isotp.TransportLayerLogic.SendRequest | None = None  # the one `send` queued and drives
        self._logic = isotp.TransportLayerLogic(self._read, self._write, address, error_handler=error_handler,
                                                params={**params, "blocking_send": False}, post_send_callback=self._queued)
        self._listening = False
        self._stopped = threading.Event()  # set by stop(): a send or wait in progress gives up at once

    @property
    def params(self) -> Any:
        """can-isotp's parameters of this link (`isotp.TransportLayerLogic.Params`)."""
        return self._logic.params

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Listen on the notifier (frames for this link are queued from now on)."""
        self._stopped.clear()
        if not self._listening:
            self._notifier.add_listener(self._on_frame)
            self._listening = True

    def stop(self) -> None:
        """Stop listening; a send in progress (another thread) gives up, what was queued or half sent is dropped."""
        self._stopped.set()
        if self._listening:
            self._listening = False
            try:
                self._notifier.remove_listener(self._on_frame)
            except ValueError:
                pass
        with self._arrival:
            self._arrival.notify_all()  # a thread waiting for a frame looks at the stop now
        self.discard_received()
        self.abort_send()

    # ------------------------------------------------------------------ the CAN side
    def _on_frame(self, msg: can.Message) -> None:
        """Notifier listener (the notifier thread): a frame for this link is queued and its reader woken."""
        if msg.arbitration_id != self._rxid or msg.is_error_frame or msg.is_remote_frame:
            return
        frame = isotp.CanMessage(arbitration_id=msg.arbitration_id, data=bytes(msg.data), extended_id=msg.is_extended_id,
                                 is_fd=msg.is_fd, bitrate_switch=msg.bitrate_switch)
        with self._arrival:
            if len(self._frames) >= self.BACKLOG:
                self._frames.popleft()
                self._dropped += 1
                if self._dropped == 1 or self._dropped % self.BACKLOG == 0:
                    log.warning("%s: %d frames unread, %d dropped so far (oldest first)", self.name, self.BACKLOG,
                                self._dropped)
            self._frames.append(frame)
            self._arrival.notify_all()

    def _read(self, timeout: float) -> isotp.CanMessage | None:
        # can-isotp's rxfn: it reads until a read returns nothing, so only the first read of a pass may wait,
        # and a send waits for frames only until its message is out (a flow control; never after its last frame).
        sending = self._sending
        if sending is not None and sending.complete_event.is_set():
            self._may_block = False
        with self._arrival:
            if not self._frames and self._may_block and timeout > 0:
                self._may_block = False
                self._arrival.wait(timeout)
            return self._frames.popleft() if self._frames else None

    def _write(self, msg: isotp.CanMessage) -> None:
        self._bus.send(can.Message(arbitration_id=msg.arbitration_id, data=msg.data, is_extended_id=msg.is_extended_id,
                                   is_fd=msg.is_fd, bitrate_switch=msg.bitrate_switch))

    def _queued(self, request: isotp.TransportLayerLogic.SendRequest) -> None:
        self._sending = request  # can-isotp's post-send callback, inside `send` (the lock is held)

    def _pass(self, wait_s: float) -> None:
        """One protocol pass, as can-isotp's main thread makes it: consecutive frames paced by STmin, else
        receive (waiting at most `wait_s` for a first frame) and answer. Caller holds the lock."""
        logic = self._logic
        if not logic.is_rx_active() and logic.is_tx_transmitting_cf():
            delay = logic.next_cf_delay()
            if delay:
                time.sleep(delay)  # the peer's STmin
            logic.process(do_rx=False, do_tx=True)
        else:
            self._may_block = wait_s > 0
            logic.process(rx_timeout=0.0 if logic.is_tx_throttled() else wait_s)

    # ------------------------------------------------------------------ messages
    def send(self, payload: bytes, timeout: float) -> None:
        """Send `payload`; return once its last frame has crossed.

        Raises can-isotp's `BlockingSendTimeout` after `timeout` s, `BlockingSendFailure` when the protocol
        gave up (no flow control within N_Bs, an overflow answer; can-isotp logs which)."""
        with self._lock:
            self._logic.send(payload)
            request = self._sending
            assert request is not None
            try:
                deadline = time.monotonic() + timeout
                while not request.complete_event.is_set():
                    if self._stopped.is_set():
                        self.abort_send()
                        raise isotp.BlockingSendFailure(f"{self.name}: stopped while sending {len(payload)} bytes")
                    if time.monotonic() > deadline:
                        self.abort_send()
                        raise isotp.BlockingSendTimeout(f"{self.name}: {len(payload)} bytes not sent within {timeout:g} s")
                    self._pass(self.POLL_S)
            finally:
                self._sending = None
            if not request.success:
                raise isotp.BlockingSendFailure(f"{self.name}: sending {len(payload)} bytes failed")

    def recv(self, timeout: float) -> bytes | None:
        """The next complete message, or None after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._pass(0.0)  # what has arrived (answering a first frame with its flow control), and the timers
                message = self._logic.recv()
            if message is not None:
                return bytes(message)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopped.is_set():
                return None
            with self._arrival:  # wait without the protocol lock: another thread may send meanwhile
                if not self._frames:
                    self._arrival.wait(min(remaining, self.POLL_S))

    def discard_received(self) -> None:
        """Forget what has arrived and any message half received (before a new request)."""
        with self._lock:
            with self._arrival:
                self._frames.clear()
            self._logic.stop_receiving()
            self._logic.clear_rx_queue()

    def abort_send(self) -> None:
        """Give up a message half sent and whatever is queued behind it."""
        with self._lock:
            self._logic.stop_sending()
            self._logic.clear_tx_queue()
