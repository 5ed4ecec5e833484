"""Reconciliation: every vehicle's entry in the deployment report against what its board recorded.

The report's outcome comes from what the gateway saw live (the update status on CAN and DID FD01, the
check routine's verdict, the NRC of a refused activation). The board keeps its own record: the update
history (DID FD09: from, to, result, reason, boot), its DTCs (0x19) and the version it runs (F189). The
two must tell the same story; where they do not, that is a finding and the rehearsal fails - a fleet
manager's report that disagrees with the boards is worse than none.
"""

from __future__ import annotations

from typing import Sequence

from hil.bench.contract import Dtc, UpdateHistoryEntry
from hil.campaign.results import BoardRecord, HistoryView, Outcome, VehicleResult


def version_str(v: tuple[int, int, int]) -> str:
    return ".".join(map(str, v))


def view(entry: UpdateHistoryEntry) -> HistoryView:
    """An FD09 entry in the report's words."""
    return HistoryView(version_str(entry.from_version), version_str(entry.to_version), entry.result.name,
                       entry.reason.name, entry.boot_count)


def new_entries(before: Sequence[UpdateHistoryEntry], after: Sequence[UpdateHistoryEntry]) -> list[UpdateHistoryEntry]:
    """The entries the board added between two reads of its history (which keeps only its last N entries).

    The longest tail of `before` that `after` starts with is what the board still remembers from before;
    what follows it is new. (Entries carry the boot counter, so two attempts rarely look alike.)
    """
    before, after = list(before), list(after)
    for k in range(min(len(before), len(after)), 0, -1):
        if after[:k] == before[-k:]:
            return after[k:]
    return after


#: The DTC a failed outcome leaves, and the history result it records.
_FIRMWARE_RECORD = {
    Outcome.UPDATED: ("SUCCESS", None),
    Outcome.ROLLED_BACK: ("ROLLED_BACK", Dtc.UPDATE_ROLLED_BACK.name),
    Outcome.REFUSED: ("REJECTED", Dtc.UPDATE_REJECTED.name),
}


def reconcile(r: VehicleResult, kind: str = "firmware") -> list[str]:
    """Disagreements between the report's entry `r` and its board's record `r.board` (empty: they agree)."""
    b = r.board
    out: list[str] = []
    if b.vin_checked and b.vin != r.vin:
        out.append(f"the board reads VIN {b.vin!r} (F190), the report says {r.vin}")
    if b.group != r.group:
        out.append(f"the board is provisioned for vehicle group {b.group!r} (FD0C), the report says {r.group!r}")
    if b.hardware != r.variant:
        out.append(f"the board is hardware {b.hardware!r} (F191), the report says variant {r.variant!r}")
    if b.version != r.version_after:
        out.append(f"the board runs {b.version} (F189), the report says {r.version_after}")
    if r.outcome is not Outcome.FAILED:
        expected = r.target_version if r.outcome is Outcome.UPDATED else r.version_before
        if r.version_after != expected:
            out.append(f"the report says {r.outcome.value} but names {r.version_after} after (expected {expected})")
    if kind == "firmware":
        out += _firmware(r, b)
    else:
        out += _package(r, b)
    return out


def _firmware(r: VehicleResult, b: BoardRecord) -> list[str]:
    out = []
    entries = b.history_new
    shown = "; ".join(map(str, entries)) or "no new entry"
    if r.outcome in _FIRMWARE_RECORD:
        result, dtc = _FIRMWARE_RECORD[r.outcome]
        want = f"{r.version_before} -> {r.target_version}: {result}/{r.reason or 'NONE'}"
        if len(entries) != 1:
            out.append(f"the report says {r.outcome.value}; the board's history (FD09) should have one new entry "
                       f"({want}), it has: {shown}")
        else:
            e = entries[0]
            got = f"{e.from_version} -> {e.to_version}: {e.result}/{e.reason}"
            if got != want:
                out.append(f"the report says {r.outcome.value} ({want}); the board's history (FD09) says {got}")
        expected_dtcs = {dtc} if dtc else set()
        if set(b.dtcs) != expected_dtcs:
            out.append(f"the report says {r.outcome.value}: DTCs expected {sorted(expected_dtcs) or 'none'}, the "
                       f"board has {sorted(b.dtcs) or 'none'}")
    elif r.outcome in (Outcome.PENDING, Outcome.HELD):
        if entries:
            out.append(f"the report says {r.outcome.value} (nothing installed); the board's history (FD09) has: {shown}")
        if b.dtcs:
            out.append(f"the report says {r.outcome.value}; the board has DTCs {sorted(b.dtcs)}")
        expected_status = r.details.get("status_expected")
        if expected_status and b.status != expected_status:
            out.append(f"the report says {r.outcome.value} ({r.reason}); the board's update status (FD01) is "
                       f"{b.status}, expected {expected_status}")
    return out


def _package(r: VehicleResult, b: BoardRecord) -> list[str]:
    out = []
    if b.history_new:
        out.append(f"a configuration package is no firmware update, but the board's history (FD09) has: "
                   f"{'; '.join(map(str, b.history_new))}")
    state = str(b.profile.get("state", ""))
    want = {Outcome.UPDATED: "APPLIED", Outcome.REFUSED: "REFUSED", Outcome.ROLLED_BACK: "ROLLED_BACK"}.get(r.outcome)
    if want is not None:
        if state != want or (r.outcome is not Outcome.UPDATED and str(b.profile.get("reason", "")) != r.reason):
            out.append(f"the report says {r.outcome.value} ({r.reason or 'NONE'}); the board's profile status (FD0B) "
                       f"says {state}/{b.profile.get('reason', '')}")
    elif r.outcome in (Outcome.PENDING, Outcome.HELD):
        before = r.details.get("profile_before", {})
        if {k: b.profile.get(k) for k in ("profile", "version")} != {k: before.get(k) for k in ("profile", "version")}:
            out.append(f"the report says {r.outcome.value}; the board's active profile changed from "
                       f"{before.get('profile')} v{before.get('version')} to {b.profile.get('profile')} "
                       f"v{b.profile.get('version')}")
    return out


def working_image_findings(r: VehicleResult) -> list[str]:
    """Zero vehicles without a working image: the board runs a confirmed application image and its SOC core."""
    b = r.board
    if r.working_image:
        return []
    return [f"no working image: boot mode {b.boot_mode or '?'}, image confirmed {b.confirmed}, SOC frames "
            f"{'on the bus' if b.running else 'missing'}, running {b.version or '?'}"]
