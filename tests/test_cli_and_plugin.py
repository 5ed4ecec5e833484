"""The `hil` command and the pytest plugin, exercised as a user runs them (subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench_ports import private_bench_data, write_bench

ROOT = Path(__file__).resolve().parents[1]
HIL = [sys.executable, "-m", "hil"]


def _run(args: list[str], timeout: float = 240, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def _sim_bench(tmp_path: Path, **changes) -> Path:
    """benches/sim.yaml with its own name, multicast group, ports and flash file (runs beside other benches)."""
    data = private_bench_data("benches/sim.yaml", tmp_path)
    for key, value in changes.items():
        section, _, field = key.partition(".")
        data[section][field] = value
    return write_bench(data, tmp_path / "bench.yaml")


@pytest.mark.integration
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


def _inherit_sigint(disposition):
    """A child that starts with SIGINT as given: SIG_IGN is what a non-interactive shell's background job passes on
    (`make test &`, load_soak.sh, some CI runners), whatever the test run itself inherited."""
    return lambda: signal.signal(signal.SIGINT, disposition)


@pytest.mark.integration
@pytest.mark.parametrize("stop_signal, inherited", [
    pytest.param(signal.SIGINT, signal.SIG_DFL, id="ctrl_c"),
    pytest.param(signal.SIGINT, signal.SIG_IGN, id="ctrl_c-sigint_ignored_by_its_parent"),
    pytest.param(signal.SIGTERM, signal.SIG_DFL, id="sigterm"),
])
def test_hil_sim_prints_endpoints_and_stops_on_ctrl_c(tmp_path, stop_signal, inherited):
    """Ctrl-C (SIGINT, what the plugin sends its bench) and SIGTERM stop `hil sim` at once, also when it inherited
    SIGINT ignored: Python then raises no KeyboardInterrupt, and the bench was killed after a 15 s timeout."""
    bench = _sim_bench(tmp_path)
    proc = subprocess.Popen(HIL + ["sim", "--bench", str(bench), "--ready-line"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=_inherit_sigint(inherited),
                            env={**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")})
    try:
        ready = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("HIL-SIM READY"):
                ready = line
                break
        assert "psu" in ready and "console" in ready and "socket://" in ready, ready
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_rejects_bad_arguments_clearly(tmp_path):
    result = _run(HIL + ["flash", "--bench", str(_sim_bench(tmp_path)), "--mode", "sideways", "1.1.0"], timeout=60)
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


@pytest.mark.integration
@pytest.mark.parametrize("bench_file", ["benches/sim-inproc.yaml", "benches/sim.yaml"],
                         ids=["in_process_virtual_bus", "udp_multicast_process"])
def test_first_test_cases_pass_unchanged_on_both_transports(tmp_path, bench_file):
    """Parity: the same test cases, two virtual benches whose CAN transports differ."""
    data = private_bench_data(bench_file, tmp_path, prefix="parity")
    data["sim"]["flash_timing"] = "fast"  # parity is about the CAN transport; flash timing is make suite's
    bench = write_bench(data, tmp_path / "bench.yaml")
    result = _pytest(["testcases/test_update.py", "--bench", str(bench), "-q"], tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "4 passed" in result.stdout, result.stdout[-2000:]
    matrix = (tmp_path / "reports" / "fault-matrix.md").read_text()
    assert "| 9 |" in matrix and "firmware-hangs_until_the_watchdog_fires" in matrix


@pytest.mark.integration
def test_hil_flash_updates_and_prints_the_outcome(tmp_path):
    bench = _sim_bench(tmp_path, **{"sim.flash_timing": "fast"})
    result = _run(HIL + ["flash", "--bench", str(bench), "1.1.0"], timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "outcome: SUCCESS" in result.stdout and "running 1.1.0" in result.stdout, result.stdout[-2000:]
    refused = _run(HIL + ["flash", "--bench", str(bench), "0.9.0-downgrade"], timeout=180)
    assert refused.returncode != 0 and "DOWNGRADE_VERSION" in refused.stderr, refused.stdout[-2000:] + refused.stderr


@pytest.mark.integration
def test_two_virtual_benches_run_side_by_side(tmp_path):
    """Each bench has its own multicast group, ports and flash file: cutting one's power leaves the other running."""
    from hil.bench.bench import Bench
    from hil.bench.config import load_bench
    from hil.bench.contract import MSG_SOC_CORE
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


