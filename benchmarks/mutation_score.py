"""Kill matrix: the validation suite against every defective virtual board (hil/sim/defects.py).

Each defect breaks exactly one promise. For each one, the cases named for that promise run against a
board built with that defect (its own bench copy: multicast group, UDP port, flash file, lock and
evidence directories); the clean board runs the whole suite and must pass. A defect is *caught*
when a case named for the defect's promise (its selection) failed its own checks on the defective
board and passed on the clean one (a case red on both proves nothing: a broken environment, say).
The per-defect lines printed while the runs go are provisional; the summary applies that rule.

    .venv/bin/python benchmarks/mutation_score.py [--jobs 2] [--defects a,b] [--no-clean] [--bench benches/sim.yaml]

Prints one line per defect with the tests that went red, then the score; the last line is one JSON
object. Not part of `make test` (it takes minutes); tests/test_defects.py runs four defects there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.bench.config import load_bench  # noqa: E402
from hil.sim.defects import DEFECTS  # noqa: E402

#: A tester-side timeout (udsoncan's P2 on the host) is host load, never a board defect of the catalogue.
HOST_TIMEOUT = "P2 timeout time has expired"

#: Each parallel slot gets its own multicast group and UDP port (the i9 block: 239.74.183.x, 43230-43239).
GROUP_PREFIX = "239.74.183."
FIRST_UDP_PORT = 43230
UDP_PORTS = 10


@dataclass
class Run:
    """One pytest run against one board (a defect, or None for the clean board)."""

    defect: str | None
    selection: list[str] = field(default_factory=list)
    keyword: str = ""
    passed: list[str] = field(default_factory=list)
    red: list[str] = field(default_factory=list)
    #: red in the test body itself (a failed check), not a setup error or a host-side timeout
    failed_checks: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    attempts: int = 1
    seconds: float = 0.0
    returncode: int | None = None
    output_tail: str = ""
    #: Cases that went red on the clean board: going red on a defective board then proves nothing.
    red_on_clean: frozenset[str] = frozenset()

    @property
    def named_red(self) -> list[str]:
        """Cases named for the defect's promise (its selection terms) whose own checks failed, and that the
        clean board passes (a kill is red on the defective board and green on the clean one)."""
        terms = [t.strip() for t in self.keyword.split(" or ") if t.strip()]
        named = [t for t in self.failed_checks if any(term in t for term in terms)] if terms else list(self.failed_checks)
        return [t for t in named if t not in self.red_on_clean]

    @property
    def caught(self) -> bool:
        return bool(self.named_red)

    @property
    def inconclusive(self) -> bool:
        """Nothing caught, but the run did not get to judge (bench error, host timeout): not a verdict."""
        return not self.caught and len(self.red) > len(self.failed_checks)


def bench_copy(base: Path, workdir: Path, slot: int, defect: str | None) -> Path:
    """The base bench with this slot's group/port, OS-chosen TCP ports, its own flash file and the defect."""
    data = yaml.safe_load(base.read_text())
    data["bench"] = f"mut-{slot}-{defect or 'clean'}"[:60]
    data["can"]["channel"] = f"{GROUP_PREFIX}{100 + slot}"
    data["can"]["args"] = {**(data["can"].get("args") or {}), "port": FIRST_UDP_PORT + slot % UDP_PORTS}
    data["psu"]["resource"] = "TCPIP0::127.0.0.1::0::SOCKET"
    if data.get("load"):
        data["load"]["resource"] = "TCPIP0::127.0.0.1::0::SOCKET"
    if data.get("console"):
        data["console"]["url"] = "socket://127.0.0.1:0"
    sim = data["sim"]
    sim["flash_file"] = str(workdir / "board.flash")
    sim["trusted_keys"] = [str((base.parent / k).resolve()) for k in sim["trusted_keys"]]
    sim["defects"] = [defect] if defect else []
    images = data.setdefault("images", {})
    for key, default in (("recipes", "../firmware_images/recipes"), ("build_dir", "../firmware_images/build"),
                         ("keys_dir", "../firmware_images/keys"), ("packages", "../firmware_images/packages")):
        images[key] = str((base.parent / images.get(key, default)).resolve())
    if data["can"].get("dbc"):
        data["can"]["dbc"] = str((base.parent / data["can"]["dbc"]).resolve())
    else:  # the DUT profile's DBC, or dbc/bms.dbc next to the base bench - not next to this copy
        data["can"]["dbc"] = str(load_bench(base).can.dbc)
    if data["dut"].get("profile"):
        data["dut"]["profile"] = str((base.parent / data["dut"]["profile"]).resolve())
    if images.get("signing_key"):
        images["signing_key"] = str((base.parent / images["signing_key"]).resolve())
    if isinstance(images.get("catalogue"), dict):  # image files relative to the bench file; recipe names stay
        images["catalogue"] = {role: str((base.parent / v).resolve()) if "/" in str(v) else v
                               for role, v in images["catalogue"].items()}
    out = workdir / "bench.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def run_one(run: Run, base: Path, slot: int, keep: Path | None, timeout_s: float) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix=f"mut-{run.defect or 'clean'}-"))
    try:
        bench = bench_copy(base, workdir, slot, run.defect)
        junit = workdir / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", *run.selection, "--bench", str(bench), "-q", "-p", "no:cacheprovider",
               "-p", "no:randomly", f"--junitxml={junit}", "--evidence-dir", str(workdir / "evidence"),
               "--reports-dir", str(workdir / "reports"), "-o", "addopts="]
        if run.keyword:
            cmd += ["-k", run.keyword]
        env = {**os.environ, "HIL_LOCK_DIR": str(workdir / "locks")}
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
            run.returncode = proc.returncode
            run.output_tail = (proc.stdout + proc.stderr)[-3000:]
        except subprocess.TimeoutExpired as exc:
            run.returncode = None
            run.output_tail = f"timed out after {timeout_s:.0f} s: {str(exc.stdout or '')[-2000:]}"
        run.seconds = time.monotonic() - start
        if junit.is_file():
            for case in ET.parse(junit).getroot().iter("testcase"):
                name = f"{Path(case.get('file') or case.get('classname', '').replace('.', '/')).stem}::{case.get('name')}"
                failure, error = case.find("failure"), case.find("error")
                if failure is not None or error is not None:
                    run.red.append(name)
                    text = ((failure if failure is not None else error).get("message") or "")  # type: ignore[union-attr]
                    run.reasons[name] = text.splitlines()[0][:200] if text else ""
                    if failure is not None and HOST_TIMEOUT not in text and HOST_TIMEOUT not in (failure.text or ""):
                        run.failed_checks.append(name)
                elif case.find("skipped") is not None:
                    run.skipped += 1
                else:
                    run.passed.append(name)
        if keep is not None:
            dest = keep / (run.defect or "clean")
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(workdir, dest, ignore=shutil.ignore_patterns("*.flash"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=str(ROOT / "benches/sim.yaml"), help="base bench YAML (a virtual bench)")
    ap.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)), help="runs in parallel")
    ap.add_argument("--defects", default="", help="comma-separated subset (default: every defect)")
    ap.add_argument("--no-clean", action="store_true", help="skip the clean board's full-suite run")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    ap.add_argument("--keep", type=Path, default=None, help="keep each run's evidence and junit.xml here")
    args = ap.parse_args()

    base = Path(args.bench).resolve()
    family = load_bench(base).profile.update.family
    names = [n.strip() for n in args.defects.split(",") if n.strip()] or sorted(
        n for n, info in DEFECTS.items() if info.applies_to(family))  # a board of this family can carry it
    unknown = [n for n in names if n not in DEFECTS]
    if unknown:
        ap.error(f"unknown defect(s) {unknown}; accepted: {', '.join(sorted(DEFECTS))}")
    runs = [] if args.no_clean else [Run(None, ["testcases"])]
    for n in names:
        info = DEFECTS[n]
        runs.append(Run(n, [f"testcases/{f}" for f in info.files], info.selection))
    free_slots = list(range(args.jobs))
    lock = threading.Lock()

    def work(run: Run) -> Run:
        with lock:
            slot = free_slots.pop(0)
        try:
            result = run_one(run, base, slot, args.keep, args.timeout)
            if run.defect is not None and result.inconclusive:
                # The bench broke or the host timed out before any check could judge the board: run it
                # once more and say so (a verdict needs a run that judged; this is not a retried flake).
                print(f"{run.defect:42s} inconclusive ({next(iter(result.reasons.values()), '')[:120]}), running again",
                      flush=True)
                result = run_one(Run(run.defect, run.selection, run.keyword, attempts=2), base, slot, args.keep,
                                 args.timeout)
        finally:
            with lock:
                free_slots.append(slot)
        label = run.defect or "CLEAN BOARD (full suite)"
        verdict = ("caught" if result.caught else "INCONCLUSIVE" if result.inconclusive else "NOT CAUGHT") \
            if run.defect else ("green" if not result.red and result.returncode == 0 else "RED")
        shown = result.named_red if run.defect else result.red
        print(f"{label:42s} {verdict:12s} {result.seconds:6.1f} s  red: {', '.join(shown) or '-'}", flush=True)
        return result

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(work, runs))
    wall = time.monotonic() - start

    clean = next((r for r in done if r.defect is None), None)
    defect_runs = [r for r in done if r.defect is not None]
    if clean is not None:
        for r in defect_runs:
            r.red_on_clean = frozenset(clean.red)
    caught = [r for r in defect_runs if r.caught]
    missed = [r for r in defect_runs if not r.caught]
    print()
    for r in defect_runs:
        info = DEFECTS[r.defect or ""]
        print(f"- {r.defect}: breaks '{info.promise}' (rows {', '.join(map(str, info.rows))}); "
              f"red: {', '.join(r.named_red) or 'NOTHING'}"
              + (" (its red cases are red on the clean board too)" if r.failed_checks and not r.named_red
                 and r.red_on_clean else ""))
    if clean is not None and (clean.red or clean.returncode != 0):
        print("\nclean board NOT green:")
        for name in clean.red:
            print(f"  {name}: {clean.reasons.get(name, '')}")
    for r in missed:
        print(f"\n{r.defect} not caught; output tail:\n{r.output_tail[-1500:]}")
    score = len(caught) / len(defect_runs) if defect_runs else 0.0
    print(f"\nscore: {len(caught)}/{len(defect_runs)} defects caught ({score:.0%}); wall time {wall:.0f} s "
          f"with {args.jobs} parallel runs")
    summary = {
        "defects": len(defect_runs), "caught": len(caught), "score": round(score, 4),
        "missed": [r.defect for r in missed],
        "clean_board": None if clean is None else {"green": not clean.red and clean.returncode == 0,
                                                    "passed": len(clean.passed), "red": clean.red,
                                                    "skipped": clean.skipped, "seconds": round(clean.seconds, 1)},
        "wall_s": round(wall, 1), "jobs": args.jobs,
        "kills": {r.defect: r.named_red for r in defect_runs},
        "seconds": {r.defect: round(r.seconds, 1) for r in defect_runs},
        "reruns": [r.defect for r in defect_runs if r.attempts > 1],
    }
    print(json.dumps(summary, sort_keys=True))
    clean_ok = clean is None or (not clean.red and clean.returncode == 0)
    return 0 if clean_ok and not missed else 1


if __name__ == "__main__":
    sys.exit(main())
