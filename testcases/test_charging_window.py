"""Updates install in the overnight charging window: plugged in and idle, charging paused, offline briefly.

Fault-matrix rows 23 (outside the window; charger unplugged mid-install), 26 (BMS offline too long)
and 17 (the SOC core keeps its cycle while the charge ramps down). The vehicle side (`vehicle`:
the vehicle-state message on CAN) and a charger that obeys the BMS's charge limit (`ChargerEmulation`,
programming the battery emulator) are played by the bench. The order is proven from the bus: the
BMS keeps its SOC cycle after the activation request and sends a charge current limit of 0 A while
the charger still delivers; the charger stops because of that frame, not on its own timeout.
"""

from __future__ import annotations

import time

import pytest

from hil.bench import contract
from hil.dut.checks import Expected, check_final_state
from hil.bench.contract import Nrc, Reason, UpdateState
from hil.dut.flasher import Phase
from hil.dut.settle import settle_signal, settle_until
from hil.errors import UdsError
from hil.timing.measure import Measurement
from hil.timing.soc_timing import TimingCase
from hil.drivers.load import CHARGING
from hil.drivers.vehicle import ChargerEmulation

pytestmark = [pytest.mark.destructive]

CHARGE_A = 30.0
#: How close the BMS's pack current must come to the charger's current (its resolution and sensing).
CURRENT_TOLERANCE_A = 0.5
#: The pack current the BMS counts as "not charging" (the bench's activation limit is 1 A).
IDLE_A = 1.0
#: The SOC timing statistics that judge the short window from the activation request to the reset: a
#: stall shows as a long period and missed cycles (the mean and spread need longer windows: test_soc_timing).
RAMPDOWN_STATISTICS = ("period_max", "missed_cycles", "repeated_cycles", "exec_max", "start_latency_max")


def _activate_in_window(flasher) -> tuple[bool, str]:
    """One activation request; a charging-window refusal (NRC 0x22) changes nothing and is reported as not yet."""
    try:
        flasher.activate()
    except UdsError as exc:
        if exc.nrc != Nrc.CONDITIONS_NOT_CORRECT:
            raise
        return False, str(exc)
    return True, "accepted"


@pytest.mark.fault(row=23, expect="NRC 0x22 with the reason while driving or unplugged; nothing erased; installs once in the window")
@pytest.mark.requirement("BMS-charging-window", "R156-safe-state", "R156-preconditions", "ISO24089-preconditions")
@pytest.mark.parametrize("situation, reason", [
    pytest.param("driving", Reason.VEHICLE_NOT_IDLE, id="activation-while_driving"),
    pytest.param("unplugged", Reason.NOT_PLUGGED_IN, id="activation-while_unplugged"),
])
def test_install_refused_outside_the_charging_window(situation, reason, dut, flasher, vehicle, images, bench_config,
                                                     dut_profile, measure):
    baseline = dut.version()
    config = dut.config()
    settle_s = dut_profile.settling.vehicle_state_s
    assert flasher.stage(images["update"]).accepted
    if situation == "driving":
        vehicle.drive(speed_kmh=40.0)
    else:
        vehicle.unplug()
    # The board acts on a vehicle state within its settling time; only the activation's verdict shows it, and an
    # activation it accepted would install, so the case lets that time pass before it asks.
    time.sleep(settle_s)
    with pytest.raises(UdsError) as refused:
        flasher.activate()
    assert refused.value.nrc == Nrc.CONDITIONS_NOT_CORRECT, str(refused.value)
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.VERIFIED, reason, config), measure)
    # Nothing was erased: back in the window, the staged image installs. A refusal changes nothing, so the case
    # asks until the board has seen the window again, and measures how long that took against the profile.
    since = time.monotonic()
    vehicle.safe_state()
    flasher.unlock()
    window, seen = settle_until(lambda: _activate_in_window(flasher), name="charging_window_back",
                                what="activation back in the charging window", since=since, limit_s=settle_s)
    measure(window)
    assert window.passed, seen
    outcome = flasher.wait_outcome()
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, Reason.NONE, config), measure)


