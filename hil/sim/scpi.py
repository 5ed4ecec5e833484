"""SCPI for the emulated instruments: header matching, an error queue, and a raw-TCP server.

Real bench instruments listen on a raw TCP socket (port 5025) and take '\\n'-terminated
program messages; pyvisa reaches them as `TCPIP0::<host>::<port>::SOCKET`. The emulators here
speak the same: `ScpiServer(instrument).start()` returns the bound port.

`ScpiInstrument` is the base of every emulated instrument. It parses a program message
(several commands separated by ';'), matches each header against long/short mnemonic forms,
answers queries with one line (several answers joined by ';', as IEEE 488.2 requires), and
pushes errors onto the instrument's error queue, read with `SYST:ERR?` like on the real thing.
Every instrument keeps the IEEE 488.2 status registers: the Standard Event Status Register (ESR,
set by errors by their class and by `*OPC`, read and cleared by `*ESR?`, enabled by `*ESE`), and
the Status Byte (`*STB?`: error queue not empty, message available, ESR summary, master summary,
enabled by `*SRE`).
"""

from __future__ import annotations

import collections
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

#: IEEE 488.2 / SCPI error codes the emulators use.
NO_ERROR = (0, "No error")
SYNTAX_ERROR = (-102, "Syntax error")
DATA_TYPE_ERROR = (-104, "Data type error")
PARAMETER_NOT_ALLOWED = (-108, "Parameter not allowed")
MISSING_PARAMETER = (-109, "Missing parameter")
UNDEFINED_HEADER = (-113, "Undefined header")
DATA_OUT_OF_RANGE = (-222, "Data out of range")
SETTINGS_CONFLICT = (-221, "Settings conflict")
ILLEGAL_PARAMETER_VALUE = (-224, "Illegal parameter value")
QUEUE_OVERFLOW = (-350, "Queue overflow")
QUERY_INTERRUPTED = (-410, "Query INTERRUPTED")

# IEEE 488.2 Standard Event Status Register bits.
ESR_OPC = 0x01  # operation complete (*OPC)
ESR_QYE = 0x04  # query error (-4xx)
ESR_DDE = 0x08  # device-dependent error (-3xx, and the instrument's own positive codes)
ESR_EXE = 0x10  # execution error (-2xx)
ESR_CME = 0x20  # command error (-1xx)
ESR_PON = 0x80  # power on
# IEEE 488.2 / SCPI-1999 Status Byte bits.
STB_EAV = 0x04  # error/event queue not empty
STB_MAV = 0x10  # message available: an answer waits in the output queue
STB_ESB = 0x20  # event status summary: ESR & ESE != 0
STB_MSS = 0x40  # master summary status: (STB & SRE) != 0

#: Real instruments keep about 20 errors; the last slot then reads -350.
ERROR_QUEUE_DEPTH = 20
#: How many received commands the emulator remembers (for tests and `hil sim` diagnostics).
COMMAND_LOG_DEPTH = 10_000
#: A line longer than this is not SCPI; the connection is dropped.
MAX_LINE_BYTES = 1 << 20


class ScpiError(Exception):
    """Raised inside a command handler: becomes an entry of the instrument's error queue.

    Emulator-internal: it never leaves the instrument (the client sees it through `SYST:ERR?`).
    """

    def __init__(self, error: tuple[int, str], detail: str = "") -> None:
        self.code, self.text = error
        self.detail = detail
        super().__init__(self.entry)

    @property
    def entry(self) -> str:
        """The error queue entry as `SYST:ERR?` returns it: `-222,"Data out of range; detail"`."""
        text = f"{self.text}; {self.detail}" if self.detail else self.text
        return f'{self.code:+d},"{text}"'


