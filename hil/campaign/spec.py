"""The campaign file: what a fleet manager rolls out, to which vehicles, in which stages, under which field conditions.

A campaign YAML (`campaigns/*.yaml`, docs/campaigns.md) is validated like a bench file: a wrong field
stops the run with the file, the field path, the value and what is accepted. It holds

- `release`: a firmware image (an image role of each bench's catalogue, a recipe name or a .bin path)
  or a signed configuration package (a recipe name, or one per vehicle group);
- `fleet`: depots (vehicle group, charging window, vehicles per hardware variant) and listed vehicles;
- `targets`: which vehicles of the fleet (by VIN, depot, vehicle group, hardware variant; all by default);
- `stages`: the canary, then depots, then the rest, each with its success and error threshold (percent);
- `conditions`: the field conditions to rehearse, each with a rate (a fraction of the targeted
  vehicles) and a seed, so a rehearsal is the same every time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hil.bench import contract
from hil.bench.validation import format_validation_error
from hil.errors import CampaignError

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
#: A vehicle group as a board stores it (DID FD0C): 1-16 printable ASCII characters.
GROUP = r"^[\x21-\x7e]{1,16}$"
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- release
class Release(_Model):
    """What is rolled out: one firmware image or one signed configuration package."""

    name: str = Field(min_length=1, description="how the report names the release, e.g. '1.1.0 SOC estimator v2'")
    image: str | None = Field(None, min_length=1, description="an image role of each bench's catalogue (portable: "
                                                              "every bench maps it to its own signed build), a recipe "
                                                              "name or a .bin path")
    package: str | dict[str, str] | None = Field(None, description="a configuration package recipe, or vehicle group "
                                                                   "-> recipe (seasonal profiles per group)")

    @model_validator(mode="after")
    def _one(self) -> "Release":
        if (self.image is None) == (self.package is None):
            raise ValueError("give exactly one of image (a firmware release) or package (a configuration package)")
        return self

    @property
    def kind(self) -> str:
        """`firmware` or `package`."""
        return "firmware" if self.image is not None else "package"

    def package_for(self, group: str) -> str | None:
        """The package recipe for a vehicle of `group` (None: this release has none for that group)."""
        if isinstance(self.package, str):
            return self.package
        return (self.package or {}).get(group)


# --------------------------------------------------------------------------- fleet
class Window(_Model):
    """A depot's overnight charging window, local time (`22:00` to `05:00` crosses midnight)."""

    start: str = Field(description="HH:MM")
    end: str = Field(description="HH:MM")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _TIME.match(v):
            raise ValueError(f"{v!r} is not a time of day; accepted: HH:MM from 00:00 to 23:59")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> "Window":
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: the window would be empty")
        return self

    @property
    def duration_s(self) -> float:
        """Length of the window in seconds (across midnight when it ends earlier than it starts)."""
        def minutes(t: str) -> int:
            h, m = t.split(":")
            return int(h) * 60 + int(m)
        return ((minutes(self.end) - minutes(self.start)) % (24 * 60)) * 60.0

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


class Depot(_Model):
    """A depot: its vehicle group, charging window and how many vehicles of each hardware variant it has."""

    name: str = Field(pattern=NAME)
    group: str = Field(pattern=GROUP, description="vehicle group of its vehicles (DID FD0C), e.g. north")
    window: Window
    vehicles: dict[str, int] = Field(default_factory=dict, description="hardware variant (DID F191) -> number of "
                                                                        "vehicles; their VINs are generated")

    @field_validator("vehicles")
    @classmethod
    def _counts(cls, v: dict[str, int]) -> dict[str, int]:
        for variant, n in v.items():
            if not re.match(r"^[\x20-\x7e]+$", variant):
                raise ValueError(f"hardware variant {variant!r} must be printable ASCII (as DID F191 reads)")
            if n < 0:
                raise ValueError(f"{variant}: {n} vehicles; accepted: 0 or more")
        return v


class ListedVehicle(_Model):
    """One vehicle given by its VIN."""

    vin: str = Field(description="17 characters, ISO 3779 (digits and capitals without I, O, Q)")
    depot: str
    variant: str = Field(min_length=1, pattern=r"^[\x20-\x7e]+$", description="hardware variant (DID F191)")
    group: str | None = Field(None, pattern=GROUP, description="default: its depot's group")

    @field_validator("vin")
    @classmethod
    def _vin(cls, v: str) -> str:
        if not contract.is_vin(v):
            raise ValueError(f"not a VIN: {contract.VIN_LENGTH} characters of {contract.VIN_ALPHABET} accepted")
        return v


