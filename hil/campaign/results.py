"""What a rehearsal found, vehicle by vehicle and stage by stage: the deployment report's data.

Outcomes use the words of a deployment report (hawkBit, AWS IoT Jobs, Azure Device Update): updated,
rolled back (with the board's reason), refused (with its reason), pending (never reached in the window,
or the install could not start), held (not started because the campaign stopped), failed (anything
else: no outcome, no working image). A finding is a disagreement between the report and the board,
or a promise the board broke; any finding fails the rehearsal.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Outcome(str, enum.Enum):
    """How the campaign ended for one vehicle."""

    UPDATED = "updated"
    ROLLED_BACK = "rolled back"
    REFUSED = "refused"
    PENDING = "pending"
    HELD = "held"
    FAILED = "failed"


#: Outcomes that count against a stage's error threshold.
ERRORS = (Outcome.ROLLED_BACK, Outcome.REFUSED, Outcome.FAILED)


@dataclass(frozen=True)
class HistoryView:
    """One update-history entry as the board recorded it (DID FD09), in the framework's words."""

    from_version: str
    to_version: str
    result: str
    reason: str
    boot: int

    def __str__(self) -> str:
        return f"{self.from_version} -> {self.to_version}: {self.result}/{self.reason} at boot {self.boot}"


@dataclass
class BoardRecord:
    """What the board itself says after its turn, read over UDS and CAN."""

    vin: str = ""
    vin_checked: bool = True  # False: the board has no VIN DID (F190 answered 0x31)
    group: str = ""
    hardware: str = ""
    version: str = ""
    status: str = ""  # FD01 state/reason
    boot_mode: str = ""
    confirmed: bool = False
    running: bool = False  # SOC frames on the bus: the application runs
    history_new: list[HistoryView] = field(default_factory=list)
    dtcs: dict[str, int] = field(default_factory=dict)  # DTC name (or hex) -> status byte
    profile: dict[str, Any] = field(default_factory=dict)  # FD0B, for configuration package releases


@dataclass
class VehicleResult:
    """One vehicle's entry of the deployment report."""

    vin: str
    depot: str
    group: str
    variant: str
    stage: str
    condition: str | None
    outcome: Outcome
    reason: str = ""  # the board's reason (a Reason name), or why pending / held / failed
    version_before: str = ""
    version_after: str = ""
    target_version: str = ""  # the version of what was sent (the release, or the bad build)
    bench: str = ""
    started_s: float = 0.0  # seconds since the rehearsal started
    ended_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # download, resume, power cut, SOC budget, window
    board: BoardRecord = field(default_factory=BoardRecord)
    findings: list[str] = field(default_factory=list)

    @property
    def working_image(self) -> bool:
        """The board runs a confirmed application image (checked on every vehicle)."""
        return self.board.boot_mode == "APPLICATION" and self.board.confirmed and self.board.running

    @property
    def is_error(self) -> bool:
        return self.outcome in ERRORS

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["outcome"] = self.outcome.value
        out["working_image"] = self.working_image
        out["board"]["history_new"] = [str(h) for h in self.board.history_new]
        return out


@dataclass
class StageTally:
    """How a stage's vehicles ended so far."""

    size: int
    counts: dict[Outcome, int] = field(default_factory=lambda: {o: 0 for o in Outcome})

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome] += 1

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def errors(self) -> int:
        return sum(self.counts[o] for o in ERRORS)

    def rate(self, n: int) -> float:
        """Percent of the stage's vehicles."""
        return 100.0 * n / self.size if self.size else 0.0

    @property
    def success_rate(self) -> float:
        return self.rate(self.counts[Outcome.UPDATED])

    @property
    def error_rate(self) -> float:
        return self.rate(self.errors)


@dataclass
class StageDecision:
    """What a stage decided: go on to the next stage, or stop the campaign, and why (with the rates)."""

    stage: str
    go_on: bool
    why: str


def error_threshold_passed(error_threshold: float, tally: StageTally) -> bool:
    """True once the stage's errors are above its error threshold (percent of the stage's vehicles): the
    campaign stops at once, as hawkBit's emergency stop of a rollout group."""
    return tally.error_rate > error_threshold


def decide(name: str, success_threshold: float, error_threshold: float, tally: StageTally, *,
           last: bool = False) -> StageDecision:
    """The stage's decision once its vehicles are done (or the error threshold stopped it). The success
    threshold starts the next stage; the last stage has none to start, so only its error threshold decides."""
    rates = (f"{tally.success_rate:.1f} % updated, {tally.error_rate:.1f} % errors "
             f"({tally.errors} of {tally.size}: {tally.counts[Outcome.ROLLED_BACK]} rolled back, "
             f"{tally.counts[Outcome.REFUSED]} refused, {tally.counts[Outcome.FAILED]} failed), "
             f"{tally.rate(tally.counts[Outcome.PENDING]):.1f} % pending")
    if error_threshold_passed(error_threshold, tally):
        return StageDecision(name, False, f"stop: error threshold passed - {rates} > {error_threshold:g} % allowed")
    if tally.success_rate < success_threshold and not last:
        return StageDecision(name, False, f"stop: success threshold not reached - {rates}; "
                                          f"{success_threshold:g} % updated needed")
    if last:
        reached = "reached" if tally.success_rate >= success_threshold else "not reached (no stage follows)"
        return StageDecision(name, True, f"done: {rates}; success threshold {success_threshold:g} % {reached}, "
                                         f"error threshold {error_threshold:g} % not passed")
    return StageDecision(name, True, f"go on: {rates}; success threshold {success_threshold:g} % reached, "
                                     f"error threshold {error_threshold:g} % not passed")