# --------------------------------------------------------------------------- header matching
@dataclass(frozen=True)
class _Node:
    short: str
    long: str
    optional: bool
    numeric: bool = False  # `SOURce#`: a numeric suffix may follow (SOUR2, OUTP1); 0 when absent

    def match(self, token: str) -> int | None:
        """The numeric suffix (0 when absent) if `token` names this node, else None."""
        t = token.upper()
        suffix = 0
        if self.numeric:
            m = re.fullmatch(r"([A-Z*]+)(\d+)", t)
            if m:
                t, suffix = m.group(1), int(m.group(2))
        return suffix if t == self.short or t == self.long else None


def _compile_header(pattern: str) -> tuple[_Node, ...]:
    """`[SOURce#:]VOLTage[:LEVel]` -> nodes; the upper-case letters are the short form, `#` a numeric suffix."""
    nodes = []
    for m in re.finditer(r"(\[)?:?([A-Za-z*]+)(#)?(\])?:?", pattern):
        word = m.group(2)
        short = "".join(c for c in word if c.isupper() or c == "*")
        nodes.append(_Node(short or word.upper(), word.upper(), bool(m.group(1)), bool(m.group(3))))
    return tuple(nodes)


def _match_nodes(nodes: Sequence[_Node], tokens: Sequence[str]) -> list[int] | None:
    """The numeric suffixes of the `#` nodes (0 where omitted) when `tokens` match `nodes`, else None."""
    if not nodes:
        return [] if not tokens else None
    head, rest = nodes[0], nodes[1:]
    if tokens:
        suffix = head.match(tokens[0])
        if suffix is not None:
            tail = _match_nodes(rest, tokens[1:])
            if tail is not None:
                return ([suffix] if head.numeric else []) + tail
    if head.optional:
        tail = _match_nodes(rest, tokens)
        if tail is not None:
            return ([0] if head.numeric else []) + tail
    return None


@dataclass(frozen=True)
class ScpiCommand:
    """One entry of an instrument's command table: a header pattern, query or not, and its handler."""

    header: str
    query: bool
    handler: Callable[[list[str]], str | None]

    @property
    def nodes(self) -> tuple[_Node, ...]:
        return _compile_header(self.header)


def split_parameters(text: str) -> list[str]:
    """Split `12.5,(@1,2)` into `['12.5', '(@1,2)']`: commas inside parentheses or quotes don't split."""
    params: list[str] = []
    depth = 0
    quote = ""
    current: list[str] = []
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            params.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if quote or depth:
        raise ScpiError(SYNTAX_ERROR, f"unbalanced {'quote' if quote else 'parenthesis'} in {text!r}")
    tail = "".join(current).strip()
    if tail or params:
        params.append(tail)
    return params


def parse_number(text: str, *, minimum: float, maximum: float, default: float | None = None) -> float:
    """A numeric parameter (NR1/NR2/NR3, or MIN/MAX/DEF); outside [minimum, maximum] -> -222."""
    word = text.strip().upper()
    if word in ("MIN", "MINIMUM"):
        return minimum
    if word in ("MAX", "MAXIMUM"):
        return maximum
    if word in ("DEF", "DEFAULT") and default is not None:
        return default
    try:
        value = float(word)
    except ValueError:
        raise ScpiError(DATA_TYPE_ERROR, f"{text!r} is not a number") from None
    if value != value or not minimum <= value <= maximum:  # NaN is out of range too
        raise ScpiError(DATA_OUT_OF_RANGE, f"{value:g} outside {minimum:g}..{maximum:g}")
    return value


def parse_bool(text: str) -> bool:
    """ON|OFF|1|0."""
    word = text.strip().upper()
    if word in ("ON", "1"):
        return True
    if word in ("OFF", "0"):
        return False
    raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{text!r} is not ON|OFF|1|0")


