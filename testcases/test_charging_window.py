"""Updates install in the overnight charging window: plugged in and idle, charging paused, offline briefly.

Fault-matrix rows 23 (outside the window; charger unplugged mid-install) and 26 (BMS offline too
long). The vehicle side (`vehicle`: the vehicle-state message on CAN) and a charger that obeys the BMS's
charge limit (`ChargerEmulation`, programming the battery emulator) are played by the bench.
"""

from __future__ import annotations

import time

import pytest

from hil.bench import contract
from hil.dut.checks import Expected, check_final_state
from hil.bench.contract import Nrc, Reason, UpdateState
from hil.errors import UdsError
from hil.timing.measure import Measurement
from hil.drivers.load import CHARGING
from hil.drivers.vehicle import ChargerEmulation

pytestmark = [pytest.mark.destructive]

CHARGE_A = 30.0
#: The pack current the BMS counts as "not charging" (the bench's activation limit is 1 A).
IDLE_A = 1.0


@pytest.mark.fault(row=23, expect="NRC 0x22 with the reason while driving or unplugged; nothing erased; installs once in the window")
@pytest.mark.requirement("BMS-charging-window", "R156-safe-state", "R156-preconditions", "ISO24089-preconditions")
@pytest.mark.parametrize("situation, reason", [
    pytest.param("driving", Reason.VEHICLE_NOT_IDLE, id="activation-while_driving"),
    pytest.param("unplugged", Reason.NOT_PLUGGED_IN, id="activation-while_unplugged"),
])
def test_install_refused_outside_the_charging_window(situation, reason, dut, flasher, vehicle, images, bench_config,
                                                     measure, dut_profile):
    settle_s = 3 * dut_profile.vehicle_state.period_ms / 1000.0  # a few vehicle-state periods
    baseline = dut.version()
    config = dut.config()
    assert flasher.stage(images["update"]).accepted
    if situation == "driving":
        vehicle.drive(speed_kmh=40.0)
    else:
        vehicle.unplug()
    time.sleep(settle_s)
    with pytest.raises(UdsError) as refused:
        flasher.activate()
    assert refused.value.nrc == Nrc.CONDITIONS_NOT_CORRECT, str(refused.value)
    check_final_state(dut, bench_config.timing, Expected(baseline, UpdateState.VERIFIED, reason, config), measure)
    # Nothing was erased: back in the window, the staged image installs.
    vehicle.safe_state()
    time.sleep(settle_s)
    flasher.unlock()
    flasher.activate()
    outcome = flasher.wait_outcome()
    assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
    check_final_state(dut, bench_config.timing, Expected(images.version("update"), UpdateState.SUCCESS, Reason.NONE, config), measure)


def _offline_s(frames, start: float, end: float) -> float:
    """Longest gap between SOC frames in [start, end] (monotonic receive times)."""
    stamps = [start] + [f.received for f in frames if start <= f.received <= end] + [end]
    return max(b - a for a, b in zip(stamps, stamps[1:]))


@pytest.mark.fault(row=[23, 26], expect="charge current 0 A before the install, charging resumes after the new image confirms; "
                                        "offline within budget")
@pytest.mark.requirement("BMS-charging-window", "R156-safe-state")
def test_charging_paused_for_the_install_and_resumed(dut, can, load, vehicle, flasher, images, bench_config, measure,
                                                    dut_profile):
    load.require(CHARGING)
    current = contract.SIG_PACK_CURRENT
    limits_period_s = bench_config.timing.soc_period_ms / 1000.0 * dut_profile.soc_core.slow_every_cycles
    with ChargerEmulation(can, load, vehicle, CHARGE_A, limits_period_s) as charger:
        frame = can.wait_for(contract.MSG_SOC_CORE, timeout=5.0, predicate=lambda s: s[current] >= CHARGE_A - 0.5)
        assert frame.signals[current] >= CHARGE_A - 0.5
        assert flasher.stage(images["update"]).accepted
        with can.recorder(contract.MSG_SOC_CORE) as soc, can.recorder(contract.MSG_CHARGE_LIMITS) as limits:
            t0 = time.monotonic()
            flasher.activate()  # the BMS stops the charger first, then accepts
            t_activated = time.monotonic()
            outcome = flasher.wait_outcome()
            t_done = time.monotonic()
            assert outcome.state is UpdateState.SUCCESS, outcome.states_seen
            resumed = can.wait_for(contract.MSG_CHARGE_LIMITS, timeout=max(5.0, 3 * limits_period_s), since=t_done,
                                   predicate=lambda s: s[contract.SIG_MAX_CHARGE_CURRENT] > 0)
            charging = can.wait_for(contract.MSG_SOC_CORE, timeout=max(5.0, 3 * limits_period_s), since=t_done,
                                    predicate=lambda s: s[current] >= CHARGE_A - 0.5)
        assert not charger.errors, charger.errors
    stopped = [f for f in limits if f.received >= t0 and f.signals[contract.SIG_MAX_CHARGE_CURRENT] == 0]
    assert stopped, "the BMS never sent a charge current limit of 0 A before installing"
    # The install starts after the BMS's last SOC frame before its longest silence; the charger must have
    # stopped (obeying the charge current limit of 0 A) before that frame's next cycle.
    frames = [f for f in soc if t0 <= f.received <= t_done]
    gaps = [(b.received - a.received, a) for a, b in zip(frames, frames[1:])]
    assert gaps, "no SOC frames around the install"
    _gap, last_before = max(gaps, key=lambda g: g[0])
    stops = [t for t, amps in charger.log if t >= t0 and amps == 0.0]
    assert stops, f"the charger never stopped: {charger.log}"
    period_s = bench_config.timing.soc_period_ms / 1000.0
    lead = last_before.received + period_s - stops[0]
    measure(Measurement("charge_stopped_before_install", lead, "s", 0.0, None))
    assert lead >= 0, f"charging stopped {-lead:.3f} s after the BMS went silent to install"
    offline = _offline_s(list(soc), t_activated, t_done)
    measure(Measurement("bms_offline_during_install", offline, "s", 0.0, bench_config.timing.install_offline_s))
    measure(Measurement("charging_resumed_after_confirm", charging.received - t_done, "s", 0.0, 5.0))
    assert resumed.signals[contract.SIG_MAX_CHARGE_CURRENT] > 0
    assert offline <= bench_config.timing.install_offline_s, f"BMS offline {offline:.2f} s during the install"
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
