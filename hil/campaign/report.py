"""The deployment report: Markdown for the fleet manager, JSON for machines, an Allure epic for auditors,
and a plot of each stage's outcomes over time.

Per vehicle: the outcome (updated; rolled back with the board's reason; refused with its reason;
pending; held by a stopped campaign; failed), versions before and after, the field condition it met,
and whether its entry agrees with its board's own record. Per stage: the rates and the threshold
decision. The fleet's version table before and after. The verdict: every entry reconciled with its
board and zero vehicles without a working image - or the findings that say otherwise.
"""

from __future__ import annotations

import json
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hil.campaign.results import Outcome, VehicleResult
from hil.campaign.runner import Rehearsal

#: File names in the report directory.
MARKDOWN = "campaign-report.md"
JSON = "campaign-report.json"
PLOT = "campaign-stages.png"
ALLURE_DIR = "allure-results"

_COLOURS = {Outcome.UPDATED: "tab:green", Outcome.ROLLED_BACK: "tab:orange", Outcome.REFUSED: "tab:red",
            Outcome.PENDING: "tab:blue", Outcome.HELD: "tab:gray", Outcome.FAILED: "black"}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def version_table(run: Rehearsal) -> dict[str, dict[str, int]]:
    """version -> {"before": n, "after": n}: what the targeted vehicles ran before and after the campaign."""
    table: dict[str, dict[str, int]] = {}
    for r in run.results:
        for when, version in (("before", r.version_before), ("after", r.version_after)):
            row = table.setdefault(version or "?", {"before": 0, "after": 0})
            row[when] += 1
    return dict(sorted(table.items()))


def depot_versions(run: Rehearsal) -> dict[str, dict[str, int]]:
    """depot -> {version after: n}."""
    out: dict[str, Counter[str]] = {}
    for r in run.results:
        out.setdefault(r.depot, Counter())[r.version_after or "?"] += 1
    return {d: dict(sorted(c.items())) for d, c in sorted(out.items())}


def summary(run: Rehearsal) -> dict[str, Any]:
    """The report as one JSON-ready object."""
    c = run.plan.campaign
    kind = c.release.kind
    without = [r.vin for r in run.results if not r.working_image]
    disagree = [r.vin for r in run.results if r.findings]
    minutes = run.wall_s / 60.0
    return {
        "campaign": c.campaign,
        "description": c.description,
        "release": {"name": c.release.name, "kind": kind, "image": c.release.image, "package": c.release.package},
        "fleet": {"name": c.fleet.name, "vehicles": len(run.plan.fleet), "depots": len(c.fleet.depots),
                  "targeted": len(run.plan.targets), "not_targeted": len(run.plan.not_targeted)},
        "where": run.where,
        "benches": run.slots,
        "started": _iso(run.started_epoch),
        "wall_s": round(run.wall_s, 1),
        "vehicles_per_minute": round(len(run.results) / minutes, 2) if minutes > 0 else None,
        "host": platform.node(),
        "load_average": {"before": [round(x, 2) for x in run.load_before],
                         "after": [round(x, 2) for x in run.load_after]},
        "counts": run.counts(),
        "stopped_at": run.stopped_at,
        "stages": [{"name": s.plan.spec.name, "vehicles": s.tally.size,
                    "counts": {o.value: n for o, n in s.tally.counts.items()},
                    "success_rate": round(s.tally.success_rate, 1), "error_rate": round(s.tally.error_rate, 1),
                    "success_threshold": s.plan.spec.success_threshold, "error_threshold": s.plan.spec.error_threshold,
                    "go_on": s.decision.go_on, "decision": s.decision.why,
                    "started_s": round(s.started_s, 1), "ended_s": round(s.ended_s, 1)} for s in run.stages],
        "versions": version_table(run),
        "versions_by_depot": depot_versions(run),
        "conditions": run.plan.conditions(),
        "reconciliation": {"vehicles": len(run.results), "agree": len(run.results) - len(disagree),
                           "disagree": len(disagree), "findings": [{"vin": v, "finding": f} for v, f in run.findings]},
        "without_working_image": without,
        "passed": run.passed,
        "vehicles": [r.as_dict() for r in _ordered(run)],
    }