# ---------------------------------------------------------------------- bench lock, inert plugin, start errors
_HOLDING_TEST = '''
import time
from pathlib import Path


def test_holds_the_bench(dut):
    assert dut.version()
    Path("{started}").write_text("up")
    deadline = time.monotonic() + 120
    while not Path("{release}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
'''


@pytest.mark.integration
def test_hil_flash_and_doctor_during_a_pytest_run_fail_at_once_naming_the_holder(tmp_path):
    bench = _sim_bench(tmp_path)
    suite = tmp_path / "suite"
    suite.mkdir()
    started, release = tmp_path / "started", tmp_path / "release"
    (suite / "test_hold.py").write_text(_HOLDING_TEST.format(started=started, release=release))
    env = {**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")}
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "--bench", str(bench)], cwd=suite, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not started.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started.exists(), run.communicate(timeout=30)[0][-3000:] if run.poll() is not None else "not started"
        for command in (["flash", "--bench", str(bench), "1.1.0"], ["doctor", "--bench", str(bench)]):
            t0 = time.monotonic()
            refused = _run(HIL + command, timeout=60, env=env)
            took = time.monotonic() - t0
            text = refused.stdout + refused.stderr
            assert refused.returncode != 0, text
            assert "is locked by another run" in text and f"pid {run.pid}" in text and "pytest" in text, text
            assert took < 20, f"hil {command[0]} took {took:.1f} s to refuse"  # no simulator started, no timeout waited
        release.write_text("go")
        out, _ = run.communicate(timeout=120)
        assert run.returncode == 0, out[-3000:]
    finally:
        release.write_text("go")
        if run.poll() is None:
            run.kill()
    lock_dir = tmp_path / "locks"
    assert not list(lock_dir.glob("*.holder.json")), "holder record left behind after the run"


def test_plugin_is_inert_for_unrelated_tests_without_a_bench_file(tmp_path):
    (tmp_path / "test_unrelated.py").write_text("def test_sum():\n    assert sum([1, 2]) == 3\n")
    for extra in (["-p", "hil.plugin"], []):
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", *extra], cwd=tmp_path, capture_output=True,
                                text=True, timeout=120, env={**os.environ, "HIL_BENCH": ""})
        assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr
    assert not (tmp_path / "reports").exists(), "an inert plugin wrote reports"