class Fleet(_Model):
    """The vehicles a fleet manager can target."""

    name: str = Field(min_length=1)
    vin_prefix: str = Field("VBMSF", description="generated VINs: this prefix, then a serial number to 17 characters")
    depots: list[Depot] = Field(min_length=1)
    vehicles: list[ListedVehicle] = Field(default_factory=list, description="vehicles listed by VIN")

    @field_validator("vin_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not 1 <= len(v) <= 12 or any(c not in contract.VIN_ALPHABET for c in v):
            raise ValueError(f"1-12 characters of {contract.VIN_ALPHABET} (the rest of the VIN is the serial number)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Fleet":
        names = [d.name for d in self.depots]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"depots {dup} are listed twice")
        generated = sum(sum(d.vehicles.values()) for d in self.depots)
        if generated >= 10 ** (contract.VIN_LENGTH - len(self.vin_prefix)):
            raise ValueError(f"{generated} generated vehicles do not fit the serial numbers after vin_prefix "
                             f"{self.vin_prefix!r}; use a shorter prefix")
        vins = [v.vin for v in self.vehicles]
        dup = sorted({v for v in vins if vins.count(v) > 1})
        if dup:
            raise ValueError(f"VINs {dup} are listed twice")
        for i, v in enumerate(self.vehicles):
            if v.depot not in names:
                raise ValueError(f"vehicles.{i}.depot: {v.depot!r} is no depot of the fleet; accepted: {', '.join(names)}")
            if v.vin.startswith(self.vin_prefix) and v.vin[len(self.vin_prefix):].isdigit():
                raise ValueError(f"vehicles.{i}.vin: {v.vin} has the form of a generated VIN (prefix {self.vin_prefix} "
                                 "and a serial number); give it another prefix")
        if generated + len(self.vehicles) == 0:
            raise ValueError("the fleet has no vehicles: give depots[].vehicles or vehicles")
        return self


# --------------------------------------------------------------------------- selection
class Selection(_Model):
    """Vehicles by VIN, depot, vehicle group and hardware variant; every field given must match (none: all)."""

    vehicles: list[str] | None = Field(None, description="VINs")
    depots: list[str] | None = None
    groups: list[str] | None = None
    variants: list[str] | None = Field(None, description="hardware variants (DID F191)")

    def given(self) -> bool:
        return any(v is not None for v in (self.vehicles, self.depots, self.groups, self.variants))

    def matches(self, vin: str, depot: str, group: str, variant: str) -> bool:
        return ((self.vehicles is None or vin in self.vehicles) and (self.depots is None or depot in self.depots)
                and (self.groups is None or group in self.groups)
                and (self.variants is None or variant in self.variants))


class Targets(Selection):
    """The vehicles of the fleet this campaign is for (a vehicle, a depot, a group, a variant; all by default)."""


class Stage(Selection):
    """One deployment group (hawkBit's rollout group): its vehicles and the thresholds that decide what comes next.

    A stage takes the targets no earlier stage took that match its filters; `sample: N` keeps N of them,
    spread over hardware variants and depots; `rest: true` takes every target left.
    """

    name: str = Field(pattern=NAME)
    sample: int | None = Field(None, ge=1, description="keep this many of the matching vehicles, spread over "
                                                        "hardware variants and depots (a canary)")
    seed: int = Field(0, description="which vehicles a sample keeps")
    rest: bool = Field(False, description="every target no earlier stage took (with the filters, if any)")
    success_threshold: float = Field(ge=0, le=100, description="percent of the stage's vehicles that must be updated "
                                                                "before the next stage starts")
    error_threshold: float = Field(ge=0, le=100, description="percent of the stage's vehicles that may fail (rolled "
                                                              "back, refused, failed); passing it stops the campaign")

    @model_validator(mode="after")
    def _picks(self) -> "Stage":
        if not (self.given() or self.sample or self.rest):
            raise ValueError("a stage needs vehicles, depots, groups, variants, sample or rest: true")
        return self


# --------------------------------------------------------------------------- field conditions
class Condition(_Model):
    """A field condition: how many vehicles meet it (a fraction of the targets) and the seed choosing which."""

    rate: float = Field(gt=0, le=1, description="fraction of the targeted vehicles (at least one vehicle)")
    seed: int = Field(description="chooses the vehicles (and where a fault lands): the same every rehearsal")


class LinkLost(Condition):
    """The gateway's link drops during the background download, then comes back: the download resumes."""

    at: tuple[float, float] = Field((0.5, 0.9), description="fraction of the image sent when the link drops "
                                                            "(drawn per vehicle in this range)")

    @field_validator("at")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] < 1:
            raise ValueError(f"{list(v)}: accepted [low, high] with 0 < low <= high < 1")
        return v


class PowerCut(Condition):
    """The supply drops during the install (while the bootloader swaps), then returns."""

    off_s: float = Field(0.5, gt=0, le=10, description="how long the supply stays off")


class ChargerUnplugged(Condition):
    """The charger is unplugged in the charging window: before the install (refused: pending) or during it."""

    when: str = Field("window_start", pattern=r"^(window_start|mid_install)$",
                      description="window_start (the install is refused) or mid_install (the install must go on)")


