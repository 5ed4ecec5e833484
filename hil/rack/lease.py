"""Bench leases: who holds which bench of a rack, renewed by a heartbeat; a lost lease is noticed.

Two backends:
- `FileLeases` (default): a lease file per bench in the lock directory of this host
  (`$HIL_LOCK_DIR`, default `~/.hil/locks`). The holder rewrites its heartbeat every
  `heartbeat_s`. A lease whose holder died (same host, pid gone) or that was not renewed for
  `stale_after_s` may be taken over; its former holder then finds on its next heartbeat that the
  lease is no longer its own.
- `LabgridLeases` (hil/rack/lease_labgrid.py): labgrid's coordinator across hosts (places, tags,
  reservations).

A lease backend only decides who may use a bench; the bench itself is opened by `Bench.open`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from filelock import FileLock, Timeout

from hil.errors import BenchBroken, BenchBusy


class LeaseLost(BenchBroken):
    """The lease on a bench is no longer ours (taken over, released by someone else, coordinator gone)."""


class Lease(Protocol):
    """One held bench."""

    bench: str

    def renew(self) -> None:
        """Heartbeat. Raises LeaseLost when the lease is no longer ours."""

    def release(self) -> None:
        """Give the bench back (only if it is still ours)."""

    def describe(self) -> dict[str, Any]:
        """Who holds it, since when, through which backend (for the run record)."""


class LeaseBackend(Protocol):
    """Hands out leases on benches by name."""

    def try_acquire(self, bench: str, tags: dict[str, str]) -> Lease:
        """Lease `bench` now or raise BenchBusy naming its holder."""


def lock_dir() -> Path:
    """Where bench locks and lease files live on this host."""
    return Path(os.environ.get("HIL_LOCK_DIR", Path.home() / ".hil" / "locks"))


def default_owner() -> str:
    """A name for this holder that says who and where: user@host pid N (xdist worker)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"{os.environ.get('USER', 'hil')}@{socket.gethostname()} pid {os.getpid()}" + (f" ({worker})" if worker else "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# ---------------------------------------------------------------------- lock file with a heartbeat
@dataclass
class FileLease:
    """A lease file we wrote; `renew` rewrites its heartbeat while it still carries our token."""

    bench: str
    path: Path
    token: str
    owner: str
    acquired: float
    guard_timeout: float = 5.0
    took_over: dict[str, Any] | None = None
    released: bool = False

    def _guard(self) -> FileLock:
        return FileLock(str(self.path) + ".guard")

    def renew(self) -> None:
        try:
            with self._guard().acquire(timeout=self.guard_timeout):
                holder = _read(self.path)
                if holder is None:
                    raise LeaseLost(f"lease on bench {self.bench} lost: {self.path} was removed")
                if holder.get("token") != self.token:
                    raise LeaseLost(f"lease on bench {self.bench} lost: {self.path} is now held by "
                                    f"{holder.get('owner', '?')} (since {_iso(holder.get('acquired'))})")
                _write(self.path, {**holder, "heartbeat": time.time()})
        except Timeout:
            raise LeaseLost(f"lease on bench {self.bench}: its guard {self.path}.guard stayed locked "
                            f"for {self.guard_timeout:.0f} s; cannot renew") from None

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            with self._guard().acquire(timeout=self.guard_timeout):
                holder = _read(self.path)
                if holder is not None and holder.get("token") == self.token:
                    self.path.unlink()
        except Timeout:  # releasing is best effort: a lease not renewed goes stale anyway
            pass

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "file", "file": str(self.path), "owner": self.owner,
                               "acquired": _iso(self.acquired)}
        if self.took_over:
            out["took_over_stale_lease_of"] = self.took_over.get("owner")
        return out


def _iso(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"owner": f"unreadable lease file {path}", "heartbeat": 0.0}  # garbage: treated as stale
    return data if isinstance(data, dict) else {"owner": f"unreadable lease file {path}", "heartbeat": 0.0}


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)  # atomic: a reader sees the old or the new lease, never half of one


