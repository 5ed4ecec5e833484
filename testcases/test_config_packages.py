"""Configuration profiles are signed packages: applied per vehicle group, refused with a reason, atomic.

Fault-matrix rows 18 (a package that must be refused) and 19 (power cut while a profile is applied).
The white paper's seasonal profiles by vehicle group. Which packages, groups and refusal roles: the bench
file's `config_packages` section (the `config_packages` fixture), never names written here.
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


def _snapshot(dut) -> tuple[dict, tuple[int, int], tuple[str, int]]:
    """Everything a refused package must leave unchanged: configuration, its version record (CONFIG_VERSION) and the active profile."""
    status = dut.profile_status()
    return dut.config(), dut.config_version(), (status["profile"], status["version"])


@pytest.mark.fault(row=18, expect="each vehicle group's packages applied in turn (seasonal profiles)")
@pytest.mark.requirement("BMS-config-profiles", "R156-integrity", "ISO24089-integrity")
def test_seasonal_profiles_applied_for_vehicle_group(dut, config_packages):
    for group in config_packages.groups:
        _apply_sequence(dut, config_packages, group)


def _apply_sequence(dut, config_packages, group: str) -> None:
    config_packages.reset_profile_version(dut)  # each group's sequence starts from no active profile version
    dut.provision_vehicle_group(group)
    assert dut.vehicle_group() == group
    for name in config_packages.sequence(group):
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


#: Gap reasons of a refusal the bench's packages cannot set up (the fault matrix shows the row NOT COVERED).
PACKAGE_MISSING = "package missing: "


def _refusal(case: str, config_packages) -> tuple[str, str | None, bytes, str]:
    """(group to provision, package to apply first or None, the bad package's bytes, its name) for a refusal case,
    from the bench's `config_packages`; skips NOT COVERED when the bench has no package for it."""
    groups = config_packages.groups
    own = groups[0]
    first = config_packages.sequence(own)
    if case == "wrong_group":
        others = [g for g in groups if g != own]
        if not others:
            pytest.skip(f"{PACKAGE_MISSING}config_packages.groups has only vehicle group {own!r}: no package of "
                        "another group to refuse")
        name = config_packages.sequence(others[0])[0]
        return own, None, config_packages[name], name
    if case == "older":
        if len(first) < 2:
            pytest.skip(f"{PACKAGE_MISSING}vehicle group {own!r} has one package: no older one to refuse")
        return own, first[-1], config_packages[first[0]], first[0]
    if case == "corrupted":
        return own, None, _corrupted(config_packages[first[0]]), f"{first[0]} (corrupted)"
    name = config_packages.role(case)
    if name is None:
        pytest.skip(f"{PACKAGE_MISSING}config_packages.roles names no {case!r} package")
    return config_packages.target_group(name), None, config_packages[name], name


REFUSALS = [
    pytest.param("wrong_group", Reason.PROFILE_WRONG_GROUP, id="profile-for_the_wrong_vehicle_group"),
    pytest.param("unknown_key", Reason.UNKNOWN_KEY, id="profile-signed_with_an_unknown_key"),
    pytest.param("unsigned", Reason.UNSIGNED, id="profile-unsigned"),
    pytest.param("older", Reason.PROFILE_DOWNGRADE, id="profile-older_than_the_active_one"),
    pytest.param("value_out_of_range", Reason.VALUE_OUT_OF_RANGE, id="profile-value_beyond_hardware_limits"),
    pytest.param("corrupted", Reason.HASH_MISMATCH, id="profile-corrupted_in_transfer"),
]


@pytest.mark.fault(row=18, expect="refused with its reason; configuration, its version record and active profile unchanged")
@pytest.mark.requirement("BMS-config-profiles", "R156-integrity", "R155-M16", "ISO21434-verification")
@pytest.mark.parametrize("case, reason", REFUSALS)
def test_bad_profile_refused_and_nothing_changed(case, reason, dut, config_packages):
    group, active_first, data, package = _refusal(case, config_packages)
    dut.provision_vehicle_group(group)
    if active_first is not None:
        assert config_packages.apply(active_first).applied
    before = _snapshot(dut)
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

    group = config_packages.groups[0]
    sequence = config_packages.sequence(group)
    dut.provision_vehicle_group(group)
    outcomes: list[str] = []
    for delay in CUT_DELAYS_S:
        old = dut.config()
        active = old.get("profile")
        name = sequence[sequence.index(active) + 1] if active in sequence[:-1] else sequence[0]
        if active == sequence[-1]:  # the first package needs a newer version than the last: start over
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
