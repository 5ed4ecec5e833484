"""SOC stays right across updates and rollbacks, and the improved algorithm (1.1.0) is measurably better.

Fault-matrix row 22 (white paper: SOC algorithm improvements reaching every vehicle). The battery
emulator holds the truth: rested cells at the open-circuit voltage of a known SOC (the pack's OCV
curve is part of the bench contract, `hil.bench.contract.CELL_OCV_CURVE`), and charge moved by the
emulator's current is counted by the tester. Accuracy and the largest step are declared in the
bench YAML (`soc:`).
"""

from __future__ import annotations

import time

import pytest

from hil.bench.contract import MSG_SOC_CORE, SIG_SOC, UpdateState, ocv_for_soc
from hil.drivers.load import CELL_VOLTAGE, PACK_CURRENT, TEMPERATURE
from hil.errors import HilTimeout
from hil.timing.measure import Measurement

pytestmark = [pytest.mark.destructive]

TRUTH_PCT = 60.0
WARM_C = 25.0


def _hold_rested_pack(load, soc_pct: float, temp_c: float = WARM_C) -> None:
    load.require(PACK_CURRENT, TEMPERATURE, CELL_VOLTAGE)
    load.set_pack_current(0.0)
    load.set_temperature(temp_c)
    load.set_cell_voltage(round(ocv_for_soc(soc_pct), 4))


def _settle(can, truth: float, budgets, within: float = 0.5) -> float:
    """Seconds until the BMS's SOC is within `within` x the declared accuracy of the truth (HilTimeout otherwise)."""
    start = time.monotonic()
    can.wait_for(MSG_SOC_CORE, predicate=lambda s: abs(float(s[SIG_SOC]) - truth) <= budgets.accuracy_pct * within,
                 timeout=budgets.settle_s)
    return time.monotonic() - start


def _soc_values(frames) -> list[float]:
    return [float(f.signals[SIG_SOC]) for f in frames]


def _judge_across(frames, truth: float, budgets, measure, when: str) -> None:
    """Every SOC frame of the recording (resets included) near the truth, and no step above the declared one."""
    values = _soc_values(frames)
    assert len(values) >= 10, f"only {len(values)} SOC frames {when}"
    worst = measure(Measurement(f"soc_error_{when}", max(abs(v - truth) for v in values), "%", 0.0,
                                budgets.accuracy_pct))
    step = measure(Measurement(f"soc_max_step_{when}", max(abs(b - a) for a, b in zip(values, values[1:])), "%",
                               0.0, budgets.max_step_pct))
    assert worst.passed, str(worst)
    assert step.passed, str(step)


@pytest.mark.fault(row=22, expect="SOC within its accuracy before and after an update, no jump at the resets")
@pytest.mark.requirement("BMS-soc-accuracy", "R156-safe-state")
def test_soc_stays_right_across_an_update(dut, flasher, images, can, load, bench_config, measure):
    budgets = bench_config.soc
    _hold_rested_pack(load, TRUTH_PCT)
    measure(Measurement("soc_settle_before", _settle(can, TRUTH_PCT, budgets), "s", 0.0, budgets.settle_s))
    with can.recorder(MSG_SOC_CORE) as frames:
        outcome = flasher.update(images["update"])
        can.collect(MSG_SOC_CORE, 2.0)
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    _judge_across(frames, TRUTH_PCT, budgets, measure, "across_update")


@pytest.mark.fault(row=22, expect="SOC within its accuracy after a rollback, no jump at the resets")
@pytest.mark.requirement("BMS-soc-accuracy", "R156-recovery")
def test_soc_stays_right_across_a_rollback(dut, flasher, images, can, load, bench_config, measure):
    budgets = bench_config.soc
    _hold_rested_pack(load, TRUTH_PCT)
    measure(Measurement("soc_settle_before", _settle(can, TRUTH_PCT, budgets), "s", 0.0, budgets.settle_s))
    with can.recorder(MSG_SOC_CORE) as frames:
        outcome = flasher.update(images["selftest_fail"])
        can.collect(MSG_SOC_CORE, 2.0)
    assert outcome.state is UpdateState.ROLLED_BACK, outcome.states_seen
    _judge_across(frames, TRUTH_PCT, budgets, measure, "across_rollback")


#: The cold profile: after a drive at -10 degC the cells read low for a long while (they relax slowly),
#: while the charge actually in the pack is what the emulator's current says.
COLD_C = -10.0
DRIVE_A = -50.0
DRIVE_S = 3.6
SAGGED_PCT = 50.0  # what the not-yet-relaxed cold cells read as OCV
OBSERVE_S = 15.0


def _cold_profile_error(can, load, budgets, capacity_ah: float) -> float:
    """Run the cold profile from a settled warm pack; the mean |SOC - truth| over its last 5 s."""
    _hold_rested_pack(load, TRUTH_PCT)
    _settle(can, TRUTH_PCT, budgets, within=0.1)  # both algorithms start the profile from the truth
    load.set_temperature(COLD_C)
    load.set_cell_voltage(round(ocv_for_soc(SAGGED_PCT), 4))
    start = time.monotonic()
    load.set_pack_current(DRIVE_A)
    time.sleep(DRIVE_S)  # the drive: the emulator's current for a fixed time (the truth counts the charge)
    load.set_pack_current(0.0)
    driven_s = time.monotonic() - start
    truth = TRUTH_PCT + DRIVE_A * driven_s / 3600.0 / capacity_ah * 100.0
    frames = can.collect(MSG_SOC_CORE, OBSERVE_S)
    tail = [f for f in frames if f.received >= frames[-1].received - 5.0]
    return sum(abs(v - truth) for v in _soc_values(tail)) / max(1, len(tail))


@pytest.mark.fault(row=22, expect="the improved SOC algorithm (1.1.0) is more accurate than the baseline in the cold")
@pytest.mark.requirement("BMS-soc-accuracy")
def test_improved_soc_algorithm_beats_the_baseline_in_the_cold(dut, flasher, images, can, load, bench_config,
                                                                measure):
    budgets = bench_config.soc
    capacity_ah = float(dut.config()["capacity_Ah"])  # the truth counts charge against the configured capacity
    baseline = dut.version()
    try:
        baseline_error = _cold_profile_error(can, load, budgets, capacity_ah)
    except HilTimeout as exc:
        pytest.fail(f"baseline SOC never settled on the rested pack: {exc}")
    _hold_rested_pack(load, TRUTH_PCT)
    outcome = flasher.update(images["update"])
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    improved_error = _cold_profile_error(can, load, budgets, capacity_ah)
    print(f"\nSOC error on the cold profile ({COLD_C:g} degC, cells reading {SAGGED_PCT:g} % OCV, truth ~{TRUTH_PCT:g} %): "
          f"baseline {baseline} {baseline_error:.2f} %, improved {dut.version()} {improved_error:.2f} %")
    base = measure(Measurement("soc_error_cold_baseline", baseline_error, "%", 0.0, None))
    better = measure(Measurement("soc_error_cold_improved", improved_error, "%", 0.0, budgets.accuracy_pct))
    gain = measure(Measurement("soc_error_cold_improvement", baseline_error - improved_error, "%", budgets.accuracy_pct, None))
    assert better.passed, str(better)
    assert gain.passed, f"1.1.0 not measurably better than the baseline: {base} vs {better}"
