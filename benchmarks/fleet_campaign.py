"""The white paper's fleet rehearsed on the virtual fleet: vehicles per minute and wall time of `hil campaign run`.

Runs `hil campaign run campaigns/white-paper-fleet.yaml --fleet N` (200 vehicles at 8 depots, 3 stages,
5 % of the vehicles with a field fault) as its own process - the command a nightly job runs - and
times it from start to exit: building the per-variant releases, every virtual board's start, every
vehicle's turn, the report. Then prints the report's counts and its reconciliation result (every
vehicle's entry against its board's update history and DTCs; vehicles without a working image).

    .venv/bin/python benchmarks/fleet_campaign.py                     # 8 virtual boards side by side
    .venv/bin/python benchmarks/fleet_campaign.py --boards 4 --keep   # keep the report directory

The goal on the 2-core development machine: at most 15 minutes (goal 5) with 0 vehicles without a
working image and 0 disagreements. The load average is printed with the figures: on a shared machine
they are only as good as the idle cores. The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "campaigns/white-paper-fleet.yaml"
#: `hil campaign run` exit status when the campaign stopped itself (hil/cli/campaign.py EXIT_STOPPED).
EXIT_STOPPED = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--campaign", type=Path, default=CAMPAIGN, help="campaign file [%(default)s]")
    ap.add_argument("--boards", type=int, default=8, help="virtual boards side by side [%(default)s]")
    ap.add_argument("--bench", type=Path, default=ROOT / "benches/sim.yaml", help="template bench [%(default)s]")
    ap.add_argument("--keep", action="store_true", help="keep the report directory (printed)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds [%(default)s]")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hil-fleet-campaign-"))
    out = work / "report"
    env = {**os.environ, "HIL_LOCK_DIR": str(work / "locks")}
    cmd = [sys.executable, "-m", "hil", "campaign", "run", str(args.campaign), "--fleet", str(args.boards),
           "--bench", str(args.bench), "--out", str(out), "--no-progress"]
    load_before = os.getloadavg()
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or "")[-2000:] if isinstance(exc.stdout, str) else ""
        raise SystemExit(f"hil campaign run did not finish within {args.timeout:.0f} s\n{tail}") from None
    wall = time.monotonic() - t0
    load_after = os.getloadavg()
    report_file = out / "campaign-report.json"
    if not report_file.is_file():
        raise SystemExit(f"hil campaign run exited {done.returncode} without a report:\n"
                         + (done.stdout + done.stderr)[-3000:])
    report = json.loads(report_file.read_text())
    vehicles = len(report["vehicles"])
    rec = report["reconciliation"]
    figures = {
        "campaign": report["campaign"], "boards": args.boards, "cores": os.cpu_count(),
        "vehicles": vehicles, "depots": report["fleet"]["depots"], "stages": len(report["stages"]),
        "wall_s": round(wall, 1), "rehearsal_s": report["wall_s"],
        "vehicles_per_minute": round(vehicles / (wall / 60.0), 2),
        "counts": report["counts"], "stopped_at": report["stopped_at"],
        "field_conditions": {k: len(v) for k, v in report["conditions"].items()},
        "disagreements": rec["disagree"], "findings": len(rec["findings"]),
        "without_working_image": len(report["without_working_image"]),
        "passed": report["passed"], "exit": done.returncode,
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
        "goal_s": 900, "within_goal": wall <= 900 and report["passed"],
    }
    print(f"campaign {report['campaign']}: {vehicles} vehicles at {report['fleet']['depots']} depots in "
          f"{len(report['stages'])} stages on {args.boards} virtual boards ({os.cpu_count()} cores)")
    print(f"wall time {wall:.1f} s ({wall / 60:.1f} min; goal <= 15 min), {figures['vehicles_per_minute']} vehicles per minute")
    print("outcomes: " + ", ".join(f"{n} {o}" for o, n in report["counts"].items())
          + (f"; stopped at stage {report['stopped_at']}" if report["stopped_at"] else "; every stage ran"))
    for st in report["stages"]:
        print(f"  stage {st['name']}: {st['vehicles']} vehicles, {st['success_rate']:g} % updated, "
              f"{st['error_rate']:g} % errors -> {st['decision'].split(' - ')[0].split(':')[0]}")
    print(f"reconciliation: {rec['agree']} of {rec['vehicles']} entries agree with their boards, {rec['disagree']} "
          f"disagree; {figures['without_working_image']} vehicles without a working image")
    for f in rec["findings"][:20]:
        print(f"  finding {f['vin']}: {f['finding']}")
    print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} (1 min), "
          f"{load_before[2]:.2f} -> {load_after[2]:.2f} (15 min)")
    if done.returncode not in (0, EXIT_STOPPED) or not report["passed"]:
        print((done.stdout + done.stderr)[-2000:])
    if args.keep:
        print(f"report kept in {out}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
