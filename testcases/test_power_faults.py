"""Power lost through the bench supply at every stage of an update: the DUT always boots old or new.

Fault-matrix rows 3 and 4. Only the supply, CAN/UDS and the console are used, so these cases
run unchanged on a real bench. Phase markers come from the DUT's console (bench contract).
Every cut proves it took effect: the supply reads back (nearly) 0 V while its output is off, the
DUT reports a power-on reset on its console afterwards, and its boot counter advanced.
"""

from __future__ import annotations

import re
import threading

import pytest

from hil.dut.checks import Expected, check_evidence, check_final_state, wait_dut_up
from hil.bench.contract import Reason, ResetCause, UpdateState
from hil.errors import HilError
from hil.faults.power import CutEvidence, check_cut, proven_dropout
from hil.timing.measure import Measurement

pytestmark = [pytest.mark.destructive]
OFF_S = 0.5


@pytest.fixture(autouse=True)
def supply_around_the_cut(psu, evidence, bench_config):
    """Sample the supply's measured voltage and current through the whole case; plot it, and zoom on the first cut."""
    from hil.faults.power import SupplyMonitor
    from hil.report.plots import plot_supply

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


def _swap_sector(m) -> tuple[int, int]:
    """Sector and sector count from a `swap_progress` console line (the pattern's groups `sector` and `total`)."""
    try:
        return int(m.group("sector")), int(m.group("total"))
    except (IndexError, ValueError):
        raise HilError(f"console pattern swap_progress must have the named groups sector and total; matched {m.group(0)!r}") \
            from None


#: A supply output that is off reads back below this (the DUT's brown-out level is far above it).
MAX_OFF_V = 1.0


def _cut_when(console, pattern: str, psu, timeout: float = 30.0, off_s: float = OFF_S) -> CutEvidence:
    since = console.mark()
    console.expect(pattern, timeout=timeout)
    return proven_dropout(psu, off_s, console, since)


def _assert_took_effect(ev: CutEvidence, console, dut=None, boots: int | None = None, timeout: float = 15.0) -> None:
    """The cut happened at the DUT: supply read-back while off, the DUT's power-on line, its boot counter."""
    if dut is not None:
        wait_dut_up(dut, timeout)
    problems = check_cut(ev, max_off_v=MAX_OFF_V, console=console, boot_count_before=boots, dut=dut)
    assert not problems, "the power cut did not provably take effect:\n- " + "\n- ".join(problems)


def _cut_now(psu, console) -> CutEvidence:
    """Output off now (from a test hook), with its proof; power returns with psu.power_on()."""
    ev = CutEvidence(console_mark=len(console.text) if console is not None else 0)
    psu.output(False)
    ev.off_volts = psu.measure_voltage()
    ev.done.set()
    return ev


@pytest.mark.fault(row=4, expect="download interrupted: old image keeps running, download reported aborted")
@pytest.mark.requirement("R156-recovery", "R156-power")
def test_power_cut_during_download_keeps_the_old_image(dut, flasher, psu, images, bench_config, measure, evidence,
                                                        console_if_any):
    baseline = dut.version()
    config = dut.config()
    boots = dut.boot_count()
    cuts: list[CutEvidence] = []

    def cut_at_half(done: int, total: int) -> None:
        if done >= total // 2 and not cuts:
            cuts.append(_cut_now(psu, console_if_any))

    flasher.on_progress.append(cut_at_half)
    with pytest.raises(HilError):
        flasher.stage(images["update"])
    flasher.on_progress.clear()
    psu.power_on()
    assert cuts, "the download finished before the planned cut"
    _assert_took_effect(cuts[0], console_if_any, dut, boots)
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.IDLE, Reason.DOWNLOAD_ABORTED, config),
                      measure)
    check_evidence(evidence, console_if_any)


@pytest.mark.fault(row=4, expect="erase interrupted: old image keeps running")
@pytest.mark.requirement("R156-recovery", "R156-power")
def test_power_cut_during_erase_keeps_the_old_image(dut, flasher, uds, psu, console, images, bench_config, measure):
    baseline = dut.version()
    config = dut.config()
    assert flasher.stage(images["update"]).accepted  # a full slot: erasing it takes long enough to cut
    flasher.unlock()
    boots = dut.boot_count()
    cuts: list[CutEvidence] = []
    timer = threading.Timer(0.05, lambda: cuts.append(_cut_now(psu, console)))
    timer.start()
    try:
        with pytest.raises(HilError):
            flasher.erase()
    finally:
        timer.join()
    psu.power_on()
    assert cuts, "the erase cut never happened"
    _assert_took_effect(cuts[0], console, dut, boots)
    check_final_state(dut, bench_config.timing, Expected(baseline, config=config), measure)
    staged = flasher.stage(images["update"])
    assert staged.accepted, "after a torn erase a fresh erase and download must work"


