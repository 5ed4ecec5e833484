"""Session-end evidence for auditors: fault-matrix summary, traceability matrix, run record.

The pytest plugin (hil/plugin/) turns each test into a `TestRecord` and calls the writers at
session end. Every file is written twice: Markdown for people, JSON for tools. Verdicts come
only from test outcomes; a row or requirement no test exercised says so (NOT COVERED) instead
of passing by silence.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from hil import __version__
from hil.images.families import NOT_APPLICABLE_PREFIX
from hil.report.requirements import CATALOGUE, PARAGRAPH_CAVEAT, Requirement

PASS = "PASS"
FAIL = "FAIL"
NOT_COVERED = "NOT COVERED"

#: Outcomes that count as a failed verdict ("error" = the test could not even run its check).
_FAILING = ("failed", "error")

#: Python distributions named in the run record (the protocol and image tooling underneath).
TOOL_PACKAGES = ("python-can", "udsoncan", "can-isotp", "cantools", "pyvisa", "pyvisa-py", "pyserial", "imgtool",
                 "cryptography", "pydantic", "pytest", "allure-pytest", "bms-ota-hil")


@dataclass(frozen=True)
class FaultClass:
    """One row of the update fault matrix (`FAULT_MATRIX` below is the one copy; docs/design.md)."""

    row: int
    fault: str
    injected: str
    device_must: str
    learned_from: str


def _matrix(rows: Iterable[FaultClass]) -> Mapping[int, FaultClass]:
    return MappingProxyType({r.row: r for r in rows})


#: Rows 1-26 of the update fault matrix: every row is a class of test cases.
FAULT_MATRIX: Mapping[int, FaultClass] = _matrix([
    FaultClass(1, "power cut at each flash operation of install and of revert", "flash choke point (simulator)",
               "boot old or new image, intact and consistent", "MCUboot simulator"),
    FaultClass(2, "torn write / partial erase at each operation", "flash model writes a prefix / half-erases",
               "same as 1; a corrupted status/magic is handled", "MCUboot #1966"),
    FaultClass(3, "several cuts in a row (cut during recovery)", "repeated cuts",
               "converge to a bootable state", "MCUboot random fails"),
    FaultClass(4, "power cut or brown-out through the supply",
               "programmable PSU, during download / after activation / during swap / during first boot",
               "as 1; download interruption leaves the old image running", "real benches"),
    FaultClass(5, "corrupted or truncated download", "image bytes",
               "hash check fails, image rejected, old image untouched, failure reported", "Uptane, R156"),
    FaultClass(6, "bad signature / unknown key / unsigned", "image", "rejected", 'Uptane "arbitrary software"'),
    FaultClass(7, "downgrade (older version or lower security counter)", "image",
               "rejected, stored counter unchanged", 'Uptane "rollback attack"'),
    FaultClass(8, "counter advanced before confirmation, then self-test fails", "new image + failing self-test",
               "old image still boots", "MCUboot history"),
    FaultClass(9, "self-test fails / image never confirms / crashes at boot / hangs (watchdog)", "firmware build",
               "automatic revert, failure reported with a reason", "MCUboot, RAUC, Mender"),
    FaultClass(10, "wrong hardware ID / wrong target", "image TLV", "rejected", "Uptane, R156 compatibility"),
    FaultClass(11, "firmware and configuration incompatible", "dependency metadata", "neither applied",
               'Uptane "mix-and-match"'),
    FaultClass(12, "oversized image / endless TransferData", "0x34 size, 0x36 stream",
               "NRC 0x31 / 0x70 / 0x71, nothing overwritten", 'Uptane "endless data"'),
    FaultClass(13, "dropped / repeated / reordered blocks, tester vanishes mid-transfer", "ISO-TP / UDS",
               "NRC 0x73 / 0x24; after S3 without a request the default session and a closed transfer, "
               "TesterPresent keeps the session; old image keeps running", 'Uptane "partial bundle"'),
    FaultClass(14, "preconditions false: current flowing, supply low, not idle", "battery/load emulator, PSU",
               "NRC 0x22 / 0x93, nothing erased", "R156 safe state, enough energy"),
    FaultClass(15, "configuration lost or migrated wrongly", "config store",
               "configuration preserved on success, restored on rollback", "the BMS use case"),
    FaultClass(16, "SecurityAccess brute force", "0x27", "0x35, then 0x36, then 0x37 delay", "ISO 14229"),
    FaultClass(17, "SOC core starved during download / erase / install", "bus load, flash stalls",
               "cycle timing within budget; no missed cycles", "the BMS use case"),
    FaultClass(18, "configuration profile package unsigned, wrong key, wrong vehicle group, older profile version, "
               "out-of-range value, corrupted", "configuration package",
               "refused with a reason; the active profile unchanged", "the white paper (seasonal profiles), Uptane"),
    FaultClass(19, "power cut while a configuration profile is applied", "programmable PSU",
               "the old or the new profile, whole, never a mix", "the white paper"),
    FaultClass(20, "profile applied, behaviour unchanged", "battery emulator + CAN",
               "charge limits follow the active profile (winter stricter than summer), also after a rollback",
               "the white paper"),
    FaultClass(21, "new feature missing after the update, left behind after a rollback, or an existing message "
               "layout changed", "CAN + DBC per release",
               "new message at its period after the update, gone after the rollback, old layouts unchanged",
               "the white paper (new CAN message format)"),
    FaultClass(22, "SOC wrong or jumping across an update or rollback", "battery emulator holds the truth",
               "SOC within the declared accuracy; the step at reset within its bound", "the white paper (SOC improvements)"),
    FaultClass(23, "install outside the charging window (unplugged, driving); charger unplugged mid-install",
               "vehicle signals on CAN",
               "refused with a reason; charge current zero while installing, resumed after; the install unharmed",
               "the white paper (overnight, plugged in, idle), R156 safe state"),
    FaultClass(24, "download interrupted (link lost, tester gone, reset)", "tester / gateway",
               "resumes from the last stored block; a resumed image that fails verification is refused",
               "the white paper (background download)"),
    FaultClass(25, "outcome not recorded", "-",
               "update history and a DTC for every failed or rolled-back update, readable over UDS",
               "the white paper (deployment report), R156 inform of the result"),
    FaultClass(26, "BMS offline too long during an install", "CAN", "time without SOC frames within its budget",
               "the white paper (minimal disruption)"),
])


@dataclass
class TestRecord:
    """What one test contributed: outcome, the matrix rows and requirements it covers, its evidence files."""

    __test__ = False  # not a pytest test class despite the name

    nodeid: str
    name: str
    outcome: str  # "passed" / "failed" / "error" / "skipped"
    duration_s: float
    fault_rows: list[int] = field(default_factory=list)
    expect: str = ""
    requirements: list[str] = field(default_factory=list)
    evidence: list[Path] = field(default_factory=list)
    measurements: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""  # why a skipped test was skipped (or errored), as pytest said it
    bench: str | None = None  # the bench it ran on (rack runs and merged reports name it)


#: Skip reasons that mean the bench lacks what a case needs (an image role, a console pattern, a counter signal,
#: an instrument or its function, a package), or that the case does not apply to the board's update family
#: (hil/images/families.py): the row's promise was not checked on this board, so the row is NOT COVERED, with
#: the reason, even when other cases passed.
#: "needs ...": a case the bench cannot serve (an instrument or capability it lacks, hil.rack.scheduling.skip_reason).
GAP_PREFIXES = ("image role missing: ", "console pattern missing: ", "console missing: ", "counter signal missing: ",
                "instrument missing: ", "instrument function missing: ", "package missing: ", "needs ",
                NOT_APPLICABLE_PREFIX)


def is_gap(record: TestRecord) -> bool:
    """A skipped case whose reason is something this bench lacks."""
    return record.outcome == "skipped" and record.reason.startswith(GAP_PREFIXES)


def verdict(records: Sequence[TestRecord]) -> str:
    """FAIL if any test failed or errored; NOT COVERED if a case was skipped for something the bench lacks
    (image role, console pattern); PASS if at least one passed; else NOT COVERED (none, or all skipped)."""
    if any(r.outcome in _FAILING for r in records):
        return FAIL
    if any(is_gap(r) for r in records):
        return NOT_COVERED
    if any(r.outcome == "passed" for r in records):
        return PASS
    return NOT_COVERED


def _latest(records: Iterable[TestRecord]) -> list[TestRecord]:
    """One record per test id and bench, the last one (a rerun supersedes the earlier attempt), in first-seen order.

    The same test run on two benches (a merged multi-host report) keeps both records.
    """
    by_id: dict[tuple[str, str | None], TestRecord] = {}
    for r in records:
        by_id[(r.nodeid, r.bench)] = r
    return list(by_id.values())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _cell(text: str) -> str:
    """Text safe inside one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _tests_cell(records: Sequence[TestRecord]) -> str:
    if not records:
        return "-"
    return "<br>".join(f"`{_cell(r.nodeid)}` ({r.outcome}{', bench ' + _cell(r.bench) if r.bench else ''})"
                       for r in records)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


