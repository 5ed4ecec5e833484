"""New features reach the vehicle with an update and leave with a rollback (white paper: a new CAN message format).

Fault-matrix row 21. The tester decodes every frame with the DBC of the release the board runs
(the board's DBC marks each message with the release that introduced it; `hil.images.releases`):
a frame the release does not define is a finding, and the signals of the messages every release
shares must still mean what they meant (checked against the battery emulator's pack state).
"""

from __future__ import annotations

import contextlib
import statistics
import time

import pytest

from hil.dut.checks import Expected, check_final_state
from hil.bench import contract
from hil.bench.contract import MSG_BALANCING, MSG_CELL_VOLTAGES, MSG_SOC_CORE, MSG_TEMPERATURES, Reason, UpdateState
from hil.bench.frames import cell_layout, temperature_layout
from hil.drivers.load import CELL_VOLTAGE, PACK_CURRENT, TEMPERATURE
from hil.dut.settle import settle, settle_signal
from hil.timing.measure import Measurement
from hil.images.releases import new_messages, release_database, release_messages

pytestmark = [pytest.mark.destructive]

#: The pack state the checks compare decoded signals with (one cell high, so the balancer has work).
CELL_V = 3.70
HIGH_CELL_V = 3.76
TEMP_C = 31.0
PACK_A = -20.0  # discharging: the sign and scale of the pack current must survive every release
WINDOW_S = 4.0
#: What "the board reports the held value" allows: the cell voltages' resolution (1 mV) plus sensing, whole degrees.
CELL_TOLERANCE_V = 0.005
TEMP_TOLERANCE_C = 1.0
PACK_TOLERANCE_A = 0.5


def _high_cell(can) -> int:
    """The cell held high (1-based): the fifth, or the last of a smaller pack."""
    return min(5, can.profile.soc_core.cells)


def _sensors_near(layout, signals: dict, expected, tolerance: float) -> bool:
    """Every pack sensor one frame carries (its group of `layout`) within `tolerance` of `expected(sensor number)`."""
    values = layout.values(signals)
    return bool(values) and all(abs(v - expected(i)) <= tolerance for i, v in values.items())


def _hold_pack(load, can, dut_profile, measure, when: str) -> None:
    """Set the pack state, then wait until the board reports it - the current, every cell group, every temperature
    group - each measured against the DUT profile's settling time, before anything is judged. A value that does
    not settle fails its measurement; the checks that follow say what it means."""
    load.require(CELL_VOLTAGE, TEMPERATURE, PACK_CURRENT)
    settling = dut_profile.settling
    high = _high_cell(can)
    cells, temps = cell_layout(can.db, can.profile), temperature_layout(can.db, can.profile)
    since = time.monotonic()
    load.set_cell_voltage(CELL_V)
    load.set_cell_voltage(HIGH_CELL_V, high)
    load.set_temperature(TEMP_C)
    load.set_pack_current(PACK_A)
    measure(settle_signal(can, MSG_SOC_CORE, contract.SIG_PACK_CURRENT, PACK_A, tolerance=PACK_TOLERANCE_A,
                          name=f"pack_current_{when}", since=since, limit_s=settling.pack_s).measurement)

    def cell_v(i: int) -> float:
        return HIGH_CELL_V if i == high else CELL_V

    measure(settle(can, MSG_CELL_VOLTAGES, lambda s: _sensors_near(cells, s, cell_v, CELL_TOLERANCE_V),
                   name=f"cell_voltages_{when}", what=f"{MSG_CELL_VOLTAGES} reporting the held cells", since=since,
                   limit_s=settling.pack_s, hold=len(cells.groups())).measurement)
    measure(settle(can, MSG_TEMPERATURES, lambda s: _sensors_near(temps, s, lambda i: TEMP_C, TEMP_TOLERANCE_C),
                   name=f"cell_temperatures_{when}", what=f"{MSG_TEMPERATURES} reporting {TEMP_C:g} degC", since=since,
                   limit_s=settling.temperature_s, hold=len(temps.groups())).measurement)


