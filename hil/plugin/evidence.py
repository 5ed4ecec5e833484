"""What every test leaves behind: CAN trace, console and supply logs, the DUT's update history, measurements.

Measurements decide too: one outside its declared limits fails the test (OpenHTF's rule), unless the
case declares the violation (`@pytest.mark.expect_violation`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pytest

from hil.bench.bench import Bench
from hil.errors import HilError
from hil.report import allure as allure_audit
from hil.report.can_excerpt import Mark, write_excerpt
from hil.timing.measure import Measurement

if TYPE_CHECKING:
    from hil.plugin.session import HilSession


MEASUREMENTS = pytest.StashKey[list]()
#: Failed phases of a test (setup, call): (when it ended, what failed), for the CAN excerpt's windows.
FAILURES = pytest.StashKey[list]()
#: Checks of a case that cannot run on this board, with the reason (`not_covered` fixture): a case that
#: passes otherwise ends skipped with these reasons, so its fault-matrix row is NOT COVERED, never a quiet PASS.
GAPS = pytest.StashKey[list]()


class MeasurementOutOfLimits(AssertionError):
    """A measurement outside its declared limits: the test fails (OpenHTF's rule)."""


def expected_violations(node: pytest.Item) -> dict[str, str]:
    """Measurement name -> reason, from the case's expect_violation markers."""
    out: dict[str, str] = {}
    for mark in node.iter_markers("expect_violation"):
        for name in mark.args:
            out[str(name)] = str(mark.kwargs.get("reason", "declared by the case"))
    return out


def measurement_verdict(measurements: list[Measurement], expected: dict[str, str]) -> str | None:
    """Why the measurements fail the test (None: they pass): a violation the case did not declare, or a case
    that declares violations of which none happened (it relies on one, so its absence is a failure too)."""
    problems = [f"{m}" for m in measurements if not m.passed and m.name not in expected]
    if expected and not any(not m.passed and m.name in expected for m in measurements):
        problems.append(f"a violation of {', '.join(sorted(expected))} was expected "
                        f"({'; '.join(sorted(set(expected.values())))}) but none happened")
    if not problems:
        return None
    return "measurement outside its limits:\n- " + "\n- ".join(problems)


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:150]


#: The decoded CAN excerpt beside the traces (hil.report.can_excerpt): what the report shows as text.
EXCERPT = "can-excerpt.txt"


def record_failure(item: pytest.Item, report: pytest.TestReport) -> None:
    """Remember a failed setup or call (its end and first line) for the CAN excerpt."""
    if report.failed and report.when in ("setup", "call"):
        text = str(report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash") and  # type: ignore[union-attr]
                   report.longrepr.reprcrash is not None else report.longrepr)  # type: ignore[union-attr]
        item.stash.setdefault(FAILURES, []).append((report.stop, report.when, text.splitlines()[0][:200] if text else ""))


def evidence_dir(hil: "HilSession", node: pytest.Item) -> Path:
    d = hil.evidence_root / safe(node.nodeid)
    d.mkdir(parents=True, exist_ok=True)
    return d


def start_evidence(b: Bench, d: Path) -> None:
    b.channel.start_trace([d / "can.blf", d / "can.asc"])
    if b.console is not None:
        b.console_mark = b.console.mark()  # type: ignore[attr-defined]
    b.supply.start_log(d / "supply.log")
    b.evidence_started = time.time()  # type: ignore[attr-defined]


def stop_evidence(b: Bench, d: Path, node: pytest.Item, marks: Sequence[Mark] = ()) -> None:
    """Close the traces and logs, write the CAN excerpt around `marks` (faults) and the failures, attach the evidence."""
    try:
        b.channel.stop_trace()
    except HilError:
        pass
    failures = [Mark(t, f"test failed ({when}): {what}") for t, when, what in node.stash.get(FAILURES, [])]
    write_excerpt(d / "can.blf", d / EXCERPT, [*marks, *failures], db=b.channel.db,
                  labels={b.cfg.dut.tx_id: "UDS request", b.cfg.dut.rx_id: "UDS response"})
    if b.console is not None:
        (d / "console.log").write_text(b.console.text[getattr(b, "console_mark", 0):])
    b.supply.start_log(b.evidence_dir / "supply.log" if b.evidence_dir else None)
    history_evidence(b, d)
    measurements = node.stash.get(MEASUREMENTS, [])
    if measurements:
        (d / "measurements.json").write_text(json.dumps([m.as_dict() for m in measurements], indent=2))
    allure_audit.attach_evidence(d)


def history_evidence(b: Bench, d: Path) -> None:
    """The DUT's update history and DTCs as read at the end of the case (evidence of what it reports)."""
    from hil.bench.contract import Did

    try:
        entries = b.cfg.profile.decode_history(b.client.read_did(Did.UPDATE_HISTORY))
        lines = [str(e) for e in entries] or ["(no update attempts recorded)"]
        lines.append("DTCs: " + (", ".join(f"0x{n:06X} status 0x{st:02X}" for n, st in b.client.read_dtcs()) or "none"))
    except (HilError, ValueError) as exc:
        lines = [f"update history not readable at the end of the case: {exc}"]
    (d / "update-history.txt").write_text("\n".join(lines) + "\n")


def check_evidence_kept(b: Bench, d: Path) -> None:
    """Every test's evidence is on disk: a non-empty CAN trace in both formats, its excerpt, the console and supply logs."""
    wanted = ["can.blf", "can.asc", EXCERPT, "supply.log"] + (["console.log"] if b.console is not None else [])
    missing = [n for n in wanted if not (d / n).is_file()]
    empty = [n for n in ("can.blf", "can.asc") if (d / n).is_file() and (d / n).stat().st_size == 0]
    if missing or empty:
        raise HilError(f"evidence not kept in {d}: missing {missing or 'none'}, empty {empty or 'none'}")
