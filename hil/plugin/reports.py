"""At the end of a run: fault matrix, traceability, run record and Allure extras - from this process, or in
rack mode from every worker (the xdist controller writes one report)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hil.report import allure as allure_audit

if TYPE_CHECKING:
    from hil.plugin.session import HilSession


def reports_dir(hil: "HilSession") -> Path:
    return hil.here("--reports-dir")


def iso(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


def bench_entry(hil: "HilSession") -> dict[str, Any]:
    """This process's bench for the run record: identity, lease, and why it broke (if it did)."""
    entry: dict[str, Any] = dict(hil.identity or {"bench": hil._cfg.bench if hil._cfg is not None else None})
    if hil.rack_worker is not None:
        entry["lease"] = hil.rack_worker.describe()
    if hil.broken:
        entry["broken"] = hil.broken
    return entry


def write_reports(hil: "HilSession") -> None:
    import sys

    from hil.report import merge as report_merge

    benches = bench_entry(hil)
    if hil.rack is not None:
        benches = {"rack": hil.rack.name, "benches": {str(benches.get("bench")): benches}}
    report_merge.write_all(reports_dir(hil), hil.records, benches, started=iso(hil.started), finished=iso(time.time()),
                           command=sys.argv, seeds={"sweep_points": hil.config.getoption("--sweep-points"),
                                                    "nightly": hil.config.getoption("--nightly")},
                           repo=Path(hil.config.rootpath))
    write_allure_extras(hil, hil.identity or {"bench": hil.cfg.bench})


def write_allure_extras(hil: "HilSession", identity: dict[str, Any]) -> None:
    """Categories and environment (bench, DUT, instruments, commit, tools) beside the Allure results."""
    from hil.report import records as report

    allure_audit.write_session(hil.config, reports_dir(hil), identity, report.tool_versions(), iso(hil.started))


def hand_to_controller(hil: "HilSession") -> None:
    """xdist worker in rack mode: the controller writes the one report from every worker's records."""
    from hil.rack.scheduling import OUTPUT_KEY

    bench = hil.rack_worker.bench.name if hil.rack_worker is not None and hil.rack_worker.bench else None
    hil.config.workeroutput[OUTPUT_KEY] = {  # type: ignore[attr-defined]
        "bench": bench, "identity": hil.identity, "broken": hil.broken,
        "lease": hil.rack_worker.describe() if hil.rack_worker is not None else None,
        "opened": hil.opened, "records": hil.records}


def write_rack_reports(hil: "HilSession") -> None:
    """xdist controller in rack mode: one fault matrix, traceability and run record from all workers."""
    import sys

    from hil.report import merge as report_merge

    ctl = hil.controller
    try:
        records = ctl.records()
        if not records:
            return
        benches = {"rack": hil.rack.name, "benches": {(b["bench"] or b["worker"]): b for b in ctl.benches()}}
        report_merge.write_all(reports_dir(hil), records, benches, started=iso(hil.started), finished=iso(time.time()),
                               command=sys.argv, seeds={"sweep_points": hil.config.getoption("--sweep-points"),
                                                        "nightly": hil.config.getoption("--nightly")},
                               repo=Path(hil.config.rootpath))
        write_allure_extras(hil, {"rack": hil.rack.name, "bench": ", ".join(sorted(benches["benches"]))})
    finally:
        ctl.cleanup()