def _record_all(can, seconds: float) -> dict[str, list]:
    """Every DBC frame for `seconds`, by framework message name (the channel decodes with the full DBC)."""
    names = can.profile.can
    with contextlib.ExitStack() as stack:
        recs = {names.framework_message(m.name): stack.enter_context(can.recorder(names.framework_message(m.name)))
                for m in can.db.messages}
        can.collect(MSG_SOC_CORE, seconds)
    return {name: list(frames) for name, frames in recs.items()}


def _decode_with_release(frames: dict[str, list], can, version: str) -> tuple[dict[str, list[dict]], list[str]]:
    """Re-decode every recorded frame with release `version`'s DBC: (framework signals by framework message name,
    frames it does not define). Names go through the DUT profile, so the board's own DBC names work too."""
    names = can.profile.can
    release = release_database(can.db, version)
    decoded: dict[str, list[dict]] = {}
    unknown: list[str] = []
    for name, recorded in frames.items():
        for f in recorded:
            try:
                spec = release.get_message_by_frame_id(f.raw.arbitration_id)
            except KeyError:
                unknown.append(f"0x{f.raw.arbitration_id:03X} ({name}) at {f.describe()}")
                continue
            fw = names.framework_message(spec.name)
            decoded.setdefault(fw, []).append(
                names.to_framework_signals(fw, spec.decode(bytes(f.raw.data), decode_choices=False)))
    return decoded, unknown


def _check_shared_layouts(decoded: dict[str, list[dict]], version: str, can) -> list[str]:
    """The messages of the baseline decode to the pack state the emulator holds: nothing moved or rescaled."""
    problems = []
    soc = decoded.get(MSG_SOC_CORE, [])
    if not soc:
        return [f"no {MSG_SOC_CORE} frames from {version}"]
    current = statistics.median(float(s[contract.SIG_PACK_CURRENT]) for s in soc)
    if abs(current - PACK_A) > 1.0:
        problems.append(f"{MSG_SOC_CORE} pack current decodes to {current:g} A, the pack carries {PACK_A:g} A")
    pack_v = statistics.median(float(s[contract.SIG_PACK_VOLTAGE]) for s in soc)
    truth_v = (can.profile.soc_core.cells - 1) * CELL_V + HIGH_CELL_V
    if abs(pack_v - truth_v) > 1.0:
        problems.append(f"{MSG_SOC_CORE} pack voltage decodes to {pack_v:g} V, the cells add up to {truth_v:g} V")
    cell_map = cell_layout(can.db, can.profile)
    cells = [v for s in decoded.get(MSG_CELL_VOLTAGES, []) for v in cell_map.values(s).values()]
    if not cells or not all(abs(float(v) - CELL_V) < 0.005 or abs(float(v) - HIGH_CELL_V) < 0.005 for v in cells):
        problems.append(f"{MSG_CELL_VOLTAGES} decodes to {sorted(set(cells))[:6]}, the emulator holds {CELL_V}/{HIGH_CELL_V} V")
    temp_map = temperature_layout(can.db, can.profile)
    temps = [v for s in decoded.get(MSG_TEMPERATURES, []) for v in temp_map.values(s).values()]
    if not temps or not all(abs(float(v) - TEMP_C) <= 1.0 for v in temps):
        problems.append(f"{MSG_TEMPERATURES} decodes to {sorted(set(temps))[:6]}, the emulator holds {TEMP_C} degC")
    return problems


