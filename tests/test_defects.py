"""Defective virtual boards: validated names, and the black-box power-cut cases go red on two of them.

The full kill matrix is `benchmarks/mutation_score.py` (minutes, not part of `make test`); here two
defects show that the verdicts of the black-box power-cut cases cannot lie:
- a supply that acknowledges OUTP OFF but keeps its output live fails the black-box sweep;
- a board that resumes an interrupted swap from the wrong step fails the multi-cut swap case;
- a board that keeps sending the new release's CAN message after a rollback fails the new-feature case;
- a board whose activation starves its SOC task until the charge current has fallen fails the charging-window
  case (no SOC cycle, no 0 A limit: the charger stopped on its own timeout).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hil.bench.config import load_bench
from hil.errors import BenchConfigError
from hil.report.records import FAULT_MATRIX
from hil.sim.defects import DEFECTS, Defects

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_cli_and_plugin import _sim_bench  # noqa: E402


def test_unknown_defect_is_refused_naming_every_accepted_one(tmp_path):
    bench = _sim_bench(tmp_path)
    data = yaml.safe_load(bench.read_text())
    data["sim"]["defects"] = ["hash_check_skipped", "board_catches_fire"]
    bench.write_text(yaml.safe_dump(data))
    with pytest.raises(BenchConfigError) as err:
        load_bench(bench)
    text = str(err.value)
    assert "sim.defects" in text and "'board_catches_fire'" in text, text
    assert all(name in text for name in DEFECTS), text


def test_catalogue_has_a_defect_for_every_fault_row():
    assert len(DEFECTS) >= 20
    rows = {row for info in DEFECTS.values() for row in info.rows}
    assert set(FAULT_MATRIX) - rows == set(), f"fault-matrix rows without a defective board: {sorted(set(FAULT_MATRIX) - rows)}"
    assert rows <= set(FAULT_MATRIX), f"defects name rows the matrix does not have: {sorted(rows - set(FAULT_MATRIX))}"
    for name, info in DEFECTS.items():
        assert info.selection and info.files, name
        for f in info.files:
            assert (ROOT / "testcases" / f).is_file(), f"{name}: {f} does not exist"
    with pytest.raises(KeyError):
        Defects(["hash_check_skipped"]).has("hash_check_skiped")


def test_every_defect_is_wired_into_the_virtual_board():
    """A defect whose name the board's code never consults would be a board with no defect (a merge can lose one)."""
    sources = "\n".join(p.read_text() for p in (ROOT / "hil" / "sim").glob("*.py") if p.name != "defects.py")
    unwired = [name for name in DEFECTS if f'"{name}"' not in sources]
    assert not unwired, f"defects no code of hil/sim consults: {unwired}"


def _run_case(tmp_path: Path, defect: str, keyword: str, *extra: str,
              case_file: str = "testcases/test_power_faults.py") -> subprocess.CompletedProcess:
    bench = _sim_bench(tmp_path)
    data = yaml.safe_load(bench.read_text())
    data["sim"]["defects"] = [defect]
    bench.write_text(yaml.safe_dump(data))
    cmd = [sys.executable, "-m", "pytest", case_file, "-k", keyword, "--bench", str(bench),
           "-q", "-p", "no:cacheprovider", "--evidence-dir", str(tmp_path / "ev"), "--reports-dir",
           str(tmp_path / "rep"), *extra]
    env = {**os.environ, "HIL_LOCK_DIR": str(tmp_path / "locks")}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.integration
def test_black_box_sweep_fails_when_the_supply_ignores_the_cut(tmp_path):
    result = _run_case(tmp_path, "supply_ignores_output_off", "black_box_power_cut_sweep", "--sweep-points", "1")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "1 failed" in out and "did not provably take effect" in out, out
    assert "supply read back" in out, out


@pytest.mark.integration
def test_multi_cut_swap_case_fails_on_a_board_that_resumes_from_the_wrong_step(tmp_path):
    result = _run_case(tmp_path, "swap_resumed_from_wrong_step", "every_swap_step")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "1 failed" in out, out


@pytest.mark.integration
def test_new_message_case_fails_on_a_board_that_keeps_sending_it_after_a_rollback(tmp_path):
    result = _run_case(tmp_path, "new_message_after_rollback", "gone_after_rollback",
                       case_file="testcases/test_new_features.py")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "1 failed" in out and "the board still sends" in out, out


@pytest.mark.integration
def test_charging_window_case_fails_on_a_board_that_starves_its_soc_task_in_the_rampdown(tmp_path):
    result = _run_case(tmp_path, "soc_starved_during_charge_rampdown", "charging_paused_for_the_install",
                       case_file="testcases/test_charging_window.py")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "1 failed" in out and "did not keep its cycle" in out, out


def _mutation_score():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mutation_score", ROOT / "benchmarks" / "mutation_score.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_score"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_kill_matrix_counts_a_kill_only_when_the_clean_board_passes_that_case():
    ms = _mutation_score()
    case = "test_preconditions::test_activation_refused_while_pack_current_flows"
    run = ms.Run("pack_current_precondition_ignored", keyword="pack_current", red=[case], failed_checks=[case])
    assert run.caught and run.named_red == [case]
    run.red_on_clean = frozenset({case})  # red on the clean board too (a broken environment, say)
    assert not run.caught and run.named_red == []
    other = ms.Run("pack_current_precondition_ignored", keyword="pack_current",
                   red=["test_update::test_update_succeeds"], failed_checks=["test_update::test_update_succeeds"])
    assert not other.caught, "a red case not named for the promise is no kill"
