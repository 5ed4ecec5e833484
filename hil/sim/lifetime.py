"""A virtual bench process never outlives the run that started it, and a taken port names who holds it.

`hil sim --parent-pid PID` (how `hil.bench.bench.SimProcess` starts it) ends when its parent ends, however
the parent ends - a SIGKILL from a CI timeout or the OOM killer included:
- the parent keeps the write end of a pipe on the child's stdin; the child watches it, and end-of-file
  (the kernel closes it when the parent dies) stops the bench;
- on Linux the child also asks for SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG, via ctypes),
  in case the pipe's write end leaked into another process. The kernel sends it when the *thread* that
  started the child ends, so the parent asks for it only when it starts the child from its main thread;
- once a stop is requested, the process ends within `SHUTDOWN_GRACE_S` even if its orderly stop hangs.

A bench started after an orphan of an older version (or a hung one) still finds its ports taken: the
starting `hil sim` holds the bench lock (itself or through its parent), so a `hil sim --lock-held` of the
same bench file whose parent is gone belongs to nobody - it is stopped, and said so. Any other process
on the bench's ports is named with its pid and command in the error.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import psutil

#: An orderly stop (board off, endpoints closed, flash flushed) takes well under a second; past this the
#: process ends anyway - a bench that cannot stop must not outlive its run.
SHUTDOWN_GRACE_S = 15.0
#: How long an orphan gets to stop on SIGTERM before it is killed.
ORPHAN_STOP_S = 10.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class PortHolder:
    """A process listening on a port: its pid and command line."""

    pid: int
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command})"


def _command(proc: psutil.Process) -> str:
    try:
        text = shlex.join(proc.cmdline())
    except (psutil.Error, OSError):
        return "command unknown"
    return text if len(text) <= 300 else text[:297] + "..."


def port_holder(host: str, port: int) -> PortHolder | None:
    """The process listening on TCP `host:port` (or on every address at that port), if this user may see it."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if conn.laddr.ip not in (host, "0.0.0.0", "::", "::ffff:" + host) or conn.pid is None:
            continue
        try:
            return PortHolder(conn.pid, _command(psutil.Process(conn.pid)))
        except psutil.Error:
            return PortHolder(conn.pid, "command unknown")
    return None


# --------------------------------------------------------------------------- the child's side
def exit_with_parent(parent_pid: int, stop: Callable[[str], None], *, death_signal: bool) -> None:
    """In `hil sim`: call `stop(reason)` when the parent `parent_pid` ends (end-of-file on stdin, and on Linux
    the parent-death signal when `death_signal`; the SIGTERM handler of `hil sim` then calls `stop`)."""
    if death_signal and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
                print(f"hil sim: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        except (OSError, AttributeError) as exc:
            print(f"hil sim: no parent-death signal ({exc}); watching the parent's pipe only", file=sys.stderr)

    def watch() -> None:
        # os.read, not sys.stdin: a daemon thread blocked in a buffered read holds the reader's lock, and the
        # interpreter then aborts at exit ("could not acquire lock for <stdin> at interpreter shutdown", SIGABRT).
        try:
            while os.read(stdin, 4096):  # the parent never writes: only end-of-file ends this
                pass
        except (OSError, ValueError):
            pass
        stop(f"its parent (pid {parent_pid}) closed the pipe - it ended")

    stdin = sys.stdin.fileno()
    threading.Thread(target=watch, name="hil-sim-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was asked for
        stop(f"its parent (pid {parent_pid}) is gone")


def exit_within(grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Once a stop is requested: end the process after `grace_s` even if the orderly stop hangs."""

    def force() -> None:
        print(f"hil sim: the virtual bench did not stop within {grace_s:g} s; exiting anyway", file=sys.stderr,
              flush=True)
        os._exit(3)

    timer = threading.Timer(grace_s, force)
    timer.daemon = True
    timer.start()


# --------------------------------------------------------------------------- orphans
def _bench_arg(cmdline: list[str]) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg == "--bench" and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith("--bench="):
            return arg.split("=", 1)[1]
    return None


def _is_hil_sim(cmdline: list[str]) -> bool:
    """`python -m hil sim ...` or the `hil sim ...` entry point."""
    for i, arg in enumerate(cmdline[:-1]):
        if cmdline[i + 1] == "sim" and (arg == "hil" or Path(arg).name == "hil"):
            return True
    return False


def _parent_gone(proc: psutil.Process, cmdline: list[str]) -> bool:
    """The process's original parent has ended: the pid its `--parent-pid` names is no longer its parent,
    or (an older bench without that option) it was handed to init."""
    try:
        ppid = proc.ppid()
    except psutil.Error:
        return False
    if "--parent-pid" in cmdline:
        i = cmdline.index("--parent-pid")
        try:
            return ppid != int(cmdline[i + 1])
        except (IndexError, ValueError):
            return False
    return ppid == 1


def orphaned_benches(bench_file: Path, exclude: Iterable[int] = ()) -> list[psutil.Process]:
    """`hil sim --lock-held` processes of this user for the same bench file whose parent has ended."""
    target = Path(bench_file).resolve()
    skip = {os.getpid(), os.getppid(), *exclude}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if proc.pid in skip or not _is_hil_sim(cmdline) or "--lock-held" not in cmdline:
                continue
            if proc.info["uids"] is not None and proc.info["uids"].real != os.getuid():
                continue
            bench = _bench_arg(cmdline)
            if bench is None or (Path(proc.cwd()) / bench).resolve() != target:
                continue
            if _parent_gone(proc, cmdline):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def stop_orphans(bench_file: Path, timeout_s: float = ORPHAN_STOP_S) -> list[PortHolder]:
    """Stop every orphaned virtual bench of `bench_file` (SIGTERM, then SIGKILL after `timeout_s`); returns them.

    Call only while holding the bench's lock: the lock says nobody owns these processes.
    """
    orphans = orphaned_benches(bench_file)
    stopped = [PortHolder(p.pid, _command(p)) for p in orphans]
    for proc in orphans:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(orphans, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5.0)
    return stopped
