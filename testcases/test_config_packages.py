"""Configuration profiles are signed packages: applied per vehicle group, refused with a reason, atomic.

Fault-matrix rows 18 (a package that must be refused) and 19 (power cut while a profile is applied).
The white paper's seasonal profiles: winter and summer, northern and southern depots.
"""

from __future__ import annotations

import threading
import time

import pytest

from hil.dut.checks import wait_dut_up
from hil.bench.contract import Nrc, ProfileState, Reason
from hil.errors import HilError, UdsError
from hil.faults.power import cut_after
from hil.config_packages.package import HEADER

pytestmark = [pytest.mark.destructive]

GROUPS = ("north", "south")


def _snapshot(dut) -> tuple[dict, tuple[int, int], tuple[str, int]]:
    """Everything a refused package must leave unchanged: configuration, FD03 and the active profile."""
    status = dut.profile_status()
    return dut.config(), dut.config_version(), (status["profile"], status["version"])


@pytest.mark.fault(row=18, expect="winter then summer profile applied for the board's vehicle group")
@pytest.mark.requirement("BMS-config-profiles", "R156-integrity", "ISO24089-integrity")
@pytest.mark.parametrize("group", GROUPS)
def test_seasonal_profiles_applied_for_vehicle_group(group, dut, config_packages):
    dut.provision_vehicle_group(group)
    assert dut.vehicle_group() == group
    for season in ("winter", "summer"):
        name = f"{season}-{group}"
        result = config_packages.apply(name)
        assert result.applied, f"{name}: {result}"
        config = dut.config()
        wanted = config_packages.values(name)
        assert {k: config.get(k) for k in wanted} == wanted, f"{name} values not active: {config}"
        status = dut.profile_status()
        assert (status["profile"], status["state"], status["vehicle_group"]) == (name, ProfileState.APPLIED, group), status
        assert config["profile"] == name and config["profile_version"] == status["version"]


def _corrupted(package: bytes) -> bytes:
    data = bytearray(package)
    data[HEADER.size + 12] ^= 0x01  # inside the NAME/GROUP TLVs: still parses, the hash no longer matches
    return bytes(data)


REFUSALS = [
    pytest.param("winter-south", None, Reason.PROFILE_WRONG_GROUP, id="profile-for_the_wrong_vehicle_group"),
    pytest.param("winter-north-wrong-key", None, Reason.UNKNOWN_KEY, id="profile-signed_with_an_unknown_key"),
    pytest.param("winter-north-unsigned", None, Reason.UNSIGNED, id="profile-unsigned"),
    pytest.param("winter-north", "summer-north", Reason.PROFILE_DOWNGRADE, id="profile-older_than_the_active_one"),
    pytest.param("winter-north-out-of-range", None, Reason.VALUE_OUT_OF_RANGE, id="profile-value_beyond_hardware_limits"),
    pytest.param("corrupted:winter-north", None, Reason.HASH_MISMATCH, id="profile-corrupted_in_transfer"),
]


@pytest.mark.fault(row=18, expect="refused with its reason; configuration, FD03 and active profile unchanged")
@pytest.mark.requirement("BMS-config-profiles", "R156-integrity", "R155-M16", "ISO21434-verification")
@pytest.mark.parametrize("package, active_first, reason", REFUSALS)
def test_bad_profile_refused_and_nothing_changed(package, active_first, reason, dut, config_packages):
    dut.provision_vehicle_group("north")
    if active_first is not None:
        assert config_packages.apply(active_first).applied
    before = _snapshot(dut)
    data = _corrupted(config_packages[package.split(":", 1)[1]]) if package.startswith("corrupted:") else config_packages[package]
    result = config_packages.apply(data)
    assert (result.state, result.reason) == (ProfileState.REFUSED, reason), f"{package}: {result}"
    status = dut.profile_status()
    assert (status["state"], status["reason"]) == (ProfileState.REFUSED, reason), status
    assert _snapshot(dut) == before, "a refused package changed the configuration"