# ---------------------------------------------------------------------- fault matrix
def write_fault_matrix(records: Iterable[TestRecord], out_dir: Path) -> tuple[Path, Path]:
    """Write `fault-matrix.md` and `fault-matrix.json`: per matrix row, the tests covering it and the verdict.

    Rows outside 1-17 named by a test are listed separately (a marker typo must not vanish).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recs = _latest(records)
    by_row: dict[int, list[TestRecord]] = {}
    for r in recs:
        for row_number in dict.fromkeys(r.fault_rows):  # a row named twice by one test counts once
            by_row.setdefault(int(row_number), []).append(r)
    rows: list[dict[str, Any]] = []
    for n, fc in FAULT_MATRIX.items():
        tests = by_row.get(n, [])
        rows.append({"row": n, "fault": fc.fault, "injected": fc.injected, "device_must": fc.device_must,
                     "learned_from": fc.learned_from, "verdict": verdict(tests),
                     "tests": [{"nodeid": t.nodeid, "outcome": t.outcome, "expect": t.expect, "bench": t.bench,
                                "duration_s": round(t.duration_s, 3), "reason": t.reason} for t in tests],
                     "not_covered_because": sorted({t.reason for t in tests if is_gap(t)})})
    unknown = {n: tests for n, tests in sorted(by_row.items()) if n not in FAULT_MATRIX}
    summary = {v: sum(1 for r in rows if r["verdict"] == v) for v in (PASS, FAIL, NOT_COVERED)}

    md = ["# Update fault matrix - results", "",
          f"Generated {_now()}. Rows of the update fault matrix (hil/report/records.py `FAULT_MATRIX`); verdict: every test passed -> {PASS}, "
          f"any failed or errored -> {FAIL}, no test ran -> {NOT_COVERED}.", "",
          f"**{summary[PASS]} {PASS}, {summary[FAIL]} {FAIL}, {summary[NOT_COVERED]} {NOT_COVERED}** "
          f"of {len(rows)} rows.", "",
          "| row | fault class | device must | test ids | verdict |",
          "|---:|---|---|---|---|"]
    for row in rows:
        tests = by_row.get(row["row"], [])
        why = "".join(f"<br>{_cell(r)}" for r in row["not_covered_because"])
        md.append(f"| {row['row']} | {_cell(row['fault'])} | {_cell(row['device_must'])} | {_tests_cell(tests)} "
                  f"| **{row['verdict']}**{why} |")
    md += ["", "## What each test expected", ""]
    for row in rows:
        if row["tests"]:
            md.append(f"### Row {row['row']}: {row['fault']}")
            md.append("")
            md += [f"- `{t['nodeid']}` - {t['outcome']}{', bench ' + t['bench'] if t['bench'] else ''}, "
                   f"{t['duration_s']:.1f} s: {t['expect'] or '(no expectation given)'}"
                   + (f" - skipped: {t['reason']}" if t["reason"] else "") for t in row["tests"]]
            md.append("")
    if unknown:
        md += ["## Tests naming rows that are not in the matrix", ""]
        md += [f"- row {n}: " + ", ".join(f"`{t.nodeid}`" for t in tests) for n, tests in unknown.items()]
        md.append("")

    md_path, json_path = out / "fault-matrix.md", out / "fault-matrix.json"
    md_path.write_text("\n".join(md) + "\n")
    _write_json(json_path, {"generated": _now(), "summary": summary, "rows": rows,
                            "unknown_rows": {str(n): [t.nodeid for t in tests] for n, tests in unknown.items()}})
    return md_path, json_path


# ---------------------------------------------------------------------- traceability
def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a file's contents, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _display_path(path: Path, base: Path) -> str:
    """`path` relative to `base` when it lies below it (evidence/... next to the report), else absolute."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(resolved)


