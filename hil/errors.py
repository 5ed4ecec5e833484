"""Typed exceptions. Every timeout error carries what was seen instead of what was awaited."""

from __future__ import annotations


class HilError(Exception):
    """Base class of every error the framework raises on purpose."""


class BenchConfigError(HilError):
    """A bench YAML is invalid: the message names the file, the field path, the value and what is accepted."""


class BenchBroken(HilError):
    """The bench cannot be used any more (instrument silent, DUT unrecoverable); later tests error out with this cause."""


class BenchBusy(HilError):
    """Another run holds the bench lock."""


class InstrumentError(HilError):
    """An instrument answered wrongly, not at all, or reported an error."""


class LimitViolation(InstrumentError):
    """A requested setting is outside the bench's configured safety limits; nothing was sent."""


class ReadbackMismatch(InstrumentError):
    """An instrument setting read back differs from what was commanded."""


class HilTimeout(HilError, TimeoutError):
    """A wait ran out. `seen` holds what arrived instead (console text, CAN frames, states)."""

    def __init__(self, message: str, seen: str = "") -> None:
        self.seen = seen
        super().__init__(f"{message}\n--- seen instead ---\n{seen}" if seen else f"{message}\n--- nothing was seen ---")


class UdsError(HilError):
    """A UDS request failed; `nrc` is the negative response code when there was one."""

    def __init__(self, message: str, nrc: int | None = None) -> None:
        self.nrc = nrc
        super().__init__(message)


class ImageError(HilError):
    """A firmware image is malformed or fails verification; `reason` is a hil.contract.Reason."""

    def __init__(self, message: str, reason: int) -> None:
        self.reason = reason
        super().__init__(message)


class UpdateFailed(HilError):
    """The update did not end as expected; carries the final status read from the DUT."""


class ImageBuildError(HilError):
    """A firmware recipe, signing key or imgtool step failed; the message names the file, field or command."""


class CampaignError(HilError):
    """A campaign file is invalid or cannot be planned or run: the message names the file, the field and what is accepted."""