@pytest.mark.fault(row=4, expect="activation survives a power cycle: the new image installs and confirms")
@pytest.mark.requirement("R156-power", "ISO24089-recovery")
def test_power_cut_after_activation_installs_at_power_on(dut, flasher, psu, console_if_any, images, bench_config,
                                                        measure):
    config = dut.config()
    staged = flasher.stage(images["update"])
    assert staged.accepted
    boots = dut.boot_count()
    flasher.activate(reset=False)  # the family's activation without its reset: the power cut is the reset
    since = console_if_any.mark() if console_if_any is not None else 0
    cut = proven_dropout(psu, OFF_S, console_if_any, since)  # instead of ECUReset
    outcome = flasher.wait_outcome()
    _assert_took_effect(cut, console_if_any, dut, boots)
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
    boots = dut.boot_count()
    _stage_and_activate(flasher, console, images["update"])
    cut = _cut_when(console, pattern, psu)
    outcome = flasher.wait_outcome()
    _assert_took_effect(cut, console, dut, boots)
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
    mark = console.mark()
    psu.dip(bench_config.psu.brownout_voltage, 0.3)
    outcome = flasher.wait_outcome()
    assert re.search(console_pattern("power_up"), console.text[mark:], re.MULTILINE), \
        "the DUT never reported a reset after the brown-out"
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    assert ResetCause(dut.boot_info().reset_cause) is ResetCause.BROWN_OUT, dut.boot_info()
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, config=config), measure)


@pytest.mark.fault(row=3, expect="a second cut during the revert still converges to the old image")
@pytest.mark.requirement("R156-recovery")
def test_second_power_cut_during_revert_converges(dut, flasher, psu, console, images, bench_config, measure, evidence,
                                                  console_pattern, dut_profile, family_phase):
    family_phase("interruptible_revert")  # a revert long enough to see begin and cut (MCUboot: a sector swap back)
    running, revert = console_pattern("selftest_running"), console_pattern("revert")
    swap = dut_profile.console_pattern("swap_progress") or revert  # a board that swaps may show progress first
    baseline = dut.version()
    config = dut.config()
    boots = dut.boot_count()
    _stage_and_activate(flasher, console, images["update"])
    first = _cut_when(console, running, psu)  # unconfirmed trial boot -> the next boot reverts
    second = _cut_when(console, f"(?:{revert})|(?:{swap})", psu)  # cut the revert itself
    outcome = flasher.wait_outcome()
    _assert_took_effect(first, console)
    _assert_took_effect(second, console, dut, boots)
    assert outcome.state is UpdateState.ROLLED_BACK, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.ROLLED_BACK, Reason.NOT_CONFIRMED, config), measure)
    check_evidence(evidence, console)