def _ordered(run: Rehearsal) -> list[VehicleResult]:
    order = {sp.spec.name: i for i, sp in enumerate(run.plan.stages)}
    return sorted(run.results, key=lambda r: (order.get(r.stage, 99), r.vin))


# --------------------------------------------------------------------------- Markdown
def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def markdown(run: Rehearsal, plot_name: str | None = PLOT) -> str:
    """The deployment report a fleet manager reads."""
    s = summary(run)
    c = run.plan.campaign
    counts = s["counts"]
    lines = [f"# Deployment report: {c.campaign}", ""]
    if c.description:
        lines += [c.description, ""]
    verdict = "PASSED" if run.passed else "FAILED"
    lines += [f"**Rehearsal {verdict}**: {s['reconciliation']['agree']} of {len(run.results)} vehicles' entries agree "
              f"with their boards' own records (update history FD09, DTCs, F189); "
              f"{len(s['without_working_image'])} vehicles without a working image; "
              f"{len(run.findings)} findings.", ""]
    if run.stopped_at:
        held = [r for r in run.results if r.outcome is Outcome.HELD]
        lines += [f"**The campaign stopped at stage {run.stopped_at}**: "
                  f"{next(st.decision.why for st in run.stages if st.plan.spec.name == run.stopped_at)}. "
                  f"{len(held)} vehicles were held on their old release and not updated.", ""]
    else:
        lines += ["The campaign ran every stage.", ""]
    lines += [f"- release: {c.release.name} ({c.release.kind}: {c.release.image or c.release.package})",
              f"- fleet: {c.fleet.name}, {s['fleet']['vehicles']} vehicles at {s['fleet']['depots']} depots; "
              f"{s['fleet']['targeted']} targeted",
              f"- rehearsed on: {run.where} ({', '.join(run.slots[:8])}{', ...' if len(run.slots) > 8 else ''})",
              f"- started {s['started']}, wall time {run.wall_s:.0f} s, {s['vehicles_per_minute']} vehicles per minute; "
              f"load average {s['load_average']['before'][0]} -> {s['load_average']['after'][0]} on {s['host']}",
              "- outcomes: " + ", ".join(f"{n} {o}" for o, n in counts.items()), ""]
    lines += ["## Stages", ""]
    lines += _table(["stage", "vehicles", "updated", "rolled back", "refused", "pending", "held", "failed",
                     "success / threshold", "errors / threshold", "decision"],
                    [[st["name"], st["vehicles"], *(st["counts"][o.value] for o in
                      (Outcome.UPDATED, Outcome.ROLLED_BACK, Outcome.REFUSED, Outcome.PENDING, Outcome.HELD,
                       Outcome.FAILED)),
                      f"{st['success_rate']:g} % / {st['success_threshold']:g} %",
                      f"{st['error_rate']:g} % / {st['error_threshold']:g} %", st["decision"]] for st in s["stages"]])
    if plot_name:
        lines += ["", f"![outcomes of each stage over time]({plot_name})"]
    lines += ["", "## Fleet versions", ""]
    lines += _table(["version", "vehicles before", "vehicles after"],
                    [[v, n["before"], n["after"]] for v, n in s["versions"].items()])
    versions = sorted({v for d in s["versions_by_depot"].values() for v in d})
    lines += ["", "After the campaign, by depot:", ""]
    lines += _table(["depot", *versions], [[d, *(vs.get(v, 0) for v in versions)]
                                           for d, vs in s["versions_by_depot"].items()])
    for outcome, title, why in ((Outcome.ROLLED_BACK, "Rolled back", "the board's reason"),
                                (Outcome.REFUSED, "Refused", "the board's reason"),
                                (Outcome.PENDING, "Pending", "why"), (Outcome.FAILED, "Failed", "why")):
        rows = [r for r in _ordered(run) if r.outcome is outcome]
        if rows:
            lines += ["", f"## {title} ({len(rows)})", ""]
            lines += _table(["VIN", "depot", "variant", "stage", "field condition", why, "version"],
                            [[r.vin, r.depot, r.variant, r.stage, r.condition or "-", r.reason or "-",
                              r.version_after] for r in rows])
    held = [r for r in _ordered(run) if r.outcome is Outcome.HELD]
    if held:
        by_stage = Counter(r.stage for r in held)
        lines += ["", f"## Held by the stopped campaign ({len(held)})", "",
                  "Not started because the campaign stopped; each board was checked: still on its old release, "
                  "nothing in its history. By stage: " + ", ".join(f"{st} {n}" for st, n in by_stage.items()), ""]
        lines += [", ".join(r.vin for r in held)]
    lines += ["", "## Reconciliation with the boards", ""]
    if run.findings:
        lines += [f"{len(run.findings)} findings - the report and the boards disagree, or a board broke a promise:", ""]
        lines += [f"- {vin}: {f}" for vin, f in run.findings]
    else:
        lines += [f"Every one of the {len(run.results)} entries agrees with its board's update history, DTCs, "
                  "version, update status and identity; every board runs a confirmed image with its SOC core."]
    lines += ["", "## Every vehicle", ""]
    lines += _table(["VIN", "depot", "group", "variant", "stage", "condition", "outcome", "reason", "before", "after",
                     "board's history", "bench"],
                    [[r.vin, r.depot, r.group, r.variant, r.stage, r.condition or "-", r.outcome.value,
                      r.reason or "-", r.version_before, r.version_after,
                      "; ".join(map(str, r.board.history_new)) or "-", r.bench] for r in _ordered(run)])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plot
