"""Board side of configuration packages: verify, check the target and the limits, back up, apply, check, roll back.

What a BMS does with a downloaded configuration package (bench contract section 11):
1. verify the container: integrity (SHA-256) and signature against the same trusted keys as images;
2. the target: hardware number, vehicle group (DID FD0C), configuration schema of the running firmware;
3. anti-rollback: the profile version must be newer than the active one;
4. every value against the hardware's absolute limits (`HARDWARE_LIMITS`), unknown keys refused;
5. back up the active configuration, apply (one journaled NV record: old or new, never a mix),
   read back and check; restore the backup if the check fails.
A refusal at steps 1-4 changes nothing. A power cut during step 5 is resolved at the next boot
(`resolve_after_boot`): the configuration is the old or the new one, whole, and the status says which.
"""

from __future__ import annotations

from typing import Any, Mapping

from hil.bench.contract import ProfileState, Reason
from hil.errors import ImageError
from hil.sim.ecu import EcuContext
from hil.config_packages.package import ConfigPackage, parse_package, verify_package


#: Absolute limits of the BMS-HW-A2 hardware (cell chemistry, shunt, contactors): (low, high), inclusive.
HARDWARE_LIMITS: Mapping[str, tuple[float, float]] = {
    "cell_ov_mV": (3600, 4250),
    "cell_uv_mV": (2500, 3300),
    "max_charge_A": (0, 150),
    "max_discharge_A": (0, 300),
    "temp_max_C": (40, 65),
    "capacity_Ah": (10, 200),
    "cold_charge_below_C": (-20, 20),
    "cold_charge_A": (0, 150),
    "balancing_threshold_mV": (2, 50),
}
#: Keys the board sets itself from the package header; a package may not carry them as values.
META_KEYS = ("profile", "profile_version")


