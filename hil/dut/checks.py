"""Verdict checks every update test case makes, composed from the DUT API (black-box: UDS and CAN only)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from hil.bench.config import TimingBudgets
from hil.bench.contract import BootMode, Reason, UpdateState
from hil.dut.dut import Dut, wait_dut_up  # noqa: F401  (testcases import wait_dut_up from here too)
from hil.errors import HilTimeout
from hil.timing.measure import Measurement


class VerdictError(AssertionError):
    """The DUT did not end where the test case expects; the message lists every mismatch."""


@dataclass(frozen=True)
class Expected:
    """Where the DUT must end: the image it runs, the update status it reports, the configuration it keeps."""

    version: str
    state: UpdateState | None = None
    reason: Reason | None = None
    config: dict[str, Any] | None = None


def check_final_state(dut: Dut, budgets: TimingBudgets, expected: Expected, measure: Any = None) -> None:
    """The DUT runs `expected.version` in application mode, reports the expected status and configuration,
    and its SOC core is running again within budget. Never neither image."""
    problems: list[str] = []
    wait_dut_up(dut, max(budgets.soc_restart_s * 3, 15.0))
    info = dut.boot_info()
    if info.mode is not BootMode.APPLICATION:
        problems.append(f"boot mode {info.mode.name}: no application image runs (neither old nor new)")
    version = dut.version()
    if version != expected.version:
        problems.append(f"F189 = {version!r}, expected {expected.version!r}")
    supplier = dut.supplier_version()
    if not supplier.startswith(expected.version):
        problems.append(f"F195 = {supplier!r}, expected it to start with {expected.version!r}")
    status = dut.status()
    if expected.state is not None and status.state is not expected.state:
        problems.append(f"update state {status.state.name}, expected {expected.state.name}")
    if expected.reason is not None and status.reason is not expected.reason:
        problems.append(f"update reason {status.reason.name}, expected {expected.reason.name}")
    if expected.config is not None:
        config = dut.config()
        missing = {k: v for k, v in expected.config.items() if config.get(k) != v}
        if missing:
            problems.append(f"configuration differs: expected {missing}, DUT has "
                            f"{ {k: config.get(k) for k in missing} }")
    start = time.monotonic()
    try:
        dut.wait_running(budgets.soc_restart_s)
        soc_s = time.monotonic() - start
    except HilTimeout as exc:
        problems.append(f"SOC core not running within {budgets.soc_restart_s} s: {exc.seen[:200]}")
        soc_s = float("inf")
    if measure is not None:
        measure(Measurement("soc_running_after_check", soc_s, "s", 0.0, budgets.soc_restart_s))
    if problems:
        raise VerdictError("DUT not in the expected final state:\n- " + "\n- ".join(problems))


def check_evidence(evidence_dir: Any, console: Any | None) -> None:
    """The evidence of this test is being kept: the CAN trace exists and the console saw the DUT."""
    from pathlib import Path

    d = Path(evidence_dir)
    problems = [f"{name} missing in {d}" for name in ("can.blf", "can.asc") if not (d / name).exists()]
    if console is not None and not console.text.strip():
        problems.append("console log is empty")
    if problems:
        raise VerdictError("evidence incomplete: " + "; ".join(problems))


