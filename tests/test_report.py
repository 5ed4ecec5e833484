"""Fault-matrix summary, traceability matrix, run record and the requirement catalogue."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from hil.report import records as report
from hil.report.records import FAIL, FAULT_MATRIX, NOT_COVERED, PASS, TestRecord
from hil.report.requirements import CATALOGUE, lookup, unknown_ids

ROOT = Path(__file__).resolve().parents[1]


def _rec(nodeid: str, outcome: str, rows: list[int] = (), reqs: list[str] = (), evidence: list[Path] = (),
         measurements: list[dict] = ()) -> TestRecord:
    return TestRecord(nodeid=nodeid, name=nodeid.rsplit("::", 1)[-1], outcome=outcome, duration_s=1.25,
                      fault_rows=list(rows), expect=f"expectation of {nodeid}", requirements=list(reqs),
                      evidence=list(evidence), measurements=list(measurements))


def _md_row(md: str, row: int) -> str:
    line = next(ln for ln in md.splitlines() if re.match(rf"^\| {row} \|", ln))
    return line


# ---------------------------------------------------------------------- catalogue
def test_catalogue_has_the_topics_tests_use():
    expected = {"R156-integrity": "7.2.1.1", "R156-rxswin": "7.2.1.2.x", "R156-recovery": "7.2.2.1.1",
                "R156-power": "7.2.2.1.2", "R156-safe-state": "7.2.2.1.3", "R156-inform-result": "7.2.2.4",
                "R156-preconditions": "7.2.2.5"}
    for rid, para in expected.items():
        assert lookup(rid).paragraph == para
    for rid in ("R155-M16", "ISO24089-integrity", "ISO24089-preconditions", "ISO24089-recovery", "ISO24089-reporting",
                "ISO24089-identification", "ISO21434-verification", "BMS-config-preserved", "BMS-soc-timing"):
        assert lookup(rid).id == rid
    assert all(r.text and r.topic for r in CATALOGUE.values())


def test_every_requirement_marker_in_the_suite_is_in_the_catalogue():
    used = set()
    for f in (ROOT / "testcases").glob("test_*.py"):
        for args in re.findall(r"mark\.requirement\(([^)]*)\)", f.read_text()):
            used |= set(re.findall(r'"([^"]+)"', args))
    assert unknown_ids(used) == []


def test_lookup_error_lists_valid_ids():
    with pytest.raises(KeyError) as exc:
        lookup("R156-integrty")
    message = str(exc.value)
    assert "R156-integrty" in message
    for rid in CATALOGUE:
        assert rid in message


def test_catalogue_is_read_only():
    with pytest.raises(TypeError):
        CATALOGUE["X"] = CATALOGUE["R156-integrity"]  # type: ignore[index]


# ---------------------------------------------------------------------- fault matrix
def test_fault_matrix_transcribes_all_rows():
    assert sorted(FAULT_MATRIX) == list(range(1, 27))
    assert FAULT_MATRIX[12].device_must == "NRC 0x31 / 0x70 / 0x71, nothing overwritten"
    assert FAULT_MATRIX[16].fault == "SecurityAccess brute force"


def test_fault_matrix_verdicts(tmp_path):
    records = [
        _rec("testcases/test_a.py::test_pass_1", "passed", rows=[5]),
        _rec("testcases/test_a.py::test_pass_2", "passed", rows=[5, 6]),
        _rec("testcases/test_b.py::test_fail", "failed", rows=[6]),
        _rec("testcases/test_b.py::test_error", "error", rows=[7]),
        _rec("testcases/test_b.py::test_skipped", "skipped", rows=[8]),
        _rec("testcases/test_b.py::test_pass_and_skip", "passed", rows=[9]),
        _rec("testcases/test_b.py::test_skip_too", "skipped", rows=[9]),
        _rec("testcases/test_c.py::test_typo", "passed", rows=[42]),
    ]
    md_path, json_path = report.write_fault_matrix(records, tmp_path)
    data = json.loads(json_path.read_text())
    verdicts = {r["row"]: r["verdict"] for r in data["rows"]}
    assert verdicts[5] == PASS
    assert verdicts[6] == FAIL  # one pass, one fail -> FAIL
    assert verdicts[7] == FAIL  # an error is no evidence of correct behaviour
    assert verdicts[8] == NOT_COVERED  # only skipped
    assert verdicts[9] == PASS
    assert verdicts[1] == NOT_COVERED
    assert data["summary"] == {PASS: 2, FAIL: 2, NOT_COVERED: len(FAULT_MATRIX) - 4}
    assert data["unknown_rows"] == {"42": ["testcases/test_c.py::test_typo"]}
    row6 = next(r for r in data["rows"] if r["row"] == 6)
    assert [t["nodeid"] for t in row6["tests"]] == ["testcases/test_a.py::test_pass_2", "testcases/test_b.py::test_fail"]

    md = md_path.read_text()
    assert _md_row(md, 5).endswith(f"**{PASS}** |") and "test_pass_1" in _md_row(md, 5)
    assert _md_row(md, 6).endswith(f"**{FAIL}** |") and "test_fail` (failed)" in _md_row(md, 6)
    assert _md_row(md, 1).endswith(f"**{NOT_COVERED}** |")
    assert FAULT_MATRIX[14].device_must in _md_row(md, 14)
    assert "row 42" in md


def test_fault_matrix_rerun_supersedes_earlier_attempt(tmp_path):
    records = [_rec("t.py::test_x", "failed", rows=[3]), _rec("t.py::test_x", "passed", rows=[3])]
    _, json_path = report.write_fault_matrix(records, tmp_path)
    row3 = next(r for r in json.loads(json_path.read_text())["rows"] if r["row"] == 3)
    assert row3["verdict"] == PASS and len(row3["tests"]) == 1


def test_pipe_in_expectation_does_not_break_the_table(tmp_path):
    rec = _rec("t.py::test_y[a|b]", "passed", rows=[13])
    md_path, _ = report.write_fault_matrix([rec], tmp_path)
    line = _md_row(md_path.read_text(), 13)
    assert len(re.split(r"(?<!\\)\|", line)) == 7  # five cells: the escaped pipe does not open a sixth
    assert "test_y[a\\|b]" in line


# ---------------------------------------------------------------------- traceability
def test_traceability_hashes_match_file_contents(tmp_path):
    out = tmp_path / "reports"
    ev = out / "evidence" / "t_test_update"
    ev.mkdir(parents=True)
    console = ev / "console.log"
    console.write_text("[      12.0] BOOT: reset cause=POWER_ON\n")
    trace = ev / "can.asc"
    trace.write_bytes(bytes(range(256)) * 10)
    elsewhere = tmp_path / "outside.bin"
    elsewhere.write_bytes(b"outside")
    missing = ev / "supply.log"
    records = [
        _rec("t.py::test_update", "passed", reqs=["R156-integrity", "R156-inform-result"], evidence=[console, trace, missing],
             measurements=[{"name": "soc_period_mean", "value": 100.2, "passed": True}]),
        _rec("t.py::test_revert", "failed", reqs=["R156-recovery", "R156-inform-result", "NOT-A-REQ"], evidence=[elsewhere]),
    ]
    md_path, json_path = report.write_traceability(records, out)
    data = json.loads(json_path.read_text())
    reqs = {e["id"]: e for e in data["requirements"]}
    assert set(reqs) == set(CATALOGUE)
    assert reqs["R156-integrity"]["verdict"] == PASS
    assert reqs["R156-inform-result"]["verdict"] == FAIL
    assert reqs["R156-recovery"]["verdict"] == FAIL
    assert reqs["BMS-soc-timing"]["verdict"] == NOT_COVERED
    assert reqs["R156-integrity"]["paragraph"] == "7.2.1.1"

    evidence = reqs["R156-integrity"]["tests"][0]["evidence"]
    by_path = {e["path"]: e for e in evidence}
    assert by_path["evidence/t_test_update/console.log"]["sha256"] == hashlib.sha256(console.read_bytes()).hexdigest()
    assert by_path["evidence/t_test_update/can.asc"]["sha256"] == hashlib.sha256(trace.read_bytes()).hexdigest()
    assert by_path["evidence/t_test_update/can.asc"]["bytes"] == 2560
    assert by_path["evidence/t_test_update/supply.log"]["sha256"] is None
    outside = reqs["R156-recovery"]["tests"][0]["evidence"][0]
    assert outside["path"] == str(elsewhere.resolve()) and outside["sha256"] == hashlib.sha256(b"outside").hexdigest()
    assert [e["id"] for e in data["unknown_requirements"]] == ["NOT-A-REQ"]

    md = md_path.read_text()
    assert hashlib.sha256(console.read_bytes()).hexdigest() in md
    assert "`evidence/t_test_update/supply.log` sha256 `MISSING`" in md
    assert "NOT-A-REQ" in md and "per the public text" in md


def test_traceability_hash_changes_with_content(tmp_path):
    f = tmp_path / "console.log"
    f.write_text("a")
    rec = _rec("t.py::test_z", "passed", reqs=["R156-power"], evidence=[f])
    _, j1 = report.write_traceability([rec], tmp_path)
    first = json.loads(j1.read_text())
    f.write_text("b")
    _, j2 = report.write_traceability([rec], tmp_path)
    second = json.loads(j2.read_text())

    def digest(d: dict) -> str:
        return next(e for e in d["requirements"] if e["id"] == "R156-power")["tests"][0]["evidence"][0]["sha256"]

    assert digest(first) != digest(second) == hashlib.sha256(b"b").hexdigest()


# ---------------------------------------------------------------------- run record
def test_run_record(tmp_path):
    report.write_fault_matrix([_rec("t.py::test_a", "passed", rows=[1])], tmp_path)
    bench = {"bench": "sim-1", "virtual": True,
             "dut": {"hardware": "BMS-HW-A2", "serial": "SIM0000001", "software": "1.0.0"},
             "psu": "Keysight Technologies,E36312A,MY-HILSIM-0001,2.1.0-sim"}
    versions = report.tool_versions()
    for pkg in ("python-can", "udsoncan", "can-isotp", "cantools", "pyvisa", "imgtool", "cryptography"):
        assert versions[pkg], pkg
    md_path, json_path = report.write_run_record(tmp_path, bench=bench, tool_versions=versions, seeds={"sweep": 7})
    data = json.loads(json_path.read_text())
    assert data["bench"]["dut"]["serial"] == "SIM0000001"
    assert data["framework"]["version"]
    assert re.fullmatch(r"[0-9a-f]{40}", data["framework"]["commit"] or "")  # the repository is a git checkout
    assert data["artefacts"]["fault-matrix.json"] == hashlib.sha256((tmp_path / "fault-matrix.json").read_bytes()).hexdigest()
    md = md_path.read_text()
    assert "bench.dut.serial | SIM0000001" in md and "E36312A" in md and "| seed sweep | 7 |" in md
    assert f"| udsoncan | {versions['udsoncan']} |" in md


# ---------------------------------------------------------------------- traceability as CSV and HTML
def test_traceability_csv_and_html_list_every_requirement_with_the_reason(tmp_path):
    import csv

    ev = tmp_path / "evidence" / "t1"
    ev.mkdir(parents=True)
    (ev / "can.asc").write_text("trace")
    records = [
        _rec("testcases/test_a.py::test_pass", "passed", reqs=["R156-integrity"], evidence=[ev / "can.asc"],
             measurements=[{"name": "gap", "value": 12.0, "unit": "ms", "low": 0.0, "high": 115.0, "passed": True}]),
        _rec("testcases/test_a.py::test_skip", "skipped", reqs=["R156-rxswin"]),
    ]
    records[1].reason = "Skipped: sim_only: bench rack-3 is real"
    report.write_traceability(records, tmp_path)
    rows = list(csv.DictReader((tmp_path / "traceability.csv").open()))
    by_req: dict[str, list[dict]] = {}
    for row in rows:
        by_req.setdefault(row["requirement"], []).append(row)
    assert set(by_req) == set(CATALOGUE)
    passed = by_req["R156-integrity"][0]
    assert passed["verdict"] == PASS and passed["test"] == "testcases/test_a.py::test_pass" and passed["reason"] == ""
    assert passed["evidence"] == f"evidence/t1/can.asc {hashlib.sha256(b'trace').hexdigest()}"
    assert by_req["R156-rxswin"][0]["verdict"] == NOT_COVERED
    assert by_req["R156-rxswin"][0]["reason"] == "all 1 test(s) skipped: Skipped: sim_only: bench rack-3 is real"
    assert by_req["R156-power"][0]["reason"] == "no test case in this run names it" and by_req["R156-power"][0]["test"] == ""
    page = (tmp_path / "traceability.html").read_text()
    for rid in CATALOGUE:
        assert f"<code>{rid}</code>" in page
    assert "no test case in this run names it" in page and hashlib.sha256(b"trace").hexdigest() in page
    assert "gap = 12 ms" in page and "src=" not in page and "http" not in page.replace("http-equiv", "")
    md = (tmp_path / "traceability.md").read_text()
    assert "**NOT COVERED** (all 1 test(s) skipped: Skipped: sim_only: bench rack-3 is real)" in md
