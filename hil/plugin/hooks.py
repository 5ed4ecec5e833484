"""The plugin's hooks: options, markers, which tests use a bench, the run's records, reports at the end."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from hil.bench.config import BenchConfig
from hil.plugin.evidence import (GAPS, MEASUREMENTS, MeasurementOutOfLimits, expected_violations, measurement_verdict,
                                 record_failure, safe)
from hil.plugin.reports import hand_to_controller, write_rack_reports, write_reports
from hil.plugin.session import (DEFAULT_SWEEP_POINTS, MARKERS, NIGHTLY_SWEEP_POINTS, STASH_KEY, HilSession, allure,
                                label_bench, uses_bench)
from hil.report import allure as allure_audit


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "BMS OTA hardware-in-the-loop")
    group.addoption("--bench", default=None,
                    help="bench YAML, relative to the current directory (default: $HIL_BENCH, else benches/sim.yaml)")
    group.addoption("--evidence-dir", default="reports/evidence",
                    help="where CAN traces, console and supply logs of every test are kept (relative: to the "
                         "current directory)")
    group.addoption("--reports-dir", default="reports",
                    help="where the fault matrix, traceability and run record are written (relative: to the "
                         "current directory)")
    group.addoption("--sweep-points", type=int, default=None,
                    help="power-cut points per install phase in the black-box sweep (default 2; nightly: 25)")
    group.addoption("--rack", default=os.environ.get("HIL_RACK"),
                    help="rack YAML (benches/racks/*.yaml): each process (xdist worker) leases one bench of it; "
                         "use with -n N (env HIL_RACK)")
    group.addoption("--soak-s", type=float, default=600.0,
                    help="length of the nightly timing soak in seconds (default 600)")
    group.addoption("--nightly", action="store_true", default=os.environ.get("HIL_NIGHTLY", "") not in ("", "0"),
                    help="the long work: wide black-box sweep (25 points), fuzz budgets, timing soak (env HIL_NIGHTLY=1)")
    group.addoption("--allow-irreversible", action="store_true",
                    help="run tests that advance one-way counters on a real DUT")


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    if config.option.sweep_points is None:
        config.option.sweep_points = NIGHTLY_SWEEP_POINTS if config.option.nightly else DEFAULT_SWEEP_POINTS
    if config.option.nightly:
        os.environ.setdefault("HIL_NIGHTLY", "1")  # hypothesis profiles and subprocesses see the nightly budget too
    hil = HilSession(config)
    config.stash[STASH_KEY] = hil
    if config.getoption("--rack"):
        from hil.rack import scheduling as rackrun

        hil.rack = rackrun.load_rack_option(config)
        if getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput"):
            hil.controller = rackrun.RackController(config, hil.rack)
            config.pluginmanager.register(hil.controller, "hil-rack-controller")
        else:
            hil.interrupt = rackrun.install_interrupt(lambda: hil.broken, lambda: hil.running)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    """After a test body that passed, its measurements decide too: one outside its limits fails the test."""
    result = yield
    measurements = pyfuncitem.stash.get(MEASUREMENTS, None)
    if measurements is not None:
        verdict = measurement_verdict(measurements, expected_violations(pyfuncitem))
        if verdict is not None:
            raise MeasurementOutOfLimits(verdict)
    gaps = pyfuncitem.stash.get(GAPS, [])
    if gaps:  # everything else passed; a check that could not run makes the case NOT COVERED, not PASS
        pytest.skip("; ".join(dict.fromkeys(gaps)))
    return result


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    hil: HilSession = config.stash[STASH_KEY]
    for item in items:
        if item.get_closest_marker("nightly") and not config.getoption("--nightly"):
            item.add_marker(pytest.mark.skip(reason="nightly work: run with --nightly (or HIL_NIGHTLY=1)"))
    ours = [item for item in items if uses_bench(item)]
    if not ours:
        return  # inert: no bench file is read for a run that does not use the bench
    cfg = hil.cfg
    allure_audit.check_requirement_ids(ours)
    select_benches(hil, cfg, ours)
    for item in ours:
        if item.get_closest_marker("sim_only") and not cfg.virtual:
            item.add_marker(pytest.mark.skip(reason=f"sim_only: bench {cfg.bench} is real"))
        if item.get_closest_marker("irreversible") and not cfg.virtual and not config.getoption("--allow-irreversible"):
            item.add_marker(pytest.mark.skip(reason="irreversible on a real DUT: pass --allow-irreversible"))
        allure_audit.label_item(item)
        if allure is not None:
            fault = item.get_closest_marker("fault")
            if fault is not None:
                row = fault.kwargs.get("row", fault.args[0] if fault.args else None)
                item.add_marker(allure.tag(f"fault matrix row {row}"))


def select_benches(hil: HilSession, cfg: BenchConfig, items: list[pytest.Item]) -> None:
    """Skip, with the reason, tests this bench cannot serve (`@pytest.mark.bench`, fixtures that need an instrument).

    In an xdist rack run the list goes to the controller's scheduler too, so these tests go to a
    worker whose bench serves them and are skipped only when no worker's bench does.
    """
    from hil.rack import scheduling as rackrun
    from hil.rack.inventory import derived_tags

    if hil.rack is not None and hil.rack_worker is not None and hil.rack_worker.bench is not None:
        tags = hil.rack_worker.bench.tags
    else:
        tags = derived_tags(cfg)
    cannot: list[str] = []
    first: list[str] = []
    for item in items:
        need = rackrun.item_need(item)
        if item.get_closest_marker("slow"):
            first.append(item.nodeid)
        if not need.served_by(tags):
            cannot.append(item.nodeid)
            item.add_marker(pytest.mark.skip(reason=rackrun.skip_reason(need, hil.rack, cfg.bench, tags)))
    side = getattr(hil.config, "workerinput", {}).get(rackrun.SIDE_DIR_KEY)
    if side:
        bench = hil.rack_worker.bench.name if hil.rack_worker and hil.rack_worker.bench else None
        rackrun.write_side_file(Path(side), os.environ.get("PYTEST_XDIST_WORKER", "gw0"), bench, hil.broken,
                                cannot, first)


@contextmanager
def _running(item: pytest.Item) -> Iterator[None]:
    """A test's setup or call is running: a lost lease interrupts it (rack mode)."""
    hil: HilSession = item.config.stash[STASH_KEY]
    hil.running = True
    try:
        yield
    finally:
        hil.running = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _running(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # Labelled here, not in the bench fixture: tests without it (the sim-only sweep) ran on the bench too.
    label_bench(item.config.stash[STASH_KEY])
    with _running(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    record_failure(item, report)
    if (report.when == "call" or (report.when == "setup" and report.outcome != "passed")) and uses_bench(item):
        hil: HilSession = item.config.stash[STASH_KEY]
        fault = item.get_closest_marker("fault")
        rows = []
        expect = ""
        if fault is not None:
            row = fault.kwargs.get("row", fault.args[0] if fault.args else None)
            rows = list(row) if isinstance(row, (list, tuple)) else [row]
            expect = fault.kwargs.get("expect", "")
        reqs = [rid for m in item.iter_markers("requirement") for rid in m.args]
        evidence = hil.evidence_root / safe(item.nodeid)
        outcome_name = report.outcome if report.when == "call" else ("error" if report.failed else report.outcome)
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        if hil.rack is not None and hil.broken:
            from hil.rack.scheduling import BROKEN_PROPERTY

            report.user_properties.append((BROKEN_PROPERTY, hil.broken))
        hil.records.append({"nodeid": item.nodeid, "name": item.name, "outcome": outcome_name,
                            "bench": hil._cfg.bench if hil._cfg is not None else None,
                            "duration_s": report.duration, "fault_rows": rows, "expect": expect,
                            "requirements": reqs, "evidence_dir": str(evidence), "reason": reason,
                            "measurements": [m.as_dict() for m in item.stash.get(MEASUREMENTS, [])]})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    hil: HilSession = session.config.stash[STASH_KEY]
    try:
        if hil.controller is not None:
            write_rack_reports(hil)
        elif hasattr(hil.config, "workerinput") and hil.rack is not None:
            hand_to_controller(hil)
        elif hil.opened and hil.records:  # only runs against a bench produce evidence reports
            write_reports(hil)
    finally:
        hil.close()