class Refused(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


def check_values(values: Mapping[str, Any], known: set[str]) -> None:
    """Every key known to the schema, every value a number within the hardware limits, limits consistent."""
    for key, value in values.items():
        if key in META_KEYS or key not in known or key not in HARDWARE_LIMITS:
            raise Refused(Reason.VALUE_OUT_OF_RANGE, f"unknown configuration key {key!r}; accepted: "
                          f"{', '.join(sorted(k for k in known if k in HARDWARE_LIMITS))}")
        low, high = HARDWARE_LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise Refused(Reason.VALUE_OUT_OF_RANGE, f"{key} = {value!r} outside the hardware limits [{low:g}, {high:g}]")


def check_config(config: Mapping[str, Any]) -> None:
    """Cross-checks of a whole configuration."""
    check_values({k: v for k, v in config.items() if k not in META_KEYS}, set(config))
    if config.get("cold_charge_A", 0) > config.get("max_charge_A", 0):
        raise Refused(Reason.VALUE_OUT_OF_RANGE, f"cold_charge_A {config.get('cold_charge_A')} exceeds max_charge_A "
                      f"{config.get('max_charge_A')}")
    if config.get("cell_uv_mV", 0) >= config.get("cell_ov_mV", 1):
        raise Refused(Reason.VALUE_OUT_OF_RANGE, "cell_uv_mV must be below cell_ov_mV")


def status(ecu: EcuContext) -> dict[str, Any]:
    """DID FD0B: the active profile and the last apply result."""
    config = ecu.nv_get("config", {})
    last = ecu.nv_get("profile_status", {}) or {}
    return {"profile": config.get("profile", "default"), "version": int(config.get("profile_version", 0)),
            "vehicle_group": ecu.vehicle_group(), "schema": int(ecu.nv_get("config_schema", 1)),
            "state": int(last.get("state", ProfileState.NONE)), "reason": int(last.get("reason", Reason.NONE)),
            "last": last.get("name", "")}


def _set_status(ecu: EcuContext, state: ProfileState, reason: Reason, pkg: ConfigPackage | None, **extra: Any) -> None:
    record = {"state": int(state), "reason": int(reason), "name": pkg.name if pkg else "",
              "version": pkg.version if pkg else 0}
    ecu.nv_update(profile_status=record, **extra)


def apply_package(ecu: EcuContext, data: bytes) -> tuple[ProfileState, Reason]:
    """Routine FF02. Returns the status record; PowerLoss propagates (resolved at the next boot)."""
    pkg: ConfigPackage | None = None
    try:
        try:
            pkg = verify_package(data, ecu.trusted)
        except ImageError as exc:
            if exc.reason not in (Reason.UNSIGNED, Reason.UNKNOWN_KEY) or not ecu.defects.has("profile_signature_not_checked"):
                raise Refused(Reason(exc.reason), str(exc)) from None
            pkg = parse_package(data)  # the defective board reads the body without its signature
        if pkg.hardware != ecu.hardware_number:
            raise Refused(Reason.WRONG_HARDWARE, f"package for hardware {pkg.hardware!r}, board is {ecu.hardware_number!r}")
        if pkg.vehicle_group != ecu.vehicle_group():
            raise Refused(Reason.PROFILE_WRONG_GROUP, f"package for vehicle group {pkg.vehicle_group!r}, "
                          f"board is provisioned for {ecu.vehicle_group()!r}")
        schema = int(ecu.nv_get("config_schema", 1))
        if pkg.schema != schema:
            raise Refused(Reason.CONFIG_INCOMPATIBLE, f"package for configuration schema {pkg.schema}, firmware runs {schema}")
        old = dict(ecu.nv_get("config", {}))
        active = int(old.get("profile_version", 0))
        if pkg.version <= active:
            raise Refused(Reason.PROFILE_DOWNGRADE, f"profile version {pkg.version} is not newer than the active {active}")
        check_values(pkg.values, ecu.known_config_keys())
        new = {**old, **pkg.values, "profile": pkg.name, "profile_version": pkg.version}
        check_config(new)
    except Refused as refusal:
        ecu.log(f"CFG: profile refused reason={refusal.reason.name}: {refusal}")
        _set_status(ecu, ProfileState.REFUSED, refusal.reason, pkg)
        return ProfileState.REFUSED, refusal.reason
    ecu.log(f"CFG: applying profile {pkg.name} v{pkg.version} (group {pkg.vehicle_group})")
    # Backup and intent first, then the configuration as one journaled record: a cut leaves old or new.
    _set_status(ecu, ProfileState.APPLYING, Reason.NONE, pkg, profile_backup=old)
    ecu.pause(0.02)  # protection thresholds handed to the analog front end
    if ecu.defects.has("profile_written_value_by_value"):
        # Each value its own NV write, the profile name last, no journal: a cut in between leaves a mix.
        partial = dict(old)
        for key, value in pkg.values.items():
            partial[key] = value
            ecu.nv_update(config=dict(partial))
            ecu.pause(0.01)
    ecu.nv_update(config=new)
    ecu.pause(0.02)
    stored = ecu.nv_get("config", {})
    try:
        if stored != new:
            raise Refused(Reason.PROFILE_CHECK_FAILED, "configuration did not read back as written")
        check_config(stored)
    except Refused as failure:
        ecu.log(f"CFG: profile check failed ({failure}), restoring the previous profile")
        ecu.nv_update(config=old)
        _set_status(ecu, ProfileState.ROLLED_BACK, failure.reason, pkg)
        return ProfileState.ROLLED_BACK, failure.reason
    _set_status(ecu, ProfileState.APPLIED, Reason.NONE, pkg)
    ecu.log(f"CFG: profile {pkg.name} v{pkg.version} applied")
    return ProfileState.APPLIED, Reason.NONE


def resolve_after_boot(ecu: EcuContext) -> None:
    """A power cut during an apply: keep whichever whole configuration survived, and say so."""
    last = ecu.nv_get("profile_status", {}) or {}
    if int(last.get("state", ProfileState.NONE)) != ProfileState.APPLYING:
        return
    config = ecu.nv_get("config", {})
    try:
        check_config(config)
        ok = True
    except Refused:
        ok = False
    if ok and config.get("profile") == last.get("name") and int(config.get("profile_version", 0)) == last.get("version"):
        ecu.nv_update(profile_status={**last, "state": int(ProfileState.APPLIED), "reason": int(Reason.NONE)})
        ecu.log(f"CFG: profile {last.get('name')} v{last.get('version')} applied (completed after power loss)")
        return
    backup = ecu.nv_get("profile_backup")
    changes: dict[str, Any] = {"profile_status": {**last, "state": int(ProfileState.ROLLED_BACK),
                                                  "reason": int(Reason.NOT_CONFIRMED)}}
    if not ok and backup is not None:
        changes["config"] = backup
    ecu.nv_update(**changes)
    ecu.log("CFG: profile apply interrupted, previous profile kept")
