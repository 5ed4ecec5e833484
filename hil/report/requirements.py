"""The one catalogue of regulation topics tests are evidence for.

Tests carry `@pytest.mark.requirement("R156-integrity", ...)`; reports resolve the ids here.
Paragraph numbers are quoted only "per the public text" (public transcriptions, not a verified
copy of the official regulation) and live in this file alone, so a correction is one edit.
ISO 24089 clause numbers are deliberately not quoted: no verified copy was at hand, so those
entries are tagged by topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping

#: How every paragraph reference is to be read; reports print it next to the catalogue.
PARAGRAPH_CAVEAT = "paragraph numbers per the public text; check the official text before an audit"

R156 = "UN Regulation No. 156"
R155 = "UN Regulation No. 155"
ISO24089 = "ISO 24089:2023"
ISO21434 = "ISO/SAE 21434:2021"
PROJECT = "bms-ota-hil project requirement"


@dataclass(frozen=True)
class Requirement:
    """One regulation topic: where it comes from (per the public text) and what it asks of the ECU."""

    id: str
    regulation: str
    paragraph: str  # "" where no clause is quoted (tag by topic)
    topic: str
    text: str

    @property
    def reference(self) -> str:
        """Regulation and paragraph as printed in reports, e.g. "UN Regulation No. 156 7.2.1.1"."""
        return f"{self.regulation} {self.paragraph}".strip()


def _catalogue(entries: Iterable[Requirement]) -> Mapping[str, Requirement]:
    table: dict[str, Requirement] = {}
    for req in entries:
        if req.id in table:  # a duplicate id would silently hide one entry
            raise ValueError(f"duplicate requirement id {req.id!r} in the catalogue")
        table[req.id] = req
    # Read-only view: the catalogue is data, not module state anyone may change at run time.
    return MappingProxyType(table)


CATALOGUE: Mapping[str, Requirement] = _catalogue([
    Requirement("R156-integrity", R156, "7.2.1.1", "authenticity and integrity of updates",
                "The authenticity and integrity of software updates are protected: a corrupted, truncated, "
                "unsigned, wrongly signed or downgraded image is rejected and never executed."),
    Requirement("R156-rxswin", R156, "7.2.1.2.x", "RXSWIN",
                "The RXSWIN identifies the type-approval-relevant software, is readable via diagnostics and "
                "protected against unauthorised change."),
    Requirement("R156-recovery", R156, "7.2.2.1.1", "recovery after a failed or interrupted update",
                "After a failed or interrupted update the previous version is restored or a safe state is "
                "reached; the ECU never ends with neither image bootable."),
    Requirement("R156-power", R156, "7.2.2.1.2", "enough power to complete the update",
                "The update is executed only with enough power to complete it, recovery included; loss of "
                "power at any point is survived."),
    Requirement("R156-safe-state", R156, "7.2.2.1.3", "safe state to execute",
                "Technical means make sure the vehicle is in a safe state before execution (for the BMS: no "
                "pack current flowing, the pack idle)."),
    Requirement("R156-inform-result", R156, "7.2.2.4", "inform of success or failure",
                "The result of the update (success or failure, with the reason) is reported and readable."),
    Requirement("R156-preconditions", R156, "7.2.2.5", "preconditions before execution",
                "Preconditions are checked before execution; a false precondition refuses activation and "
                "changes nothing."),
    Requirement("R155-M16", R155, "Annex 5, mitigation M16", "secure software update procedures",
                "Update procedures are secured against manipulation: signed images, anti-rollback, "
                "protected diagnostic access (SecurityAccess with attempt limit and delay)."),
    Requirement("ISO24089-integrity", ISO24089, "", "integrity and authenticity of the update package",
                "The ECU verifies integrity and authenticity of the update package before it is installed."),
    Requirement("ISO24089-preconditions", ISO24089, "", "preconditions before execution",
                "Preconditions for a safe execution are verified before the update is executed."),
    Requirement("ISO24089-recovery", ISO24089, "", "recovery on failure",
                "A failed update is recovered from: the ECU returns to a working, consistent state."),
    Requirement("ISO24089-reporting", ISO24089, "", "reporting of the result",
                "The outcome of the update is reported with a state and a reason."),
    Requirement("ISO24089-identification", ISO24089, "", "software identification",
                "The installed software version and the software identification are readable from the ECU."),
    Requirement("ISO21434-verification", ISO21434, "", "cybersecurity verification",
                "Verification evidence for the cybersecurity controls of the update path: signature "
                "rejection, key handling, security access."),
    Requirement("BMS-config-preserved", PROJECT, "", "configuration preserved",
                "The BMS configuration (protection limits, calibration) is preserved across a successful "
                "update, migrated without losing customer values, and restored when the update rolls back."),
    Requirement("BMS-config-profiles", PROJECT, "", "signed configuration profiles",
                "Configuration profiles arrive as signed, versioned packages for a vehicle group and hardware; "
                "the BMS verifies integrity, signature, target, profile version and the hardware's absolute "
                "limits, refuses a bad package with a reason and changes nothing, and applies a good one "
                "atomically (a power cut leaves the old or the new profile whole)."),
    Requirement("BMS-profile-behaviour", PROJECT, "", "profiles change behaviour",
                "The active profile governs the BMS's behaviour: the charge-current limit at low temperature "
                "sent on CAN follows the profile (winter stricter than summer), also after a rollback."),
    Requirement("BMS-charging-window", PROJECT, "", "install in the charging window",
                "An update installs only while the vehicle is plugged in and idle; the BMS brings the charge "
                "current to zero before it installs, resumes charging once the new image is confirmed, and is "
                "offline (no SOC frames) no longer than its budget."),
    Requirement("BMS-update-history", PROJECT, "", "update history and fault memory",
                "The BMS keeps a history of update attempts (from/to version, result, reason, boot counter) "
                "readable over UDS, and a DTC for every failed or rolled-back update (0x19, cleared by 0x14)."),
    Requirement("BMS-resumable-download", PROJECT, "", "resumable background download",
                "An interrupted download resumes from the last block the BMS has stored, without a new erase; "
                "a resumed image that does not verify is refused like any corrupted image."),
    Requirement("BMS-session-timeout", PROJECT, "", "a vanished tester leaves no session open",
                "A non-default diagnostic session without a request for longer than S3 falls back to the default "
                "session on the BMS's own timer: security relocked, an open download abandoned (what is stored "
                "kept for a resume) and reported; a tester that sends TesterPresent keeps its session."),
    Requirement("BMS-soc-timing", PROJECT, "", "SOC core timing during updates",
                "The SOC core keeps its cycle timing budget (period, execution time, start latency, no "
                "missed cycles) while downloading, erasing and installing."),
    Requirement("BMS-new-feature", PROJECT, "", "new features by update",
                "A release's new CAN message arrives at its period with plausible signals once the release "
                "runs, is gone after a rollback, and the messages every release shares keep their layout."),
    Requirement("BMS-fleet-campaign", PROJECT, "", "staged fleet campaign",
                "A release rolled out in stages (canary, depots, the rest) stops itself when a stage passes its "
                "error threshold, holding every vehicle not yet touched on its old release; the deployment "
                "report (updated, rolled back and refused with the board's reason, pending, held) agrees with "
                "every board's own update history and DTCs, and no vehicle is left without a working image."),
    Requirement("BMS-soc-accuracy", PROJECT, "", "SOC right across updates",
                "SOC stays within its declared accuracy of the pack's true state before and after an update "
                "and after a rollback, and never jumps by more than its declared step at a reset."),
])


def lookup(requirement_id: str) -> Requirement:
    """The catalogue entry for `requirement_id`; KeyError names the valid ids if it is unknown."""
    try:
        return CATALOGUE[requirement_id]
    except KeyError:
        raise KeyError(f"unknown requirement id {requirement_id!r}; valid ids: {', '.join(sorted(CATALOGUE))}") from None


def unknown_ids(ids: Iterable[str]) -> list[str]:
    """The ids in `ids` that the catalogue does not know (sorted, without duplicates)."""
    return sorted({i for i in ids if i not in CATALOGUE})
