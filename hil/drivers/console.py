"""The DUT's debug console over pyserial (`/dev/ttyUSB0`, `socket://host:port`, `loop://`).

A background thread appends everything received to one text buffer (carriage returns dropped)
and to a log file, one line per console line with the host time its first byte arrived.
`expect()` searches from a cursor that moves past each match (pytest-embedded style), so a
pattern seen once is not matched again; `mark()` moves the cursor to "now".
"""

from __future__ import annotations

import bisect
import codecs
import datetime as _dt
import os
import re
import select
import threading
import time
from pathlib import Path
from typing import IO, Any, Mapping

import serial

from hil.bench import contract
from hil.errors import HilTimeout, InstrumentError

#: How much of the buffer a timeout error shows.
TAIL_CHARS = 3000
#: Pause between reconnection attempts of a lost console.
RECONNECT_INTERVAL_S = 0.1


def open_keeping_input(url: str, baudrate: int) -> Any:
    """The console port opened with timeout=0 (reads return what is there), keeping what already arrived.

    pyserial's `open()` ends with `reset_input_buffer()`, which on a socket:// or rfc2217:// port reads and
    drops whatever the server sent since the connection was accepted: the board's first lines after a
    reconnect were lost whenever the host was slow to finish opening (seen under load).
    """
    port = serial.serial_for_url(url, baudrate=baudrate, timeout=0, do_not_open=True)
    port.reset_input_buffer = lambda: None  # this instance only, for the open below
    try:
        port.open()
    finally:
        del port.reset_input_buffer
    return port


def _stamp(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="microseconds")


