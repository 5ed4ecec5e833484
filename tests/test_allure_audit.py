"""Allure for auditors: requirement labels, unknown ids refused, categories from hil.errors, environment."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hil import errors
from hil.report import allure as allure_audit
from hil.report.requirements import CATALOGUE

from bench_ports import private_bench_file

ROOT = Path(__file__).resolve().parents[1]


def _pytest(tmp: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp / "test_case.py").write_text(source)
    bench = private_bench_file("benches/sim.yaml", tmp)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "hil.plugin", "-p", "no:cacheprovider", "-q",
                           str(tmp / "test_case.py"), "--rootdir", str(tmp), "--bench", str(bench),
                           *args], cwd=tmp, capture_output=True, text=True, timeout=120)


def test_unknown_requirement_id_fails_collection_naming_it_and_the_accepted_ids(tmp_path):
    result = _pytest(tmp_path, 'import pytest\n\n@pytest.mark.requirement("R156-integrty")\ndef test_x():\n    pass\n')
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error: nothing ran
    text = result.stdout + result.stderr
    assert "unknown requirement id" in text and "'R156-integrty'" in text and "test_case.py::test_x" in text
    assert "accepted ids" in text and all(rid in text for rid in CATALOGUE)
    assert "passed" not in text


def test_labels_follow_the_catalogue(tmp_path):
    source = ('import pytest\n\n@pytest.mark.requirement("R156-recovery", "ISO24089-recovery")\n'
              'def test_power_cut_is_survived():\n    """The DUT survives a power cut"""\n\n'
              '@pytest.mark.requirement("BMS-soc-timing")\ndef test_timing():\n    pass\n')
    result = _pytest(tmp_path, source, "--alluredir", str(tmp_path / "results"))
    assert result.returncode == 0, result.stdout + result.stderr
    labels = {}
    for f in (tmp_path / "results").glob("*-result.json"):
        r = json.loads(f.read_text())
        labels[r["name"]] = {(lab["name"], lab["value"]) for lab in r["labels"]}
    cut = labels["test_power_cut_is_survived"]
    assert ("epic", "UN Regulation No. 156") in cut and ("epic", "ISO 24089:2023") in cut
    assert ("feature", "UN Regulation No. 156 7.2.2.1.1 - R156-recovery: recovery after a failed or interrupted update") in cut
    assert ("story", "The DUT survives a power cut") in cut and ("severity", "critical") in cut
    assert ("tag", "R156-recovery") in cut
    timing = labels["test_timing"]
    assert ("story", "timing") in timing and ("severity", "normal") in timing


@pytest.mark.parametrize(("message", "category"), [
    ("hil.errors.HilTimeout: update did not reach a terminal state within 60 s\n--- seen instead ---\nIDLE", "Timeout"),
    ("TimeoutError: timed out", "Timeout"),
    ("hil.errors.BenchBroken: bench sim-1 could not be opened: refused", "Bench error"),
    ("hil.errors.LimitViolation: supply voltage 30 V above max_voltage 16 V", "Bench error"),
    ("hil.errors.ReadbackMismatch: output commanded ON, instrument reports OFF", "Bench error"),
    ("AssertionError: update ended ROLLED_BACK\nassert False", "DUT failure"),
    ("hil.dut.checks.VerdictError: DUT not in the expected final state:\n- F189 = '1.0.0'", "DUT failure"),
    ("hil.errors.UdsError: ReadDataByIdentifier F1A0: NRC 0x31", "DUT failure"),
    ("hil.errors.UpdateFailed: the DUT rejected the staged image: HASH_MISMATCH", "DUT failure"),
])
def test_categories_sort_failures_by_exception_type(message, category):
    """First matching rule wins, as in Allure; the patterns use no syntax JavaScript refuses."""
    rules = allure_audit.categories()
    for rule in rules:
        assert "(?" not in rule["messageRegex"].replace("(?:", ""), "inline flags break Allure 3 (JavaScript)"
    matched = next(r["name"] for r in rules if re.search(r["messageRegex"], message))
    assert matched == category


def test_every_framework_exception_has_a_category():
    """A new exception in hil/errors.py must be placed: the categories are derived from the types."""
    placed = {n for names in allure_audit.error_types().values() for n in names}
    for name, obj in vars(errors).items():
        if isinstance(obj, type) and issubclass(obj, errors.HilError) and obj is not errors.HilError:
            assert f"hil.errors.{name}" in placed, f"{name} is in no category (hil/report/allure.py)"


def test_environment_properties(tmp_path):
    identity = {"bench": "sim-1", "virtual": True, "dut": {"serial": "SIM0000001", "software": "1.0.0"},
                "psu": "Keysight Technologies,E36312A,MY-HILSIM-0001,2.1.0-sim", "load": None}
    env = allure_audit.environment(identity, {"commit": "abc123", "dirty": False}, {"python": "3.11", "imgtool": "2.5.0"})
    allure_audit.write_environment(tmp_path, env, executor={"name": "bms-ota-hil", "type": "pytest"})
    text = (tmp_path / "environment.properties").read_text()
    assert "bench=sim-1" in text and "dut.serial=SIM0000001" in text and "framework.commit=abc123" in text
    assert "psu=Keysight Technologies,E36312A,MY-HILSIM-0001,2.1.0-sim" in text and "tool.imgtool=2.5.0" in text
    assert "load" not in text
    assert json.loads((tmp_path / "executor.json").read_text())["name"] == "bms-ota-hil"


@pytest.mark.integration
def test_a_power_fault_case_carries_timed_phases_faults_images_and_board_status(tmp_path):
    """One real case on a virtual bench: the Allure result has what an auditor needs, with real timestamps."""
    import datetime as dt
    import hashlib
    import os

    from test_cli_and_plugin import _sim_bench

    bench = _sim_bench(tmp_path)
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "testcases/test_power_faults.py::test_brown_out_during_swap_resumes", "--bench", str(bench),
                           "--alluredir", str(results), "--evidence-dir", str(tmp_path / "ev"),
                           "--reports-dir", str(tmp_path / "reports")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")})
    assert proc.returncode == 0, proc.stdout[-3000:]
    (result,) = [json.loads(f.read_text()) for f in results.glob("*-result.json")]
    steps = {s["name"]: s for s in result["steps"]}

    def at(step: dict) -> float:
        return dt.datetime.fromisoformat(next(p["value"] for p in step["parameters"] if p["name"] == "at")).timestamp()

    phases = [c["name"] for c in steps["flashing phases"]["steps"]]
    for phase in ("unlock", "erase", "download", "verify", "activate", "reset", "install", "first_boot", "done"):
        assert f"flashing phase: {phase}" in phases, phases
    dip = next(s for name, s in steps.items() if name.startswith("fault injected: supply dip"))
    assert result["start"] / 1000 <= at(dip) <= result["stop"] / 1000
    install = next(c for c in steps["flashing phases"]["steps"] if c["name"] == "flashing phase: install")
    assert at(install) <= at(dip), "the brown-out is injected during the install (swap)"
    assert abs(install["start"] / 1000 - at(install)) < 0.002, "step times are the real ones"

    attached = {a["name"]: results / a["source"] for a in result["attachments"]}
    for name in ("can.blf", "can-excerpt.txt", "console.log", "supply.log", "images.json", "imgtool-dumpinfo.txt",
                 "update-status.json"):
        assert name in attached, sorted(attached)
    assert "can.asc" not in attached, "the text trace stays in the evidence folder"
    assert any((tmp_path / "ev").glob("*/can.asc")), "... where it is kept"
    excerpt = attached["can-excerpt.txt"].read_text()
    assert f"== {dip['name']} at" in excerpt and f"---- {dip['name']}" in excerpt, excerpt[:3000]
    assert "BMS_SocCore" in excerpt and "SOC=" in excerpt, excerpt[:3000]  # decoded with the DBC
    supply = attached["supply.log"].read_text()
    assert "measure voltage" in supply and "measure current" in supply
    (image,) = json.loads(attached["images.json"].read_text())
    built = ROOT / "firmware_images/build/1.1.0.bin"
    assert image["name"] == "update" and image["sha256"] == hashlib.sha256(built.read_bytes()).hexdigest()
    assert "image used: update" in steps and "Image header" in attached["imgtool-dumpinfo.txt"].read_text()
    status = json.loads(attached["update-status.json"].read_text())
    assert status["update_status"]["state"] == "SUCCESS" and status["software_version"] == "1.1.0"
    env = (results / "environment.properties").read_text()
    assert "dut.serial=SIM0000001" in env and "framework.commit=" in env and "psu=Keysight" in env
    assert json.loads((results / "categories.json").read_text())[0]["name"] == "Timeout"


def test_a_case_without_a_requirement_fails_collection_naming_it(tmp_path):
    """testcases/conftest.py: every case names its requirement; one without stops the run at collection."""
    import shutil

    suite = tmp_path / "testcases"
    suite.mkdir()
    shutil.copy(ROOT / "testcases/conftest.py", suite / "conftest.py")
    (suite / "test_cases.py").write_text('import pytest\n\n@pytest.mark.requirement("R156-power")\ndef test_named(dut):\n'
                                         '    pass\n\ndef test_unnamed(dut):\n    pass\n')
    bench = private_bench_file("benches/sim.yaml", tmp_path)
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--collect-only",
                             str(suite), "--rootdir", str(tmp_path), "--bench", str(bench)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    text = result.stdout + result.stderr
    assert result.returncode == 4, text  # pytest's usage error: nothing ran
    assert "1 case(s) name no requirement" in text and "testcases/test_cases.py::test_unnamed" in text, text
    assert "test_named" not in text.split("name no requirement")[1], text


def test_every_shipped_case_names_its_requirement(tmp_path):
    bench = private_bench_file("benches/sim.yaml", tmp_path)
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--collect-only",
                             "testcases", "--bench", str(bench)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "tests collected" in result.stdout, result.stdout[-3000:] + result.stderr
