"""Rack inventory: the benches of a rack (each a bench YAML) with the tags tests select them by.

A rack file (`benches/racks/*.yaml`) is validated like a bench file: a wrong field stops the run
with the file, the field path, the value and what is accepted. Every bench file it names is loaded
and validated too, and the tags the rack declares must agree with what the bench file describes
(a rack that calls a classic bench "fd" would send FD tests to a classic bus).

Tests select benches with `@pytest.mark.bench(variant=..., can="classic"|"fd", capabilities=[...])`;
`BenchNeed` is that selection, `BenchTags` what one bench offers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hil.bench.config import BenchConfig, format_validation_error, load_bench
from hil.errors import BenchConfigError

CanType = Literal["classic", "fd"]
Capability = Literal["power_control", "battery_emulator", "console", "debug_probe"]
CAPABILITIES: tuple[str, ...] = ("power_control", "battery_emulator", "console", "debug_probe")
CAN_TYPES: tuple[str, ...] = ("classic", "fd")

#: Fixtures that need a capability: a test asking for `load` can only run where there is a battery emulator.
FIXTURE_CAPABILITIES: Mapping[str, str] = {"psu": "power_control", "load": "battery_emulator", "console": "console"}

#: Keyword arguments `@pytest.mark.bench(...)` accepts.
MARKER_KEYS: tuple[str, ...] = ("variant", "can", "capabilities")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LeaseConfig(_Model):
    """How a worker leases a bench: a lock file with a heartbeat on this host, or labgrid's coordinator."""

    backend: Literal["file", "labgrid"] = "file"
    heartbeat_s: float = Field(1.0, gt=0, description="how often the holder renews its lease")
    stale_after_s: float = Field(15.0, gt=0, description="a lease not renewed for this long may be taken over")
    wait_s: float = Field(0.0, ge=0, description="how long a worker waits for a free bench before giving up")
    coordinator: str | None = Field(None, description="labgrid coordinator host:port (env LG_COORDINATOR overrides)")
    place_prefix: str = Field("hil-", description="labgrid place name = prefix + bench name")


class RackBenchEntry(_Model):
    """One bench of the rack: its bench file and the tags tests select it by."""

    file: Path
    variant: str | None = Field(None, description="hardware variant; default: the bench's dut.hardware_number")
    can: CanType | None = Field(None, description="classic or fd; default: from the bench's can.fd")
    capabilities: list[Capability] | None = Field(None, description="default: what the bench file has")


class RackConfig(_Model):
    """A rack: its name, lease backend and benches."""

    rack: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    lease: LeaseConfig = LeaseConfig()
    benches: list[RackBenchEntry] = Field(min_length=1)


@dataclass(frozen=True)
class BenchTags:
    """What one bench offers."""

    variant: str
    can: str
    capabilities: frozenset[str]

    def as_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "can": self.can, "capabilities": sorted(self.capabilities)}

    def labels(self) -> dict[str, str]:
        """Flat key=value tags (labgrid place tags): variant, can, and one per capability."""
        out = {"variant": self.variant, "can": self.can}
        out.update({c: "yes" for c in sorted(self.capabilities)})
        return out


@dataclass(frozen=True)
class RackBench:
    """A bench of a loaded rack: its validated config and its tags."""

    cfg: BenchConfig
    tags: BenchTags
    index: int

    @property
    def name(self) -> str:
        return self.cfg.bench


@dataclass(frozen=True)
class Rack:
    """A validated rack file."""

    name: str
    lease: LeaseConfig
    benches: tuple[RackBench, ...]
    source: Path

    def bench(self, name: str) -> RackBench:
        """The bench called `name`; KeyError names the benches there are."""
        for b in self.benches:
            if b.name == name:
                return b
        raise KeyError(f"rack {self.name} has no bench {name!r}; it has {', '.join(b.name for b in self.benches)}")

    def serving(self, need: "BenchNeed") -> list[RackBench]:
        """Benches of this rack that can run a test needing `need`."""
        return [b for b in self.benches if need.served_by(b.tags)]