def parse_channel_list(text: str, first: int, last: int) -> list[int]:
    """`(@2)`, `(@1,3)`, `(@1:3)` -> channel numbers; outside first..last -> -222."""
    m = re.fullmatch(r"\(\s*@\s*([0-9,:\s]+)\)", text.strip())
    if not m:
        raise ScpiError(SYNTAX_ERROR, f"{text!r} is not a channel list like (@2)")
    channels: list[int] = []
    for part in m.group(1).split(","):
        bounds = [b.strip() for b in part.split(":")]
        if len(bounds) > 2 or not all(b.isdigit() for b in bounds):
            raise ScpiError(SYNTAX_ERROR, f"{text!r} is not a channel list like (@2)")
        lo, hi = int(bounds[0]), int(bounds[-1])
        # Bounds first: `(@1:99999999999)` must be refused, not expanded into billions of channels.
        for ch in (lo, hi):
            if not first <= ch <= last:
                raise ScpiError(DATA_OUT_OF_RANGE, f"channel {ch} outside {first}..{last}")
        channels.extend(range(lo, hi + 1) if lo <= hi else range(lo, hi - 1, -1))
    return channels


def format_number(value: float) -> str:
    """Numbers as Keysight instruments answer them: `+1.20000000E+01`."""
    return f"{value:+.8E}"


# --------------------------------------------------------------------------- instrument base
class ScpiHandler(Protocol):
    """What `ScpiServer` serves: one program message in, one response line (or nothing) out."""

    def execute(self, message: str) -> str | None: ...


