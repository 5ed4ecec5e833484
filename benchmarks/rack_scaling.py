"""Wall time of the validation suite on 1, 2 and 4 virtual benches (pytest -n N --rack), and the speed-ups.

Each run is `pytest -n N --rack RACK testcases` from a clean evidence directory, bench start-up
included. By default the benches are the sim-rack's (benches/racks/sim-rack.yaml: its groups,
ports and flash files, and its bench names, so its leases keep a concurrent sim-rack run away),
all on classic CAN, so a speed-up comes from the rack and not from a faster FD bus. `--as-is`
runs the sim-rack unchanged (classic and FD benches mixed). Runs after the first get the first
run's test durations (results.json), as a nightly run has last night's, so the scheduler starts
the longest tests first.

    .venv/bin/python benchmarks/rack_scaling.py                  # 1, 2, 4 benches
    .venv/bin/python benchmarks/rack_scaling.py --benches 1 2    # just these

The machine's load average is printed with every run: on a shared machine the figures are only as
good as the idle cores. The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SIM_RACK = ROOT / "benches/racks/sim-rack.yaml"


def make_rack(out: Path, n: int, as_is: bool) -> Path:
    """A rack file of the sim-rack's first `n` benches (all classic CAN unless `as_is`)."""
    rack = yaml.safe_load(SIM_RACK.read_text())
    entries = rack["benches"][:n]
    if len(entries) < n:
        raise SystemExit(f"{SIM_RACK} has {len(rack['benches'])} benches; {n} asked for")
    benches = []
    for i, entry in enumerate(entries):
        src = (SIM_RACK.parent / entry["file"]).resolve()
        data = yaml.safe_load(src.read_text())
        base = src.parent
        # the copy lives elsewhere: relative paths become absolute
        data["can"]["dbc"] = str((base / data["can"]["dbc"]).resolve())
        data["sim"]["flash_file"] = str((base / data["sim"]["flash_file"]).resolve())
        data["sim"]["trusted_keys"] = [str((base / k).resolve()) for k in data["sim"]["trusted_keys"]]
        data["images"] = {k: str((base / v).resolve()) for k, v in data["images"].items()}
        if not as_is:
            data["can"]["fd"] = False
            data["can"].pop("data_bitrate", None)
        path = out / f"bench-{i + 1}.yaml"
        path.write_text(yaml.safe_dump(data))
        benches.append({"file": str(path)})
    path = out / f"rack-{n}.yaml"
    path.write_text(yaml.safe_dump({"rack": f"scaling-{n}", "lease": rack.get("lease", {}), "benches": benches}))
    return path


def run(n: int, rack: Path, work: Path, suite: list[str], previous: Path | None) -> dict[str, object]:
    reports = work / f"reports-{n}"
    if previous is not None and previous.is_file():
        # As a nightly run has last night's: the scheduler starts the longest tests first.
        reports.mkdir(parents=True, exist_ok=True)
        shutil.copy(previous, reports / "results.json")
    cmd = [sys.executable, "-m", "pytest", *suite, "-n", str(n), "--rack", str(rack), "-q", "-rfE", "-p", "no:cacheprovider",
           "--reports-dir", str(reports), "--evidence-dir", str(reports / "evidence")]
    load_before = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3 * 3600,
                          env={**os.environ, "HIL_LOCK_DIR": os.environ.get("HIL_LOCK_DIR", str(ROOT / ".hil/locks"))})
    wall = time.monotonic() - t0
    summary = next((line for line in reversed(proc.stdout.splitlines()) if re.search(r"\d+ (passed|failed)", line)), "")
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", summary)}
    problems = [line[:220] for line in proc.stdout.splitlines() if re.match(r"(FAILED|ERROR) \S+::", line)]
    return {"benches": n, "wall_s": round(wall, 1), "exit": proc.returncode, "summary": summary.strip("= "),
            "passed": counts.get("passed", 0), "failed": counts.get("failed", 0),
            "errors": counts.get("error", 0) + counts.get("errors", 0),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "valid": proc.returncode == 0, "problems": problems[:5],
            "tail": proc.stdout[-1500:] if proc.returncode not in (0, 1) else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benches", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--as-is", action="store_true", help="the sim-rack unchanged (classic and FD benches)")
    ap.add_argument("suite", nargs="*", default=["testcases"], help="what to run (default: testcases)")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="hil-rack-scaling-") as tmp:
        work = Path(tmp)
        previous = None
        for n in args.benches:
            rack = make_rack(work, n, args.as_is)
            r = run(n, rack, work, args.suite, previous)
            previous = previous or work / f"reports-{n}" / "results.json"
            results.append(r)
            print(f"{n} bench(es): {r['wall_s']:7.1f} s  exit {r['exit']}  {r['summary']}  "
                  f"(load average {r['load_before']} -> {r['load_after']} on {os.cpu_count()} cores)", flush=True)
            for line in r["problems"]:  # type: ignore[attr-defined]
                print(f"    {line}", flush=True)
            if r["tail"]:
                print(r["tail"], flush=True)
    base = next((r for r in results if r["benches"] == 1), None)
    figures: dict[str, object] = {"cores": os.cpu_count(), "suite": args.suite, "mixed_can": args.as_is,
                                  "runs": [{k: v for k, v in r.items() if k != "tail"} for r in results]}
    if base is not None:
        for r in results:
            if r["benches"] != 1:
                speedup = float(base["wall_s"]) / float(r["wall_s"])  # type: ignore[arg-type]
                figures[f"speedup_{r['benches']}"] = round(speedup, 2)
                figures[f"efficiency_{r['benches']}"] = round(speedup / int(r["benches"]), 2)  # type: ignore[call-overload]
                valid = "" if base["valid"] and r["valid"] else "  [NOT VALID: a run had failures or errors; see above]"
                figures[f"valid_{r['benches']}"] = bool(base["valid"] and r["valid"])
                print(f"speed-up with {r['benches']} benches: x{speedup:.2f} "
                      f"(efficiency {speedup / int(r['benches']):.0%}; goal with 2 on this 2-core machine: x1.7){valid}")  # type: ignore[call-overload]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
