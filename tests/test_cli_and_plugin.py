"""The `hil` command and the pytest plugin, exercised as a user runs them (subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HIL = [sys.executable, "-m", "hil"]


def _run(args: list[str], timeout: float = 240, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def _sim_bench(tmp_path: Path, **changes) -> Path:
    """benches/sim.yaml with its own multicast group, ports and flash file (runs beside other benches)."""
    data = yaml.safe_load((ROOT / "benches/sim.yaml").read_text())
    n = uuid.uuid4().int
    data["bench"] = f"test-{n % 10**8}"
    data["can"]["channel"] = f"239.74.{n % 250 + 1}.{(n >> 8) % 250 + 1}"
    data["can"]["args"] = {"port": 40000 + n % 20000}
    base = 20000 + (n >> 16) % 20000
    data["psu"]["resource"] = f"TCPIP0::127.0.0.1::{base}::SOCKET"
    data["load"]["resource"] = f"TCPIP0::127.0.0.1::{base + 1}::SOCKET"
    data["console"]["url"] = f"socket://127.0.0.1:{base + 2}"
    data["sim"]["flash_file"] = str(tmp_path / "bench.flash")
    data["sim"]["trusted_keys"] = [str(ROOT / "firmware_images/keys/dev-ecdsa-p256.pem"),
                                   str(ROOT / "firmware_images/keys/dev-ed25519.pem")]
    data["images"] = {"recipes": str(ROOT / "firmware_images/recipes"), "build_dir": str(ROOT / "firmware_images/build"),
                      "keys_dir": str(ROOT / "firmware_images/keys"), "profiles": str(ROOT / "firmware_images/profiles")}
    data["can"]["dbc"] = str(ROOT / "benches/dbc/bms.dbc")
    for key, value in changes.items():
        section, _, field = key.partition(".")
        data[section][field] = value
    p = tmp_path / "bench.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_doctor_on_the_virtual_bench_is_healthy(tmp_path):
    result = _run(HIL + ["doctor", "--bench", str(_sim_bench(tmp_path))])
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "E36312A" in out and "BATTEMU" in out and "BMS-HW-A2" in out and "1.0.0" in out, out
    assert "bench healthy" in out


def test_doctor_names_a_supply_that_does_not_answer(tmp_path):
    bench = _sim_bench(tmp_path)
    data = yaml.safe_load(bench.read_text())
    data["virtual"] = False  # a real bench whose supply address answers nothing
    data["psu"]["resource"] = "TCPIP0::127.0.0.1::9::SOCKET"
    data["psu"]["timeout_ms"] = 500
    del data["sim"]
    bench.write_text(yaml.safe_dump(data))
    result = _run(HIL + ["doctor", "--bench", str(bench)], timeout=60)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "supply TCPIP0::127.0.0.1::9::SOCKET" in text and "FAIL" in text, text


def test_hil_sim_prints_endpoints_and_stops_on_ctrl_c(tmp_path):
    bench = _sim_bench(tmp_path)
    proc = subprocess.Popen(HIL + ["sim", "--bench", str(bench), "--ready-line"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        ready = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("HIL-SIM READY"):
                ready = line
                break
        assert "psu" in ready and "console" in ready and "socket://" in ready, ready
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_rejects_bad_arguments_clearly(tmp_path):
    result = _run(HIL + ["flash", "--mode", "sideways", "1.1.0"], timeout=60)
    assert result.returncode == 2 and "'sideways' is not one of" in result.stderr
    result = _run(HIL + ["doctor", "--bench", str(tmp_path / "missing.yaml")], timeout=60)
    assert result.returncode != 0 and "bench file not found" in result.stderr


def _pytest(args: list[str], tmp: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """A user's pytest run; its lock, evidence and reports live in `tmp`, never in the repository."""
    return _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, "--evidence-dir", str(tmp / "ev"),
                 "--reports-dir", str(tmp / "reports")], timeout=timeout,
                env={**os.environ, "HIL_LOCK_DIR": str(tmp / "locks")})


def test_broken_bench_errors_the_remaining_tests_with_one_cause(tmp_path):
    bench = _sim_bench(tmp_path)
    data = yaml.safe_load(bench.read_text())
    data["virtual"] = False
    data["psu"]["resource"] = "TCPIP0::127.0.0.1::9::SOCKET"
    data["psu"]["timeout_ms"] = 300
    del data["sim"]
    bench.write_text(yaml.safe_dump(data))
    result = _pytest(["testcases/test_soc_timing.py", "testcases/test_security_access.py", "--bench", str(bench)],
                     tmp_path, timeout=120)
    out = result.stdout
    assert result.returncode != 0
    assert " 0 failed" in out or "failed" not in out.split("short test summary")[-1], out[-2000:]
    assert out.count("ERROR ") >= 4, out[-2000:]
    assert "could not be opened" in out and "unusable since an earlier failure" in out, out[-2000:]


