"""Fleet campaign rehearsal: a campaign file rolled out in stages over a rack of benches or a virtual fleet.

`spec` (the campaign file), `plan` (vehicles, stages, field conditions), `gateway` (one vehicle played on
a bench: identity, background download, install in the charging window, the board's own record),
`reconcile` (the report's entry against the board's history and DTCs), `results` (outcomes, stage
decisions), `pool` (benches, rack leases, the virtual fleet), `runner` (the stages), `report`
(Markdown, JSON, Allure epic, plot). `rehearse_on_bench` runs a campaign on one open bench.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["rehearse_on_bench"]


def rehearse_on_bench(campaign: Any, bench: Any, out_dir: Path | None = None, *, allure_dir: Path | None = None) -> Any:
    """Rehearse `campaign` (a `spec.Campaign`) on one open bench (`hil.bench.bench.Bench`), vehicle after
    vehicle; the deployment report (Markdown, JSON, plot; the Allure epic into `allure_dir` if given) goes
    to `out_dir` when given. Returns the `runner.Rehearsal`."""
    import time

    from hil.campaign import report
    from hil.campaign.gateway import ReleaseArtifacts
    from hil.campaign.plan import make_plan
    from hil.campaign.pool import BenchSlot, Context
    from hil.campaign.runner import rehearse

    plan = make_plan(campaign)
    t0 = time.monotonic()
    ctx = Context(campaign, ReleaseArtifacts(campaign), lambda: time.monotonic() - t0,
                  evidence_dir=out_dir / "vehicles" if out_dir is not None else None)
    slot = BenchSlot(bench)
    try:
        run = rehearse(plan, [slot], ctx, where=f"bench {bench.cfg.bench}")
    finally:
        slot.close()
    if out_dir is not None:
        report.write(run, out_dir, allure_dir=allure_dir)
    return run
