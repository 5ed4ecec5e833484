"""Runs a campaign's stages over the slots (benches or virtual boards) it was given.

Stage after stage, as hawkBit starts its rollout groups: every slot plays the next vehicle of the
stage that its hardware variant serves, until the stage is done. After every vehicle the stage's
error rate is checked against its error threshold; once it is passed the campaign stops there
(vehicles of that stage not yet started, and every later stage, are held: they stay on the old
release - and each held vehicle's board is still checked). A stage that ends below its success
threshold stops the campaign too. No scheduler of our own: a queue per stage and one thread per slot.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from hil.campaign.plan import Assignment, Plan, StagePlan
from hil.campaign.pool import Context, Slot, failed_result
from hil.campaign.results import Outcome, StageDecision, StageTally, VehicleResult, decide, error_threshold_passed
from hil.errors import BenchBroken, CampaignError


@dataclass
class StageRun:
    """One stage as it ran."""

    plan: StagePlan
    tally: StageTally
    decision: StageDecision
    started_s: float = 0.0
    ended_s: float = 0.0


@dataclass
class Rehearsal:
    """A campaign rehearsal as it ran: every vehicle's result and every stage's decision."""

    plan: Plan
    slots: list[str]
    where: str  # "rack <name>", "virtual fleet of N boards", "bench <name>"
    stages: list[StageRun] = field(default_factory=list)
    results: list[VehicleResult] = field(default_factory=list)
    stopped_at: str | None = None
    started_epoch: float = field(default_factory=time.time)
    wall_s: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def findings(self) -> list[tuple[str, str]]:
        """(VIN, finding) of every vehicle."""
        return [(r.vin, f) for r in self.results for f in r.findings]

    @property
    def passed(self) -> bool:
        """The rehearsal is sound: every vehicle rehearsed, the report agrees with every board, every board works."""
        return not self.findings and len(self.results) == len(self.plan.targets)

    def counts(self) -> dict[str, int]:
        out = {o.value: 0 for o in Outcome}
        for r in self.results:
            out[r.outcome.value] += 1
        return out


class _Progress:
    """A rich progress bar per stage (or nothing, in a test or a log file)."""

    def __init__(self, plan: Plan, enabled: bool) -> None:
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), console=Console(stderr=True))
        for sp in plan.stages:
            self._tasks[sp.spec.name] = self._bar.add_task(f"stage {sp.spec.name}", total=len(sp.assignments),
                                                           counts="", start=False)

    def __enter__(self) -> "_Progress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start(self, stage: str) -> None:
        if self._bar is not None:
            self._bar.start_task(self._tasks[stage])

    def advance(self, stage: str, tally: StageTally) -> None:
        if self._bar is not None:
            shown = ", ".join(f"{n} {o.value}" for o, n in tally.counts.items() if n)
            self._bar.update(self._tasks[stage], completed=tally.done, counts=shown)

    def print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)


def rehearse(plan: Plan, slots: Sequence[Slot], ctx: Context, *, where: str, progress: bool = False,
             log: Callable[[str], None] = lambda line: None) -> Rehearsal:
    """Run every stage of `plan` on `slots`; returns the rehearsal (the report is written from it).

    CampaignError before anything runs when a hardware variant of the targets has no slot to play it.
    """
    unserved = sorted({v.variant for v in plan.targets if not any(s.serves(v.variant) for s in slots)})
    if unserved:
        raise CampaignError(f"no bench plays hardware variant {', '.join(unserved)} (benches: "
                            f"{', '.join(s.name for s in slots) or 'none'})")
    run = Rehearsal(plan, [s.name for s in slots], where, load_before=os.getloadavg())
    t0 = time.monotonic()
    with _Progress(plan, progress) as bar:
        def note(line: str) -> None:
            log(line)
            bar.print(line)

        for sp in plan.stages:
            held_by = run.stopped_at
            bar.start(sp.spec.name)
            stage = StageRun(sp, StageTally(len(sp.assignments)), StageDecision(sp.spec.name, False, ""),
                             started_s=ctx.clock())
            _run_stage(sp, slots, ctx, stage, run, held_by, bar, note)
            stage.ended_s = ctx.clock()
            if held_by is not None:
                stage.decision = StageDecision(sp.spec.name, False, f"held: the campaign stopped at stage {held_by}")
            else:
                stage.decision = decide(sp.spec.name, sp.spec.success_threshold, sp.spec.error_threshold, stage.tally,
                                        last=sp is plan.stages[-1])
                if not stage.decision.go_on:  # a passed error threshold always decides to stop
                    run.stopped_at = sp.spec.name
            run.stages.append(stage)
            note(f"stage {sp.spec.name}: {stage.decision.why}")
        for slot in slots:
            try:
                slot.finish(ctx)
            except Exception as exc:  # the report is written anyway; the bench's state is named
                note(f"bench {slot.name} could not be put back as found: {type(exc).__name__}: {exc}")
    run.wall_s = time.monotonic() - t0
    run.load_after = os.getloadavg()
    return run


def _run_stage(sp: StagePlan, slots: Sequence[Slot], ctx: Context, stage: StageRun, run: Rehearsal,
               held_by: str | None, bar: _Progress, note: Callable[[str], None]) -> bool:
    """Every vehicle of one stage over the slots; True when its error threshold was passed."""
    pending: deque[Assignment] = deque(sp.assignments)
    lock = threading.Lock()
    stopped: list[str] = []  # the stage whose error threshold stopped the campaign (this one), once passed

    def take(slot: Slot) -> tuple[Assignment, str | None] | None:
        with lock:
            if slot.broken:
                return None
            for a in pending:
                if slot.serves(a.vehicle.variant):
                    pending.remove(a)
                    return a, held_by or (stopped[0] if stopped else None)
            return None

    def work(slot: Slot) -> None:
        while True:
            got = take(slot)
            if got is None:
                return
            a, hold = got
            try:
                result = slot.play(ctx, a, hold)
            except BenchBroken as exc:
                slot.broken = str(exc)
                result = failed_result(a, slot.name, f"bench {slot.name} broke: {exc}", ctx.clock)
            except Exception as exc:  # a bug must show in the report as this vehicle's failure, never vanish
                result = failed_result(a, slot.name, f"{type(exc).__name__}: {exc}", ctx.clock)
            with lock:
                run.results.append(result)
                stage.tally.add(result.outcome)
                if (held_by is None and not stopped
                        and error_threshold_passed(sp.spec.error_threshold, stage.tally)):
                    stopped.append(sp.spec.name)
                bar.advance(sp.spec.name, stage.tally)
            note(_line(result))

    threads = [threading.Thread(target=work, args=(s,), name=f"campaign-{s.name}", daemon=True) for s in slots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in list(pending):  # every slot that could play it broke
        why = "; ".join(f"{s.name}: {s.broken}" for s in slots if s.broken) or "no bench serves its variant"
        result = failed_result(a, "-", f"no bench left to play it ({why})", ctx.clock)
        run.results.append(result)
        stage.tally.add(result.outcome)
        note(_line(result))
    return bool(stopped)


def _line(r: VehicleResult) -> str:
    cond = f" [{r.condition}]" if r.condition else ""
    why = f" ({r.reason})" if r.reason else ""
    found = f"  FINDINGS: {'; '.join(r.findings)}" if r.findings else ""
    return (f"[{r.ended_s:8.1f} s] {r.stage} {r.vin} ({r.depot}, {r.variant}) on {r.bench}{cond}: "
            f"{r.outcome.value}{why}, {r.version_before or '?'} -> {r.version_after or '?'}{found}")
