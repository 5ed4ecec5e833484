"""The MCUboot family's virtual board parts: the swap-using-scratch bootloader, the default UDS application,
the swap sweep rig (hil/sim/family.py)."""

from __future__ import annotations

from hil.sim.bootloader import Bootloader
from hil.sim.diag import DiagServer
from hil.sim.family import BoardParts
from hil.sim.sweep import McubootRig

PARTS = BoardParts(bootloader=Bootloader, diag_server=DiagServer, sweep_rig=McubootRig)