class Console:
    """DUT console (`ConsoleProtocol`): buffer, cursor, `expect`, log file; survives a server restart."""

    def __init__(self, url: str, baudrate: int = contract.CONSOLE_BAUD, log_path: Path | None = None, *,
                 reconnect_timeout: float = 30.0, host_margin_s: float = 0.0,
                 patterns: Mapping[str, str] | None = None) -> None:
        self.url = url
        #: The DUT profile's console patterns by name (what a line means on this board).
        self.patterns: Mapping[str, str] = dict(patterns if patterns is not None else contract.CONSOLE_PATTERNS)
        #: Added to every `expect` timeout: the host's share of a wait (bench file `tester.host_margin_ms`).
        self.host_margin_s = host_margin_s
        self.baudrate = baudrate
        self.log_path = Path(log_path) if log_path is not None else None
        self.reconnect_timeout = reconnect_timeout
        self._cond = threading.Condition()
        self._chunks: list[str] = []
        self._offsets: list[int] = []  # start offset of each chunk in the text
        self._length = 0
        self._cursor = 0
        self._lines: list[tuple[float, str]] = []
        self._partial = ""
        self._partial_t: float | None = None
        self._failure: str | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # wakes the reader's select() on close
        self._log: IO[str] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "a", encoding="utf-8")
        self._port = self._open()
        self._thread = threading.Thread(target=self._read_loop, name=f"console {url}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ port
    def _open(self) -> Any:
        try:
            # timeout=0: reads return what is there; the reader blocks in select() instead.
            return open_keeping_input(self.url, self.baudrate)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise InstrumentError(f"console {self.url}: cannot open: {exc}") from exc

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._read_some()
            except (serial.SerialException, OSError) as exc:
                if self._stop.is_set():
                    break
                self._note(f"console lost: {exc}")
                if not self._reconnect():
                    break
                continue
            if data:
                self._feed(data)

    def _read_some(self) -> bytes:
        port = self._port
        try:
            fd = port.fileno()
        except (AttributeError, NotImplementedError, serial.SerialException, OSError):
            fd = None
        if fd is None:  # loop:// and friends: no descriptor to wait on
            port.timeout = 0.05
            return bytes(port.read(port.in_waiting or 1))
        ready, _, _ = select.select([fd, self._wake_r], [], [])
        if self._wake_r in ready:
            return b""
        return bytes(port.read(65536))

    def _reconnect(self) -> bool:
        """Reopen the port until it works or `reconnect_timeout` passes; False when giving up."""
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass
        deadline = time.monotonic() + self.reconnect_timeout
        last = ""
        while time.monotonic() < deadline:
            # Waiting on the wake pipe, not sleeping: close() ends the retries at once.
            if select.select([self._wake_r], [], [], RECONNECT_INTERVAL_S)[0]:
                return False
            try:
                self._port = open_keeping_input(self.url, self.baudrate)
            except (serial.SerialException, OSError) as exc:
                last = str(exc)
                continue
            self._note("console reconnected")
            return True
        with self._cond:
            self._failure = f"console {self.url} lost and not back within {self.reconnect_timeout:.0f} s ({last})"
            self._cond.notify_all()
        self._note(self._failure)
        return False

    # ------------------------------------------------------------------ buffer
    def _feed(self, data: bytes) -> None:
        now = time.time()
        text = self._decoder.decode(data).replace("\r", "")
        if not text:
            return
        completed: list[tuple[float, str]] = []
        with self._cond:
            self._offsets.append(self._length)
            self._chunks.append(text)
            self._length += len(text)
            if len(self._chunks) > 64:  # keep slicing cheap: fold old chunks together
                self._chunks = ["".join(self._chunks)]
                self._offsets = [0]
            for piece in text.splitlines(keepends=True):
                if self._partial_t is None:
                    self._partial_t = now
                self._partial += piece
                if piece.endswith("\n"):
                    completed.append((self._partial_t, self._partial[:-1]))
                    self._partial, self._partial_t = "", None
            self._lines.extend(completed)
            self._cond.notify_all()
        for t, line in completed:
            self._log_line(t, line)

    def _slice(self, start: int) -> str:
        """Text from offset `start` to the end (caller holds the condition)."""
        if start >= self._length:
            return ""
        i = max(bisect.bisect_right(self._offsets, start) - 1, 0)
        return "".join(self._chunks[i:])[start - self._offsets[i]:]

    def _log_line(self, t: float, line: str) -> None:
        if self._log is not None:
            self._log.write(f"{_stamp(t)} {line}\n")
            self._log.flush()

    def _note(self, message: str) -> None:
        """A host-side remark in the log file (not in the DUT text)."""
        self._log_line(time.time(), f"[host] {message}")

    # ------------------------------------------------------------------ public API
    @property
    def text(self) -> str:
        """Everything received so far (carriage returns removed)."""
        with self._cond:
            return self._slice(0)

    def lines(self) -> list[str]:
        """Complete lines received so far, then the unfinished last line if there is one."""
        with self._cond:
            out = [line for _, line in self._lines]
            return out + [self._partial] if self._partial else out

    def timed_lines(self) -> list[tuple[float, str]]:
        """Complete lines with the host time (epoch s) their first byte arrived."""
        with self._cond:
            return list(self._lines)

    def mark(self) -> int:
        """Move the cursor to the end of what has arrived; return that offset into `text`."""
        with self._cond:
            self._cursor = self._length
            return self._cursor

    def expect(self, pattern: str | re.Pattern[str], timeout: float, since: int | None = None) -> re.Match[str]:
        """Wait up to `timeout` s for `pattern` after the cursor (or after offset `since`).

        The cursor moves past the match. A str pattern is compiled with re.MULTILINE. The match
        is against the text from the search start, so its positions are relative to that start.
        HilTimeout shows what arrived since the search start and names the log file.
        """
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        timeout += self.host_margin_s
        deadline = time.monotonic() + timeout
        with self._cond:
            start = self._cursor if since is None else since
            while True:
                searched = self._slice(start)
                m = regex.search(searched)
                if m:
                    self._cursor = start + m.end()
                    return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._failure is not None:
                    break
                self._cond.wait(remaining)
            failure = self._failure
        where = f"log {self.log_path}" if self.log_path else "no log file"
        message = (f"console {self.url}: {regex.pattern!r} not seen within {timeout:g} s "
                   f"(searched from offset {start}; {where})")
        if failure:
            message += f"; {failure}"
        tail = searched[-TAIL_CHARS:]
        if len(searched) > TAIL_CHARS:
            tail = f"[... {len(searched) - TAIL_CHARS} earlier characters ...]\n{tail}"
        raise HilTimeout(message, tail)

    def write(self, text: str) -> None:
        """Type `text` into the console (host to DUT)."""
        try:
            self._port.write(text.encode("utf-8"))
        except (serial.SerialException, OSError) as exc:
            raise InstrumentError(f"console {self.url}: write failed: {exc}") from exc

    def close(self) -> None:
        """Stop the reader, close the port and the log (an unfinished last line is logged too)."""
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join(2.0)
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass
        with self._cond:
            partial, t = self._partial, self._partial_t
        if partial and t is not None:
            self._log_line(t, partial)
        if self._log is not None:
            self._log.close()
            self._log = None
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> "Console":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