def plot(run: Rehearsal, path: Path) -> Path:
    """Each stage's outcomes over the rehearsal's time: one panel per stage, a cumulative line per outcome."""
    from hil.report import plots  # noqa: F401  (selects matplotlib's Agg backend before pyplot)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    stages = run.stages or []
    n = max(1, len(stages))
    fig, axes = plt.subplots(n, 1, figsize=(9.0, 2.4 * n + 0.6), dpi=100, squeeze=False)
    for ax, st in zip(axes[:, 0], stages):
        mine = sorted((r for r in run.results if r.stage == st.plan.spec.name), key=lambda r: r.ended_s)
        end = max([st.ended_s, *(r.ended_s for r in mine)])

        def line(times: list[float], **style: Any) -> None:
            ax.step([st.started_s, *times, end], [*range(0, len(times) + 1), len(times)], where="post", **style)

        for outcome in Outcome:
            times = [r.ended_s for r in mine if r.outcome is outcome]
            if times:
                line(times, color=_COLOURS[outcome], label=f"{outcome.value} ({len(times)})")
        errors = [r.ended_s for r in mine if r.is_error]
        if errors:
            line(errors, color="tab:red", ls="--", lw=0.9, label=f"errors, all kinds ({len(errors)})")
        ax.axhline(st.tally.size * st.plan.spec.error_threshold / 100.0, color="tab:red", lw=0.8, ls=":",
                   label=f"error threshold {st.plan.spec.error_threshold:g} %")
        ax.set_title(f"stage {st.plan.spec.name}: {st.decision.why.split(' - ')[0].split(':')[0]}", fontsize=9)
        ax.set_ylabel("vehicles")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the rehearsal started")
    fig.suptitle(f"campaign {run.plan.campaign.campaign}: outcomes per stage over time", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- Allure
def allure_epic(run: Rehearsal, results_dir: Path, report_dir: Path | None = None) -> Path:
    """Allure results: the campaign is an epic, each stage a feature, each vehicle a test under its outcome
    (the story). A vehicle passes when its entry agrees with its board and the board works; the campaign's
    own result carries the Markdown, JSON and plot."""
    import uuid

    from allure_commons.logger import AllureFileLogger
    from allure_commons.model2 import Attachment, Label, Parameter, Status, StatusDetails, TestResult

    logger = AllureFileLogger(str(results_dir))
    c = run.plan.campaign
    epic = f"Fleet campaign {c.campaign}"
    t0 = int(run.started_epoch * 1000)

    def labels(feature: str, story: str) -> list[Label]:
        return [Label("epic", epic), Label("feature", feature), Label("story", story),
                Label("parentSuite", epic), Label("suite", feature), Label("severity", "critical"),
                Label("framework", "bms-ota-hil campaign")]

    for r in _ordered(run):
        status = Status.FAILED if r.findings else Status.PASSED
        details = StatusDetails(message="\n".join(r.findings)) if r.findings else None
        result = TestResult(
            uuid=str(uuid.uuid4()), historyId=f"{c.campaign}/{r.vin}", testCaseId=f"{c.campaign}/{r.vin}",
            fullName=f"campaign.{c.campaign}.{r.stage}.{r.vin}", name=f"{r.vin} ({r.depot}, {r.variant}): {r.outcome.value}",
            status=status, statusDetails=details, stage="finished",
            start=t0 + int(r.started_s * 1000), stop=t0 + int(r.ended_s * 1000),
            labels=labels(f"stage {r.stage}", r.outcome.value),
            description=(f"Outcome **{r.outcome.value}**{f' ({r.reason})' if r.reason else ''}, "
                         f"{r.version_before} -> {r.version_after}. The board's history: "
                         f"{'; '.join(map(str, r.board.history_new)) or 'no new entry'}; DTCs: "
                         f"{', '.join(r.board.dtcs) or 'none'}."),
            parameters=[Parameter(k, str(v)) for k, v in (
                ("VIN", r.vin), ("depot", r.depot), ("vehicle group", r.group), ("hardware variant", r.variant),
                ("field condition", r.condition or "-"), ("bench", r.bench))])
        name = f"{uuid.uuid4()}-attachment.json"
        logger.report_attached_data(json.dumps(r.as_dict(), indent=1), name)
        result.attachments.append(Attachment(name="vehicle entry and board record", source=name,
                                             type="application/json"))
        logger.report_result(result)
    result = TestResult(uuid=str(uuid.uuid4()), historyId=f"{c.campaign}/report", testCaseId=f"{c.campaign}/report",
                        fullName=f"campaign.{c.campaign}.report", name=f"deployment report {c.campaign}",
                        status=Status.PASSED if run.passed else Status.FAILED, stage="finished",
                        statusDetails=None if run.passed else StatusDetails(
                            message="\n".join(f"{v}: {f}" for v, f in run.findings[:50])),
                        start=t0, stop=t0 + int(run.wall_s * 1000), labels=labels("deployment report", "report"),
                        description=(f"Stopped at stage {run.stopped_at}." if run.stopped_at else "Every stage ran.")
                        + " " + ", ".join(f"{n} {o}" for o, n in run.counts().items()))
    for fname, mime in ((MARKDOWN, "text/markdown"), (JSON, "application/json"), (PLOT, "image/png")):
        src = (report_dir / fname) if report_dir is not None else None
        if src is not None and src.is_file():
            name = f"{uuid.uuid4()}-attachment{src.suffix}"
            logger.report_attached_file(str(src), name)
            result.attachments.append(Attachment(name=fname, source=name, type=mime))
    logger.report_result(result)
    return results_dir


def write(run: Rehearsal, out_dir: Path, *, allure_dir: Path | None = None) -> dict[str, Path]:
    """The Markdown, JSON and plot into `out_dir`; the Allure epic into `allure_dir` when given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"plot": plot(run, out_dir / PLOT)}
    paths["json"] = out_dir / JSON
    paths["json"].write_text(json.dumps(summary(run), indent=1) + "\n")
    paths["markdown"] = out_dir / MARKDOWN
    paths["markdown"].write_text(markdown(run, PLOT))
    if allure_dir is not None:
        paths["allure"] = allure_epic(run, allure_dir, out_dir)
    return paths
