"""The bench lock: one run per bench at a time (pytest, `hil flash`, `hil doctor`, `hil sim`).

A `filelock` lock file per bench name in `$HIL_LOCK_DIR` (default `~/.hil/locks`). Beside it a
sidecar `<bench>.holder.json` says who holds it (pid, host, command, since), so a refused run names
the holder. The operating system releases the lock of a process that dies; its stale sidecar is
overwritten by the next holder and never decides anything on its own.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from hil.errors import BenchBusy


def lock_dir() -> Path:
    """Where bench locks live: `$HIL_LOCK_DIR`, else `~/.hil/locks`."""
    return Path(os.environ.get("HIL_LOCK_DIR") or Path.home() / ".hil" / "locks")


def lock_timeout_s() -> float:
    """How long to wait for a busy bench: `$HIL_LOCK_TIMEOUT` seconds, default 0 (fail at once)."""
    text = os.environ.get("HIL_LOCK_TIMEOUT", "0")
    try:
        return float(text)
    except ValueError:
        raise BenchBusy(f"HIL_LOCK_TIMEOUT={text!r} is not a number of seconds") from None


class BenchLock:
    """The lock of one bench name. `acquire()` raises BenchBusy naming the holder."""

    def __init__(self, bench: str, directory: Path | None = None) -> None:
        self.bench = bench
        self.directory = directory or lock_dir()
        self.path = self.directory / f"{bench}.lock"
        self.holder_path = self.directory / f"{bench}.holder.json"
        self._lock = FileLock(str(self.path))

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._lock.is_locked

    def holder(self) -> dict[str, Any] | None:
        """What the sidecar says about the current holder (None when there is none or it is unreadable)."""
        try:
            data = json.loads(self.holder_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def describe_holder(self) -> str:
        """'pid 123 on host h (pytest testcases ...) since 2026-...' or what is known of it."""
        info = self.holder()
        if not info:
            return f"an unknown process (no holder file {self.holder_path})"
        since = info.get("since")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
        return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} ({info.get('command', '?')}) since {stamp}"

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock (waiting up to `timeout` s, default `$HIL_LOCK_TIMEOUT`), then record this process."""
        self.directory.mkdir(parents=True, exist_ok=True)
        wait = lock_timeout_s() if timeout is None else timeout
        try:
            self._lock.acquire(timeout=wait)
        except Timeout:
            hint = ""
            if os.environ.get("PYTEST_XDIST_WORKER"):
                # -n N with --bench: N workers, one bench. Each worker needs its own bench: a rack.
                hint = ("; pytest -n N shares one bench between its workers: give a rack instead "
                        "(--rack FILE; README, 'A rack of benches')")
            raise BenchBusy(f"bench {self.bench} is locked by another run: {self.describe_holder()} "
                            f"(lock file {self.path}){hint}") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(), "since": time.time()}
        tmp = self.holder_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.holder_path)  # readers never see half a file

    def release(self) -> None:
        """Remove the holder record and release the lock (no-op when not held)."""
        if not self._lock.is_locked:
            return
        info = self.holder()
        if info and info.get("pid") == os.getpid():
            try:
                self.holder_path.unlink()
            except OSError:
                pass
        self._lock.release(force=True)

    def __enter__(self) -> "BenchLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _command() -> str:
    """The command line of this process, short enough for an error message."""
    first = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    program = f"python -m {first.parent.name}" if first.name == "__main__.py" else first.name
    argv = [program, *sys.argv[1:]]
    text = " ".join(argv)
    return text if len(text) <= 200 else text[:197] + "..."