@pytest.mark.fault(row=4, expect="power returns mid-sweep: every cut point ends old or new, never neither")
@pytest.mark.requirement("R156-recovery", "ISO24089-recovery")
def test_black_box_power_cut_sweep(request, dut, flasher, psu, console, images, bench_config, measure, console_pattern):
    """Calibrate the install's phases from a clean run, then cut at N points spread over every phase."""
    from hil.faults.power import PATTERNS_NEEDED, PowerCutSweep

    sweep = PowerCutSweep(dut=dut, flasher=flasher, psu=psu, console=console, image=images["update"],
                          baseline=images.baseline(), budgets=bench_config.timing, max_off_v=MAX_OFF_V,
                          patterns={name: console_pattern(name) for name in PATTERNS_NEEDED})
    profile = sweep.calibrate()
    points = request.config.getoption("--sweep-points")
    results = sweep.run(profile, points_per_phase=points)
    bricks = [r for r in results if not r.bootable]
    unproven = [r for r in results if not r.proven]
    measure(Measurement("black_box_cut_points", float(len(results)), "points", float(points), None))
    measure(Measurement("black_box_bricks", float(len(bricks)), "bricks", 0.0, 0.0))
    measure(Measurement("black_box_unproven_cuts", float(len(unproven)), "cuts", 0.0, 0.0))
    assert not unproven, "cuts that did not provably take effect:\n" + "\n".join(str(r) for r in unproven)
    assert not bricks, "\n".join(str(b) for b in bricks)
    # Coverage from what the DUT showed at each proven cut, not from the plan's labels. A phase shorter than
    # the bench can place a cut in (twice its worst timing error) is reported; the exhaustive sweep covers it.
    missing, short = sweep.uncovered(profile, results)
    resolution = measure(Measurement("black_box_cut_resolution", sweep.resolution_s(results) * 1000.0, "ms", 0.0, None))
    measure(Measurement("black_box_phases_too_short_to_target", float(len(short)), "phases", 0.0, None))
    windows = ", ".join(f"{n} {(w.end_s - w.start_s) * 1000:.0f} ms" for n, w in profile.phases.items())
    assert not missing, (f"no cut was seen to land in {missing} (phases: {windows}; cut resolution {resolution.value:.1f} ms); "
                         "landings: " + ", ".join(f"{r.phase}->{r.landed}" for r in results))




@pytest.mark.fault(row=3, expect="cuts in every step of the swap, one after another: the image that boots and the backup are intact byte for byte")
@pytest.mark.requirement("R156-recovery", "R156-integrity", "ISO24089-recovery")
def test_power_cuts_in_every_swap_step_keep_both_images_intact(dut, flasher, psu, console, images, bench_config,
                                                               measure, evidence, console_pattern):
    """Cut the swap several times in a row, at the start, a third and two thirds into a sector (its copy steps),
    as the DUT's console reports the sectors; then read both images' hashes back over UDS (DID roles ACTIVE_IMAGE_HASH, BACKUP_IMAGE_HASH)."""
    import time

    progress, resume, done = console_pattern("swap_progress"), console_pattern("swap_resume"), console_pattern("swap_done")
    new, old = images["update"], images.baseline()
    boots = dut.boot_count()
    _stage_and_activate(flasher, console, new)
    # The DUT reports each sector as it starts it: time one sector from two consecutive lines.
    _sector, total = _swap_sector(console.expect(progress, timeout=30))
    first_seen = time.monotonic()
    assert total >= 6, f"the swap covers {total} sectors; the case needs 6 to cut three different sectors"
    console.expect(progress, timeout=10)
    sector_s = time.monotonic() - first_seen
    cuts: list[tuple[str, CutEvidence]] = []
    plans = [(0.0, "copy to scratch"), (1 / 3, "copy of the old sector"), (2 / 3, "copy of the new sector")]
    next_sector = 3
    for fraction, step in plans:
        since = console.mark()
        sector = 0
        while sector < next_sector:
            sector, _total = _swap_sector(console.expect(progress, timeout=30))
        threading.Event().wait(sector_s * fraction)  # into the sector's copy steps, measured above
        cuts.append((f"sector {sector}, {step}", proven_dropout(psu, OFF_S, console, since)))
        resumed = console.expect(f"(?P<resume>{resume})|(?P<done>{done})", timeout=30)
        assert resumed.group("resume"), f"cut in sector {sector} did not interrupt the swap"
        next_sector = sector + 2
        if next_sector > total - 1:
            break
    outcome = flasher.wait_outcome()
    for where, ev in cuts:
        problems = check_cut(ev, max_off_v=MAX_OFF_V, console=console)
        assert not problems, f"cut at {where} did not provably take effect: {problems}"
    wait_dut_up(dut, 15.0)
    assert dut.boot_count() > boots, "boot counter did not advance"
    measure(Measurement("swap_cuts", float(len(cuts)), "cuts", 3.0, None))
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, Reason.NONE), measure)
    running, backup = dut.image_hash(), dut.backup_image_hash()
    want_running, want_backup = images.container.digest(new), images.container.digest(old)
    assert running == want_running, (
        f"the image that boots is not the image downloaded: ACTIVE_IMAGE_HASH {running.hex()}, expected {want_running.hex()}")
    assert backup == want_backup, (
        f"the backup is not the old image: BACKUP_IMAGE_HASH {backup.hex()}, expected {want_backup.hex()}")
    check_evidence(evidence, console)