def _offline_s(frames, request: float, reset: float, period_s: float) -> tuple[float, str]:
    """Seconds without the old image's regular SOC cycle until the new image's first frame, and how they were found.

    The new image's first frame ends the widest gap between frames received after the reset request (a board
    that restarts within 1.5 periods still leaves its widest gap there). The silence starts at the last frame
    of the old image's regular cycle: the frame before its first gap of more than 1.5 periods at or after the
    activation request - whatever caused that gap (a stall in the ramp-down counts from where it began) -
    or, with no such gap before the reset, the frame before the new image's first one. Gaps are measured on
    the bus timestamps (`Frame.timestamp`); `request` and `reset` are time.monotonic() values (`Frame.received`).
    """
    gap_s = 1.5 * period_s
    first = max([i for i, f in enumerate(frames) if f.received < request], default=0)
    window = list(frames)[first:]
    pairs = list(zip(window, window[1:]))
    after_reset = [(a, b) for a, b in pairs if b.received > reset]
    if not after_reset:
        return float("inf"), f"no SOC frame after the reset request ({len(window)} since the activation request)"
    restart = max(after_reset, key=lambda p: p[1].timestamp - p[0].timestamp)
    first_new = restart[1]
    last_regular = next((a for a, b in pairs if b.timestamp - a.timestamp > gap_s
                         and b.timestamp <= first_new.timestamp), restart[0])
    return first_new.timestamp - last_regular.timestamp, (f"from {last_regular.describe()} to {first_new.describe()}")


@pytest.mark.fault(row=[17, 23, 26], expect="after the activation request the SOC cycle goes on and a charge limit of 0 A "
                                            "stops the charger before the install; charging resumes after the new "
                                            "image confirms; offline within budget")
