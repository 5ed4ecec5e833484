"""A virtual bench process never outlives the run that started it (hil/sim/lifetime.py).

A run killed with SIGKILL (a CI timeout, a cancelled job, the OOM killer) takes its `hil sim` child
with it, and the next run on the same bench passes at once; a bench whose ports another process holds
names that process; an orphan of the same bench file is stopped by the next run that holds the lock.
Hermetic: private bench names, ports and flash files, each test its own HIL_LOCK_DIR.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hil.bench.config import load_bench, socket_resource_address
from hil.errors import BenchBroken
from hil.sim.bench import VirtualBench

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_cli_and_plugin import HIL, _sim_bench  # noqa: E402

#: Every test here runs whole virtual benches (and validation cases in a subprocess): `make test-fast` leaves them out.
pytestmark = pytest.mark.integration

#: A short case that runs with the virtual bench up for several seconds (a fixed 5 s observation window).
CASE = "testcases/test_soc_timing.py::test_soc_cycle_timing_idle"


def _pytest_cmd(bench: Path, tmp: Path, tag: str) -> list[str]:
    return [sys.executable, "-m", "pytest", CASE, "--bench", str(bench), "-q", "-p", "no:cacheprovider",
            "--evidence-dir", str(tmp / f"ev-{tag}"), "--reports-dir", str(tmp / f"rep-{tag}")]


def _sim_children(pid: int) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children(recursive=True) if "sim" in c.cmdline()]
    except psutil.Error:
        return []


def _wait(what: str, condition, timeout: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}")
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(0.1)  # polling another process: nothing to wait on


def test_a_run_killed_with_sigkill_takes_its_bench_along_and_the_next_run_passes(tmp_path):
    bench = _sim_bench(tmp_path)
    env = {**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(_pytest_cmd(bench, tmp_path, "first"), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             env=env)
    try:
        sims = _wait("virtual bench process", lambda: _sim_children(first.pid), 180, first)
        # Kill it in the middle of the case: the bench is up and the test body runs.
        _wait("case start", lambda: list((tmp_path / "ev-first").glob("*soc_cycle_timing_idle*")), 180, first)
        time.sleep(1.0)  # into the case's observation window
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    # The next run at once, on the same bench file: same lock, ports, multicast group and flash file.
    second = subprocess.run(_pytest_cmd(bench, tmp_path, "second"), cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=env)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-4000:]
    assert "1 passed" in out, out[-2000:]
    gone, alive = psutil.wait_procs(sims, timeout=20)
    assert not alive, f"the killed run's virtual bench outlived it: {[p.pid for p in alive]}"


def test_a_taken_port_names_the_process_that_holds_it(tmp_path):
    cfg = load_bench(_sim_bench(tmp_path))
    host, port = socket_resource_address(cfg.psu.resource)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            pytest.skip(f"private port {port} taken by another process")
        raise
    holder.listen()
    bench = VirtualBench(cfg)
    try:
        with pytest.raises(BenchBroken) as err:
            bench.start()
    finally:
        bench.stop()
        holder.close()
    text = str(err.value)
    assert f"psu.resource: port {host}:{port} is in use" in text and f"held by pid {os.getpid()} (" in text, text


def test_an_orphaned_bench_of_the_same_file_is_stopped_by_the_next_run(tmp_path):
    """An orphan as an older version leaves it (no --parent-pid, handed to init): the next `hil sim` holding the
    lock stops it, says so, and starts on the freed ports."""
    bench = _sim_bench(tmp_path)
    env = {**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")}
    # A shell starts the bench in the background and exits: the bench is handed to init, its run is gone.
    launcher = subprocess.run(["bash", "-c", f"{' '.join(HIL)} sim --bench {bench} --lock-held </dev/null "
                               ">/dev/null 2>&1 & echo $!"], cwd=ROOT, capture_output=True, text=True, timeout=30,
                              env=env)
    orphan = psutil.Process(int(launcher.stdout.strip()))
    try:
        host, port = socket_resource_address(load_bench(bench).psu.resource)
        _wait("orphan listening", lambda: any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                                              for c in psutil.net_connections(kind="tcp")), 120)
        proc = subprocess.Popen(HIL + ["sim", "--bench", str(bench), "--ready-line"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        seen = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                seen.append(line)
                if line.startswith("HIL-SIM READY"):
                    break
            text = "".join(seen)
            assert "HIL-SIM READY" in text, text
            assert f"stopped an orphaned virtual bench of {bench}: pid {orphan.pid}" in text, text
            assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        if orphan.is_running():
            orphan.kill()
