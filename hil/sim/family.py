"""The virtual board's update parts by update family: its bootloader, its UDS application, its sweep rig.

The DUT profile's `update.family` names the family (hil/images/families.py); the family's `board`
module here exports `PARTS`. Everything else of the board - power, resets, NV store, SOC core,
console, instruments, configuration packages - is the same for every family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hil.bench.dut_profile import DutProfile


@dataclass(frozen=True)
class BoardParts:
    """What differs between the families' virtual boards."""

    #: the bootloader class: (flash, layout, nv, trusted, hardware_id, *, log, defects, profile); also its
    #: `factory_program(flash, layout, image, profile)` (production programming of a new board)
    bootloader: Any
    #: the UDS application class (hil.sim.diag.DiagServer or a subclass): (ecu, recovery=...)
    diag_server: Any
    #: the exhaustive sweep's rig (hil.sim.sweep.SweepRig subclass)
    sweep_rig: Any


def board_parts(profile: "DutProfile") -> BoardParts:
    """The update parts of the board `profile` describes."""
    from hil.images.families import family, load

    parts = load(family(profile.update.family).board).PARTS
    assert isinstance(parts, BoardParts), f"{family(profile.update.family).board}.PARTS is not a BoardParts"
    return parts
