"""Generated boards (tests/boards.py): boards the suite was not written for pass a fast selection of the real
test cases, run by pytest against each board's own bench file - the promise "point the suite at your BMS".

- `make test`: 5 boards, the same 5 on every machine (hypothesis seeds 0..4); `HIL_NIGHTLY=1`: 100 new
  ones every day (seeds from the date, or `HIL_BOARD_SEED`); `HIL_BOARDS=n`: n. One test item per board,
  so pytest-xdist spreads them. No shrinking: one board costs seconds, and a failing board is kept whole
  instead - printed and written as YAML (tests/regressions/ takes it as it is).
- Every file in tests/regressions/ runs the same selection, for ever after. One of them has no cycle counter:
  its idle timing case ends NOT COVERED naming the counter, and its fault matrix says so (row 17).

Each board gets its own in-process virtual bench (python-can `virtual` bus of a private name, ports the OS
picks, files under pytest's tmp dirs): hermetic, beside any other run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cantools
import hypothesis
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings

from boards import CI_BOARDS, FAST_SELECTION, NIGHTLY_BOARDS, ROOT, Board, boards, nightly, run_selection, verdict
from hil.bench import contract
from hil.bench.config import load_bench
from hil.bench.frames import cell_layout, cycle_counter, temperature_layout
from hil.sim.soc import encode_frame

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
NO_COUNTER_BOARD = REGRESSIONS / "no-counter-29bit-fd-big-endian.yaml"


def _boards_to_draw() -> int:
    if os.environ.get("HIL_BOARDS"):
        return int(os.environ["HIL_BOARDS"])
    return NIGHTLY_BOARDS if nightly() else CI_BOARDS


def _first_seed() -> int:
    """Seeds of the draws: 0.. in `make test` (reproducible), the date's in a nightly run (new boards every day,
    the same on every xdist worker), or HIL_BOARD_SEED."""
    if os.environ.get("HIL_BOARD_SEED"):
        return int(os.environ["HIL_BOARD_SEED"])
    return int(time.strftime("%Y%m%d")) * 1000 if nightly() or os.environ.get("HIL_BOARDS") else 0


def draw_board(seed: int) -> Board:
    """The board hypothesis draws with `seed` (no shrinking, no example database: a board is kept as YAML)."""
    drawn: list[Board] = []

    @hypothesis.seed(seed)
    @settings(max_examples=1, deadline=None, database=None, derandomize=False, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(board=boards())
    def draw(board: Board) -> None:
        drawn.append(board)

    draw()
    return drawn[0]


def _failed(board: Board, problems: list[str], output: str, where: Path) -> str:
    """Keep the failing board as a regression file and say how to keep it for ever."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{board.name}.yaml"
    path.write_text(board.as_yaml())
    return (f"generated board {board.name} failed the fast selection:\n- " + "\n- ".join(problems)
            + f"\n\nThe board is written to {path}; copy it into tests/regressions/ to run it on every `make test`."
            + f"\n\n--- pytest output (tail) ---\n{output[-3000:]}\n--- the board ---\n{board.as_yaml()}")


