"""Exhaustive power-fail sweep over the flash choke point (simulator only; fault-matrix rows 1-3).

MCUboot's simulator replays the upgrade from the start for every fail point. Here one clean run
records every flash operation (place and bytes written); the sweep then walks the operations in
order, keeping a cursor copy of the flash as it was before operation i, so each fail point starts
from a restore instead of a replay. At each point the cut is applied - between operations, or torn
(a prefix of the phrases of a program, a prefix of the sector of an erase) - and the board is booted
again and again as it would be after power returns (a trial image confirms itself in the install
scenario, never in the revert scenario) until a boot changes nothing. Then the invariant is checked:
the primary slot holds exactly the expected image, its trailer is confirmed, the secondary trailer is
blank (no stray request), the other image sits in the secondary slot, the stored security counter and
update status agree with the outcome. Anything else is a brick.

Scenarios: "install" (TEST swap then a confirming trial boot), "revert" (TEST swap, trial boot that
never confirms, watchdog reset, revert; both boots interrupted), "permanent" (PERM swap). `multi=N`
stacks up to N cuts in a row at random (seeded) operations of the following boots.

The machinery is the same for every update family; what a board holds before the activation and what
"intact and consistent" means afterwards is its rig's (`SweepRig`: `McubootRig` here, the OEM flash
bootloader's in hil/sim/fbl.py). `sweep_for_bench` sweeps the board a bench file describes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from hil.bench.config import BenchConfig, FlashLayout
from hil.bench.contract import ActivationMode, BootMode, ResetCause, UpdateState
from hil.bench.dut_profile import DutProfile
from hil.errors import HilError
from hil.sim.errors import PowerLoss
from hil.images.mcuboot import TrustedKey, parse_image
from hil.sim.bootloader import Bootloader, BootResult
from hil.sim.flash import Cut, FlashModel, FlashOp
from hil.sim.nvstore import NvStore

Scenario = Literal["install", "revert", "permanent"]
#: A stable board boots without a single flash operation well before this many boots.
MAX_SETTLE_BOOTS = 8
TORN_FRACTION = 0.5
CONFIG = {"profile": "sweep", "cell_ov_mV": 4200}
BOOTLOADER_FACTORY = Callable[..., Bootloader]


@dataclass(frozen=True)
class FailPoint:
    """One power cut and what the board ended up as."""

    op_index: int
    kind: str  # erase | program
    offset: int
    phase: str  # clean-run boot and the last bootloader log line before the operation
    cut: str  # between | torn | multi:<n>
    outcome: str  # old | new | brick
    detail: str = ""

    def __str__(self) -> str:
        return (f"op {self.op_index:4d} {self.kind:7s} 0x{self.offset:06x} {self.cut:8s} [{self.phase}] -> "
                f"{self.outcome}{' ' + self.detail if self.detail else ''}")


@dataclass
class SweepReport:
    """All fail points of one sweep with the figures the benchmark prints."""

    scenario: str
    torn: bool
    multi: int
    total_ops: int
    points: list[FailPoint] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def bricks(self) -> int:
        """Fail points that did not end in a consistent, bootable expected state."""
        return sum(1 for p in self.points if p.outcome == "brick")

    @property
    def points_per_s(self) -> float:
        return len(self.points) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        return (f"{self.scenario}{' torn' if self.torn else ''}{f' multi={self.multi}' if self.multi else ''}: "
                f"{len(self.points)} fail points over {self.total_ops} operations, {self.bricks} bricks, "
                f"{self.elapsed_s:.2f} s ({self.points_per_s:.0f} points/s)")


@dataclass(frozen=True)
class _Recorded:
    op: FlashOp
    phase: str


class _Recorder:
    """Interrupter for the clean run: lets every operation through and notes it with the current phase."""

    def __init__(self) -> None:
        self.ops: list[_Recorded] = []
        self.boot = "boot 0"
        self.phase = "start"

    def start_boot(self, n: int, cause: ResetCause) -> None:
        self.boot = f"boot {n} ({cause.name})"
        self.phase = f"{self.boot}: start"

    def log(self, line: str) -> None:
        self.phase = f"{self.boot}: {line.removeprefix('BOOT: ')}"

    def __call__(self, op: FlashOp, duration_s: float) -> Cut | None:
        self.ops.append(_Recorded(op, self.phase))
        return None


class _Countdown:
    """Interrupter that cuts power at the n-th operation from now (torn or not)."""

    def __init__(self) -> None:
        self.remaining: int | None = None
        self.torn = False
        self.fraction = TORN_FRACTION
        self.fired: list[FlashOp] = []

    def __call__(self, op: FlashOp, duration_s: float) -> Cut | None:
        if self.remaining is None:
            return None
        if self.remaining > 0:
            self.remaining -= 1
            return None
        self.remaining = None
        self.fired.append(op)
        return Cut(torn=self.torn, fraction=self.fraction)


class SweepRig:
    """One simulated board (flash, NV, bootloader) with the sweep's firmware behaviour; a family's rig says what
    the board holds before the activation (`prepare`) and what a good end state is (`check_images`)."""

    def __init__(self, layout: FlashLayout, old: bytes, new: bytes, trusted: Sequence[TrustedKey], hardware_id: str,
                 scenario: Scenario, make_bootloader: BOOTLOADER_FACTORY, profile: DutProfile | None = None) -> None:
        self.layout = layout
        self.old, self.new = old, new
        self.scenario = scenario
        self.profile = profile or DutProfile()
        self.flash = FlashModel.in_memory(layout)
        self.nv = NvStore(self.flash, layout)
        self.recorder = _Recorder()
        self.bl = make_bootloader(self.flash, layout, self.nv, trusted, hardware_id, log=self.recorder.log,
                                  profile=self.profile)
        #: Verdict by digest of a flash state at a boot boundary (see outcome()).
        self.memo: dict[bytes, tuple[str, str]] = {}
        #: The operation of the clean run the current fail point cuts (set by the sweep before each outcome()).
        self.cut_at = -1

    def expects_install(self, op_index: int) -> bool:
        """Whether a cut at clean-run operation `op_index` must still end with the install (else the board must
        keep the old image untouched: a rig whose clean run includes programming the new image says so)."""
        return True

    def check_untouched(self, result: BootResult) -> list[str]:
        """What is wrong when the board should run the old image as if no update had been started."""
        raise NotImplementedError

    def prepare(self) -> bytes:
        """Factory state, first boot, new image staged and activated: the flash before the clean run."""
        raise NotImplementedError

    def check_images(self, result: BootResult, *, expect_new: bool) -> list[str]:
        """What is wrong with the images and the boot records when the board should run the new (or old) image."""
        raise NotImplementedError

    def security_counter_of(self, image: bytes) -> int:
        """The security counter of one of the two images (old or new)."""
        raise NotImplementedError

    def clean_run(self) -> list[_Recorded]:
        """The uninterrupted activation: every operation of it is a fail point."""
        self.flash.interrupter = self.recorder
        try:
            self.recorder.start_boot(1, ResetCause.SOFTWARE)
            result = self.bl.boot(ResetCause.SOFTWARE)
            if self.scenario == "revert":
                if not result.trial:
                    raise HilError(f"the clean TEST install did not end in a trial boot: {result.log}")
                self.recorder.start_boot(2, ResetCause.WATCHDOG)
                self.bl.boot(ResetCause.WATCHDOG)  # the trial image never confirmed itself
        finally:
            self.flash.interrupter = None
        return list(self.recorder.ops)

    def firmware(self, result: BootResult) -> None:
        """What the application does after a boot: in the install scenario a trial image passes its self-test."""
        upd = self.nv.get("update", {}) or {}
        if result.trial and self.scenario == "install":
            self.bl.confirm()
            self.nv.update(update={**upd, "state": int(UpdateState.SUCCESS)})
        elif not result.trial and upd.get("state") == UpdateState.TESTING and self.bl.is_confirmed():
            # Power went between confirm() and the SUCCESS record: the confirmed image reports it now.
            self.nv.update(update={**upd, "state": int(UpdateState.SUCCESS)})

    def outcome(self, countdown: _Countdown | None = None, cuts: list[int] | None = None) -> tuple[str, str]:
        """Settle and check; after the first boot, a flash state seen before ends the same way (memo).

        Sound because a boot is a function of the flash contents and the reset cause alone (the
        bootloader keeps nothing across boots but content-keyed caches); every later boot here is
        a power-on boot without cuts.
        """
        seen: list[bytes] = []

        def boundary(boots: int) -> tuple[str, str] | None:
            if boots == 0 or (countdown is not None and countdown.remaining is not None):
                return None
            key = hashlib.sha256(self.flash.snapshot()).digest()
            seen.append(key)
            return self.memo.get(key)

        try:
            result = self.settle(countdown, cuts, boundary)
            verdict = result if isinstance(result, tuple) else self.check(result, revert_ok=bool(cuts))
        except Exception as exc:  # a bootloader that raises anything is a brick, never a crash of the sweep
            verdict = ("brick", f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=-2)!r}")
        for key in seen:
            self.memo[key] = verdict
        return verdict

    def settle(self, countdown: _Countdown | None = None, cuts: list[int] | None = None,
               boundary: Callable[[int], tuple[str, str] | None] | None = None) -> BootResult | tuple[str, str]:
        """Power returns: boot (cuts from `cuts` stacked on the way) until a boot changes nothing.

        `boundary(boots_so_far)` may end the settling early with a known verdict.
        """
        pending = list(cuts or [])
        if countdown is not None and pending:
            countdown.remaining = pending.pop(0)
        self.flash.interrupter = countdown
        try:
            last: BootResult | None = None
            for boots in range(MAX_SETTLE_BOOTS + len(cuts or [])):
                known = boundary(boots) if boundary is not None else None
                if known is not None:
                    return known
                before = self.flash.ops
                try:
                    last = self.bl.boot(ResetCause.POWER_ON)
                    if last.mode is BootMode.APPLICATION:
                        self.firmware(last)
                except PowerLoss:
                    if countdown is not None and pending:
                        countdown.remaining = pending.pop(0)
                    continue
                if self.flash.ops == before and not last.trial:
                    if countdown is not None and countdown.remaining is not None:
                        countdown.remaining, pending = None, []  # stable: nothing left to cut
                    return last
            raise AssertionError(f"no stable state after {MAX_SETTLE_BOOTS} boots: {last.log if last else ''}")
        finally:
            self.flash.interrupter = None

    def check(self, result: BootResult, *, revert_ok: bool = False) -> tuple[str, str]:
        """(outcome, detail): old / new when every invariant holds, else brick with what is wrong.

        The install scenario ends with the new image; with `revert_ok` (a later cut hit the trial
        boot before it confirmed) a clean revert to the old image is right too.
        """
        if result.mode is not BootMode.APPLICATION or result.image is None:
            return "brick", "recovery mode: no valid image"
        if not self.expects_install(self.cut_at):
            problems = self.check_untouched(result)
            if self.nv.get("config") != CONFIG:
                problems.append(f"configuration changed: {self.nv.get('config')}")
            return ("brick", "; ".join(problems)) if problems else ("old", "programming interrupted")
        verdict = self._check(result, expect_new=self.scenario != "revert")
        if verdict[0] == "brick" and revert_ok and self.scenario == "install":
            alternative = self._check(result, expect_new=False)
            if alternative[0] != "brick":
                return alternative
        return verdict

    def _check(self, result: BootResult, *, expect_new: bool) -> tuple[str, str]:
        assert result.image is not None
        want = self.new if expect_new else self.old
        name = "new" if expect_new else "old"
        problems = self.check_images(result, expect_new=expect_new)
        counter = int(self.nv.get("security_counter", -1))
        if counter != self.security_counter_of(want):
            problems.append(f"stored security counter {counter}, expected {self.security_counter_of(want)}")
        state = int((self.nv.get("update", {}) or {}).get("state", -1))
        if not expect_new and state != UpdateState.ROLLED_BACK:
            problems.append(f"update state {UpdateState(state).name}, expected ROLLED_BACK")
        if expect_new and self.scenario == "install" and state != UpdateState.SUCCESS:
            problems.append(f"update state {UpdateState(state).name}, expected SUCCESS")
        if self.nv.get("config") != CONFIG:
            problems.append(f"configuration changed: {self.nv.get('config')}")
        return ("brick", "; ".join(problems)) if problems else (name, "")


class McubootRig(SweepRig):
    """The MCUboot board: swap using scratch between the primary and the secondary slot."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.old_img, self.new_img = parse_image(self.old), parse_image(self.new)

    def security_counter_of(self, image: bytes) -> int:
        return (self.new_img if image is self.new else self.old_img).security_counter or 0

    def prepare(self) -> bytes:
        Bootloader.factory_program(self.flash, self.layout, self.old)
        self.nv.update(config=CONFIG, config_schema=1, security_counter=0, boot_count=0,
                       update={"state": 0, "reason": 0, "target": [0, 0, 0]})
        self.bl.boot(ResetCause.POWER_ON)
        self.bl.erase_secondary()
        for off in range(0, len(self.new), 4094):  # UDS-sized blocks, unaligned on purpose
            self.bl.write_secondary(off, self.new[off:off + 4094])
        self.bl.verify_staged()
        self.nv.update(config_backup=CONFIG, config_schema_backup=1)
        mode = ActivationMode.PERMANENT if self.scenario == "permanent" else ActivationMode.TEST
        self.bl.request_upgrade(mode)
        self.nv.update(update={"state": int(UpdateState.ACTIVATION_PENDING), "reason": 0, "target": [0, 0, 0]})
        return self.flash.snapshot()

    def check_images(self, result: BootResult, *, expect_new: bool) -> list[str]:
        assert result.image is not None
        want, other = (self.new, self.old) if expect_new else (self.old, self.new)
        name = "new" if expect_new else "old"
        problems = []
        lay = self.layout
        if self.flash.read(lay.primary_offset, len(want)) != want:
            problems.append(f"primary is not the {name} image (boots {result.image.version_str})")
        if self.flash.read(lay.secondary_offset, len(other)) != other:
            problems.append("secondary slot does not hold the other image")
        pt = self.bl.read_trailer(lay.primary_offset)
        if not (pt.consistent and pt.copy_done and pt.image_ok):
            problems.append(f"primary trailer not confirmed: {pt}")
        if not self.flash.is_erased(lay.secondary_offset + lay.slot_size, lay.sector_size):
            problems.append("stray data in the secondary trailer")
        return problems


