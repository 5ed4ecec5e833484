"""The board's debug UART as a TCP endpoint that pyserial opens as `socket://127.0.0.1:PORT`.

Like a real UART, nothing is buffered for a client that is not connected: a line written while
no one listens is gone. Open the console before powering the board.
"""

from __future__ import annotations

import os
import socket
import threading
import tty
from typing import Callable

from hil.sim.scpi import LineServer

#: Receives a line the host typed into the console (terminator removed).
InputHandler = Callable[[str], None]


class ConsoleServer(LineServer):
    """TCP console endpoint; `write_line(text)` sends `text + "\\r\\n"` to every connected client."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, on_input: InputHandler | None = None) -> None:
        super().__init__(host, port, name="console")
        self.on_input = on_input

    @property
    def url(self) -> str:
        """pyserial URL of this console (after `start()`)."""
        if self.port is None:
            raise RuntimeError("console server not started")
        return f"socket://{self.host}:{self.port}"

    def write_line(self, text: str) -> int:
        """Send one line to every connected client; returns how many received it."""
        return self.broadcast(text.encode("utf-8", errors="replace") + b"\r\n")

    def on_line(self, conn: socket.socket, line: str) -> None:
        if self.on_input is not None:
            self.on_input(line)


class PtyConsole:
    """The console as a pseudo-terminal: pyserial opens `port` like a USB-serial adapter.

    The slave side is put in raw mode so the kernel's line discipline neither echoes nor
    rewrites line endings. Unlike the TCP server the kernel buffers a little for an unopened
    port; pyserial flushes that on open, so the UART semantics hold for the host.
    """

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        # A UART does not stall the firmware when nobody reads: a full buffer drops, like an overrun.
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        """pyserial URL (a device path)."""
        return self.port

    def write_line(self, text: str) -> int:
        """Send one line; returns 1 if written, 0 when closed."""
        with self._lock:
            if self._closed:
                return 0
            try:
                os.write(self._master, text.encode("utf-8", errors="replace") + b"\r\n")
            except BlockingIOError:
                return 0
            return 1

    def stop(self) -> None:
        """Same as `close()` (the `ConsoleServer` spelling)."""
        self.close()

    def close(self) -> None:
        """Close both ends."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._master)
            os.close(self._slave)
