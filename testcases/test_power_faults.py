"""Power lost through the bench supply at every stage of an update: the DUT always boots old or new.

Fault-matrix rows 3 and 4. Only the supply, CAN/UDS and the console are used, so these cases
run unchanged on a real bench. Phase markers come from the DUT's console (bench contract).
"""

from __future__ import annotations

import threading

import pytest

from hil.checks import Expected, check_evidence, check_final_state
from hil.contract import ActivationMode, Reason, Routine, UpdateState
from hil.errors import HilError

pytestmark = [pytest.mark.destructive]
OFF_S = 0.5


@pytest.fixture(autouse=True)
def supply_around_the_cut(psu, evidence, bench_config):
    """Sample the supply's measured voltage and current through the whole case; plot it, and zoom on the first cut."""
    from hil.faults.power import SupplyMonitor
    from hil.plots import plot_supply

    monitor = SupplyMonitor(psu, evidence / "supply-samples.csv")
    with monitor:
        yield monitor
    # Output and voltage changes the driver made during the case mark the plot (its event times are wall clock).
    marks = [(f"{e.name} {e.value}", e.time - monitor.start_time) for e in psu.events
             if e.time >= monitor.start_time and e.kind == "set" and e.name in ("output", "voltage")]
    if monitor.samples:
        plot_supply(monitor.csv_path, evidence / "supply.png", "supply, whole case", marks)
        cuts = [t for label, t in marks if label in ("output False",) or label.startswith("voltage") and
                float(label.split()[1]) < bench_config.psu.nominal_voltage]
        if cuts:
            plot_supply(monitor.csv_path, evidence / "supply-cut.png", "supply around the first cut", marks,
                        window=(cuts[0] - 0.5, cuts[0] + 2.0))


def _stage_and_activate(flasher, console, image: bytes) -> None:
    """Stage and activate with the console cursor at the activation: phase markers are matched after it."""
    staged = flasher.stage(image)
    assert staged.accepted, f"a valid image must stage: {staged.reason.name}"
    console.mark()
    flasher.activate()


def _cut_when(console, pattern: str, psu, timeout: float = 30.0, off_s: float = OFF_S) -> None:
    console.expect(pattern, timeout=timeout)
    psu.dropout(off_s)


@pytest.mark.fault(row=4, expect="download interrupted: old image keeps running, download reported aborted")
@pytest.mark.requirement("R156-recovery", "R156-power")
def test_power_cut_during_download_keeps_the_old_image(dut, flasher, psu, images, bench_config, measure, evidence,
                                                        console_if_any):
    baseline = dut.version()
    config = dut.config()

    def cut_at_half(done: int, total: int) -> None:
        if done >= total // 2 and psu.is_on():
            psu.output(False)

    flasher.on_progress.append(cut_at_half)
    with pytest.raises(HilError):
        flasher.stage(images["update"])
    flasher.on_progress.clear()
    psu.power_on()
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.IDLE, Reason.DOWNLOAD_ABORTED, config),
                      measure)
    check_evidence(evidence, console_if_any)


@pytest.mark.fault(row=4, expect="erase interrupted: old image keeps running")
def test_power_cut_during_erase_keeps_the_old_image(dut, flasher, uds, psu, images, bench_config, measure):
    baseline = dut.version()
    config = dut.config()
    assert flasher.stage(images["update"]).accepted  # a full slot: erasing it takes long enough to cut
    flasher.unlock()
    timer = threading.Timer(0.05, psu.output, args=(False,))
    timer.start()
    try:
        with pytest.raises(HilError):
            uds.routine(Routine.ERASE_MEMORY)
    finally:
        timer.join()
    psu.power_on()
    check_final_state(dut, bench_config.timing, Expected(baseline, config=config), measure)
    staged = flasher.stage(images["update"])
    assert staged.accepted, "after a torn erase a fresh erase and download must work"


@pytest.mark.fault(row=4, expect="activation survives a power cycle: the new image installs and confirms")
def test_power_cut_after_activation_installs_at_power_on(dut, flasher, uds, psu, images, bench_config, measure, profile):
    config = dut.config()
    staged = flasher.stage(images["update"])
    assert staged.accepted
    uds.routine(Routine.ACTIVATE_UPDATE, bytes([profile.encode(ActivationMode.TEST)]))
    psu.dropout(OFF_S)  # instead of ECUReset
    outcome = flasher.wait_outcome()
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, config=config), measure)


