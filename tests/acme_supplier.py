"""Plays the supplier of docs/porting.md's example board, "ACME BMS-7": the board's diagnostics as its
supplier describes them, written as the PDX the porting guide imports (docs/porting/acme/acme-bms.pdx).

The PDX is made with odxtools from a profile of ACME's numbers plus what a real supplier's ODX has besides:
its own service names (two the importer cannot match, settled with --map in the guide), an IOControl,
a routine and a session without a framework role, a DID the framework does not read, DTC services.
tests/test_porting.py checks the committed file against this. Regenerate it with:

    .venv/bin/python tests/acme_supplier.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PDX = ROOT / "docs/porting/acme/acme-bms.pdx"

#: ACME's numbers: 29-bit ids, its own DIDs, routines, sessions, levels and codes.
ACME: dict[str, Any] = {
    "name": "acme-bms",
    "uds": {"phys_request_id": 0x18DA40F1, "phys_response_id": 0x18DAF140, "functional_request_id": 0x18DB33F1,
            "extended_ids": True, "padding": 0xAA, "p2_ms": 50, "p2_star_ms": 5000, "max_block_length": 2050},
    "sessions": {"default": 0x01, "programming": 0x02, "extended": 0x40},
    "security": {"programming_level": 0x05, "bench_level": 0x09, "seed_length": 16, "key_length": 16},
    "dids": {name: 0x5A00 + i for i, name in enumerate(
        ["ACTIVE_SESSION", "SPARE_PART_NUMBER", "SOFTWARE_VERSION", "SERIAL_NUMBER", "HARDWARE_NUMBER",
         "SUPPLIER_SW_VERSION", "RXSWIN"])}
    | {name: 0x5B00 + i for i, name in enumerate(
        ["BOOT_INFO", "UPDATE_STATUS", "BOOT_COUNTER", "CONFIG_VERSION", "SECURITY_COUNTER", "BACKUP_IMAGE",
         "FLASH_LAYOUT", "ACTIVE_IMAGE_HASH", "BACKUP_IMAGE_HASH", "UPDATE_HISTORY", "DOWNLOAD_RESUME",
         "PROFILE_STATUS", "VEHICLE_GROUP"])}
    | {"CONFIGURATION": 0x5C00},
    "routines": {"ERASE_MEMORY": 0x0A01, "CHECK_PROGRAMMING_DEPENDENCIES": 0x0A02, "ACTIVATE_UPDATE": 0x0A03,
                 "APPLY_PROFILE": 0x0A04},
    "encodings": {
        "update_state": {n: 0x20 + i for i, n in enumerate(
            ["IDLE", "DOWNLOADING", "DOWNLOADED", "VERIFIED", "REJECTED", "ACTIVATION_PENDING", "INSTALLING",
             "TESTING", "SUCCESS", "ROLLED_BACK", "RECOVERY"])},
        "reason": {n: (0x00 if n == "NONE" else 0x40 + i) for i, n in enumerate(
            ["NONE", "SELFTEST_FAILED", "CRASHED_AT_BOOT", "WATCHDOG_RESET", "NOT_CONFIRMED", "BAD_MAGIC",
             "HASH_MISMATCH", "SIGNATURE_INVALID", "UNKNOWN_KEY", "UNSIGNED", "DOWNGRADE_VERSION",
             "DOWNGRADE_SECURITY_COUNTER", "WRONG_HARDWARE", "TRUNCATED", "OVERSIZE", "CONFIG_INCOMPATIBLE", "BAD_TLV",
             "CURRENT_FLOWING", "SUPPLY_LOW", "NOT_PLUGGED_IN", "VEHICLE_NOT_IDLE", "DOWNLOAD_ABORTED",
             "NO_VALID_IMAGE", "PROFILE_WRONG_GROUP", "PROFILE_DOWNGRADE", "VALUE_OUT_OF_RANGE",
             "PROFILE_CHECK_FAILED"])},
        "reset_cause": {"POWER_ON": 0x10, "SOFTWARE": 0x11, "WATCHDOG": 0x12, "FAULT": 0x13, "BROWN_OUT": 0x14},
        "boot_mode": {"APPLICATION": 0x0A, "RECOVERY": 0x0B},
        "activation_mode": {"TEST": 0x31, "PERMANENT": 0x32, "RESTORE": 0x3F},
    },
}

#: ACME's own names for some services (the rest keep the exporter's role names with ACME's prefixes).
RENAMES = {
    "ReadDataByIdentifier_FlashLayout": "RDBI_FlashMap",  # the importer cannot tell: --map FLASH_LAYOUT=RDBI_FlashMap
    "ReadDataByIdentifier_BootInfo": "RDBI_BootInformation",
    "ReadDataByIdentifier_SupplierSwVersion": "RDBI_SystemSupplierECUSoftwareVersion",
    "RoutineControl_Start_ActivateUpdate": "RC_SwitchToNewSoftware",  # --map ACTIVATE_UPDATE=RC_SwitchToNewSoftware
    "SecurityAccess_RequestSeed_Bench": "SecurityAccess_RequestSeed_Development",
    "SecurityAccess_SendKey_Bench": "SecurityAccess_SendKey_Development",
}


def supplier_services(b: Any) -> None:
    """ACME's names, and the services of its ODX that no framework role covers."""
    from odxtools.uds import UDSSID as SID, positive_response_id as pos

    from hil.bench.dut_profile import DutProfile
    from hil.odx.layouts import Field

    u8 = b.dop(Field("u8", "uint", 8), DutProfile())
    for svc in b.services:
        new = RENAMES.get(svc.short_name) or svc.short_name.replace("ReadDataByIdentifier_", "RDBI_") \
            .replace("WriteDataByIdentifier_", "WDBI_").replace("RoutineControl_Start_", "RC_")
        svc.short_name = new
    b.service("IOControl_CoolingFan", "IOCONTROL",
              [b.const("SID_RQ", SID.InputOutputControlByIdentifier, 0), b.const("DataIdentifier", 0x5D01, 1, 16),
               b.const("ControlParameter", 3, 3), b.value("Duty", u8, 4)],
              [b.const("SID_PR", pos(SID.InputOutputControlByIdentifier), 0), b.matching("DataIdentifier", 1, 2)])
    b.service("RC_CellBalancingTest", "ROUTINE",
              [b.const("SID_RQ", SID.RoutineControl, 0), b.const("RoutineControlType", 1, 1),
               b.const("RoutineIdentifier", 0x0A10, 2, 16)],
              [b.const("SID_PR", pos(SID.RoutineControl), 0), b.matching("RoutineControlType", 1, 1)])
    b.service("DiagnosticSessionControl_EndOfLine", "SESSION",
              [b.const("SID_RQ", SID.DiagnosticSessionControl, 0), b.const("SessionType", 0x60, 1)],
              [b.const("SID_PR", pos(SID.DiagnosticSessionControl), 0), b.matching("SessionType", 1, 1)])
    b.service("RDBI_MaxCellTemperature", "CURRENTDATA",
              [b.const("SID_RQ", SID.ReadDataByIdentifier, 0), b.const("DataIdentifier", 0x5D10, 1, 16)],
              [b.const("SID_PR", pos(SID.ReadDataByIdentifier), 0), b.matching("DataIdentifier", 1, 2),
               b.value("Temperature", u8, 3)])
    b.service("ClearDiagnosticInformation_All", "FAULTMEMORY",
              [b.const("SID_RQ", SID.ClearDiagnosticInformation, 0), b.const("GroupOfDTC", 0xFFFFFF, 1, 24)],
              [b.const("SID_PR", pos(SID.ClearDiagnosticInformation), 0)])


def acme_profile() -> Any:
    """ACME's numbers as a DutProfile (the rest of the profile is the default's: ODX does not carry it)."""
    from hil.bench.dut_profile import DutProfile

    return DutProfile.model_validate(ACME)


def write(path: Path = PDX) -> Path:
    from hil.odx.export import write_pdx

    return write_pdx(acme_profile(), path, supplier_services)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(write())
