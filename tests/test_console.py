"""Console server (socket:// and pty) and the Console driver, talking only through pyserial."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import serial

from hil.drivers.console import Console
from hil.drivers.protocols import ConsoleProtocol
from hil.errors import HilTimeout, InstrumentError
from hil.sim.console import ConsoleServer, PtyConsole


@pytest.fixture
def server() -> Iterator[ConsoleServer]:
    srv = ConsoleServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def console(server: ConsoleServer, tmp_path: Path) -> Iterator[Console]:
    con = Console(server.url, log_path=tmp_path / "console.log")
    assert server.wait_for_clients(1, timeout=2.0) == 1
    yield con
    con.close()


def test_expect_returns_the_match_and_moves_the_cursor(server: ConsoleServer, console: Console) -> None:
    assert isinstance(console, ConsoleProtocol)
    server.write_line("[       1.0] BOOT: image 1.0.0 ok")
    server.write_line("[      12.5] APP: self-test passed, image confirmed")
    m = console.expect(r"BOOT: image (\d+\.\d+\.\d+) ok", timeout=2.0)
    assert m.group(1) == "1.0.0"
    assert console.expect(re.compile(r"APP: self-test (\w+)"), timeout=2.0).group(1) == "passed"
    with pytest.raises(HilTimeout):
        console.expect(r"BOOT: image", timeout=0.1)  # already consumed: the cursor moved past it
    assert console.lines() == ["[       1.0] BOOT: image 1.0.0 ok",
                               "[      12.5] APP: self-test passed, image confirmed"]
    assert "\r" not in console.text


def test_expect_waits_for_text_that_arrives_later(server: ConsoleServer, console: Console) -> None:
    timer = threading.Timer(0.1, server.write_line, args=("BOOT: swap sector 3/33",))
    timer.start()
    t0 = time.monotonic()
    m = console.expect(r"swap sector (\d+)/(\d+)", timeout=2.0)
    elapsed = time.monotonic() - t0
    timer.join()
    assert m.groups() == ("3", "33")
    assert 0.09 <= elapsed < 0.5, f"woke {elapsed:.3f} s after waiting (no polling delay expected)"


def test_timeout_shows_the_buffer_and_the_log_path(server: ConsoleServer, console: Console,
                                                   tmp_path: Path) -> None:
    server.write_line("BOOT: revert")
    server.write_line("APP: self-test running")
    console.expect("BOOT: revert", timeout=2.0)
    t0 = time.monotonic()
    with pytest.raises(HilTimeout) as err:
        console.expect(r"APP: self-test passed", timeout=0.3)
    elapsed = time.monotonic() - t0
    assert 0.29 <= elapsed < 1.0
    message = str(err.value)
    assert "'APP: self-test passed' not seen within 0.3 s" in message
    assert str(tmp_path / "console.log") in message
    assert "APP: self-test running" in err.value.seen
    assert "BOOT: revert" not in err.value.seen, "shows what came after the cursor, not old text"


def test_mark_and_since(server: ConsoleServer, console: Console) -> None:
    server.write_line("BOOT: swap done")
    console.expect("swap done", timeout=2.0)
    before = console.mark()
    server.write_line("APP: running 1.1.0")
    server.write_line("BOOT: swap done")
    console.expect("running 1.1.0", timeout=2.0)
    assert console.expect("swap done", timeout=2.0)  # the second one, after the cursor
    assert console.expect("running", timeout=0.5, since=before).group(0) == "running"
    later = console.mark()
    assert later == len(console.text)
    assert console.text[before:].startswith("APP: running 1.1.0\n")
    with pytest.raises(HilTimeout):
        console.expect("running", timeout=0.1)


def test_nothing_is_buffered_for_a_disconnected_client(server: ConsoleServer, tmp_path: Path) -> None:
    assert server.write_line("lost: nobody listens") == 0
    with Console(server.url) as con:
        assert server.wait_for_clients(1, timeout=2.0) == 1
        assert server.write_line("heard") == 1
        con.expect("heard", timeout=2.0)
        assert "lost" not in con.text


def test_log_file_has_a_host_timestamp_per_line(server: ConsoleServer, console: Console, tmp_path: Path) -> None:
    server.write_line("first")
    server.write_line("second")
    console.expect("second", timeout=2.0)
    console.close()
    lines = (tmp_path / "console.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["first", "second"]
    stamps = [line.split(" ", 1)[0] for line in lines]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", s) for s in stamps)
    assert console.timed_lines()[0][1] == "first"


def test_several_clients_all_receive(server: ConsoleServer) -> None:
    with Console(server.url) as a, Console(server.url) as b:
        assert server.wait_for_clients(2, timeout=2.0) == 2
        assert server.write_line("APP: hello") == 2
        a.expect("hello", timeout=2.0)
        b.expect("hello", timeout=2.0)


def test_raw_pyserial_sees_crlf_lines(server: ConsoleServer) -> None:
    port = serial.serial_for_url(server.url, timeout=2.0)
    try:
        assert server.wait_for_clients(1, timeout=2.0) == 1
        server.write_line("BOOT: hello")
        assert port.readline() == b"BOOT: hello\r\n"
    finally:
        port.close()


def test_console_survives_a_server_restart(tmp_path: Path) -> None:
    first = ConsoleServer()
    port = first.start()
    con = Console(first.url, log_path=tmp_path / "console.log", reconnect_timeout=5.0)
    try:
        assert first.wait_for_clients(1, timeout=2.0) == 1
        first.write_line("before restart")
        con.expect("before restart", timeout=2.0)
        first.stop()
        second = ConsoleServer(port=port)
        second.start()
        try:
            assert second.wait_for_clients(1, timeout=3.0) == 1, "the console reconnected"
            second.write_line("after restart")
            con.expect("after restart", timeout=2.0)
        finally:
            second.stop()
    finally:
        con.close()
    log = (tmp_path / "console.log").read_text()
    assert "[host] console lost" in log and "[host] console reconnected" in log


def test_console_gives_up_after_reconnect_timeout() -> None:
    srv = ConsoleServer()
    srv.start()
    con = Console(srv.url, reconnect_timeout=0.3)
    try:
        assert srv.wait_for_clients(1, timeout=2.0) == 1
        srv.stop()
        t0 = time.monotonic()
        with pytest.raises(HilTimeout, match="lost and not back within"):
            con.expect("never", timeout=5.0)
        assert time.monotonic() - t0 < 2.0, "a lost console fails the wait early"
    finally:
        con.close()


def test_open_failure_names_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InstrumentError, match=rf"console socket://127\.0\.0\.1:{port}: cannot open"):
        Console(f"socket://127.0.0.1:{port}")


def test_close_is_prompt(server: ConsoleServer) -> None:
    con = Console(server.url)
    t0 = time.monotonic()
    con.close()
    assert time.monotonic() - t0 < 0.5
    assert not con._thread.is_alive()


def test_pty_console() -> None:
    pty = PtyConsole()
    try:
        with Console(pty.url) as con:
            assert pty.write_line("BOOT: over a pty") == 1
            assert con.expect(r"over a (\w+)", timeout=2.0).group(1) == "pty"
    finally:
        pty.close()


def test_loop_url_without_a_descriptor() -> None:
    with Console("loop://") as con:
        con.write("echo me\r\n")
        con.expect("echo me", timeout=2.0)
        assert con.lines() == ["echo me"]


def test_host_input_reaches_the_server() -> None:
    typed: list[str] = []
    got = threading.Event()
    srv = ConsoleServer(on_input=lambda line: (typed.append(line), got.set()))
    srv.start()
    try:
        with Console(srv.url) as con:
            con.write("help\r\n")
            assert got.wait(2.0)
        assert typed == ["help"]
    finally:
        srv.stop()


def test_lines_sent_while_the_port_opens_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A board that greets at once: pyserial's open() used to read and drop what arrived before it returned."""
    import select

    import serial.urlhandler.protocol_socket as protocol_socket

    sent = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"greeting at accept\r\n")
            sent.set()
            conn.recv(1)  # until the client goes

    reconfigure = protocol_socket.Serial._reconfigure_port

    def after_the_greeting(self: protocol_socket.Serial) -> None:
        assert sent.wait(2.0), "the server did not greet"
        assert select.select([self._socket], [], [], 2.0)[0], "the greeting did not reach the socket"
        reconfigure(self)

    monkeypatch.setattr(protocol_socket.Serial, "_reconfigure_port", after_the_greeting)
    server = threading.Thread(target=serve, daemon=True)
    server.start()
    con = Console(f"socket://127.0.0.1:{port}", log_path=tmp_path / "console.log")
    try:
        con.expect("greeting at accept", timeout=2.0)
    finally:
        con.close()
        listener.close()
        server.join(timeout=2.0)