#: Console patterns by name (the DUT profile's console.patterns): a profile without one skips the case.
INSTALL_CUTS = [
    pytest.param("swap_progress", "new", UpdateState.SUCCESS, id="power_cut-during_swap"),
    pytest.param("swap_done", None, None, id="power_cut-during_trailer_update"),
    pytest.param("selftest_running", "old", UpdateState.ROLLED_BACK, id="power_cut-during_first_boot"),
]


@pytest.mark.fault(row=4, expect="install interrupted by power loss: boots the old or the new image, consistent status")
@pytest.mark.requirement("R156-recovery", "ISO24089-recovery")
@pytest.mark.parametrize(("pattern", "expect_version", "expect_state"), INSTALL_CUTS)
def test_power_cut_during_install(pattern, expect_version, expect_state, dut, flasher, psu, console, images,
                                  bench_config, measure, evidence, console_pattern):
    pattern = console_pattern(pattern)
    baseline = dut.version()
    config = dut.config()
    _stage_and_activate(flasher, console, images["update"])
    _cut_when(console, pattern, psu)
    outcome = flasher.wait_outcome()
    assert outcome.state in (UpdateState.SUCCESS, UpdateState.ROLLED_BACK), outcome.states_seen
    version = {"old": baseline, "new": images.version("update")}.get(expect_version or "", expect_version)
    if version is None:  # either image is acceptable, but status and image must agree
        version = images.version("update") if outcome.state is UpdateState.SUCCESS else baseline
    check_final_state(dut, bench_config.timing, Expected(version, expect_state or outcome.state, None, config), measure)
    check_evidence(evidence, console)


@pytest.mark.fault(row=4, expect="brown-out dip during the swap: resumes, new image confirmed")
@pytest.mark.requirement("R156-power")
def test_brown_out_during_swap_resumes(dut, flasher, psu, console, images, bench_config, measure, console_pattern):
    swap = console_pattern("swap_progress")
    config = dut.config()
    _stage_and_activate(flasher, console, images["update"])
    console.expect(swap, timeout=30)
    psu.dip(bench_config.psu.brownout_voltage, 0.3)
    outcome = flasher.wait_outcome()
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, config=config), measure)


@pytest.mark.fault(row=3, expect="a second cut during the revert still converges to the old image")
@pytest.mark.requirement("R156-recovery")
def test_second_power_cut_during_revert_converges(dut, flasher, psu, console, images, bench_config, measure, evidence,
                                                  console_pattern):
    running, revert, swap = (console_pattern(n) for n in ("selftest_running", "revert", "swap_progress"))
    baseline = dut.version()
    config = dut.config()
    _stage_and_activate(flasher, console, images["update"])
    _cut_when(console, running, psu)  # unconfirmed trial boot -> the next boot reverts
    _cut_when(console, f"(?:{revert})|(?:{swap})", psu)  # cut the revert itself
    outcome = flasher.wait_outcome()
    assert outcome.state is UpdateState.ROLLED_BACK, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.ROLLED_BACK, Reason.NOT_CONFIRMED, config), measure)
    check_evidence(evidence, console)


@pytest.mark.fault(row=4, expect="power returns mid-sweep: every cut point ends old or new, never neither")
@pytest.mark.requirement("R156-recovery", "ISO24089-recovery")
def test_black_box_power_cut_sweep(request, dut, flasher, psu, console, images, bench_config, measure, console_pattern):
    """Calibrate the install's phases from a clean run, then cut at N points spread over every phase."""
    from hil.faults.power import PATTERNS_NEEDED, PowerCutSweep

    sweep = PowerCutSweep(dut=dut, flasher=flasher, psu=psu, console=console, image=images["update"],
                          baseline=images.baseline(), budgets=bench_config.timing,
                          patterns={name: console_pattern(name) for name in PATTERNS_NEEDED})
    profile = sweep.calibrate()
    points = request.config.getoption("--sweep-points")
    results = sweep.run(profile, points_per_phase=points)
    bricks = [r for r in results if not r.bootable]
    from hil.measure import Measurement

    measure(Measurement("black_box_cut_points", float(len(results)), "points", float(points), None))
    measure(Measurement("black_box_bricks", float(len(bricks)), "bricks", 0.0, 0.0))
    assert not bricks, "\n".join(str(b) for b in bricks)
    assert {r.phase for r in results} >= set(profile.phases), "every install phase must be cut at least once"