@dataclass
class FileLeases:
    """Leases as files in `directory`: `<bench>.lease` (JSON: token, owner, host, pid, heartbeat)."""

    stale_after_s: float = 15.0
    directory: Path = field(default_factory=lock_dir)
    owner: str = field(default_factory=default_owner)

    def path(self, bench: str) -> Path:
        return self.directory / f"{bench}.lease"

    def stale_reason(self, holder: dict[str, Any], now: float) -> str | None:
        """Why a lease may be taken over, or None while its holder is alive and renewing it."""
        age = now - float(holder.get("heartbeat", 0.0))
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                and not _pid_alive(holder["pid"]):
            return f"its holder (pid {holder['pid']} on this host) is gone"
        if age > self.stale_after_s:
            return f"its heartbeat is {age:.0f} s old (stale after {self.stale_after_s:.0f} s)"
        return None

    def try_acquire(self, bench: str, tags: dict[str, str] | None = None) -> FileLease:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(bench)
        try:
            with FileLock(str(path) + ".guard").acquire(timeout=5.0):
                now = time.time()
                holder = _read(path)
                took_over = None
                if holder is not None:
                    why = self.stale_reason(holder, now)
                    if why is None:
                        raise BenchBusy(f"bench {bench} is leased by {holder.get('owner', '?')} since "
                                        f"{_iso(holder.get('acquired'))}, heartbeat {now - float(holder.get('heartbeat', 0)):.1f} s ago "
                                        f"({path})")
                    took_over = {**holder, "why": why}
                token = uuid.uuid4().hex
                _write(path, {"token": token, "bench": bench, "owner": self.owner, "host": socket.gethostname(),
                              "pid": os.getpid(), "acquired": now, "heartbeat": now, "tags": tags or {}})
        except Timeout:
            raise BenchBusy(f"bench {bench}: lease guard {path}.guard stayed locked for 5 s") from None
        return FileLease(bench, path, token, self.owner, now, took_over=took_over)


# ---------------------------------------------------------------------- heartbeat
class LeaseKeeper:
    """Renews a lease every `interval` s in a thread; calls `on_lost(cause)` once when it is gone."""

    def __init__(self, lease: Lease, interval: float, on_lost: Callable[[str], None]) -> None:
        self.lease = lease
        self.interval = interval
        self.on_lost = on_lost
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"hil-lease-{lease.bench}", daemon=True)

    def start(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.lease.renew()
            except LeaseLost as exc:
                self.lost = str(exc)
            except Exception as exc:  # a renewal that cannot be made is a lost lease too
                self.lost = f"lease on bench {self.lease.bench}: renewal failed: {type(exc).__name__}: {exc}"
            if self.lost:
                self.on_lost(self.lost)
                return

    def stop(self, release: bool = True) -> None:
        """Stop renewing and give the bench back (unless it was lost)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 10.0)
        if release and self.lost is None:
            self.lease.release()


def acquire_one(backend: LeaseBackend, candidates: list[tuple[str, dict[str, str]]], wait_s: float,
                poll_s: float = 0.5) -> Lease:
    """Lease the first free bench of `candidates` (in order); wait up to `wait_s` for one. BenchBusy says who holds them."""
    deadline = time.monotonic() + wait_s
    while True:
        busy = []
        for bench, tags in candidates:
            try:
                return backend.try_acquire(bench, tags)
            except BenchBusy as exc:
                busy.append(str(exc))
        if time.monotonic() >= deadline:
            close = getattr(backend, "close", None)
            if close is not None:  # a coordinator session is not kept open for nothing
                close()
            raise BenchBusy(f"no free bench among {', '.join(b for b, _ in candidates)} "
                            f"(waited {wait_s:.0f} s):\n  " + "\n  ".join(busy))
        time.sleep(poll_s)  # polling the holders: a lease file has no change event across hosts
