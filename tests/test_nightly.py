"""The nightly profile: one switch (`--nightly` or HIL_NIGHTLY=1) turns on the long work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench_ports import private_bench_file

ROOT = Path(__file__).resolve().parents[1]

PROBE = '''
import os

def test_probe(request):
    print("sweep_points=%s nightly_env=%s" % (request.config.getoption("--sweep-points"), os.environ.get("HIL_NIGHTLY")))
'''


def _probe(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    (tmp_path / "test_probe.py").write_text(PROBE)
    base = {k: v for k, v in os.environ.items() if k != "HIL_NIGHTLY"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "hil.plugin", "-p", "no:cacheprovider", "-s", "-q",
                             "--rootdir", str(tmp_path), "--bench", str(private_bench_file("benches/sim.yaml", tmp_path)),
                             str(tmp_path / "test_probe.py"), *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**base, **(env or {})})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_nightly_switch_widens_the_sweep_and_sets_the_fuzz_budget(tmp_path):
    assert "sweep_points=2 nightly_env=None" in _probe(tmp_path)
    assert "sweep_points=25 nightly_env=1" in _probe(tmp_path, "--nightly")
    assert "sweep_points=25 nightly_env=1" in _probe(tmp_path, env={"HIL_NIGHTLY": "1"})
    assert "sweep_points=7 nightly_env=1" in _probe(tmp_path, "--nightly", "--sweep-points", "7")  # explicit wins


def test_timing_soak_runs_only_at_night(tmp_path):
    base = {k: v for k, v in os.environ.items() if k != "HIL_NIGHTLY"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "testcases/test_soak.py",
                             "--bench", str(private_bench_file("benches/sim.yaml", tmp_path)),
                             "--reports-dir", str(tmp_path / "r"), "--evidence-dir", str(tmp_path / "e")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=base)
    assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout[-2000:]
    assert "nightly work: run with --nightly (or HIL_NIGHTLY=1)" in result.stdout
