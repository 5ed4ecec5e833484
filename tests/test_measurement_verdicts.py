"""A measurement outside its limits fails its test and its report entry, unless the case declares the violation."""

from __future__ import annotations

import json
from pathlib import Path

from hil.timing.measure import Measurement
from hil.plugin import measurement_verdict

from bench_ports import private_bench_file

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

CASES = '''
import pytest
from hil.timing.measure import Measurement


def test_throughput_below_its_limit(measure):
    measure(Measurement("download_throughput", 0.5, "KiB/s", 1.0, None))  # never asserted by the case


def test_within_limits(measure):
    measure(Measurement("download_throughput", 5.0, "KiB/s", 1.0, None))


@pytest.mark.expect_violation("soc_exec_max", reason="the overrun build")
def test_declared_violation(measure):
    measure(Measurement("soc_exec_max", 32.0, "ms", 0.0, 20.0))


@pytest.mark.expect_violation("soc_exec_max", reason="the overrun build")
def test_declared_violation_that_does_not_happen(measure):
    measure(Measurement("soc_exec_max", 3.0, "ms", 0.0, 20.0))


@pytest.mark.expect_violation("soc_exec_max", reason="the overrun build")
def test_declared_violation_does_not_excuse_another(measure):
    measure(Measurement("soc_exec_max", 32.0, "ms", 0.0, 20.0))
    measure(Measurement("soc_missed_cycles", 3.0, "cycles", 0.0, 0.0))
'''


def _allure_results(directory: Path) -> dict[str, dict]:
    out = {}
    for f in directory.glob("*-result.json"):
        data = json.loads(f.read_text())
        out[data["name"]] = data
    return out


def test_failing_measurement_fails_the_test_and_its_report_entry(pytester, tmp_path):
    pytester.makepyfile(test_cases=CASES)
    alluredir = tmp_path / "allure"
    bench = private_bench_file("benches/sim.yaml", tmp_path)
    result = pytester.runpytest_subprocess("-p", "hil.plugin", "--bench", str(bench),
                                           "--alluredir", str(alluredir), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=3)
    text = result.stdout.str()
    assert "download_throughput = 0.5 KiB/s  limits [1 .. +inf] KiB/s  FAIL" in text, text
    assert "violation of soc_exec_max was expected" in text, text
    assert "soc_missed_cycles = 3 cycles" in text, text

    results = _allure_results(alluredir)
    assert results["test_throughput_below_its_limit"]["status"] == "failed", results["test_throughput_below_its_limit"]
    step = results["test_throughput_below_its_limit"]["steps"][0]
    assert step["name"].startswith("download_throughput = 0.5") and step["status"] == "failed", step
    assert results["test_within_limits"]["status"] == "passed"
    assert results["test_within_limits"]["steps"][0]["status"] == "passed"
    declared = results["test_declared_violation"]
    assert declared["status"] == "passed", declared
    assert "violation expected: the overrun build" in declared["steps"][0]["name"], declared["steps"]
    assert results["test_declared_violation_that_does_not_happen"]["status"] == "failed"
    assert results["test_declared_violation_does_not_excuse_another"]["status"] == "failed"


def test_measurement_verdict_rules():
    ok = Measurement("a", 1.0, "V", 0.0, 2.0)
    bad = Measurement("b", 3.0, "V", 0.0, 2.0)
    assert measurement_verdict([ok], {}) is None
    assert "b = 3 V" in (measurement_verdict([ok, bad], {}) or "")
    assert measurement_verdict([ok, bad], {"b": "declared"}) is None
    assert "was expected" in (measurement_verdict([ok], {"b": "declared"}) or "")
