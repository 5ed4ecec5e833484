"""From a campaign file to a plan: the fleet's vehicles, the targets, each stage's vehicles and each vehicle's field condition.

Everything here is deterministic: the same file gives the same plan (samples and field conditions come
from the file's seeds), so two rehearsals of one campaign differ only in what the boards do.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from hil.campaign.spec import BadBuild, Campaign, ChargerUnplugged, LinkLost, PowerCut, Stage, Window
from hil.errors import CampaignError


@dataclass(frozen=True)
class Vehicle:
    """A vehicle of the fleet: the identity a board is given when it plays it."""

    vin: str
    depot: str
    group: str
    variant: str
    window: Window

    def describe(self) -> str:
        return f"{self.vin} ({self.depot}, {self.group}, {self.variant})"


@dataclass(frozen=True)
class Assignment:
    """What the rehearsal does with one vehicle: its stage and the field condition it meets (if any)."""

    vehicle: Vehicle
    stage: str
    condition: str | None = None
    #: The condition's parameters for this vehicle (where a fault lands, which image), drawn from its seed.
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class StagePlan:
    """One stage and the vehicles it takes, in the order they are played."""

    spec: Stage
    assignments: list[Assignment]


@dataclass
class Plan:
    """The whole rehearsal before it runs."""

    campaign: Campaign
    fleet: list[Vehicle]
    targets: list[Vehicle]
    stages: list[StagePlan]

    @property
    def not_targeted(self) -> list[Vehicle]:
        chosen = {v.vin for v in self.targets}
        return [v for v in self.fleet if v.vin not in chosen]

    def conditions(self) -> dict[str, list[str]]:
        """Condition name -> VINs that meet it."""
        out: dict[str, list[str]] = defaultdict(list)
        for stage in self.stages:
            for a in stage.assignments:
                if a.condition:
                    out[a.condition].append(a.vehicle.vin)
        return dict(out)

    def variants(self) -> list[str]:
        return sorted({v.variant for v in self.targets})


def fleet_vehicles(campaign: Campaign) -> list[Vehicle]:
    """Every vehicle of the fleet: the generated ones depot by depot (serial numbers in order), then the listed ones."""
    fleet = campaign.fleet
    width = 17 - len(fleet.vin_prefix)
    depots = {d.name: d for d in fleet.depots}
    out = []
    serial = 0
    for depot in fleet.depots:
        for variant, count in depot.vehicles.items():
            for _ in range(count):
                serial += 1
                out.append(Vehicle(f"{fleet.vin_prefix}{serial:0{width}d}", depot.name, depot.group, variant, depot.window))
    for v in fleet.vehicles:
        depot = depots[v.depot]
        out.append(Vehicle(v.vin, depot.name, v.group or depot.group, v.variant, depot.window))
    return out


def _matches(sel: Any, v: Vehicle) -> bool:
    return bool(sel.matches(v.vin, v.depot, v.group, v.variant))


def spread_sample(candidates: list[Vehicle], n: int, seed: int) -> list[Vehicle]:
    """`n` vehicles spread over hardware variants and depots: each pick is a vehicle of the variant picked
    least so far, from the depot picked least so far (ties broken by a seeded shuffle)."""
    rng = random.Random(seed)
    pool = list(candidates)
    rng.shuffle(pool)
    order = {v.vin: i for i, v in enumerate(pool)}
    by_variant: dict[str, int] = defaultdict(int)
    by_depot: dict[str, int] = defaultdict(int)
    picked: list[Vehicle] = []
    while pool and len(picked) < n:
        best = min(pool, key=lambda v: (by_variant[v.variant], by_depot[v.depot], order[v.vin]))
        pool.remove(best)
        picked.append(best)
        by_variant[best.variant] += 1
        by_depot[best.depot] += 1
    return picked


def _stage_vehicles(stages: list[Stage], targets: list[Vehicle]) -> list[tuple[Stage, list[Vehicle]]]:
    left = list(targets)
    out = []
    for i, stage in enumerate(stages):
        chosen = [v for v in left if _matches(stage, v)] if stage.given() or stage.rest else list(left)
        if stage.sample is not None:
            chosen = spread_sample(chosen, stage.sample, stage.seed)
        if not chosen:
            raise CampaignError(f"stages.{i} ({stage.name}): selects no vehicle (the targets left after the earlier "
                                f"stages: {len(left)})")
        if stage.sample is not None and len(chosen) < stage.sample:
            raise CampaignError(f"stages.{i} ({stage.name}): sample {stage.sample} but only {len(chosen)} vehicles match")
        taken = {v.vin for v in chosen}
        out.append((stage, [v for v in left if v.vin in taken] if stage.sample is None else chosen))
        left = [v for v in left if v.vin not in taken]
    if left:
        raise CampaignError(f"{len(left)} targeted vehicles are in no stage (e.g. {left[0].describe()}); "
                            "add a last stage with rest: true, or narrow the targets")
    return out


def _count(rate: float, pool: int) -> int:
    """Vehicles that meet a condition: the rate of the pool, at least one (a rate is never rounded away)."""
    return max(1, round(rate * pool))


def _params(name: str, cond: Any, rng: random.Random) -> dict[str, Any]:
    if isinstance(cond, BadBuild):
        return {"image": cond.image}
    if isinstance(cond, LinkLost):
        return {"at": round(rng.uniform(*cond.at), 3)}
    if isinstance(cond, PowerCut):
        return {"off_s": cond.off_s}
    if isinstance(cond, ChargerUnplugged):
        return {"when": cond.when}
    if name == "corrupted_download":
        return {"bit": rng.randrange(0, 8 * 1024)}  # a bit of the payload's first KiB
    return {}


def assign_conditions(campaign: Campaign, targets: list[Vehicle]) -> dict[str, tuple[str, dict[str, Any]]]:
    """VIN -> (condition, parameters). Each condition picks its vehicles with its own seed among those that
    meet none yet; the bad build takes its variant's vehicles first."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    ordered = sorted(targets, key=lambda v: v.vin)
    for name, cond in campaign.conditions.items():
        rng = random.Random(cond.seed)
        pool = [v for v in ordered if v.vin not in out]
        if isinstance(cond, BadBuild):
            pool = [v for v in pool if v.variant == cond.variant]
            if not pool:
                raise CampaignError(f"conditions.bad_build: no targeted vehicle has variant {cond.variant}")
            n = _count(cond.rate, len([v for v in targets if v.variant == cond.variant]))
        else:
            n = _count(cond.rate, len(targets))
        if n > len(pool):
            raise CampaignError(f"conditions.{name}: rate {cond.rate} needs {n} vehicles, only {len(pool)} targeted "
                                "vehicles meet no other condition")
        for v in sorted(rng.sample(pool, n), key=lambda v: v.vin):
            out[v.vin] = (name, _params(name, cond, rng))
    return out


