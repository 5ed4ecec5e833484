"""One report from many: records of every worker (rack mode) or every host (`hil report merge`).

Whoever writes reports (a single pytest run, the xdist controller of a rack run, or
`hil report merge`) calls `write_all`: it writes the fault matrix, the traceability matrix, the
run record (hil/report/records.py) and `results.json`, the raw per-test records with the benches. A
merge reads the `results.json` of each input directory, copies its evidence and Allure results
next to the merged report, and calls `write_all` again: nothing of any input is lost.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from hil.report import records as report
from hil.errors import HilError

RESULTS = "results.json"


def to_test_records(records: Sequence[dict[str, Any]]) -> list[report.TestRecord]:
    """The plugin's per-test dicts as report records, with the evidence files found in each test's directory."""
    out = []
    for r in records:
        d = Path(r["evidence_dir"]) if r.get("evidence_dir") else None
        evidence = sorted(p for p in d.glob("*") if p.is_file()) if d is not None and d.is_dir() else []
        out.append(report.TestRecord(nodeid=r["nodeid"], name=r["name"], outcome=r["outcome"],
                                     duration_s=float(r["duration_s"]),
                                     fault_rows=[x for x in r.get("fault_rows", []) if x is not None],
                                     expect=r.get("expect", ""), requirements=list(r.get("requirements", [])),
                                     evidence=evidence, measurements=list(r.get("measurements", [])),
                                     bench=r.get("bench"), reason=r.get("reason", "")))
    return out


def _relative(path: str | None, base: Path) -> str | None:
    if not path:
        return path
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def write_all(out: Path, records: Sequence[dict[str, Any]], benches: dict[str, Any], *, started: str | None,
              finished: str | None, command: Sequence[str] | None, seeds: dict[str, Any] | None = None,
              repo: Path | None = None) -> None:
    """Fault matrix and traceability (when tests name rows / requirements), run record, results.json."""
    out.mkdir(parents=True, exist_ok=True)
    recs = to_test_records(records)
    if any(r.fault_rows for r in recs):
        report.write_fault_matrix(recs, out)
    if any(r.requirements for r in recs):
        report.write_traceability(recs, out)
    report.write_run_record(out, bench=benches, tool_versions=report.tool_versions(), started=started,
                            finished=finished, command=command, seeds=seeds, repo=repo)
    kept = [{**r, "evidence_dir": _relative(r.get("evidence_dir"), out)} for r in records]
    (out / RESULTS).write_text(json.dumps({"started": started, "finished": finished, "benches": benches,
                                           "seeds": seeds or {}, "records": kept}, indent=1, default=str) + "\n")


def read_results(d: Path) -> dict[str, Any]:
    """The results.json of a reports directory; HilError says what is missing."""
    path = d / RESULTS
    if not path.is_file():
        raise HilError(f"{d}: no {RESULTS} here; pass the reports directory of a run (pytest --reports-dir)")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise HilError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise HilError(f"{path}: expected an object with a 'records' list")
    return data


def merge(dirs: Sequence[Path], out: Path, command: Sequence[str] | None = None) -> dict[str, Any]:
    """Merge the reports directories `dirs` (one per host) into `out`. Returns a summary."""
    if not dirs:
        raise HilError("nothing to merge: give at least one reports directory")
    out.mkdir(parents=True, exist_ok=True)
    labels: list[str] = []
    records: list[dict[str, Any]] = []
    benches: dict[str, Any] = {}
    started: list[str] = []
    finished: list[str] = []
    allure_files = 0
    for d in dirs:
        d = Path(d)
        data = read_results(d)
        label = d.resolve().name or "run"
        while label in labels:
            label += "+"
        labels.append(label)
        for r in data["records"]:
            ev = r.get("evidence_dir")
            if ev and not Path(ev).is_absolute():
                src = d / ev
                rest = Path(ev).relative_to("evidence") if Path(ev).parts[:1] == ("evidence",) else Path(ev)
                dst = out / "evidence" / label / rest
                if src.is_dir():
                    shutil.copytree(src, dst, dirs_exist_ok=True)
                r = {**r, "evidence_dir": str(dst)}
            records.append(r)
        benches[label] = data.get("benches", {})
        if data.get("started"):
            started.append(data["started"])
        if data.get("finished"):
            finished.append(data["finished"])
        allure = d / "allure-results"
        if allure.is_dir():
            target = out / "allure-results"
            target.mkdir(exist_ok=True)
            for f in allure.iterdir():  # Allure result files carry UUID names: no clashes between hosts
                if f.is_file():
                    shutil.copy2(f, target / f.name)
                    allure_files += 1
    write_all(out, records, {"merged_from": benches}, started=min(started) if started else None,
              finished=max(finished) if finished else None, command=command)
    return {"inputs": labels, "tests": len(records), "allure_files": allure_files, "out": str(out)}
