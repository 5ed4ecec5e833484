"""Update families: the kinds of board the suite can update, each a container and a programming sequence.

A DUT profile names its family (`update.family`); everything that depends on it goes through the
seam this registry names: the image container (`hil.images.container.ImageContainer`: read, build,
sign, re-sign, corrupt, truncate), the tester's programming sequence
(`hil.dut.sequence.ProgrammingSequence`: unlock, erase, stage, verify, activate, discard) and the
virtual board's update parts (`hil.sim`). Plain data (references are "module:attribute" strings,
loaded when used), so the bench description can validate a profile's family without importing the
tester or the simulator. A new family is its modules plus one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

#: A case that asks for something a family does not have skips with this prefix and the family's reason
#: (the fault matrix shows the row NOT COVERED with it: hil/report/records.py GAP_PREFIXES).
NOT_APPLICABLE_PREFIX = "not applicable to this update family: "


@dataclass(frozen=True)
class UpdateFamily:
    """One kind of board: how its images are made and how it is programmed."""

    name: str
    description: str
    #: "module:Class" of its image container (hil.images.container.ImageContainer), built with the DUT profile.
    container: str
    #: "module:Class" of its programming sequence (hil.dut.sequence.ProgrammingSequence).
    sequence: str
    #: module of hil/sim with its virtual board's update parts (BOOTLOADER, DIAG_SERVER, SWEEP_RIG).
    board: str
    #: file suffixes of its images on disk (a bench catalogue value ending in one is a file path)
    suffixes: tuple[str, ...]
    #: routine roles (contract.Routine names) its sequence and board use: the profile must give each an id.
    routines: tuple[str, ...]
    #: DID roles only this family uses (every family uses the DID roles no family claims here).
    dids: tuple[str, ...] = ()
    #: fields of the profile's `update:` section this family needs filled in.
    profile_fields: tuple[str, ...] = ()
    #: what a case may ask for (a console pattern, or a phase through the `family_phase` fixture) that this family
    #: does not have, and why.
    not_applicable: Mapping[str, str] = field(default_factory=dict)


FAMILIES: Mapping[str, UpdateFamily] = MappingProxyType({
    "mcuboot": UpdateFamily(
        name="mcuboot",
        description="MCUboot-style A/B slots: one signed image (header, payload, TLVs), background download into the "
                    "secondary slot, activation routine, swap with revert",
        container="hil.images.mcuboot_container:McubootContainer",
        sequence="hil.dut.sequence:McubootSequence",
        board="hil.sim.mcuboot_board",
        suffixes=(".bin",),
        routines=("ERASE_MEMORY", "CHECK_PROGRAMMING_DEPENDENCIES", "ACTIVATE_UPDATE", "APPLY_PROFILE"),
    ),
    "flash_bootloader": UpdateFamily(
        name="flash_bootloader",
        description="OEM flash bootloader (ISO 14229 programming sequence) on a dual-bank part: Intel HEX / S-record "
                    "builds with a signed header and a detached signature, fingerprint, erase and download per "
                    "logical block into the inactive bank, check-memory and check-dependencies routines, the reset "
                    "switches banks; the previous bank is the backup a failed first boot falls back to",
        container="hil.images.fbl:FblContainer",
        sequence="hil.dut.fbl_sequence:FblSequence",
        board="hil.sim.fbl",
        suffixes=(".hex", ".s19", ".srec", ".mot", ".ihex"),
        routines=("ERASE_MEMORY", "CHECK_MEMORY", "CHECK_PROGRAMMING_DEPENDENCIES", "APPLY_PROFILE"),
        dids=("FINGERPRINT",),
        profile_fields=("blocks",),
        not_applicable=MappingProxyType({
            **{name: "no swap: the flash_bootloader family activates by switching banks in one NV record at the "
                     "reset (no sector copy to interrupt or to watch); the exhaustive sweep cuts that record at every "
                     "flash operation (rows 1-3)"
               for name in ("swap_start", "swap_progress", "swap_resume", "swap_done")},
            "interruptible_revert": "the revert is a bank switch in one NV record, written within milliseconds of "
                                    "power-on: no phase a tester can see on the console and then cut into through the "
                                    "supply; a cut in that write leaves the old or the new record (journaled NV store) - "
                                    "the exhaustive sweep cuts and tears it at every flash operation of a revert and "
                                    "stacks cuts (rows 1-3)",
        }),
    ),
})

#: The family of a profile that names none (the default board).
DEFAULT_FAMILY = "mcuboot"


def family(name: str) -> UpdateFamily:
    """The family called `name`; ValueError naming the accepted ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown update family {name!r}; accepted: {', '.join(FAMILIES)}") from None


def image_file_suffixes() -> tuple[str, ...]:
    """Every family's image file suffixes."""
    return tuple(dict.fromkeys(s for f in FAMILIES.values() for s in f.suffixes))


#: DID roles a board may lack whatever its family: what needs one says so when it is missing (the VIN:
#: a fleet campaign provisions and reconciles it; single-board cases never read it).
OPTIONAL_DIDS = ("VIN",)


def shared_dids(all_roles: tuple[str, ...], *, optional: bool = True) -> tuple[str, ...]:
    """The DID roles every family uses: those no family claims as its own (without the optional ones when
    `optional` is False: the roles a profile must give)."""
    claimed = {d for f in FAMILIES.values() for d in f.dids}
    return tuple(r for r in all_roles if r not in claimed and (optional or r not in OPTIONAL_DIDS))


def load(reference: str) -> Any:
    """The object a "module:attribute" reference names (ImportError/AttributeError say which)."""
    module_name, _, attr = reference.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module
