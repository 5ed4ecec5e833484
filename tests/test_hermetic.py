"""The framework's tests run beside any validation run (`make test` while `pytest testcases --bench
benches/sim-inproc.yaml` runs): their own lock directory, and benches that share nothing with a
shipped one (tests/bench_ports.py, held by tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hil.bench.config import load_bench

from bench_ports import (footprint_of_config, footprint_of_file, private_bench_file, private_config, private_ports,
                         shared_with_shipped, shipped)

ROOT = Path(__file__).resolve().parents[1]
VIRTUAL = ["benches/sim.yaml", "benches/sim-inproc.yaml", "benches/sim-fd.yaml", "benches/sim-vendor-b.yaml",
           "benches/racks/sim-rack/rack-1.yaml"]


def test_the_run_has_its_own_lock_directory():
    from hil.bench.lock import lock_dir
    from hil.rack.lease import lock_dir as lease_dir

    mine = Path(os.environ["HIL_LOCK_DIR"])
    assert mine.is_relative_to(Path(tempfile.gettempdir())) and mine.name.startswith("hil-test-locks-"), mine
    assert lock_dir() == mine and lease_dir() == mine
    assert not mine.is_relative_to(Path.home() / ".hil")


def test_every_shipped_bench_is_known_to_the_guard():
    names = {fp.name for fp in shipped()}
    assert {"sim-1", "sim-inproc", "sim-fd", "sim-vendor-b", "sim-rack-1", "sim-rack-4"} <= names, names
    sim = footprint_of_file(ROOT / "benches/sim.yaml")
    assert sim is not None and {27025, 27026, 27027} <= sim.tcp and sim.flash == ROOT / ".hil/sim-1.flash"


@pytest.mark.parametrize("source", VIRTUAL)
def test_a_private_copy_shares_nothing_with_a_shipped_bench(tmp_path, source):
    original = footprint_of_file(ROOT / source)
    assert original is not None and shared_with_shipped(original), "the original is shipped: the guard must see it"
    copy = private_bench_file(source, tmp_path)
    footprint = footprint_of_file(copy)
    assert footprint is not None and shared_with_shipped(footprint) == []
    cfg = load_bench(copy)  # the copy is a working bench file anywhere (paths made absolute)
    assert shared_with_shipped(footprint_of_config(cfg)) == []
    assert shared_with_shipped(footprint_of_config(private_config(load_bench(ROOT / source), tmp_path))) == []
    same = load_bench(ROOT / source)
    assert (cfg.profile, cfg.images, cfg.can.dbc, cfg.sim and cfg.sim.trusted_keys) == \
        (same.profile, same.images, same.can.dbc, same.sim and same.sim.trusted_keys)


def test_private_ports_stay_off_shipped_ports():
    shipped_tcp = set().union(*(fp.tcp for fp in shipped()))
    for _ in range(300):
        ports = private_ports()
        assert shipped_tcp.isdisjoint(range(ports.tcp_base, ports.tcp_base + 3))
        assert ports.tcp_base + 2 < 32768 and ports.udp_port < 32768  # below the ephemeral range


GUARDED = '''
import subprocess
import sys

import can
from hil.bench.config import load_bench
from hil.bench.lock import BenchLock
from hil.sim.bench import VirtualBench

from bench_ports import private_config

ROOT = "{root}"


def test_takes_the_lock_of_a_shipped_bench():
    BenchLock("sim-inproc")


def test_starts_a_shipped_bench():
    VirtualBench(load_bench(ROOT + "/benches/sim-inproc.yaml"))


def test_hands_a_shipped_bench_to_a_subprocess():
    subprocess.run([sys.executable, "-m", "hil", "doctor", "--bench", ROOT + "/benches/sim.yaml"])


def test_hil_command_on_the_default_bench():
    subprocess.run([sys.executable, "-m", "hil", "flash", "1.1.0"], cwd=ROOT)


def test_listens_on_a_shipped_bench_s_bus():
    can.Bus(interface="udp_multicast", channel="239.74.163.2")  # python-can's default port is sim.yaml's


def test_swallows_the_refusal():
    try:
        BenchLock("sim-1")
    except Exception:
        pass


def test_private_bench(tmp_path):
    cfg = private_config(load_bench(ROOT + "/benches/sim-inproc.yaml"), tmp_path)
    lock = BenchLock(cfg.bench)
    lock.acquire()
    lock.release()
'''


def test_the_guard_fails_a_test_that_uses_a_shipped_bench(tmp_path):
    """tests/conftest.py as a plugin of a run of its own: each way of touching a shipped bench fails, named."""
    (tmp_path / "test_guarded.py").write_text(GUARDED.format(root=ROOT))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                             "--rootdir", str(tmp_path), str(tmp_path / "test_guarded.py")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    out = result.stdout
    assert "6 failed, 1 passed" in out, out[-4000:]
    assert "the bench lock of 'sim-inproc' shares with a shipped bench: bench name 'sim-inproc'" in out, out
    assert "the virtual bench 'sim-inproc'" in out and "flash file" in out, out
    assert f"the bench file {ROOT}/benches/sim.yaml of the command" in out and "TCP port 27025" in out, out
    assert "CAN channel udp_multicast:239.74.163.2:43113" in out, out
    assert "not hermetic: the bench lock of 'sim-1'" in out, out  # swallowed, still failed