def test_bench_lock_keeps_two_runs_apart(tmp_path):
    from filelock import FileLock

    bench = _sim_bench(tmp_path)
    locks = tmp_path / "locks"
    locks.mkdir()
    name = yaml.safe_load(bench.read_text())["bench"]
    with FileLock(str(locks / f"{name}.lock")):
        result = _pytest(["testcases/test_security_access.py", "--bench", str(bench)], tmp_path, timeout=120)
    assert result.returncode != 0
    assert "is locked by another run" in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize("bench_file", ["benches/sim-inproc.yaml", "benches/sim.yaml"],
                         ids=["in_process_virtual_bus", "udp_multicast_process"])
def test_first_test_cases_pass_unchanged_on_both_transports(tmp_path, bench_file):
    """Parity: the same test cases, two virtual benches whose CAN transports differ."""
    data = yaml.safe_load((ROOT / bench_file).read_text())
    if data["can"]["interface"] == "udp_multicast":
        bench = _sim_bench(tmp_path)
    else:
        data["sim"]["flash_file"] = str(tmp_path / "bench.flash")
        data["can"]["channel"] = f"parity-{uuid.uuid4().hex[:8]}"
        bench = tmp_path / "bench.yaml"
        bench.write_text(yaml.safe_dump(data))
        # relative paths in the copied file resolve against the copy's folder: make them absolute
        data["sim"]["trusted_keys"] = [str(ROOT / "firmware_images/keys" / Path(k).name) for k in data["sim"]["trusted_keys"]]
        data["images"] = {"recipes": str(ROOT / "firmware_images/recipes"),
                          "build_dir": str(ROOT / "firmware_images/build"), "keys_dir": str(ROOT / "firmware_images/keys")}
        data["can"]["dbc"] = str(ROOT / "benches/dbc/bms.dbc")
        bench.write_text(yaml.safe_dump(data))
    result = _pytest(["testcases/test_update.py", "--bench", str(bench), "-q"], tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "4 passed" in result.stdout, result.stdout[-2000:]
    matrix = (tmp_path / "reports" / "fault-matrix.md").read_text()
    assert "| 9 |" in matrix and "firmware-hangs_until_the_watchdog_fires" in matrix


def test_hil_flash_updates_and_prints_the_outcome(tmp_path):
    bench = _sim_bench(tmp_path)
    result = _run(HIL + ["flash", "--bench", str(bench), "1.1.0"], timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "outcome: SUCCESS" in result.stdout and "running 1.1.0" in result.stdout, result.stdout[-2000:]
    refused = _run(HIL + ["flash", "--bench", str(bench), "0.9.0-downgrade"], timeout=180)
    assert refused.returncode != 0 and "DOWNGRADE_VERSION" in refused.stderr, refused.stdout[-2000:] + refused.stderr


def test_two_virtual_benches_run_side_by_side(tmp_path):
    """Each bench has its own multicast group, ports and flash file: cutting one's power leaves the other running."""
    from hil.bench import Bench
    from hil.config import load_bench
    from hil.contract import MSG_SOC_CORE
    from hil.errors import HilTimeout

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_a = load_bench(_sim_bench(tmp_path / "a"))
    cfg_b = load_bench(_sim_bench(tmp_path / "b", **{"dut.serial_number": "SIM0000002"}))
    with Bench.open(cfg_a, evidence_dir=tmp_path / "a") as a, Bench.open(cfg_b, evidence_dir=tmp_path / "b") as b:
        assert a.uds.read_str(0xF18C) == "SIM0000001"
        assert b.uds.read_str(0xF18C) == "SIM0000002"
        a.psu.power_off()
        frames_b = b.can.collect(MSG_SOC_CORE, 1.0)
        assert len(frames_b) >= 8, "bench b stopped when bench a lost power"
        with pytest.raises(HilTimeout):
            a.can.wait_for(MSG_SOC_CORE, timeout=0.5)
    assert cfg_a.sim is not None and cfg_b.sim is not None
    assert cfg_a.sim.flash_file != cfg_b.sim.flash_file and cfg_a.sim.flash_file.exists() and cfg_b.sim.flash_file.exists()