def derived_tags(cfg: BenchConfig) -> BenchTags:
    """The tags a bench file implies: variant = hardware number, CAN type, the instruments it has."""
    caps = {"power_control"}  # every bench has a programmable supply (psu is required)
    if cfg.load is not None:
        caps.add("battery_emulator")
    if cfg.console is not None:
        caps.add("console")
    return BenchTags(cfg.dut.hardware_number, "fd" if cfg.can.fd else "classic", frozenset(caps))


def _tags(entry: RackBenchEntry, cfg: BenchConfig, where: str) -> BenchTags:
    derived = derived_tags(cfg)
    problems = []
    if entry.can is not None and entry.can != derived.can:
        problems.append(f"{where}.can: got {entry.can!r} but {entry.file} has can.fd {cfg.can.fd} "
                        f"(a {derived.can} bus); accepted here: {derived.can!r}")
    caps = frozenset(entry.capabilities) if entry.capabilities is not None else derived.capabilities
    # debug_probe has no section in a bench file yet: it is taken as declared.
    missing = sorted(c for c in caps if c != "debug_probe" and c not in derived.capabilities)
    if missing:
        problems.append(f"{where}.capabilities: {', '.join(missing)} declared but {entry.file} has no "
                        f"{' / '.join({'battery_emulator': 'load', 'console': 'console'}.get(c, c) for c in missing)} "
                        f"section; accepted here: {', '.join(sorted(derived.capabilities | {'debug_probe'}))}")
    if problems:
        raise BenchConfigError("\n".join(problems))
    return BenchTags(entry.variant or derived.variant, entry.can or derived.can, caps)


def _virtual_endpoints(cfg: BenchConfig) -> dict[str, str]:
    """What two virtual benches on one host must not share: CAN group/port, TCP ports, flash file."""
    out: dict[str, str] = {}
    if not cfg.virtual:
        return out
    if cfg.can.interface == "udp_multicast":
        out["can"] = f"{cfg.can.channel}:{cfg.can.args.get('port', '')}"
    elif cfg.can.interface == "virtual":
        out["can"] = f"virtual:{cfg.can.channel}"
    for name, addr in (("psu", cfg.psu.resource), ("load", cfg.load.resource if cfg.load else None),
                       ("console", cfg.console.url if cfg.console else None)):
        if addr and not addr.replace("::SOCKET", "").endswith(("::0", ":0")):  # port 0: the OS picks a free one
            out[name] = addr
    if cfg.sim is not None:
        out["flash_file"] = str(cfg.sim.flash_file)
    return out