def make_plan(campaign: Campaign) -> Plan:
    """The rehearsal's plan; CampaignError when the stages or conditions cannot be met by the targets."""
    fleet = fleet_vehicles(campaign)
    targets = [v for v in fleet if _matches(campaign.targets, v)]
    if not targets:
        raise CampaignError("targets: match no vehicle of the fleet")
    conditions = assign_conditions(campaign, targets)
    stages = []
    for stage, vehicles in _stage_vehicles(campaign.stages, targets):
        assignments = []
        for v in vehicles:
            cond, params = conditions.get(v.vin, (None, {}))
            assignments.append(Assignment(v, stage.name, cond, params))
        stages.append(StagePlan(stage, assignments))
    return Plan(campaign, fleet, targets, stages)


def describe(plan: Plan) -> Iterable[str]:
    """Lines for `hil campaign check`: stages, their vehicles, and the field conditions."""
    c = plan.campaign
    yield (f"campaign {c.campaign}: release {c.release.name} ({c.release.kind}: "
           f"{c.release.image or c.release.package}); fleet {c.fleet.name}: {len(plan.fleet)} vehicles at "
           f"{len(c.fleet.depots)} depots, {len(plan.targets)} targeted")
    for sp in plan.stages:
        variants = sorted({a.vehicle.variant for a in sp.assignments})
        depots = sorted({a.vehicle.depot for a in sp.assignments})
        yield (f"  stage {sp.spec.name}: {len(sp.assignments)} vehicles ({', '.join(variants)}; depots "
               f"{', '.join(depots)}), success >= {sp.spec.success_threshold:g} %, stop above "
               f"{sp.spec.error_threshold:g} % errors")
    stage_of = {a.vehicle.vin: sp.spec.name for sp in plan.stages for a in sp.assignments}
    for name, vins in plan.conditions().items():
        shown = ", ".join(f"{v} in {stage_of[v]}" for v in vins[:4])
        yield f"  {name}: {len(vins)} vehicle{'s' if len(vins) != 1 else ''} ({shown}{', ...' if len(vins) > 4 else ''})"