@pytest.mark.fault(row=21, expect="after the update to 2.0.0 the new message arrives at its period with plausible signals")
@pytest.mark.requirement("R156-integrity", "BMS-new-feature")
def test_new_can_message_arrives_after_update_to_2_0_0(dut, flasher, images, can, load, bench_config, dut_profile,
                                                       measure):
    db = can.db
    new_version = images.version("major_update")
    balancing_name = can.profile.can.dbc_message(MSG_BALANCING)
    added = new_messages(db, dut.version(), new_version)
    assert balancing_name in added, f"the DBC must mark {balancing_name} as introduced in {new_version}: {added}"
    outcome = flasher.update(images["major_update"])
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(new_version, UpdateState.SUCCESS, Reason.NONE), measure)
    _hold_pack(load, can, dut_profile, measure, "held")
    frames = _record_all(can, WINDOW_S)
    decoded, unknown = _decode_with_release(frames, can, dut.version())
    assert not unknown, f"frames release {new_version} does not define:\n" + "\n".join(unknown[:10])
    balancing = frames[MSG_BALANCING]
    spec = db.get_message_by_name(balancing_name)
    period_ms = float(spec.cycle_time or 0)
    assert period_ms > 0, f"the DBC declares no GenMsgCycleTime for {MSG_BALANCING}"
    tol = bench_config.timing.period_tolerance_ms
    assert len(balancing) >= int(WINDOW_S * 1000 / period_ms) - 1, \
        f"{len(balancing)} {MSG_BALANCING} frames in {WINDOW_S} s, expected one every {period_ms:g} ms"
    gaps = [(b.received - a.received) * 1000.0 for a, b in zip(balancing, balancing[1:])]
    mean = measure(Measurement("balancing_period_mean", statistics.fmean(gaps), "ms", period_ms - tol, period_ms + tol))
    assert mean.passed, str(mean)
    last = decoded[MSG_BALANCING][-1]
    delta = measure(Measurement("balancing_max_cell_delta", float(last[contract.SIG_MAX_CELL_DELTA]), "V",
                                HIGH_CELL_V - CELL_V - 0.002, HIGH_CELL_V - CELL_V + 0.002))
    assert delta.passed, str(delta)
    high = _high_cell(can)
    assert int(last[contract.SIG_BALANCING_MASK]) & (1 << (high - 1)), f"cell {high} is high but not balanced: {last}"
    assert int(last[contract.SIG_BALANCING_MODE]) != 0, \
        f"balancing mode off with a {HIGH_CELL_V - CELL_V:.3f} V imbalance: {last}"


@pytest.mark.fault(row=21, expect="after a rollback the new message is gone and the old messages are as before")
@pytest.mark.requirement("R156-recovery", "BMS-new-feature")
def test_new_can_message_is_gone_after_rollback(dut, flasher, images, can, load, bench_config, dut_profile, measure):
    baseline = dut.version()
    assert can.profile.can.dbc_message(MSG_BALANCING) not in release_messages(can.db, baseline)
    outcome = flasher.update(images["major_update_selftest_fail"])  # runs 2.0.0 for its trial boot, then rolls back
    assert outcome.state is UpdateState.ROLLED_BACK, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.ROLLED_BACK, Reason.SELFTEST_FAILED), measure)
    _hold_pack(load, can, dut_profile, measure, "held")
    frames = _record_all(can, WINDOW_S)
    decoded, unknown = _decode_with_release(frames, can, dut.version())
    assert not unknown, f"after the rollback to {baseline} the board still sends:\n" + "\n".join(unknown[:10])
    problems = _check_shared_layouts(decoded, baseline, can)
    assert not problems, "\n".join(problems)


@pytest.mark.fault(row=21, expect="the messages every release shares keep their layout in 2.0.0")
@pytest.mark.requirement("BMS-new-feature")
def test_existing_messages_keep_their_layout_in_2_0_0(dut, flasher, images, can, load, bench_config, dut_profile,
                                                      measure):
    _hold_pack(load, can, dut_profile, measure, "held_before")
    before, unknown = _decode_with_release(_record_all(can, 2.0), can, dut.version())
    assert not unknown, "\n".join(unknown[:10])
    assert not _check_shared_layouts(before, dut.version(), can), "the baseline itself does not decode plausibly"
    load.set_pack_current(0.0)  # activation needs a resting pack
    new_version = images.version("major_update")
    outcome = flasher.update(images["major_update"])
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    _hold_pack(load, can, dut_profile, measure, "held_after")
    after, unknown = _decode_with_release(_record_all(can, 2.0), can, new_version)
    assert not unknown, "\n".join(unknown[:10])
    problems = _check_shared_layouts(after, new_version, can)
    assert not problems, f"{new_version} changed the meaning of an existing message:\n" + "\n".join(problems)