@pytest.mark.requirement("BMS-charging-window", "R156-safe-state", "BMS-soc-timing")
def test_charging_paused_for_the_install_and_resumed(dut, can, load, vehicle, flasher, images, bench_config, dut_profile,
                                                     measure, evidence):
    load.require(CHARGING)
    current, limit = contract.SIG_PACK_CURRENT, contract.SIG_MAX_CHARGE_CURRENT
    budgets = bench_config.timing
    period_s = budgets.soc_period_ms / 1000.0
    limits_period_s = period_s * dut_profile.soc_core.slow_every_cycles
    with ChargerEmulation(can, load, vehicle, CHARGE_A, limits_period_s) as charger:
        started = charger.wait_delivering(timeout=max(5.0, 3 * limits_period_s))
        charging = settle_signal(can, contract.MSG_SOC_CORE, current, CHARGE_A, tolerance=CURRENT_TOLERANCE_A,
                                 name="charge_current_reported", since=started.time, limit_s=dut_profile.settling.pack_s)
        measure(charging.measurement)
        assert charging.settled, charging.describe()
        assert flasher.stage(images["update"]).accepted
        reset_at: list[float] = []

        def on_phase(phase: Phase) -> None:
            if phase is Phase.RESET:
                reset_at.append(time.monotonic())
                tc.reset("activation reset")

        with can.recorder(contract.MSG_SOC_CORE) as soc, can.recorder(contract.MSG_CHARGE_LIMITS) as limits, \
                TimingCase(can, budgets, evidence, "activation request to reset: the charge ramps down",
                           stem="timing-rampdown") as tc:
            flasher.on_phase.append(on_phase)
            try:
                # A second of the regular cycle first: on a good board the ramp-down lasts about one period, and
                # the window's periods need the frames before it.
                time.sleep(1.0)
                tc.mark("activation request")
                t_request = time.monotonic()
                flasher.activate()  # the BMS stops the charger first, then accepts
                outcome = flasher.wait_outcome()
                t_done = time.monotonic()
            finally:
                flasher.on_phase.remove(on_phase)
            assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
            resumed = can.wait_for(contract.MSG_CHARGE_LIMITS, timeout=max(5.0, 3 * limits_period_s), since=t_done,
                                   predicate=lambda s: s[limit] > 0)
            charging_again = can.wait_for(contract.MSG_SOC_CORE, timeout=max(5.0, 3 * limits_period_s), since=t_done,
                                          predicate=lambda s: s[current] >= CHARGE_A - CURRENT_TOLERANCE_A)
        assert not charger.errors, charger.errors

    # The SOC cycle went on through the activation request until the reset (the bench's timing budget).
    (_old, rampdown), *_ = tc.segment_summaries()
    timing = [measure(m) for m in rampdown.measurements(budgets, "soc_rampdown")
              if m.name.removeprefix("soc_rampdown_") in RAMPDOWN_STATISTICS]
    late = [str(m) for m in timing if not m.passed]
    assert not late, ("the SOC core did not keep its cycle from the activation request to the reset "
                      f"({rampdown.describe()}):\n" + "\n".join(late))

    # The order on the bus: 0 A while the pack still charges, then the charger stops because of that frame.
    zero = next((f for f in limits if f.received >= t_request and float(f.signals[limit]) == 0.0), None)
    assert zero is not None, "the BMS never sent a charge current limit of 0 A after the activation request: " + \
        "; ".join(f.describe() for f in limits[-5:])
    before = [f for f in soc if f.timestamp <= zero.timestamp]
    assert before and float(before[-1].signals[current]) >= CHARGE_A - CURRENT_TOLERANCE_A, (
        f"when the BMS sent 0 A ({zero.describe()}) the pack no longer charged "
        f"({before[-1].describe() if before else 'no SOC frame before it'}): the charger had stopped without it")
    stops = charger.stops(t_request)
    assert stops, f"the charger never stopped: {charger.log}"
    stop = stops[0]
    assert stop.cause == "limit" and stop.limit_frame is not None and stop.limit_frame >= zero.received, (
        f"the charger stopped on {stop.cause!r}, not on the BMS's 0 A frame ({zero.describe()}); "
        f"charger log: {charger.log}")
    fallen = next((f for f in soc if f.timestamp > zero.timestamp
                   and abs(float(f.signals[current])) <= IDLE_A), None)
    assert fallen is not None, f"the pack current never fell below {IDLE_A:g} A after {zero.describe()}"
    stopped = measure(Measurement("charge_current_fallen_after_0A_limit", fallen.timestamp - zero.timestamp, "s",
                                  0.0, min(charger.comm_loss_s, dut_profile.settling.pack_s)))
    assert stopped.passed, f"{stopped}: from {zero.describe()} to {fallen.describe()}"

    # Offline from the old image's last regular SOC frame (whatever silenced it) to the new image's first frame.
    assert reset_at, "the flasher never requested the activation reset"
    offline, where = _offline_s(soc, t_request, reset_at[0], period_s)
    off = measure(Measurement("bms_offline_during_install", offline, "s", 0.0, budgets.install_offline_s))
    measure(Measurement("charging_resumed_after_confirm", charging_again.received - t_done, "s", 0.0, 5.0))
    assert resumed.signals[limit] > 0
    assert off.passed, f"BMS offline {offline:.2f} s during the install ({where})"
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, Reason.NONE), measure)


@pytest.mark.fault(row=23, expect="a charger unplugged during the install does not harm it")
@pytest.mark.requirement("BMS-charging-window", "R156-recovery")
def test_charger_unplugged_mid_install_does_not_harm_it(dut, vehicle, flasher, images, bench_config, measure):
    config = dut.config()
    assert flasher.stage(images["update"]).accepted
    flasher.activate()
    vehicle.unplug()  # right after the reset: the bootloader is swapping
    outcome = flasher.wait_outcome()
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, Reason.NONE, config), measure)