def write_traceability(records: Iterable[TestRecord], out_dir: Path) -> tuple[Path, Path]:
    """Write `traceability.md` / `.json`: requirement -> tests -> verdict -> evidence files with SHA-256.

    Every catalogue entry appears (uncovered ones as NOT COVERED); ids tests use that the catalogue
    does not know are listed under "unknown requirement ids".
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recs = _latest(records)
    hashes: dict[Path, str | None] = {}  # evidence shared by several requirements is hashed once

    def evidence_of(r: TestRecord) -> list[dict[str, Any]]:
        items = []
        for p in r.evidence:
            p = Path(p)
            if p not in hashes:
                hashes[p] = sha256_file(p) if p.is_file() else None
            items.append({"path": _display_path(p, out), "sha256": hashes[p],
                          "bytes": p.stat().st_size if hashes[p] is not None else None})
        return items

    by_req: dict[str, list[TestRecord]] = {}
    for r in recs:
        for rid in dict.fromkeys(r.requirements):
            by_req.setdefault(rid, []).append(r)

    def entry(rid: str, req: Requirement | None) -> dict[str, Any]:
        tests = by_req.get(rid, [])
        return {"id": rid, "regulation": req.regulation if req else None, "paragraph": req.paragraph if req else None,
                "topic": req.topic if req else None, "verdict": verdict(tests), "reason": uncovered_reason(tests),
                "tests": [{"nodeid": t.nodeid, "outcome": t.outcome, "bench": t.bench, "duration_s": round(t.duration_s, 3),
                           "fault_rows": list(t.fault_rows), "measurements": t.measurements,
                           "evidence": evidence_of(t)} for t in tests]}

    known = [entry(rid, req) for rid, req in CATALOGUE.items()]
    unknown = [entry(rid, None) for rid in sorted(by_req) if rid not in CATALOGUE]

    md = ["# Traceability: requirement -> test -> verdict -> evidence", "",
          f"Generated {_now()}. Regulation references are {PARAGRAPH_CAVEAT}. Evidence paths are relative to "
          "this file; check a file with `sha256sum <path>`.", "",
          "| requirement | reference | topic | tests | verdict |", "|---|---|---|---|---|"]
    for e in known:
        req = CATALOGUE[e["id"]]
        why = f" ({_cell(e['reason'])})" if e["reason"] else ""
        md.append(f"| `{e['id']}` | {_cell(req.reference)} | {_cell(req.topic)} | {len(e['tests'])} | **{e['verdict']}**{why} |")
    for e in known + unknown:
        if not e["tests"]:
            continue
        md += ["", f"## {e['id']} - {e['verdict']}", ""]
        if e["id"] in CATALOGUE:
            md += [CATALOGUE[e["id"]].text, ""]
        for t in e["tests"]:
            failed_m = sum(1 for m in t["measurements"] if m.get("passed") is False)
            m_text = f"; measurements {len(t['measurements'])}, outside limits {failed_m}" if t["measurements"] else ""
            on = f" on bench {t['bench']}" if t["bench"] else ""
            md.append(f"- `{t['nodeid']}` - **{t['outcome']}**{on}{m_text}")
            for ev in t["evidence"]:
                digest = ev["sha256"] or "MISSING"
                md.append(f"  - `{ev['path']}` sha256 `{digest}`")
    if unknown:
        md += ["", "## Unknown requirement ids", "",
               "Used by tests but not in hil/report/requirements.py (a typo, or a catalogue entry is missing): "
               + ", ".join(f"`{e['id']}`" for e in unknown)]

    md_path, json_path = out / "traceability.md", out / "traceability.json"
    md_path.write_text("\n".join(md) + "\n")
    _write_json(json_path, {"generated": _now(), "paragraph_caveat": PARAGRAPH_CAVEAT,
                            "requirements": known, "unknown_requirements": unknown})
    from hil.report.traceability import write_traceability_csv, write_traceability_html

    write_traceability_csv(known + unknown, out / "traceability.csv")
    write_traceability_html(known, unknown, out / "traceability.html", generated=_now(), caveat=PARAGRAPH_CAVEAT)
    return md_path, json_path


def uncovered_reason(tests: Sequence[TestRecord]) -> str:
    """Why a requirement has no verdict: no test names it, or every test naming it was skipped (with pytest's reason)."""
    if verdict(tests) != NOT_COVERED:
        return ""
    if not tests:
        return "no test case in this run names it"
    reasons = sorted({t.reason or "no reason given" for t in tests})
    return f"all {len(tests)} test(s) skipped: " + "; ".join(reasons)


# ---------------------------------------------------------------------- run record
def tool_versions(packages: Sequence[str] = TOOL_PACKAGES, node_root: Path | None = None) -> dict[str, str | None]:
    """Installed versions of the Python packages underneath (None = not installed) and of Allure 3 (npm)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    root = node_root if node_root is not None else Path(__file__).resolve().parents[1]
    allure_pkg = root / "node_modules" / "allure" / "package.json"
    if allure_pkg.is_file():
        try:
            versions["allure (npm)"] = json.loads(allure_pkg.read_text()).get("version")
        except (OSError, json.JSONDecodeError):
            versions["allure (npm)"] = None
    return versions


def git_info(repo: Path | None = None) -> dict[str, Any]:
    """Commit, branch and whether the work tree had changes; empty values if git or the repository is absent."""
    cwd = repo if repo is not None else Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "branch": git("rev-parse", "--abbrev-ref", "HEAD") if commit else None,
            "dirty": bool(status) if status is not None else None}


def write_run_record(out_dir: Path, bench: dict[str, Any], tool_versions: dict[str, Any], *,
                     started: str | None = None, finished: str | None = None, seeds: dict[str, Any] | None = None,
                     command: Sequence[str] | None = None, repo: Path | None = None,
                     extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write `run-record.md` / `.json`: who ran what, where, with which tools.

    `bench` is the session identity the plugin collects (bench id, virtual flag, DUT identity,
    instrument identities). The record also lists SHA-256 of the fault-matrix and traceability
    files already in `out_dir`, so the run record anchors the other evidence files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "generated": _now(),
        "started": started,
        "finished": finished or _now(),
        "who": {"user": _user(), "host": socket.gethostname()},
        "bench": bench,
        "framework": {"name": "bms-ota-hil", "version": __version__, **git_info(repo)},
        "command": list(command) if command is not None else list(sys.argv),
        "platform": platform.platform(),
        "tools": tool_versions,
        "seeds": seeds or {},
        "artefacts": {p.name: sha256_file(p) for p in sorted(out.glob("*")) if p.is_file()
                      and p.name in ("fault-matrix.md", "fault-matrix.json", "traceability.md", "traceability.json",
                                     "traceability.csv", "traceability.html")},
    }
    if extra:
        record["extra"] = extra

    md = ["# Run record", "", f"Generated {record['generated']}.", "", "| field | value |", "|---|---|"]
    md.append(f"| operator | {_cell(record['who']['user'])} on {_cell(record['who']['host'])} |")
    md.append(f"| started / finished | {record['started'] or '-'} / {record['finished']} |")
    fw = record["framework"]
    md.append(f"| framework | bms-ota-hil {fw['version']}, commit `{fw['commit'] or 'unknown'}`"
              f"{' (work tree modified)' if fw['dirty'] else ''} |")
    md.append(f"| command | `{_cell(' '.join(record['command']))}` |")
    md.append(f"| platform | {_cell(record['platform'])} |")
    for key, value in _flatten("bench", bench):
        md.append(f"| {_cell(key)} | {_cell(str(value))} |")
    for key, value in (record["seeds"] or {}).items():
        md.append(f"| seed {_cell(str(key))} | {_cell(str(value))} |")
    md += ["", "## Tool versions", "", "| tool | version |", "|---|---|"]
    md += [f"| {_cell(k)} | {v if v is not None else 'not installed'} |" for k, v in tool_versions.items()]
    if record["artefacts"]:
        md += ["", "## Report files", "", "| file | sha256 |", "|---|---|"]
        md += [f"| {name} | `{digest}` |" for name, digest in record["artefacts"].items()]

    md_path, json_path = out / "run-record.md", out / "run-record.json"
    md_path.write_text("\n".join(md) + "\n")
    _write_json(json_path, record)
    return md_path, json_path


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers) and no LOGNAME/USER
        return "unknown"


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    """Nested dicts as dotted keys, for the Markdown table."""
    if isinstance(value, dict):
        items: list[tuple[str, Any]] = []
        for k, v in value.items():
            items += _flatten(f"{prefix}.{k}", v)
        return items
    return [(prefix, value)]
