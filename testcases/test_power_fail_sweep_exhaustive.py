"""Exhaustive power-fail sweep (sim only): a cut at every flash operation of an install and of a revert.

Fault-matrix rows 1, 2 and 3. This uses the simulator's flash choke point - a backdoor no real
board has - so it is marked sim_only and never stands in for the black-box cases.
"""

from __future__ import annotations

import pytest

from hil.timing.measure import Measurement


@pytest.mark.sim_only
@pytest.mark.requirement("R156-recovery", "ISO24089-recovery")
@pytest.mark.parametrize(("scenario", "torn", "multi", "row"), [
    pytest.param("install", False, 0, 1, id="power_cut-at_every_operation_of_an_install",
                 marks=pytest.mark.fault(row=1, expect="boot old or new, intact and consistent")),
    pytest.param("revert", False, 0, 1, id="power_cut-at_every_operation_of_a_revert",
                 marks=pytest.mark.fault(row=1, expect="boot old or new, intact and consistent")),
    pytest.param("install", True, 0, 2, id="torn_write-at_every_operation_of_an_install",
                 marks=pytest.mark.fault(row=2, expect="a torn status or magic is handled")),
    pytest.param("revert", True, 0, 2, id="torn_write-at_every_operation_of_a_revert",
                 marks=pytest.mark.fault(row=2, expect="a torn status or magic is handled")),
    pytest.param("install", True, 5, 3, id="power_cut-several_in_a_row",
                 marks=pytest.mark.fault(row=3, expect="converges to a bootable state")),
])
def test_exhaustive_power_fail_sweep(request, scenario, torn, multi, row, images, bench_config, measure, evidence):
    from hil.sim.sweep import sweep_for_bench

    assert bench_config.sim is not None
    if multi and request.config.getoption("--nightly"):
        multi *= 10  # nightly: up to ten times as many cuts in a row per point
    # The bootloader of the board the bench file describes (its update family's), defects included: a defective
    # board's sweep must fail.
    report = sweep_for_bench(bench_config, images["baseline"], images["update"], scenario=scenario, torn=torn,
                             multi=multi, seed=row)
    (evidence / "sweep.txt").write_text("\n".join(str(p) for p in report.points))
    from hil.report.plots import plot_outcome_strip

    plot_outcome_strip([(p.op_index, p.outcome) for p in report.points], evidence / "sweep-outcomes.png",
                       f"{scenario}{' (torn)' if torn else ''}{f', {multi} cuts in a row' if multi else ''}: "
                       f"{len(report.points)} cut points, {report.bricks} bricks")
    measure(Measurement("fail_points", float(len(report.points)), "points", 1.0, None))
    measure(Measurement("bricks", float(report.bricks), "bricks", 0.0, 0.0))
    assert report.total_ops > 0 and report.points, "the sweep found no operations to interrupt"
    assert report.bricks == 0, "\n".join(str(p) for p in report.points if p.outcome == "brick")
