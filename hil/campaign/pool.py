"""Where vehicles are played: benches that play vehicle after vehicle, or a virtual fleet of boards side by side.

- `BenchSlot`: one open bench (the pytest `bench` fixture's, or a rack bench leased through the rack's
  lease backend: a file lease with heartbeat on this host, labgrid's coordinator across hosts). It
  plays the vehicles of its hardware variant one after another: baseline restored, identity set.
- `lease_rack`: every free bench of a rack that serves a variant the plan needs, leased and opened.
- `VirtualFleet` / `FleetSlot`: in-process virtual boards, one per vehicle (its own flash file: the
  vehicle *is* its board, history included), N of them running side by side, each with a private
  bench name, in-process CAN channel and OS-chosen TCP ports.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import yaml

from hil.bench.bench import Bench
from hil.bench.config import BenchConfig
from hil.campaign.gateway import Gateway, ReleaseArtifacts
from hil.campaign.plan import Assignment, Plan, Vehicle
from hil.campaign.results import Outcome, VehicleResult
from hil.campaign.spec import Campaign
from hil.errors import BenchBroken, BenchBusy, CampaignError, HilError


@dataclass
class Context:
    """What every slot needs to play a vehicle."""

    campaign: Campaign
    artifacts: ReleaseArtifacts
    clock: Callable[[], float]
    evidence_dir: Path | None = None


class Slot(Protocol):
    """Something that plays vehicles, one at a time."""

    name: str
    broken: str | None

    def serves(self, variant: str) -> bool: ...
    def play(self, ctx: Context, a: Assignment, held_by: str | None) -> VehicleResult: ...
    def finish(self, ctx: Context) -> None: ...
    def close(self) -> None: ...


def failed_result(a: Assignment, where: str, why: str, clock: Callable[[], float]) -> VehicleResult:
    """A vehicle whose turn could not be played at all (no bench, a bench broke): a finding, never a quiet gap."""
    v = a.vehicle
    now = clock()
    return VehicleResult(v.vin, v.depot, v.group, v.variant, a.stage, a.condition, Outcome.FAILED, reason=why,
                         bench=where, started_s=now, ended_s=now, findings=[f"not rehearsed: {why}"])


# --------------------------------------------------------------------------- a bench that plays vehicle after vehicle
class BenchSlot:
    """An open bench playing the vehicles of its hardware variant; `finish` puts its identity back."""

    def __init__(self, bench: Bench, variant: str | None = None, *, owned: bool = False, keeper: Any = None) -> None:
        self.bench = bench
        self.name = bench.cfg.bench
        self.variant = variant or bench.cfg.dut.hardware_number
        self.owned = owned  # opened by the campaign (closed at the end), not by the caller
        self.keeper = keeper
        self.broken: str | None = None
        self._gateway: Gateway | None = None
        dut = bench.make_dut()
        self._found_group = dut.vehicle_group()
        try:
            self._found_vin: str | None = dut.vin()
        except HilError:
            self._found_vin = None  # a board without a VIN DID
        self._found_config = dut.config()

    def lost(self, cause: str) -> None:
        """The lease heartbeat lost the bench: no further vehicle on it."""
        self.broken = f"lease lost: {cause}"

    def serves(self, variant: str) -> bool:
        return variant == self.variant

    def play(self, ctx: Context, a: Assignment, held_by: str | None) -> VehicleResult:
        if self._gateway is None:
            self._gateway = Gateway(self.bench, ctx.campaign, ctx.artifacts, ctx.clock, evidence_dir=ctx.evidence_dir,
                                    start_config=self._found_config)
        result = self._gateway.play(a, held_by=held_by)
        if self.broken:
            result.findings.append(f"bench {self.name}: {self.broken} during this vehicle")
        return result

    def finish(self, ctx: Context) -> None:
        """The bench as the campaign found it: baseline release, nothing staged, its vehicle group, VIN and configuration."""
        if self.broken:
            return
        gw = self._gateway or Gateway(self.bench, ctx.campaign, ctx.artifacts, ctx.clock, start_config=self._found_config)
        dut = self.bench.make_dut()
        gw._prepare(dut)
        if dut.vehicle_group() != self._found_group:
            dut.provision_vehicle_group(self._found_group)
        if self._found_vin is not None and dut.vin() != self._found_vin:
            dut.provision_vin(self._found_vin)
        if dut.config() != self._found_config:
            dut.write_config(self._found_config)

    def close(self) -> None:
        if self.keeper is not None:
            self.keeper.stop(release=True)
        if self.owned:
            self.bench.close()


def lease_rack(rack: Any, variants: list[str], evidence_dir: Path | None = None,
               log: Callable[[str], None] = lambda line: None) -> list[BenchSlot]:
    """Lease and open every free bench of `rack` whose variant the plan needs (the rack's lease backend).

    Busy benches are left to their holders; with none free, waits up to the rack's `lease.wait_s`.
    CampaignError names a needed variant no bench of the rack has, or the holders when none is free.
    """
    from hil.rack.lease import LeaseKeeper
    from hil.rack.scheduling import lease_backend

    have = {b.tags.variant for b in rack.benches}
    missing = sorted(set(variants) - have)
    if missing:
        raise CampaignError(f"rack {rack.name} has no bench of hardware variant {', '.join(missing)} "
                            f"(its variants: {', '.join(sorted(have))}); a bench plays only vehicles of its own variant")
    backend = lease_backend(rack)
    wanted = [b for b in rack.benches if b.tags.variant in variants]
    deadline = time.monotonic() + rack.lease.wait_s
    slots: list[BenchSlot] = []
    busy: list[str] = []
    try:
        while True:
            busy = []
            for b in wanted:
                if any(s.name == b.name for s in slots):
                    continue
                try:
                    lease = backend.try_acquire(b.name, b.tags.labels())
                except BenchBusy as exc:
                    busy.append(str(exc))
                    continue
                holder: dict[str, BenchSlot] = {}

                def lost(cause: str, h: dict[str, BenchSlot] = holder) -> None:
                    if "slot" in h:
                        h["slot"].lost(cause)

                keeper = LeaseKeeper(lease, rack.lease.heartbeat_s, lost)
                try:
                    bench = Bench.open(b.cfg, evidence_dir=(evidence_dir / f"_bench-{b.name}") if evidence_dir else None)
                except BaseException:
                    lease.release()
                    raise
                slot = BenchSlot(bench, b.tags.variant, owned=True, keeper=keeper.start())
                holder["slot"] = slot
                slots.append(slot)
                log(f"leased and opened bench {b.name} ({b.tags.variant}) through the {rack.lease.backend} lease backend")
            served = {s.variant for s in slots}
            if served >= set(variants) or time.monotonic() >= deadline:
                break
            time.sleep(0.5)  # polling the holders: a lease has no change event across hosts
    except BaseException:
        for s in slots:
            s.close()
        raise
    unserved = sorted(set(variants) - {s.variant for s in slots})
    if unserved:
        for s in slots:
            s.close()
        raise CampaignError(f"rack {rack.name}: no free bench of variant {', '.join(unserved)} (waited "
                            f"{rack.lease.wait_s:g} s):\n  " + "\n  ".join(busy))
    return slots


# --------------------------------------------------------------------------- the virtual fleet
class VirtualFleet:
    """Virtual boards made from a template bench (a virtual bench file), one per vehicle, run in this process.

    Each hardware variant gets the template's firmware and package recipes built with its hardware
    number (the template's own variant uses them as they are): a variant's boards boot their variant's
    baseline and take their variant's release, as a rack's benches each bring their own builds.
    """

    def __init__(self, template: BenchConfig, workdir: Path, *, keep_boards: bool = False) -> None:
        if not template.virtual or template.sim is None:
            raise CampaignError(f"bench {template.bench}: the virtual fleet is made from a virtual bench file "
                                "(virtual: true with a sim section), e.g. benches/sim.yaml")
        self.template = template
        self.workdir = Path(workdir)
        self.keep_boards = keep_boards
        self.tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.boards_dir = self.workdir / "boards"
        self._variants: dict[str, BenchConfig] = {}
        self._lock = threading.Lock()

    def prepare(self, plan: Plan, artifacts: ReleaseArtifacts) -> None:
        """Each variant's bench description and builds (baseline, release, bad build) made once, before any board starts."""
        self.boards_dir.mkdir(parents=True, exist_ok=True)
        c = plan.campaign
        for variant in plan.variants():
            cfg = self._variant_config(variant)
            self._variants[variant] = cfg
            artifacts.baseline(cfg)
            if c.release.image is not None:
                artifacts.image(cfg, c.release.image)
            bad = c.conditions.bad_build
            if bad is not None and bad.variant == variant:
                artifacts.image(cfg, bad.image)

    def _variant_config(self, variant: str) -> BenchConfig:
        from hil.images.catalogue import catalogue_of

        t = self.template
        if variant == t.dut.hardware_number:
            return t
        for role, entry in catalogue_of(t).items():
            if entry.endswith(".bin"):
                raise CampaignError(f"variant {variant}: the template bench's catalogue maps {role} to the file {entry}; "
                                    "the virtual fleet builds other variants from recipes (use a bench whose catalogue "
                                    "names recipes, e.g. benches/sim.yaml)")
        base = self.workdir / "variants" / variant.replace("/", "_")
        recipes = _retarget(t.images.recipes, base / "recipes", "hardware_id", t.dut.hardware_number, variant)
        packages = _retarget(t.images.packages, base / "packages", "hardware", t.dut.hardware_number, variant)
        images = t.images.model_copy(update={"recipes": recipes, "packages": packages, "build_dir": base / "build"})
        return t.model_copy(update={"images": images, "dut": t.dut.model_copy(update={"hardware_number": variant})})

    def config_for(self, vehicle: Vehicle) -> BenchConfig:
        """The bench description of one vehicle's board: private name, CAN channel, ports and flash file."""
        cfg = self._variants[vehicle.variant]
        assert cfg.sim is not None
        name = f"fleet-{self.tag}-{vehicle.vin}"
        updates: dict[str, Any] = {
            "bench": name,
            "can": cfg.can.model_copy(update={"interface": "virtual", "channel": name, "args": {}}),
            "psu": cfg.psu.model_copy(update={"resource": "TCPIP0::127.0.0.1::0::SOCKET"}),
            "dut": cfg.dut.model_copy(update={"serial_number": f"SIM{vehicle.vin[-7:]}"}),
            "sim": cfg.sim.model_copy(update={"flash_file": self.boards_dir / f"{vehicle.vin}.flash",
                                              "vehicle_group": vehicle.group}),
            "source": None,
        }
        if cfg.load is not None:
            updates["load"] = cfg.load.model_copy(update={"resource": "TCPIP0::127.0.0.1::0::SOCKET"})
        if cfg.console is not None:
            updates["console"] = cfg.console.model_copy(update={"url": "socket://127.0.0.1:0"})
        return cfg.model_copy(update=updates)

    def discard(self, vehicle: Vehicle) -> None:
        """The vehicle's board is done: its flash file goes unless the boards are kept."""
        if not self.keep_boards:
            (self.boards_dir / f"{vehicle.vin}.flash").unlink(missing_ok=True)

    def close(self) -> None:
        if not self.keep_boards:
            shutil.rmtree(self.boards_dir, ignore_errors=True)


def _retarget(src: Path, dst: Path, key: str, old: str, new: str) -> Path:
    """Copies of the recipes in `src` (YAML files) whose `key` is `old` (or absent: the default), set to `new`."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(src).glob("*.yaml")):
        data = yaml.safe_load(f.read_text())
        if isinstance(data, dict) and data.get(key, old) == old:
            data[key] = new
        (dst / f.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


@dataclass
class FleetSlot:
    """One place of the virtual fleet: a fresh virtual board per vehicle, started, played, stopped."""

    fleet: VirtualFleet
    index: int
    broken: str | None = None
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"virtual-{self.index + 1}"

    def serves(self, variant: str) -> bool:
        return True

    def play(self, ctx: Context, a: Assignment, held_by: str | None) -> VehicleResult:
        cfg = self.fleet.config_for(a.vehicle)
        try:
            bench = Bench.open(cfg, lock=False)  # a private board of this run: no other run can name it
        except (HilError, OSError) as exc:
            self.fleet.discard(a.vehicle)
            return failed_result(a, self.name, f"its virtual board did not start: {type(exc).__name__}: "
                                               f"{str(exc).splitlines()[0] if str(exc) else ''}", ctx.clock)
        try:
            gw = Gateway(bench, ctx.campaign, ctx.artifacts, ctx.clock, evidence_dir=ctx.evidence_dir,
                         start_config=None)
            try:
                result = gw.play(a, held_by=held_by)
            except BenchBroken as exc:  # this vehicle's board only: the next vehicle gets a new one
                result = failed_result(a, self.name, f"its virtual board broke: {exc}", ctx.clock)
            result.bench = self.name
            return result
        finally:
            bench.close()
            self.fleet.discard(a.vehicle)

    def finish(self, ctx: Context) -> None:
        pass

    def close(self) -> None:
        pass