class ScpiInstrument:
    """Base of an emulated SCPI instrument: command table, error queue, common commands, command log.

    Subclasses list their commands in `commands()` and implement `reset()` (`*RST`).
    """

    #: `*IDN?` answer; subclasses set it.
    idn: str = "HIL-SIM,SCPI-INSTRUMENT,0,0"

    def __init__(self) -> None:
        #: Numeric suffixes of the header being executed (`:SOUR2:VOLT` -> (2,)).
        self.suffixes: tuple[int, ...] = ()
        self._scpi_lock = threading.Lock()  # one program message at a time, as a real instrument parses
        self._errors_lock = threading.Lock()
        self._errors: collections.deque[str] = collections.deque()
        self._esr = ESR_PON  # the instrument was just powered on
        self._ese = 0
        self._sre = 0
        self._answers: list[str] = []  # the output queue of the program message being executed (MAV)
        self._received: collections.deque[tuple[float, str]] = collections.deque(maxlen=COMMAND_LOG_DEPTH)
        self._table: list[tuple[tuple[_Node, ...], bool, Callable[[list[str]], str | None]]] = [
            (cmd.nodes, cmd.query, cmd.handler) for cmd in [*self._common_commands(), *self.commands()]
        ]

    # ------------------------------------------------------------------ subclass interface
    def commands(self) -> list[ScpiCommand]:
        """The instrument-specific command table."""
        return []

    def reset(self) -> None:
        """`*RST`: the instrument's reset state."""

    def close(self) -> None:
        """The instrument goes away (its server stops): end any background activity."""

    # ------------------------------------------------------------------ error queue
    def push_error(self, error: ScpiError) -> None:
        """Queue an error as the instrument would (its class sets its ESR bit); when the queue is full its
        last entry reads -350."""
        with self._errors_lock:
            self._esr |= _esr_bit(error.code)
            if len(self._errors) >= ERROR_QUEUE_DEPTH:
                self._errors[-1] = ScpiError(QUEUE_OVERFLOW).entry
                self._esr |= ESR_DDE
            else:
                self._errors.append(error.entry)

    def next_error(self) -> str:
        """Pop the oldest error (`SYST:ERR?`), `+0,"No error"` when empty."""
        with self._errors_lock:
            return self._errors.popleft() if self._errors else ScpiError(NO_ERROR).entry

    def clear_errors(self) -> None:
        """`*CLS`: empty the error queue and clear the event register (ESE and SRE stay)."""
        with self._errors_lock:
            self._errors.clear()
            self._esr = 0

    # ------------------------------------------------------------------ IEEE 488.2 status registers
    def status_byte(self, message_available: bool = False) -> int:
        """`*STB?`: the status byte with its master summary bit (reading it clears nothing)."""
        with self._errors_lock:
            stb = (STB_EAV if self._errors else 0) | (STB_MAV if message_available else 0)
            stb |= STB_ESB if self._esr & self._ese else 0
            return stb | (STB_MSS if stb & self._sre & ~STB_MSS else 0)

    def read_event_status(self) -> int:
        """`*ESR?`: the Standard Event Status Register, cleared by the read."""
        with self._errors_lock:
            esr, self._esr = self._esr, 0
            return esr

    # ------------------------------------------------------------------ command log
    def received(self) -> list[str]:
        """Every command received so far (one entry per command, in order)."""
        return [cmd for _, cmd in list(self._received)]

    def received_timed(self) -> list[tuple[float, str]]:
        """Like `received()`, with the wall-clock time each command arrived."""
        return list(self._received)

    def clear_received(self) -> None:
        """Forget the command log (tests: 'nothing was sent after this point')."""
        self._received.clear()

    # ------------------------------------------------------------------ parsing
    def execute(self, message: str) -> str | None:
        """Run one program message (commands separated by ';'); the joined query answers or None."""
        answers: list[str] = []
        with self._scpi_lock:
            self._answers = answers
            path: list[str] = []  # SCPI compound-header path: `SOUR:VOLT 5;CURR 1` means SOUR:CURR
            for raw in _split_commands(message):
                command = raw.strip()
                if not command:
                    continue
                self._received.append((time.time(), command))
                try:
                    answer, path = self._execute_one(command, path)
                except ScpiError as exc:
                    self.push_error(exc)
                    path = []
                    continue
                if answer is not None:
                    answers.append(answer)
        return ";".join(answers) if answers else None

    def _execute_one(self, command: str, path: list[str]) -> tuple[str | None, list[str]]:
        m = re.fullmatch(r"(?P<header>[:*]?[A-Za-z][A-Za-z0-9:*]*)(?P<query>\?)?(?:\s+(?P<params>.*))?", command, re.S)
        if not m:
            starts_like_header = command[:1].isalpha() or command[:1] in ":*"
            raise ScpiError(UNDEFINED_HEADER if starts_like_header else SYNTAX_ERROR, repr(command))
        header = m.group("header")
        query = m.group("query") is not None
        params = split_parameters(m.group("params") or "")
        if header.startswith("*"):
            tokens = [header]
            candidates = [tokens]
        else:
            tokens = [t for t in header.lstrip(":").split(":")]
            if any(not t for t in tokens):
                raise ScpiError(SYNTAX_ERROR, repr(command))
            # Relative to the previous command's path first (SCPI rule), then from the root
            # (lenient, like many instruments): `MEAS:VOLT?;MEAS:CURR?` works either way.
            candidates = [path + tokens, tokens] if path and not header.startswith(":") else [tokens]
        for candidate in candidates:
            for nodes, is_query, handler in self._table:
                suffixes = _match_nodes(nodes, candidate) if is_query == query else None
                if suffixes is not None:
                    next_path = candidate[:-1] if not header.startswith("*") else path
                    self.suffixes = tuple(suffixes)  # read by handlers of `#` headers (under the parser lock)
                    return handler(params), next_path
        raise ScpiError(UNDEFINED_HEADER, f"{header}{'?' if query else ''}")

    # ------------------------------------------------------------------ common commands
    def _common_commands(self) -> list[ScpiCommand]:
        """IEEE 488.2's mandatory common commands (and `*OPT?`), and SCPI's `SYST:ERR?` / `SYST:VERS?`."""
        return [
            ScpiCommand("*IDN", True, self._no_params(lambda: self.idn)),
            ScpiCommand("*RST", False, self._no_params(self._rst)),
            ScpiCommand("*CLS", False, self._no_params(self._cls)),
            ScpiCommand("*ESE", False, self._register_setter("_ese", "*ESE", 0)),
            ScpiCommand("*ESE", True, self._no_params(lambda: self.nr1(self._ese))),
            ScpiCommand("*ESR", True, self._no_params(lambda: self.nr1(self.read_event_status()))),
            ScpiCommand("*SRE", False, self._register_setter("_sre", "*SRE", STB_MSS)),
            ScpiCommand("*SRE", True, self._no_params(lambda: self.nr1(self._sre))),
            ScpiCommand("*STB", True, self._no_params(lambda: self.nr1(self.status_byte(bool(self._answers))))),
            ScpiCommand("*OPC", True, self._no_params(lambda: "1")),
            ScpiCommand("*OPC", False, self._no_params(self._opc)),
            ScpiCommand("*WAI", False, self._no_params(lambda: None)),
            ScpiCommand("*TST", True, self._no_params(lambda: self.nr1(0))),
            ScpiCommand("*OPT", True, self._no_params(lambda: "0")),
            ScpiCommand("SYSTem:ERRor[:NEXT]", True, self._no_params(self.next_error)),
            ScpiCommand("SYSTem:VERSion", True, self._no_params(lambda: "1999.0")),
        ]

    #: `+` before NR1 answers (`*ESR?` -> `+0`), as Keysight instruments answer; others answer `0`.
    signed_nr1 = False

    def nr1(self, value: int) -> str:
        """An integer answer (IEEE 488.2 NR1) in the family's form."""
        return f"{value:+d}" if self.signed_nr1 else str(value)

    def _register_setter(self, name: str, header: str, ignored: int) -> Callable[[list[str]], None]:
        """`*ESE <n>` / `*SRE <n>`: an integer 0..255 (bits in `ignored` are not settable)."""
        def handler(params: list[str]) -> None:
            if len(params) != 1 or not params[0]:
                raise ScpiError(MISSING_PARAMETER if not params or not params[0] else PARAMETER_NOT_ALLOWED,
                                f"{header} <0..255>")
            value = parse_number(params[0], minimum=0, maximum=255)
            if value != int(value):
                raise ScpiError(DATA_OUT_OF_RANGE, f"{header} {params[0]} is not an integer")
            with self._errors_lock:
                setattr(self, name, int(value) & ~ignored)
        return handler

    def _opc(self) -> None:
        """`*OPC`: set the ESR's operation-complete bit once pending operations are done (none here)."""
        with self._errors_lock:
            self._esr |= ESR_OPC

    def _rst(self) -> None:
        self.reset()  # the status registers and the error queue are not *RST's (IEEE 488.2)

    def _cls(self) -> None:
        self.clear_errors()

    @staticmethod
    def _no_params(fn: Callable[[], str | None]) -> Callable[[list[str]], str | None]:
        def handler(params: list[str]) -> str | None:
            if params:
                raise ScpiError(PARAMETER_NOT_ALLOWED, ",".join(params))
            return fn()

        return handler