class BadBuild(Condition):
    """The release's build for one hardware variant is bad: its vehicles get this image instead."""

    rate: float = Field(1.0, gt=0, le=1, description="fraction of that variant's targeted vehicles (1: all)")
    seed: int = 0
    variant: str = Field(min_length=1, description="the hardware variant whose build is bad")
    image: str = Field(min_length=1, description="the bad build: an image role (e.g. selftest_fail), recipe or .bin")


class FieldConditions(_Model):
    """The field conditions a rehearsal injects; each vehicle meets at most one."""

    bad_build: BadBuild | None = None
    corrupted_download: Condition | None = None
    link_lost_mid_download: LinkLost | None = None
    power_cut_mid_install: PowerCut | None = None
    charger_unplugged_in_window: ChargerUnplugged | None = None
    driving_at_window: Condition | None = None
    never_connects: Condition | None = None

    def items(self) -> list[tuple[str, Condition]]:
        """(name, condition) of every condition given, bad_build first, then in the order of the fields."""
        return [(name, getattr(self, name)) for name in type(self).model_fields if getattr(self, name) is not None]


#: Conditions a configuration package release can rehearse (no install, no charging window, no resume).
PACKAGE_CONDITIONS = ("corrupted_download", "link_lost_mid_download", "never_connects")


class GatewaySettings(_Model):
    """How the bench plays the vehicle's gateway."""

    drive_speed_kmh: float = Field(40.0, ge=0, le=250, description="speed while the gateway downloads in the background")
    outcome_timeout_s: float = Field(120.0, gt=0, description="longest wait for an install's outcome")


# --------------------------------------------------------------------------- the campaign
class Campaign(_Model):
    """One campaign file."""

    campaign: str = Field(pattern=NAME, description="the campaign's name")
    description: str = ""
    release: Release
    fleet: Fleet
    targets: Targets = Targets()
    stages: list[Stage] = Field(min_length=1)
    conditions: FieldConditions = FieldConditions()
    gateway: GatewaySettings = GatewaySettings()
    source: Path | None = Field(None, exclude=True, description="the file this was loaded from")

    @model_validator(mode="after")
    def _references(self) -> "Campaign":
        depots = [d.name for d in self.fleet.depots]
        groups = sorted({d.group for d in self.fleet.depots} | {v.group for v in self.fleet.vehicles if v.group})
        variants = sorted({k for d in self.fleet.depots for k in d.vehicles} | {v.variant for v in self.fleet.vehicles})
        problems = []
        for where, sel in [("targets", self.targets), *((f"stages.{i}", s) for i, s in enumerate(self.stages))]:
            for field, known in (("depots", depots), ("groups", groups), ("variants", variants)):
                for value in getattr(sel, field) or []:
                    if value not in known:
                        problems.append(f"{where}.{field}: {value!r} is not in the fleet; accepted: {', '.join(known)}")
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"stages: names {dup} are used twice (the report names stages)")
        bad = self.conditions.bad_build
        if bad is not None and bad.variant not in variants:
            problems.append(f"conditions.bad_build.variant: {bad.variant!r} is not in the fleet; "
                            f"accepted: {', '.join(variants)}")
        if self.release.kind == "package":
            for name, _ in self.conditions.items():
                if name not in PACKAGE_CONDITIONS:
                    problems.append(f"conditions.{name}: a configuration package release rehearses only "
                                    f"{', '.join(PACKAGE_CONDITIONS)} (no install, charging window or resume)")
            if isinstance(self.release.package, dict):
                missing = sorted(set(groups) - set(self.release.package))
                if missing:
                    problems.append(f"release.package: no package for vehicle groups {missing}; "
                                    f"give one per group ({', '.join(groups)}) or one name for all")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def load_campaign(path: str | os.PathLike[str]) -> Campaign:
    """Load and validate a campaign YAML. Raises CampaignError naming the file, the field and what is accepted."""
    p = Path(path)
    if not p.is_file():
        raise CampaignError(f"{p}: campaign file not found (campaigns live in campaigns/*.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise CampaignError(f"{p}: not valid YAML: {exc}") from exc
    return campaign_from_data(data, str(p)).model_copy(update={"source": p.resolve()})


def campaign_from_data(data: Any, where: str) -> Campaign:
    """A campaign from already-parsed data (a test builds one from its fixtures); `where` names it in errors."""
    if not isinstance(data, dict):
        raise CampaignError(f"{where}: the top level must be a mapping of campaign fields, got {type(data).__name__}")
    try:
        return Campaign.model_validate(data)
    except ValidationError as exc:
        # A check across fields names its own paths: the section it stands on is shown, not its whole content.
        text = format_validation_error(where, exc, Campaign).replace("got {...} - Value error, ", "")
        raise CampaignError(text.replace(": (top level): ", ": ")) from None