def _run_points(layout: FlashLayout, old: bytes, new: bytes, trusted: Sequence[TrustedKey], hardware_id: str,
                scenario: Scenario, torn: bool, multi: int, seed: int, part: int, parts: int,
                make_bootloader: BOOTLOADER_FACTORY, rig_class: type[SweepRig] = McubootRig,
                profile: DutProfile | None = None) -> tuple[int, list[FailPoint]]:
    """The fail points of worker `part` of `parts` (every parts-th operation)."""
    rig = rig_class(layout, old, new, trusted, hardware_id, scenario, make_bootloader, profile)
    initial = rig.prepare()
    ops = rig.clean_run()
    points: list[FailPoint] = []
    cursor = bytearray(initial)
    applied = 0

    def seek(i: int) -> None:
        nonlocal applied
        for rec in ops[applied:i]:  # roll the cursor forward to "before operation i"
            op = rec.op
            cursor[op.offset:op.offset + op.length] = b"\xff" * op.length if op.data is None else op.data
        applied = max(applied, i)

    def attempt(i: int, fraction: float | None, label: str, cuts: list[int] | None = None) -> None:
        rec = ops[i]
        seek(i)
        rig.flash.restore(cursor)
        rig.cut_at = i
        if fraction is not None:
            rig.flash.apply_partial(rec.op, fraction)
        countdown = _Countdown() if cuts else None
        if countdown is not None:
            countdown.torn = torn
        outcome, detail = rig.outcome(countdown, cuts)
        if countdown is not None and countdown.fired:
            detail = (detail + " " if detail else "") + "after further cuts at " + ", ".join(
                f"{o.kind}@0x{o.offset:x}" for o in countdown.fired)
        points.append(FailPoint(i, rec.op.kind, rec.op.offset, rec.phase, label, outcome, detail))

    if multi:
        rng = random.Random(seed)
        plan = []
        for _ in range(len(ops)):
            i = rng.randrange(len(ops))
            frac = rng.random() if torn and rng.random() < 0.5 else None
            extra = [rng.randrange(len(ops)) for _ in range(rng.randint(0, multi - 1))]
            plan.append((i, frac, extra))
        mine = [p for n, p in enumerate(plan) if n % parts == part]
        for i, frac, extra in sorted(mine, key=lambda p: p[0]):
            attempt(i, frac, f"multi:{1 + len(extra)}", extra)
    else:
        align = layout.write_align
        for i in range(part, len(ops), parts):
            attempt(i, None, "between")
            op = ops[i].op
            # A torn single-phrase program leaves nothing behind: the same state as a cut before it.
            if torn and (op.kind == "erase" or (op.length // align) * TORN_FRACTION >= 1):
                attempt(i, TORN_FRACTION, "torn")
    return len(ops), points


def _worker(conn: Any, args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", _run_points(*args)))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def sweep(layout: FlashLayout, old: bytes, new: bytes, trusted: Sequence[TrustedKey], hardware_id: str, *,
          scenario: Scenario, torn: bool = True, multi: int = 0, seed: int = 0, workers: int = 1,
          make_bootloader: BOOTLOADER_FACTORY = Bootloader, rig: type[SweepRig] = McubootRig,
          profile: DutProfile | None = None, timeout_s: float = 600.0) -> SweepReport:
    """Cut power at every flash operation of `scenario` (and tear it if `torn`); see the module docstring.

    `old` is the confirmed image before the update, `new` the one installed. `make_bootloader` lets a
    test sweep a deliberately broken bootloader (proof the sweep can fail); `rig` is the board's family's
    (with its DUT `profile`). `workers` > 1 forks processes that each take every n-th operation.
    """
    if scenario not in ("install", "revert", "permanent"):
        raise ValueError(f"scenario must be install, revert or permanent, got {scenario!r}")
    start = time.perf_counter()
    base = (layout, old, new, list(trusted), hardware_id, scenario, torn, multi, seed)
    if workers <= 1:
        total, points = _run_points(*base, 0, 1, make_bootloader, rig, profile)
    else:
        # fork: the children inherit keys and the factory as they are (no pickling of key objects).
        ctx = multiprocessing.get_context("fork")
        procs = []
        for part in range(workers):
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(child, (*base, part, workers, make_bootloader, rig, profile)),
                               daemon=True)
            proc.start()
            child.close()
            procs.append((proc, parent))
        total, points = 0, []
        deadline = time.monotonic() + timeout_s
        errors = []
        for proc, conn in procs:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                proc.kill()
                errors.append(f"worker {proc.pid} gave no result within {timeout_s:.0f} s")
                continue
            status, payload = conn.recv()
            proc.join(timeout=5.0)
            if status != "ok":
                errors.append(str(payload))
                continue
            total, part_points = payload
            points.extend(part_points)
        if errors:
            raise HilError("sweep workers failed:\n" + "\n".join(errors))
        points.sort(key=lambda p: (p.op_index, p.cut))
    return SweepReport(scenario, torn, multi, total, points, time.perf_counter() - start)


def sweep_for_bench(cfg: BenchConfig, old: bytes, new: bytes, *, scenario: Scenario, torn: bool = True, multi: int = 0,
                    seed: int = 0, workers: int = 1) -> SweepReport:
    """`sweep` of the board a bench file describes: its update family's bootloader and rig, its defects included
    (a defective board's sweep must fail), its flash layout, trusted keys and hardware number."""
    import functools

    from hil.images.mcuboot import load_trusted_keys
    from hil.sim.defects import Defects
    from hil.sim.family import board_parts

    assert cfg.sim is not None, "the exhaustive sweep needs a virtual bench (a sim section)"
    parts = board_parts(cfg.profile)
    make = functools.partial(parts.bootloader, defects=Defects(cfg.sim.defects))
    return sweep(cfg.flash_layout, old, new, load_trusted_keys(cfg.sim.trusted_keys), cfg.dut.hardware_number, scenario=scenario, torn=torn,
                 multi=multi, seed=seed, workers=workers, make_bootloader=make, rig=parts.sweep_rig, profile=cfg.profile)