class _Tally:
    """Boards drawn and passed, and the wall time (printed, and written to $HIL_BOARD_TALLY as JSON)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.drawn = 0
        self.passed = 0
        self.no_counter = 0
        self.seconds: list[float] = []
        self.failed: list[str] = []  # HIL_BOARDS_KEEP_GOING: failures counted, the run goes on

    def report(self) -> dict[str, float]:
        wall = time.monotonic() - self.start
        return {"drawn": self.drawn, "passed": self.passed, "failed": len(self.failed), "no_counter": self.no_counter,
                "wall_s": round(wall, 1),
                "mean_board_s": round(sum(self.seconds) / len(self.seconds), 1) if self.seconds else 0.0,
                "load_average_1m": round(os.getloadavg()[0], 2)}


@pytest.fixture(scope="module")
def tally():
    t = _Tally()
    yield t
    figure = t.report()
    print(f"\ngenerated boards: {json.dumps(figure)}")
    out = os.environ.get("HIL_BOARD_TALLY")
    if out:
        Path(out).write_text(json.dumps(figure) + "\n")
    if t.failed:
        pytest.fail(f"{len(t.failed)} of {t.drawn} generated boards failed:\n\n" + "\n\n".join(t.failed), pytrace=False)


@pytest.mark.integration
@pytest.mark.parametrize("seed", [_first_seed() + n for n in range(_boards_to_draw())], ids=lambda n: f"seed{n}")
def test_generated_board_passes_the_fast_selection(seed, tmp_path_factory, tally):
    board = draw_board(seed)
    tally.drawn += 1
    tally.no_counter += not board.has_counter
    workdir = tmp_path_factory.mktemp(board.name)
    start = time.monotonic()
    outcomes, output = run_selection(board.write(workdir), workdir)
    tally.seconds.append(time.monotonic() - start)
    problems = verdict(board, outcomes)
    if problems:
        report = _failed(board, problems, output, tmp_path_factory.getbasetemp() / "failed-boards")
        if os.environ.get("HIL_BOARDS_KEEP_GOING"):  # benchmarks/generated_boards.py: count them all
            print(report)
            tally.failed.append(report)
            return
        pytest.fail(report, pytrace=False)
    tally.passed += 1


@pytest.mark.integration
@pytest.mark.parametrize("path", sorted(REGRESSIONS.glob("*.yaml")), ids=lambda p: p.stem)
def test_regression_board_passes_the_fast_selection(path, tmp_path):
    """Each kept board passes the fast selection; one without a cycle counter ends its idle timing case NOT COVERED,
    and its fault matrix says why (row 17, naming the counter) - never a quiet pass."""
    board = Board.from_yaml(path.read_text())
    outcomes, output = run_selection(board.write(tmp_path), tmp_path)
    problems = verdict(board, outcomes)
    assert not problems, _failed(board, problems, output, tmp_path / "failed")
    if not board.has_counter:
        _assert_missed_cycles_not_covered(tmp_path)


def _assert_missed_cycles_not_covered(workdir: Path) -> None:
    matrix = json.loads((workdir / "reports/fault-matrix.json").read_text())
    row = next(r for r in matrix["rows"] if r["row"] == 17)
    assert row["verdict"] == "NOT COVERED", row
    assert any("counter signal missing" in why and "missed" in why for why in row["not_covered_because"]), row
    idle = [d for d in (workdir / "evidence").iterdir() if "test_soc_cycle_timing_idle" in d.name]
    names = {m["name"] for d in idle for m in json.loads((d / "measurements.json").read_text())}
    assert "soc_period_max" in names and "soc_missed_cycles" not in names, names  # judged, except what it cannot


# ---------------------------------------------------------------------- the generator itself (fast, no bench)
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(board=boards())
def test_every_drawn_board_loads_and_its_frames_round_trip(board, tmp_path_factory):
    """A drawn board is valid input (the bench loader accepts it) and its frames mean on the tester's side what
    the virtual board put in: every signal of every message, the counter at its width, each cell in its slot."""
    workdir = tmp_path_factory.mktemp("draw")
    cfg = load_bench(board.write(workdir))
    p = cfg.profile
    db = cantools.database.load_file(str(cfg.can.dbc))
    counter = cycle_counter(db, p)
    assert (counter is None) == (not board.has_counter)
    if counter is not None:
        assert counter.modulo == 2 ** board.spec["counter_bits"]
    for layout, count in ((cell_layout(db, p), board.spec["cells"]), (temperature_layout(db, p), board.spec["temperatures"])):
        assert layout.count == count
        seen: dict[int, float] = {}
        for mux, members in layout.groups():
            values = {name: 20.0 + index for index, name in members}
            signals = dict(values, **({layout.multiplexer: mux} if layout.multiplexer else {}))
            spec = db.get_message_by_name(p.can.dbc_message(layout.message))
            data = encode_frame(spec, p.can.to_dbc_signals(layout.message, signals))
            decoded = p.can.to_framework_signals(layout.message, spec.decode(data, decode_choices=False))
            seen.update(layout.values(decoded))
        assert sorted(seen) == list(range(1, count + 1))
        assert all(abs(v - (20.0 + i - 1)) < 0.01 for i, v in seen.items()), seen
    status = {contract.SIG_UPDATE_STATE: 7, contract.SIG_UPDATE_REASON: 9, contract.SIG_UPDATE_PROGRESS: 55}
    spec = db.get_message_by_name(p.can.dbc_message(contract.MSG_UPDATE_STATUS))
    decoded = p.can.to_framework_signals(contract.MSG_UPDATE_STATUS, spec.decode(
        encode_frame(spec, p.can.to_dbc_signals(contract.MSG_UPDATE_STATUS, status))))
    assert {k: decoded[k] for k in status} == status
    assert yaml.safe_load(board.as_yaml())["profile"] == board.profile


def test_the_regression_folder_holds_boards():
    """Each file is a whole board; one has no cycle counter, so `make test` shows missed cycles NOT COVERED, named."""
    files = sorted(REGRESSIONS.glob("*.yaml"))
    assert NO_COUNTER_BOARD in files and not Board.from_yaml(NO_COUNTER_BOARD.read_text()).has_counter
    for path in files:
        Board.from_yaml(path.read_text())


def test_fast_selection_names_real_cases():
    for nodeid in FAST_SELECTION:
        file, _, name = nodeid.partition("::")
        assert (ROOT / file).is_file() and f"def {name.split('[')[0]}(" in (ROOT / file).read_text(), nodeid


@pytest.mark.integration
@pytest.mark.parametrize("seed", [900, 901, 902], ids=lambda n: f"seed{n}")
def test_drawn_board_answers_on_its_own_wire(seed, tmp_path):
    """A quick look before the real cases: a drawn board's virtual bench starts in-process and answers the tester
    in its own numbers - identity and status DIDs, SecurityAccess with its algorithm, its update history layout,
    its SOC frame with the counter at its width and every cell in its slot, its console's power-up line."""
    import re

    from hil.bench.bench import Bench
    from hil.dut.dut import Dut

    board = draw_board(seed)
    cfg = load_bench(board.write(tmp_path))
    p = cfg.profile
    with Bench.open(cfg, evidence_dir=tmp_path) as bench:
        dut = Dut(bench.uds, bench.can, bench.cfg.dut)
        assert dut.version() == "1.0.0"
        assert dut.identity()["hardware"] == cfg.dut.hardware_number
        dut.status()
        dut.update_history()
        bench.flasher.unlock()
        frame = dut.wait_running(5.0)
        counter = cycle_counter(bench.can.db, p)
        if counter is not None:
            assert counter.signal in frame.signals and int(frame.signals[counter.signal]) < counter.modulo
        layout = cell_layout(bench.can.db, p)
        cells: dict[int, float] = {}
        for f in bench.can.collect(contract.MSG_CELL_VOLTAGES, (len(layout.groups()) + 2) * cfg.timing.soc_period_ms / 1000):
            cells.update(layout.values(f.signals))
        assert sorted(cells) == list(range(1, p.soc_core.cells + 1)), cells
        if bench.console is not None:
            assert re.search(p.console.patterns["power_up"], bench.console.text), bench.console.text[-500:]
