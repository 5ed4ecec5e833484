"""Server side of UDS on ISO-TP for the simulated ECU: requests in, handler, responses out.

An `IsoTpLink` (can-isotp's protocol logic) in the server role receives physical requests; the thread
that receives a request hands it to `handler(request) -> response | None` and sends the response itself,
as a single-threaded ECU does (no thread hand-over between the last frame of a request and its
response). A handler still busy after ~0.8 x P2 gets
`7F <SID> 78` (response pending) sent for it, repeated every ~2 s until it answers - the long
erase/verify/activation path. Functional single-frame requests (0x7DF) are served too, with the
negative responses ISO 14229-1 suppresses for functional addressing left out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

import can
import isotp

from hil.bench import contract
from hil.bench.dut_profile import DutProfile
from hil.drivers.isotp_link import IsoTpLink
from hil.sim.errors import PowerLoss

log = logging.getLogger(__name__)

Handler = Callable[[bytes], "bytes | None"]

#: Response-pending repetition while a handler works (well inside P2*).
PENDING_REPEAT_S = 2.0
#: Longest a response may take to go out (a multi-frame one waits for the tester's flow control, N_Bs).
SEND_TIMEOUT_S = 5.0
#: NRCs a server does not send for functionally addressed requests (ISO 14229-1, 7.5).
_FUNCTIONAL_SILENT_NRC = {0x11, 0x12, 0x31, 0x7E, 0x7F}
_POLL_S = 0.05  # how often the worker checks for stop() while idle


class UdsServerTransport:
    """ISO-TP transport of a simulated UDS server."""

    def __init__(self, bus: can.BusABC, notifier: can.Notifier, *, rxid: int | None = None, txid: int | None = None,
                 fd: bool = False, handler: Handler, profile: DutProfile | None = None,
                 bitrate_switch: bool | None = None, activity: Callable[[bytes], None] | None = None) -> None:
        """Addressing, padding, P2 and the functional id come from the DUT profile; rxid/txid override it."""
        self.profile = profile if profile is not None else DutProfile()
        uds = self.profile.uds
        self.bus = bus
        #: Called with the data of every frame of a request as it arrives (the server's S3 timer restarts on
        #: reception, not when a long request has finally been reassembled by a host thread).
        self.activity = activity
        self.notifier = notifier
        self.rxid = uds.phys_request_id if rxid is None else rxid
        self.txid = uds.phys_response_id if txid is None else txid
        self.fd = fd
        self.handler = handler
        self.first_pending_s = uds.p2_ms * 0.8 / 1000.0
        self.functional_id = uds.functional_request_id
        self._mode = isotp.AddressingMode.Normal_29bits if uds.extended_ids else isotp.AddressingMode.Normal_11bits
        self._params = self.profile.isotp_params(fd, fd if bitrate_switch is None else bitrate_switch, blocking_send=True)
        self._link: IsoTpLink | None = None
        self._functional: queue.Queue[bytes] = queue.Queue()
        self._stop = threading.Event()
        self._serve_lock = threading.Lock()  # one request at a time, like a single-threaded ECU
        self._cond = threading.Condition()  # guards the pending request and every response send
        self._pending_sid: int | None = None
        self._pending_due = 0.0
        self._threads: list[threading.Thread] = []
        self.requests_served = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Attach to the notifier and start serving."""
        if self._link is not None:
            return
        self._stop.clear()
        self._link = IsoTpLink(self.bus, self.notifier, isotp.Address(self._mode, txid=self.txid, rxid=self.rxid),
                               self._params, error_handler=self._isotp_error, name=f"uds-server-{self.rxid:X}")
        self._link.start()
        self.notifier.add_listener(self._on_request_frame)
        if self.functional_id is not None:
            self.notifier.add_listener(self._on_functional_frame)
        self._threads = [threading.Thread(target=target, name=f"uds-server-{name}", daemon=True)
                         for name, target in (("physical", self._physical_loop), ("functional", self._functional_loop),
                                              ("pending", self._pending_loop))]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop serving at once (power loss, reset); a handler still running gets no response sent."""
        link = self._link
        if link is None:
            return
        self._stop.set()
        link.stop()  # first: a response going out (waiting for flow control) gives up now
        with self._cond:
            self._pending_sid = None
            self._cond.notify_all()
        for listener in (self._on_request_frame, self._on_functional_frame):
            try:
                self.notifier.remove_listener(listener)
            except ValueError:
                pass
        self._functional.put(b"")  # wake the functional worker
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=1.0)  # a handler blocked in board code may outlive this; it sends nothing
        self._threads = []
        self._link = None

    # ------------------------------------------------------------------ receive
    def _isotp_error(self, error: Exception) -> None:
        log.debug("UDS server ISO-TP: %s", error)

    def _on_request_frame(self, msg: can.Message) -> None:
        """Notifier listener: any frame addressed to this server is tester activity."""
        if self.activity is not None and msg.arbitration_id in (self.rxid, self.functional_id) and not msg.is_error_frame:
            self.activity(bytes(msg.data))

    def _on_functional_frame(self, msg: can.Message) -> None:
        """Notifier listener: single-frame requests on the functional ID (runs in the notifier thread)."""
        if msg.arbitration_id != self.functional_id or msg.is_extended_id != self.profile.uds.extended_ids or msg.is_error_frame or msg.is_remote_frame:
            return
        data = bytes(msg.data)
        if not data or data[0] >> 4 != 0:
            return  # functional requests are single frames only
        length, start = (data[0] & 0x0F, 1) if data[0] & 0x0F else ((data[1] if len(data) > 1 else 0), 2)
        if 0 < length <= len(data) - start:
            self._functional.put(data[start:start + length])

    def _physical_loop(self) -> None:
        while not self._stop.is_set():
            link = self._link
            if link is None:
                return
            request = link.recv(timeout=_POLL_S)
            if request is not None and not self._stop.is_set():
                self._serve(request, functional=False)

    def _functional_loop(self) -> None:
        while not self._stop.is_set():
            request = self._functional.get()
            if request and not self._stop.is_set():
                self._serve(request, functional=True)

    # ------------------------------------------------------------------ serve
    def _serve(self, request: bytes, *, functional: bool) -> None:
        sid = request[0]
        with self._serve_lock:
            with self._cond:
                self._pending_sid = sid
                self._pending_due = time.monotonic() + self.first_pending_s
            try:
                response = self.handler(request)
            except PowerLoss:  # the board went dark mid-request: nothing is sent
                response = None
            except Exception:  # a handler bug answers generalReject, never kills the server
                log.exception("UDS server: handler failed on %s", request.hex())
                response = bytes([0x7F, sid, contract.Nrc.GENERAL_REJECT])
            with self._cond:
                self._pending_sid = None
                if response is None or self._stop.is_set():
                    return
                if functional and len(response) >= 3 and response[0] == 0x7F and response[2] in _FUNCTIONAL_SILENT_NRC:
                    return
                self._send(response)
                self.requests_served += 1

    def _send(self, payload: bytes) -> None:
        """Send a response (caller holds `_cond`, so 0x78 and final answers keep their order)."""
        link = self._link
        if link is None:
            return
        try:
            link.send(payload, SEND_TIMEOUT_S)
        except (RuntimeError, ValueError, isotp.BlockingSendFailure) as exc:
            log.warning("UDS server: cannot send %s: %s", payload.hex(), exc)

    def _pending_loop(self) -> None:
        """Send 7F <SID> 78 for a handler that is still working when its response is due.

        Not woken per request: it looks every half of the first-pending delay, which still leaves it
        the time to wait until the exact due time of a request that started meanwhile. Waking it at
        the start and end of every request put two more thread wake-ups in each TransferData
        turnaround (0.05 ms of 0.25 ms, measured on the FD download sink).
        """
        with self._cond:
            while not self._stop.is_set():
                if self._pending_sid is None:
                    self._cond.wait(self.first_pending_s / 2)
                    continue
                wait = self._pending_due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                self._send(bytes([0x7F, self._pending_sid, contract.Nrc.RESPONSE_PENDING]))
                self._pending_due = time.monotonic() + PENDING_REPEAT_S
