"""The records the framework reads, field by field, as ODX describes them.

A DUT profile maps each DID *role* to an identifier; what the record of each role contains is the
framework's contract (hil/bench/contract.py: `UpdateStatusRecord`, `BootInfo`, `DID_LENGTH`, ...).
Export writes these layouts into the ODX; import checks a vendor's layout against them and reads the
board's codes (the profile's `encodings`) from the TEXTTABLEs of the enum fields.

Some records depend on the board's update family and its `update:` facts (`did_layout`,
`routine_options`): the fingerprint's length (`update.fingerprint_length`) and the erase routine's
option record, none for MCUboot, addressAndLengthFormatIdentifier + address + size for the OEM flash
bootloader (`update.address_length_format`). What a record's form says about the family is how
`hil profile import` infers the family of a vendor's ODX.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from hil.bench import contract
from hil.bench.dut_profile import DutProfile
from hil.images.families import FAMILIES

Kind = Literal["uint", "enum", "ascii", "utf8", "bytes"]


@dataclass(frozen=True)
class Field:
    """One field of a record: `bits` None = the rest of the message (END-OF-PDU); `value`: a coded constant
    (the board accepts only this value, e.g. its addressAndLengthFormatIdentifier)."""

    name: str
    kind: Kind
    bits: int | None = 8
    table: str | None = None  # kind enum: the profile's encodings table
    value: int | None = None

    def describe(self) -> str:
        size = "rest" if self.bits is None else f"{self.bits // 8} byte{'s' if self.bits != 8 else ''}"
        return f"{self.name} ({self.table or self.kind}, {size})"


def _text(kind: Kind) -> tuple[Field, ...]:
    return (Field("text", kind, None),)


U8, U16, U32 = 8, 16, 32

#: DID role -> the fields of its record after the DID (ReadDataByIdentifier positive response).
DID_LAYOUTS: dict[str, tuple[Field, ...]] = {
    "ACTIVE_SESSION": (Field("session", "uint", U8),),
    "SPARE_PART_NUMBER": _text("ascii"),
    "SOFTWARE_VERSION": _text("ascii"),
    "SERIAL_NUMBER": _text("ascii"),
    "HARDWARE_NUMBER": _text("ascii"),
    "SUPPLIER_SW_VERSION": _text("ascii"),
    "RXSWIN": _text("ascii"),
    "BOOT_INFO": (Field("mode", "enum", U8, "boot_mode"), Field("active_slot", "uint", U8),
                  Field("confirmed", "uint", U8), Field("reset_cause", "enum", U8, "reset_cause")),
    "UPDATE_STATUS": (Field("state", "enum", U8, "update_state"), Field("reason", "enum", U8, "reason"),
                      Field("progress", "uint", U8), Field("target_major", "uint", U8),
                      Field("target_minor", "uint", U8), Field("target_patch", "uint", U8)),
    "BOOT_COUNTER": (Field("count", "uint", U32),),
    "CONFIG_VERSION": (Field("schema", "uint", U16), Field("crc32", "uint", U32)),
    "SECURITY_COUNTER": (Field("counter", "uint", U32),),
    "BACKUP_IMAGE": _text("ascii"),
    "FLASH_LAYOUT": (Field("secondary_address", "uint", U32), Field("slot_size", "uint", U32),
                     Field("sector_size", "uint", U32)),
    "ACTIVE_IMAGE_HASH": (Field("sha256", "bytes", 256),),
    "BACKUP_IMAGE_HASH": (Field("sha256", "bytes", 256),),
    "UPDATE_HISTORY": (Field("entries", "bytes", None),),
    "DOWNLOAD_RESUME": (Field("announced_size", "uint", U32), Field("stored", "uint", U32),
                        Field("crc32", "uint", U32)),
    "PROFILE_STATUS": _text("utf8"),
    "VEHICLE_GROUP": _text("ascii"),
    "CONFIGURATION": _text("utf8"),
    "VIN": _text("ascii"),
    # flash_bootloader: BCD date (YY MM DD), then the tester id (ASCII, NUL-padded to update.fingerprint_length)
    "FINGERPRINT": (Field("date", "bytes", 24), Field("tester_id", "ascii", None)),
}

#: DIDs the framework also writes (WriteDataByIdentifier): the configuration and the VIN at the bench level,
#: the fingerprint in the flash bootloader's programming sequence (a profile without the role has no such service).
WRITTEN_DIDS: tuple[str, ...] = ("VEHICLE_GROUP", "CONFIGURATION", "VIN", "FINGERPRINT")

#: Routine role -> the fields of its startRoutine option record (the same in every family, but ERASE_MEMORY's:
#: ERASE_OPTIONS).
ROUTINE_OPTIONS: dict[str, tuple[Field, ...]] = {
    "ERASE_MEMORY": (),
    "CHECK_PROGRAMMING_DEPENDENCIES": (),
    "ACTIVATE_UPDATE": (Field("mode", "enum", U8, "activation_mode"),),
    "APPLY_PROFILE": (),
    "CHECK_MEMORY": (Field("signature_record", "bytes", None),),  # the image's detached signature record
}

#: Update family -> the names of the erase routine's option record fields (ERASE_MEMORY); their widths come from
#: the profile (`erase_options`). MCUboot erases the whole secondary slot: no option record.
ERASE_OPTIONS: dict[str, tuple[str, ...]] = {
    "mcuboot": (),
    "flash_bootloader": ("address_and_length_format", "memory_address", "memory_size"),
}

#: Where each encodings table lives in ODX: (DID or routine role, field).
ENCODING_HOMES: dict[str, tuple[str, str]] = {
    "update_state": ("UPDATE_STATUS", "state"),
    "reason": ("UPDATE_STATUS", "reason"),
    "boot_mode": ("BOOT_INFO", "mode"),
    "reset_cause": ("BOOT_INFO", "reset_cause"),
    "activation_mode": ("ACTIVATE_UPDATE", "mode"),
}

#: Session role -> the profile's field.
SESSION_ROLES: dict[str, str] = {"DEFAULT": "default", "PROGRAMMING": "programming", "EXTENDED": "extended"}
#: Security role -> the profile's field.
SECURITY_ROLES: dict[str, str] = {"PROGRAMMING": "programming_level", "BENCH": "bench_level"}


def erase_options(family: str, address_length_format: int) -> tuple[Field, ...]:
    """The erase routine's option record in `family`: for the flash bootloader the
    addressAndLengthFormatIdentifier (a constant: the board's), then address and size of the widths it gives."""
    names = ERASE_OPTIONS[family]
    if not names:
        return ()
    size_bytes, address_bytes = address_length_format >> 4, address_length_format & 0x0F
    return (Field(names[0], "uint", U8, value=address_length_format), Field(names[1], "uint", 8 * address_bytes),
            Field(names[2], "uint", 8 * size_bytes))


def did_layout(role: str, profile: DutProfile) -> tuple[Field, ...]:
    """The record of DID `role` on this board (DID_LAYOUTS, with the fingerprint's length from its profile)."""
    if role == "FINGERPRINT":
        date, tester = DID_LAYOUTS[role]
        return date, Field(tester.name, tester.kind, 8 * (profile.update.fingerprint_length - (date.bits or 0) // 8))
    return DID_LAYOUTS[role]


def routine_options(role: str, profile: DutProfile) -> tuple[Field, ...]:
    """The startRoutine option record of routine `role` on this board (the erase record of its update family)."""
    if role == "ERASE_MEMORY":
        return erase_options(profile.update.family, profile.update.address_length_format)
    return ROUTINE_OPTIONS[role]


def fixed_size(fields: tuple[Field, ...]) -> int | None:
    """Bytes of a record of fixed length, None when a field runs to the end of the message."""
    if any(f.bits is None for f in fields):
        return None
    return sum(f.bits or 0 for f in fields) // 8


def normalise(name: str) -> str:
    """A name as the matcher compares it: lower case, letters and digits only (`Boot_Info` -> `bootinfo`)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def check_against_contract() -> list[str]:
    """Layouts that disagree with contract.DID_LENGTH, roles or families without one (tests/test_odx.py keeps this
    empty)."""
    problems = [f"{r.name}: no option record layout" for r in contract.Routine if r.name not in ROUTINE_OPTIONS]
    problems += [f"update family {f}: no erase option record (ERASE_OPTIONS)" for f in FAMILIES if f not in ERASE_OPTIONS]
    for did in contract.Did:
        if did.name not in DID_LAYOUTS:
            problems.append(f"{did.name}: no layout")
            continue
        if fixed_size(DID_LAYOUTS[did.name]) != contract.DID_LENGTH[did]:
            problems.append(f"{did.name}: layout has {fixed_size(DID_LAYOUTS[did.name])} bytes, "
                            f"contract.DID_LENGTH says {contract.DID_LENGTH[did]}")
    return problems
