"""Generated boards: how many drawn boards pass the fast selection of the real cases, and how long it takes.

Runs tests/test_generated_boards.py's hypothesis test with `--boards N` fresh boards (no derandomization:
the nightly profile), each with its own in-process virtual bench, and prints the figure: boards drawn,
passed, boards without a cycle counter (their idle timing case NOT COVERED), wall time, mean time per
board and the 1-minute load average. Last line JSON. A failing board is printed whole and written as YAML
under pytest's basetemp (`failed-boards/`); it then belongs in tests/regressions/.

    flock /tmp/hil-heavy.lock .venv/bin/python benchmarks/generated_boards.py --boards 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, default=100, help="boards to draw (default 100, the nightly count)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="generated-boards-") as tmp:
        tally = Path(tmp) / "tally.json"
        env = {**os.environ, "HIL_BOARDS": str(args.boards), "HIL_BOARD_TALLY": str(tally),
               "HYPOTHESIS_PROFILE": "hil-nightly", "HIL_BOARDS_KEEP_GOING": "1"}
        start = time.monotonic()
        load_before = os.getloadavg()[0]
        result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s",
                                 "tests/test_generated_boards.py::test_generated_board_passes_the_fast_selection",
                                 "--basetemp", str(Path(tmp) / "base")], cwd=ROOT, env=env, capture_output=True,
                                text=True)
        wall = time.monotonic() - start
        figure = json.loads(tally.read_text()) if tally.is_file() else {"drawn": 0, "passed": 0}
        if result.returncode != 0:
            print(result.stdout[-8000:])
            kept = Path(tmp) / "base" / "failed-boards"
            for f in sorted(kept.glob("*.yaml")) if kept.is_dir() else []:
                dest = ROOT / ".hil" / "failed-boards" / f.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(f.read_text())
                print(f"failing board kept: {dest}")
    figure.update({"wall_s": round(wall, 1), "load_average_1m_before": round(load_before, 2),
                   "load_average_1m_after": round(os.getloadavg()[0], 2), "pytest_exit": result.returncode})
    print(f"boards drawn {figure.get('drawn')}, passed {figure.get('passed')}, failed {figure.get('failed')} "
          f"(without a cycle counter: {figure.get('no_counter')}), wall {figure['wall_s']:.0f} s, "
          f"{figure.get('mean_board_s', 0):.1f} s per board, load average {figure['load_average_1m_before']} -> "
          f"{figure['load_average_1m_after']}")
    print(json.dumps(figure))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