@pytest.mark.integration
def test_a_virtual_bench_that_cannot_start_says_why_at_once(tmp_path):
    import socket

    bench = _sim_bench(tmp_path)
    psu_port = int(yaml.safe_load(bench.read_text())["psu"]["resource"].split("::")[2])
    with socket.create_server(("127.0.0.1", psu_port)):
        t0 = time.monotonic()
        doctor = _run(HIL + ["doctor", "--bench", str(bench)], timeout=120,
                      env={**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")})
        took = time.monotonic() - t0
        text = doctor.stdout + doctor.stderr
        assert doctor.returncode != 0 and "exited with code 1" in text and f"{psu_port} is in use" in text, text
        assert took < 60, took
        (tmp_path / "suite").mkdir()
        (tmp_path / "suite" / "test_one.py").write_text("def test_one(dut):\n    assert dut.version()\n")
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", f"--bench={bench}"], cwd=tmp_path / "suite",
                                capture_output=True, text=True, timeout=120,
                                env={**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")})
        assert result.returncode != 0 and f"{psu_port} is in use" in result.stdout, result.stdout[-3000:]
    (tmp_path / "m").mkdir()
    missing = _sim_bench(tmp_path / "m")
    data = yaml.safe_load(missing.read_text())
    data["can"]["dbc"] = str(tmp_path / "nowhere.dbc")
    missing.write_text(yaml.safe_dump(data))
    doctor = _run(HIL + ["doctor", "--bench", str(missing)], timeout=120,
                  env={**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")})
    assert doctor.returncode != 0 and "nowhere.dbc does not exist" in doctor.stdout + doctor.stderr, doctor.stdout


@pytest.mark.integration
def test_hil_sim_holds_the_lock_and_says_the_board_is_unpowered(tmp_path):
    bench = _sim_bench(tmp_path)
    env = {**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks"), "COLUMNS": "200"}
    proc = subprocess.Popen(HIL + ["sim", "--bench", str(bench)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "Ctrl-C stops the bench" in line:
                break
        text = "".join(seen)
        assert "board is unpowered" in text and "--power-on" in text, text
        refused = _run(HIL + ["doctor", "--bench", str(bench)], timeout=60, env=env)
        assert refused.returncode != 0 and "is locked by another run" in refused.stdout + refused.stderr
        assert f"pid {proc.pid}" in refused.stdout + refused.stderr and "sim" in refused.stdout + refused.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list((tmp_path / "locks").glob("*.holder.json"))


@pytest.mark.integration
def test_a_suite_outside_the_repository_runs_from_the_fixture_reference(tmp_path):
    """tests/outside_suite (written from docs/fixtures.md only), copied to a temporary folder and run there:
    no -p, a relative --bench, reports and evidence in that folder, none in the repository."""
    import shutil

    work = tmp_path / "my-suite"
    shutil.copytree(ROOT / "tests/outside_suite", work)
    (work / "benches").mkdir()
    # The plugin's path is the point, not flash timing or the bus rate: the board in the suite's process, unpaced.
    data = private_bench_data("benches/sim-inproc.yaml", work / "benches")
    data["sim"]["flash_timing"], data["can"]["pacing"] = "fast", False
    bench = write_bench(data, work / "benches" / "bench.yaml")
    # Only this suite's own evidence counts: a validation run beside this test writes there too.
    repo_evidence = ROOT / "reports" / "evidence"
    ours = "test_my_updates"
    before = {p for p in repo_evidence.glob(f"*{ours}*")} if repo_evidence.is_dir() else set()
    env = {**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")}
    env.pop("HIL_BENCH", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "--bench", str(bench.relative_to(work))], cwd=work,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "6 passed" in result.stdout, result.stdout[-2000:]
    assert (work / "reports" / "run-record.json").is_file() or list((work / "reports").glob("run-record.*"))
    evidence = work / "reports" / "evidence"
    assert any(evidence.glob("*test_upgrade*/can.asc")), sorted(p.name for p in evidence.glob("*"))
    after = {p for p in repo_evidence.glob(f"*{ours}*")} if repo_evidence.is_dir() else set()
    assert after == before, f"the run wrote into the repository's reports/: {sorted(after - before)}"
    # --bench=FILE is the same option: the same relative file is found (collection loads the bench file)
    listed = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", f"--bench={bench.relative_to(work)}"],
                            cwd=work, capture_output=True, text=True, timeout=120, env=env)
    assert listed.returncode == 0 and "6 tests collected" in listed.stdout, listed.stdout[-2000:] + listed.stderr
    missing = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "--bench=benches/nope.yaml"],
                             cwd=work, capture_output=True, text=True, timeout=120, env=env)
    assert missing.returncode != 0 and "nope.yaml: bench file not found" in missing.stdout + missing.stderr


def test_bench_lock_held_under_xdist_names_the_rack(tmp_path, monkeypatch):
    from hil.errors import BenchBusy
    from hil.bench.lock import BenchLock

    first = BenchLock("one-bench", tmp_path)
    first.acquire(timeout=0)
    try:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
        with pytest.raises(BenchBusy, match=r"give a rack instead \(--rack FILE"):
            BenchLock("one-bench", tmp_path).acquire(timeout=0)
        monkeypatch.delenv("PYTEST_XDIST_WORKER")
        with pytest.raises(BenchBusy) as plain:
            BenchLock("one-bench", tmp_path).acquire(timeout=0)
        assert "--rack" not in str(plain.value)
    finally:
        first.release()