def _esr_bit(code: int) -> int:
    """The ESR bit an error of this code sets (IEEE 488.2 / SCPI error classes)."""
    if -199 <= code <= -100:
        return ESR_CME
    if -299 <= code <= -200:
        return ESR_EXE
    if -499 <= code <= -400:
        return ESR_QYE
    return ESR_DDE if code != 0 else 0  # -3xx and the instrument's own (positive) codes


def _split_commands(message: str) -> list[str]:
    """Split a program message at ';' outside quotes."""
    parts: list[str] = []
    quote = ""
    current: list[str] = []
    for ch in message:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == ";":
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


# --------------------------------------------------------------------------- TCP
class LineServer:
    """A TCP server for line-oriented clients, served by one selector thread.

    One thread is faithful for instruments (they parse one command at a time) and keeps
    `stop()` prompt: a socketpair wakes the selector, no polling interval. Subclasses override
    `on_line` (and optionally `on_connect` / `on_disconnect`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, name: str = "line-server") -> None:
        self.host = host
        self.requested_port = port
        self.name = name
        self.port: int | None = None
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._clients_lock = threading.Lock()
        self._clients_changed = threading.Condition(self._clients_lock)
        self._clients: dict[socket.socket, bytearray] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> int:
        """Bind and start serving; returns the bound port (OS-assigned when the port was 0)."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started on port {self.port}")
        listener = socket.create_server((self.host, self.requested_port), reuse_port=False)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name=f"{self.name}:{self.port}", daemon=True)
        self._thread.start()
        return self.port

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listener and every client, and join the server thread."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        self._close_all()

    def __enter__(self) -> "LineServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ clients
    @property
    def client_count(self) -> int:
        """How many clients are connected right now."""
        with self._clients_lock:
            return len(self._clients)

    def wait_for_clients(self, count: int = 1, timeout: float = 2.0) -> int:
        """Block until at least `count` clients are connected; returns how many are (may be fewer on timeout)."""
        with self._clients_changed:
            self._clients_changed.wait_for(lambda: len(self._clients) >= count, timeout)
            return len(self._clients)

    def broadcast(self, data: bytes) -> int:
        """Send `data` to every connected client; returns how many got it. Clients that fail are dropped."""
        with self._clients_lock:
            clients = list(self._clients)
        sent = 0
        for conn in clients:
            try:
                conn.sendall(data)
                sent += 1
            except OSError:
                self._drop(conn)
        return sent

    # ------------------------------------------------------------------ hooks
    def on_line(self, conn: socket.socket, line: str) -> None:
        """One received line (terminator and a trailing '\\r' removed)."""

    def on_connect(self, conn: socket.socket) -> None:
        """A client connected."""

    def on_disconnect(self, conn: socket.socket) -> None:
        """A client went away."""

    # ------------------------------------------------------------------ loop
    def _serve(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    if key.data == "accept":
                        self._accept(sel)
                    else:
                        self._read(sel, key.fileobj)  # type: ignore[arg-type]
        finally:
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(True)
        conn.settimeout(2.0)  # a client that stops reading must not hang the server forever
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._clients_changed:
            self._clients[conn] = bytearray()
            self._clients_changed.notify_all()
        sel.register(conn, selectors.EVENT_READ, "client")
        self.on_connect(conn)

    def _read(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError, socket.timeout):
            return
        except OSError:
            data = b""
        if not data:
            sel.unregister(conn)
            self._drop(conn)
            return
        if hasattr(socket, "TCP_QUICKACK"):
            # ACK at once, as instruments do: a Nagle client's next command is not held back 40 ms.
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                pass
        with self._clients_lock:
            buffer = self._clients.get(conn)
        if buffer is None:
            return
        buffer.extend(data)
        while b"\n" in buffer:
            raw, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            self.on_line(conn, raw.rstrip(b"\r").decode("ascii", errors="replace"))
        if len(buffer) > MAX_LINE_BYTES:
            sel.unregister(conn)
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        with self._clients_changed:
            known = self._clients.pop(conn, None) is not None
            self._clients_changed.notify_all()
        if known:
            try:
                conn.close()
            except OSError:
                pass
            self.on_disconnect(conn)

    def _close_all(self) -> None:
        with self._clients_changed:
            clients = list(self._clients)
            self._clients.clear()
            self._clients_changed.notify_all()
        for conn in clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        if self._listener is not None:
            self._listener.close()
        self._wake_r.close()
        self._wake_w.close()


class ScpiServer(LineServer):
    """Raw-TCP SCPI endpoint for one emulated instrument (what `TCPIP0::host::port::SOCKET` reaches).

    Each '\\n'-terminated line ('\\r\\n' accepted) is one program message; a message containing
    queries is answered with one '\\n'-terminated line. Several clients may connect; their
    messages are executed one at a time, as a real instrument's parser does.
    """

    def __init__(self, handler: ScpiHandler, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port, name=f"scpi-{type(handler).__name__}")
        self.handler = handler

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving, then let the instrument end its background activity (an HMP's running sequences)."""
        super().stop(timeout)
        close = getattr(self.handler, "close", None)
        if callable(close):
            close()

    def on_line(self, conn: socket.socket, line: str) -> None:
        answer = self.handler.execute(line)
        if answer is not None:
            try:
                conn.sendall(answer.encode("ascii", errors="replace") + b"\n")
            except OSError:
                self._drop(conn)
