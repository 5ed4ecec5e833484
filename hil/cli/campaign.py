"""`hil campaign ...`: check a campaign file, and rehearse it on a rack of benches or on a virtual fleet."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click
from rich.console import Console as RichConsole
from rich.table import Table

from hil.cli.common import bench_option, load_bench_config
from hil.errors import BenchConfigError, CampaignError, HilError

#: Exit status of `hil campaign run` when the campaign stopped itself (a stage passed its error threshold or
#: missed its success threshold) and the rehearsal was sound. Findings exit with 1, a usage error with 2.
EXIT_STOPPED = 3


@click.group("campaign")
def campaign() -> None:
    """Fleet campaigns (campaigns/*.yaml, docs/campaigns.md): a release rolled out in stages."""


def _load(campaign_file: str) -> tuple[object, object]:
    from hil.campaign.plan import make_plan
    from hil.campaign.spec import load_campaign

    try:
        c = load_campaign(campaign_file)
        return c, make_plan(c)
    except CampaignError as exc:
        raise click.ClickException(str(exc)) from None


@campaign.command("check")
@click.argument("campaign_file", type=click.Path(dir_okay=False))
def check(campaign_file: str) -> None:
    """Validate CAMPAIGN_FILE and show its plan: stages, their vehicles, the field conditions."""
    from hil.campaign.plan import describe

    _c, plan = _load(campaign_file)
    for line in describe(plan):  # type: ignore[arg-type]
        click.echo(line)


@campaign.command("run")
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--rack", "rack_file", type=click.Path(dir_okay=False), default=None,
              help="rehearse on the benches of this rack (leased through its lease backend)")
@click.option("--fleet", "fleet_size", type=click.IntRange(1, 64), default=None,
              help="rehearse on a virtual fleet: this many virtual boards side by side, one per vehicle in turn")
@bench_option("--fleet only: the virtual bench file the fleet's boards are made from", required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="report directory [default: reports/campaigns/<campaign>-<time>]")
@click.option("--keep-boards", is_flag=True, help="--fleet: keep every vehicle's flash file (its board) afterwards")
@click.option("--no-progress", is_flag=True, help="no progress bars (a line per vehicle instead)")
def run(campaign_file: str, rack_file: str | None, fleet_size: int | None, bench_file: str, out_dir: str | None,
        keep_boards: bool, no_progress: bool) -> None:
    """Rehearse CAMPAIGN_FILE stage by stage on a rack (--rack) or a virtual fleet (--fleet N).

    Exit status: 0 every stage ran and the report agrees with every board; 1 findings (the rehearsal
    failed) or it could not run (the message says why); 3 the campaign stopped itself (a stage passed its
    error threshold or missed its success threshold) and the rehearsal was sound.
    """
    from hil.campaign import report
    from hil.campaign.gateway import ReleaseArtifacts
    from hil.campaign.plan import Plan
    from hil.campaign.pool import Context, FleetSlot, Slot, VirtualFleet, lease_rack
    from hil.campaign.runner import rehearse
    from hil.campaign.spec import Campaign

    if (rack_file is None) == (fleet_size is None):
        raise click.UsageError("give exactly one of --rack RACK (benches) or --fleet N (virtual boards)")
    c, plan = _load(campaign_file)
    assert isinstance(c, Campaign) and isinstance(plan, Plan)
    out = Path(out_dir) if out_dir else Path("reports/campaigns") / f"{c.campaign}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "campaign.log").open("a", encoding="utf-8")
    # Library warnings (a UDS request that timed out while a board rebooted, as expected during an install)
    # go to a file beside the report, not between the progress bars.
    logging.basicConfig(filename=str(out / "campaign-debug.log"), level=logging.WARNING,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
    console = RichConsole(stderr=True)

    def log(line: str) -> None:
        log_file.write(line + "\n")
        log_file.flush()
        if no_progress:
            click.echo(line, err=True)

    t0 = time.monotonic()
    slots: list[Slot] = []
    fleet: VirtualFleet | None = None
    try:
        if rack_file is not None:
            from hil.rack.inventory import load_rack

            try:
                rack = load_rack(rack_file)
            except BenchConfigError as exc:
                raise click.ClickException(str(exc)) from None
            artifacts = ReleaseArtifacts(c)
            slots.extend(lease_rack(rack, plan.variants(), out / "benches", log))
            where = f"rack {rack.name}"
        else:
            assert fleet_size is not None
            template = load_bench_config(bench_file)
            fleet = VirtualFleet(template, out / "fleet", keep_boards=keep_boards)
            artifacts = ReleaseArtifacts(c)
            console.print(f"building the release for {', '.join(plan.variants())} ...")
            fleet.prepare(plan, artifacts)
            slots.extend(FleetSlot(fleet, i) for i in range(fleet_size))
            where = f"virtual fleet of {fleet_size} boards (from {template.bench})"
        ctx = Context(c, artifacts, lambda: time.monotonic() - t0, evidence_dir=out / "vehicles")
        console.print(f"campaign {c.campaign}: {len(plan.targets)} vehicles in {len(plan.stages)} stages on {where}")
        rehearsal = rehearse(plan, slots, ctx, where=where, progress=not no_progress, log=log)
    except (CampaignError, HilError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        for slot in slots:
            slot.close()
        if fleet is not None:
            fleet.close()
        log_file.close()
    paths = report.write(rehearsal, out, allure_dir=out / report.ALLURE_DIR)
    table = Table(title=f"campaign {c.campaign} on {where}: {rehearsal.wall_s:.0f} s")
    for col in ("stage", "vehicles", "updated", "rolled back", "refused", "pending", "held", "failed", "decision"):
        table.add_column(col)
    for st in rehearsal.stages:
        n = {o.value: k for o, k in st.tally.counts.items()}
        table.add_row(st.plan.spec.name, str(st.tally.size), *(str(n[k]) for k in (
            "updated", "rolled back", "refused", "pending", "held", "failed")), st.decision.why.split(":")[0])
    RichConsole().print(table)
    verdict = "PASSED" if rehearsal.passed else f"FAILED ({len(rehearsal.findings)} findings)"
    click.echo(f"rehearsal {verdict}; report: {paths['markdown']} (also {paths['json'].name}, {paths['plot'].name}, "
               f"Allure results in {paths['allure']})")
    if not rehearsal.passed:
        raise SystemExit(1)
    if rehearsal.stopped_at:
        click.echo(f"the campaign stopped at stage {rehearsal.stopped_at}")
        raise SystemExit(EXIT_STOPPED)