def load_rack(path: str | os.PathLike[str]) -> Rack:
    """Load and validate a rack file and every bench file it names. Raises BenchConfigError naming what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise BenchConfigError(f"{p}: rack file not found (racks live in benches/racks/*.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise BenchConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise BenchConfigError(f"{p}: the top level must be a mapping (rack, lease, benches), got {type(data).__name__}")
    try:
        model = RackConfig.model_validate(data)
    except ValidationError as exc:
        raise BenchConfigError(format_validation_error(str(p), exc, RackConfig)) from None
    base = p.resolve().parent
    benches: list[RackBench] = []
    seen_names: dict[str, int] = {}
    seen_endpoints: dict[str, tuple[int, str]] = {}
    problems: list[str] = []
    for i, entry in enumerate(model.benches):
        where = f"{p}: benches.{i}"
        bench_path = entry.file if entry.file.is_absolute() else base / entry.file
        try:
            cfg = load_bench(bench_path)
            tags = _tags(entry, cfg, where)
        except BenchConfigError as exc:
            problems.append(f"{where}.file ({bench_path}):\n  " + str(exc).replace("\n", "\n  "))
            continue
        if cfg.bench in seen_names:
            problems.append(f"{where}.file: bench name {cfg.bench!r} is also benches.{seen_names[cfg.bench]}; "
                            "every bench of a rack needs its own name (leases and reports use it)")
        seen_names[cfg.bench] = i
        for kind, value in _virtual_endpoints(cfg).items():
            key = f"{kind}={value}"
            if key in seen_endpoints:
                j, other = seen_endpoints[key]
                problems.append(f"{where}.file: {kind} {value} is also used by benches.{j} ({other}); "
                                "every virtual bench needs its own multicast group/port, TCP ports and flash file")
            else:
                seen_endpoints[key] = (i, cfg.bench)
        benches.append(RackBench(cfg, tags, i))
    if problems:
        raise BenchConfigError("\n".join(problems))
    return Rack(model.rack, model.lease, tuple(benches), p.resolve())


# ---------------------------------------------------------------------- what a test needs
@dataclass(frozen=True)
class BenchNeed:
    """What a test needs from its bench: from `@pytest.mark.bench(...)` and the fixtures it uses."""

    variants: frozenset[str] = frozenset()
    can: str | None = None
    capabilities: frozenset[str] = frozenset()

    def served_by(self, tags: BenchTags) -> bool:
        return ((not self.variants or tags.variant in self.variants)
                and (self.can is None or tags.can == self.can)
                and self.capabilities <= tags.capabilities)

    def describe(self) -> str:
        parts = []
        if self.variants:
            parts.append("variant=" + "|".join(sorted(self.variants)))
        if self.can:
            parts.append(f"can={self.can}")
        if self.capabilities:
            parts.append("capabilities=" + ",".join(sorted(self.capabilities)))
        return ", ".join(parts) or "any bench"

    def missing(self, tags: BenchTags) -> str:
        """What `tags` lacks, for a skip reason."""
        out = []
        if self.variants and tags.variant not in self.variants:
            out.append(f"variant {tags.variant} (needs {'|'.join(sorted(self.variants))})")
        if self.can is not None and tags.can != self.can:
            out.append(f"CAN {tags.can} (needs {self.can})")
        lacking = sorted(self.capabilities - tags.capabilities)
        if lacking:
            out.append("no " + ", ".join(lacking))
        return "; ".join(out)


def _as_set(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset([value])
    return frozenset(str(v) for v in value)


def need_from_marks(marks: Iterable[tuple[tuple[Any, ...], Mapping[str, Any]]], fixturenames: Iterable[str],
                    where: str) -> BenchNeed:
    """Combine `@pytest.mark.bench(...)` markers (args, kwargs) and fixture needs; BenchConfigError on bad markers."""
    variants: frozenset[str] = frozenset()
    can: str | None = None
    caps = {FIXTURE_CAPABILITIES[f] for f in fixturenames if f in FIXTURE_CAPABILITIES}
    for args, kwargs in marks:
        if args:
            raise BenchConfigError(f"{where}: @pytest.mark.bench takes keywords only ({', '.join(MARKER_KEYS)}), "
                                   f"got positional {args!r}")
        unknown = sorted(set(kwargs) - set(MARKER_KEYS))
        if unknown:
            raise BenchConfigError(f"{where}: @pytest.mark.bench({unknown[0]}=...) is not a bench tag; "
                                   f"accepted: {', '.join(MARKER_KEYS)}")
        if "variant" in kwargs:
            variants = _as_set(kwargs["variant"])
        if "can" in kwargs:
            if kwargs["can"] not in CAN_TYPES:
                raise BenchConfigError(f"{where}: @pytest.mark.bench(can={kwargs['can']!r}); accepted: "
                                       f"{', '.join(CAN_TYPES)}")
            can = kwargs["can"]
        if "capabilities" in kwargs:
            asked = _as_set(kwargs["capabilities"])
            bad = sorted(asked - set(CAPABILITIES))
            if bad:
                raise BenchConfigError(f"{where}: @pytest.mark.bench(capabilities=...) has {', '.join(bad)}; "
                                       f"accepted: {', '.join(CAPABILITIES)}")
            caps |= asked
    return BenchNeed(variants, can, frozenset(caps))
