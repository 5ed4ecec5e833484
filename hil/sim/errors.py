"""Errors of the simulated board only: the tester never sees them (it sees UDS responses, or silence)."""

from __future__ import annotations

from hil.errors import HilError


class FlashError(HilError):
    """A flash operation violated NOR semantics (unaligned, unerased, out of range)."""


class PowerLoss(HilError):
    """Raised inside the simulated board when its supply drops: the running code stops there."""