@pytest.mark.fault(row=18, expect="unsigned configuration write refused outside the bench level (NRC 0x33)")
@pytest.mark.requirement("BMS-config-profiles", "R155-M16")
def test_unsigned_configuration_write_refused(dut, uds, bench_config):
    from hil.bench import contract
    from hil.bench.contract import Did

    before = _snapshot(dut)
    uds.session(contract.SESSION_PROGRAMMING)
    uds.unlock(bench_config.dut.security)
    with pytest.raises(UdsError) as refused:
        uds.write_did(Did.CONFIGURATION, b'{"cell_ov_mV":5000}')
    uds.session(contract.SESSION_DEFAULT)
    assert refused.value.nrc == Nrc.SECURITY_ACCESS_DENIED, str(refused.value)
    assert _snapshot(dut) == before


#: Cut points after the apply request is sent (s): before, inside and after the board's apply.
CUT_DELAYS_S = (0.0, 0.005, 0.015, 0.025, 0.035, 0.05, 0.3)


@pytest.mark.fault(row=19, expect="after a power cut during the apply: the old or the new profile, whole")
@pytest.mark.requirement("BMS-config-profiles", "R156-power")
def test_power_cut_while_profile_applied_leaves_old_or_new(dut, uds, psu, config_packages, bench_config, measure):
    from hil.bench import contract
    from hil.bench.contract import Routine
    from hil.timing.measure import Measurement

    dut.provision_vehicle_group("north")
    outcomes: list[str] = []
    for delay in CUT_DELAYS_S:
        old = dut.config()
        name = "summer-north" if old.get("profile") == "winter-north" else "winter-north"
        if old.get("profile") == "summer-north":  # the next season needs a newer version: start over
            dut.write_config(_baseline(old))
            old = dut.config()
        new_values = config_packages.values(name)
        # Stage the package, then start the apply routine and cut the supply `delay` after the request.
        uds.session(contract.SESSION_PROGRAMMING)
        uds.unlock(bench_config.dut.security)
        package = config_packages[name]
        uds.request_download(contract.PROFILE_DOWNLOAD_ADDRESS, len(package))
        uds.transfer_data(1, package)
        uds.request_transfer_exit()
        cutter, cut = cut_after(psu, delay, 0.5)
        applier = threading.Thread(target=_quietly, args=(uds.routine, Routine.APPLY_PROFILE), daemon=True)
        applier.start()
        cutter.join(10)
        assert not cut.error and cut.off_volts is not None and cut.off_volts <= 1.0, \
            f"the supply cut {delay * 1000:.0f} ms after the apply request did not take effect: {cut}"
        applier.join(10)
        wait_dut_up(dut, bench_config.dut.boot_timeout_s * 2)
        config = dut.config()
        status = dut.profile_status()
        is_old = config == old
        is_new = {k: config.get(k) for k in new_values} == new_values and config.get("profile") == name \
            and {k: v for k, v in config.items() if k not in new_values and k not in ("profile", "profile_version")} \
            == {k: v for k, v in old.items() if k not in new_values and k not in ("profile", "profile_version")}
        assert is_old or is_new, f"cut +{delay * 1000:.0f} ms: configuration is a mix: {config} (old {old})"
        assert status["profile"] == config["profile"], status
        assert status["state"] != ProfileState.APPLYING, f"apply never resolved after the cut: {status}"
        outcomes.append(f"+{delay * 1000:.0f}ms:{'new' if is_new else 'old'}")
        time.sleep(0.1)
    measure(Measurement("profile_power_cuts_whole", float(len(outcomes)), "cuts", len(CUT_DELAYS_S), len(CUT_DELAYS_S)))
    print("power cuts during the apply:", ", ".join(outcomes))


def _baseline(config: dict) -> dict:
    return {**config, "profile": "default", "profile_version": 0}


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except (HilError, TimeoutError):
        pass  # the board lost power mid-request: the verdict comes from what it reads back after
