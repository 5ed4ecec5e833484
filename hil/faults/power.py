"""Power faults through the bench supply, including a black-box power-cut sweep that works on real hardware.

The sweep needs nothing but the supply, UDS/CAN and the console: a clean install is timed from
the DUT's console lines to find its phases (swap, trailer update, first boot and self-test), then
the install is repeated with a supply cut at N points spread over each phase. After every cut the
DUT must boot the old or the new image, with an update status that agrees with the image it runs.

A cut proves it took effect: the supply's own read-back while the output is off (MEAS:VOLT?), the
reset cause the DUT reports afterwards (the profile's console pattern power_up, DID role BOOT_INFO) and its boot
counter (BOOT_COUNTER). Where a cut landed is taken from what the DUT showed up to that moment (its console
phase lines), never from the plan, and the sweep's coverage check counts those observations.
"""

from __future__ import annotations

import contextlib
import csv
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hil.bench import contract
from hil.bench.contract import ActivationMode, BootMode, ResetCause, UpdateState
from hil.errors import HilError, HilTimeout

#: Install phases and the console pattern (by name, from the DUT profile) that opens each, in order;
#: END_PATTERN closes the last one.
PHASE_MARKERS: list[tuple[str, str]] = [
    ("swap", "swap_start"),
    ("trailer_update", "swap_done"),
    ("first_boot", "app_starting"),
]
END_PATTERN = "selftest_passed"
#: Every console pattern the sweep needs (a profile lacking one cannot run it).
PATTERNS_NEEDED = tuple(p for _, p in PHASE_MARKERS) + (END_PATTERN,)

#: Install phases a cut can land in, and the console patterns (by name, from the DUT profile) that show
#: the DUT is in each; the latest line wins, "before_swap" if none. A profile lacking a pattern only
#: loses that evidence.
LANDING_PATTERNS: list[tuple[str, tuple[str, ...]]] = [
    ("swap", ("swap_start", "swap_progress", "swap_resume")),
    ("trailer_update", ("swap_done",)),
    ("first_boot", ("app_starting",)),
    ("confirmed", (END_PATTERN,)),
]
#: The console pattern of the first line after a power-on or brown-out reset (bench contract, section 10).
POWER_UP_PATTERN = "power_up"


def landed_phase(console_text: str, patterns: Mapping[str, str]) -> str:
    """The install phase the DUT had shown on its console (`patterns`: the profile's) when the supply went off."""
    best, where = "before_swap", -1
    for name, names in LANDING_PATTERNS:
        for pattern in (patterns[n] for n in names if n in patterns):
            for m in re.finditer(pattern, console_text, re.MULTILINE):
                if m.start() > where:
                    best, where = name, m.start()
    return best


@dataclass
class CutEvidence:
    """One supply cut as it happened: when, what the supply read back while off, what the DUT had shown."""

    offset_s: float = 0.0
    planned_at: float | None = None  # monotonic time the cut was planned for (None: "now")
    at: float = 0.0  # monotonic time the output-off command was sent
    latency_s: float = 0.0  # how long the output-off command took (write + read-back)
    off_volts: float | None = None
    console_before: str = ""
    console_mark: int = 0
    patterns: Mapping[str, str] = field(default_factory=dict)  # the console's (DUT profile's) patterns
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def landed(self) -> str:
        return landed_phase(self.console_before, self.patterns)

    @property
    def timing_error_s(self) -> float:
        """How far from its plan the supply actually went off (host scheduling plus the SCPI round trip)."""
        late = self.at - self.planned_at if self.planned_at is not None else 0.0
        return abs(late) + self.latency_s


def proven_dropout(psu: Any, off_s: float, console: Any = None, since: int = 0,
                   evidence: CutEvidence | None = None) -> CutEvidence:
    """Output off, read the output back while off, hold `off_s`, output on; returns the evidence.

    Never raises (it runs in cut threads): a supply error is recorded in `evidence.error`.
    """
    ev = evidence or CutEvidence()
    try:
        if console is not None:
            text = console.text
            ev.console_before = text[since:]
            ev.console_mark = len(text)
            ev.patterns = console.patterns
        ev.at = time.monotonic()
        psu.output(False)
        ev.latency_s = time.monotonic() - ev.at
        ev.off_volts = float(psu.measure_voltage())
        threading.Event().wait(off_s)  # the cut's length is the stimulus itself, not a wait for something
        psu.output(True)
    except Exception as exc:  # reported by check_cut, not lost in a thread
        ev.error = f"{type(exc).__name__}: {exc}"
        try:
            psu.output(True)
        except Exception:
            pass
    finally:
        ev.done.set()
    return ev


def check_cut(ev: CutEvidence, *, max_off_v: float, console: Any = None, boot_count_before: int | None = None,
              dut: Any = None) -> list[str]:
    """Why a cut did NOT provably take effect (empty: it did). Reads the DUT's console and UDS after power returned."""
    problems = []
    if ev.error:
        problems.append(f"supply error during the cut: {ev.error}")
    if ev.off_volts is None or ev.off_volts > max_off_v:
        problems.append(f"supply read back {ev.off_volts} V with its output off (cut needs <= {max_off_v:g} V)")
    power_up = console.patterns.get(POWER_UP_PATTERN) if console is not None else None
    if power_up is not None and not re.search(power_up, console.text[ev.console_mark:], re.MULTILINE):
        problems.append(f"the DUT never reported a power-on reset after the cut (console pattern {POWER_UP_PATTERN} "
                        f"{power_up!r})")
    if dut is not None:
        # Without a power-on console line, the DUT's own reset cause (BOOT_INFO) is the proof; with one, that line of
        # the boot right after the cut is, since later boots (a revert, a self-reset) may have other causes.
        info = dut.boot_info()
        if power_up is None and ResetCause(info.reset_cause) not in (ResetCause.POWER_ON, ResetCause.BROWN_OUT):
            problems.append(f"DUT reports reset cause {ResetCause(info.reset_cause).name} after a power cut")
        if boot_count_before is not None and dut.boot_count() <= boot_count_before:
            problems.append(f"boot counter did not advance past {boot_count_before} after the cut")
    return problems


@dataclass(frozen=True)
class PhaseWindow:
    """One install phase, in seconds after the activation's ECUReset."""

    name: str
    start_s: float
    end_s: float


@dataclass
class InstallProfile:
    """Phases of a clean install, calibrated on this DUT."""

    phases: dict[str, PhaseWindow] = field(default_factory=dict)

    def cut_offsets(self, points_per_phase: int) -> list[tuple[str, float]]:
        """Evenly spread cut points inside each phase (never on its edges)."""
        out = []
        for window in self.phases.values():
            span = window.end_s - window.start_s
            for k in range(1, points_per_phase + 1):
                out.append((window.name, window.start_s + span * k / (points_per_phase + 1)))
        return out


@dataclass(frozen=True)
class CutResult:
    """What one power cut led to; `phase` is where it was planned, `landed` where the DUT showed it was."""

    phase: str
    offset_s: float
    state: str
    version: str
    bootable: bool
    detail: str = ""
    landed: str = ""
    proof: tuple[str, ...] = ()  # why the cut is not proven to have taken effect (empty: proven)
    timing_error_s: float = 0.0

    @property
    def proven(self) -> bool:
        return not self.proof

    def __str__(self) -> str:
        return (f"cut planned in {self.phase} at +{self.offset_s * 1000:.0f} ms, landed in {self.landed or '?'} "
                f"-> {self.state}, running {self.version}{'' if self.bootable else ' (NOT BOOTABLE)'} {self.detail}"
                + ("" if self.proven else f" [CUT NOT PROVEN: {'; '.join(self.proof)}]"))


def cut_after(psu: Any, delay_s: float, off_s: float, console: Any = None, since: int = 0) -> tuple[threading.Thread, CutEvidence]:
    """Drop the supply for `off_s` after `delay_s`, from a background thread (returned, already started),
    with the evidence it fills in (supply read-back, the console up to the cut)."""
    ev = CutEvidence(offset_s=delay_s, planned_at=time.monotonic() + delay_s)

    def run() -> None:
        threading.Event().wait(delay_s)  # the cut point is a planned offset, not a wait for an event
        proven_dropout(psu, off_s, console, since, ev)

    t = threading.Thread(target=run, name="power-cut", daemon=True)
    t.start()
    return t, ev


class SupplyMonitor:
    """Samples the supply's measured voltage and current every `interval_s` into a CSV, from a background thread.

    Gives the picture around a power cut (what the DUT really got) on a real bench as on the
    virtual one: only MEAS:VOLT? / MEAS:CURR? through the supply driver. `mark(label)` notes an
    instant (a cut, a restore) in seconds since the start, for the plot. The samples are this CSV's:
    the driver's command log (supply.log) does not repeat them line by line (`unlogged`, where the
    driver has it), so it keeps showing the settings, actions and the test's own measurements.
    """

    COLUMNS = ("time_s", "voltage_v", "current_a")

    def __init__(self, psu: Any, csv_path: Path, interval_s: float = 0.02) -> None:
        self.psu = psu
        self.csv_path = Path(csv_path)
        self.interval_s = interval_s
        self.marks: list[tuple[str, float]] = []
        self.samples = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_time = time.time()

    def mark(self, label: str) -> None:
        """Note an instant (seconds since the monitor started)."""
        self.marks.append((label, time.time() - self.start_time))

    def _run(self) -> None:
        unlogged = getattr(self.psu, "unlogged", None)
        with open(self.csv_path, "w", newline="", encoding="utf-8") as fh, \
                (unlogged() if callable(unlogged) else contextlib.nullcontext()):
            out = csv.writer(fh)
            out.writerow(self.COLUMNS)
            while not self._stop.is_set():
                try:
                    t = time.time()
                    volts = self.psu.measure_voltage()
                    amps = self.psu.measure_current()
                except Exception as exc:  # the supply answers again after the cut; note it, keep sampling
                    if len(self.errors) < 10:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                else:
                    out.writerow([f"{t - self.start_time:.4f}", f"{volts:.4f}", f"{amps:.5f}"])
                    self.samples += 1
                self._stop.wait(self.interval_s)

    def __enter__(self) -> "SupplyMonitor":
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self.start_time = time.time()
        self._thread = threading.Thread(target=self._run, name="supply-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


class PowerCutSweep:
    """Black-box power cuts across a calibrated install."""

    def __init__(self, *, dut: Any, flasher: Any, psu: Any, console: Any, image: bytes, baseline: bytes,
                 budgets: Any, off_s: float = 0.5, patterns: Mapping[str, str] | None = None,
                 max_off_v: float = 1.0) -> None:
        """`patterns`: the DUT profile's console patterns (PATTERNS_NEEDED); default: the default profile's."""
        self.patterns: Mapping[str, str] = patterns if patterns is not None else contract.CONSOLE_PATTERNS
        missing = [p for p in PATTERNS_NEEDED if p not in self.patterns]
        if missing:
            raise HilError(f"the power-cut sweep needs console patterns {', '.join(missing)}")
        self.dut = dut
        self.flasher = flasher
        self.psu = psu
        self.console = console
        self.image = image
        self.baseline = baseline
        self.budgets = budgets
        self.off_s = off_s
        self.max_off_v = max_off_v
        self.baseline_version = dut.version()

    def calibrate(self, timeout: float = 60.0) -> InstallProfile:
        """Time a clean install from the console; then restore the baseline."""
        staged = self.flasher.stage(self.image)
        if not staged.accepted:
            raise HilError(f"calibration image rejected: {staged.reason.name}")
        self.console.mark()
        self.flasher.activate()
        t0 = time.monotonic()
        marks: list[tuple[str, float]] = []
        for name, pattern in PHASE_MARKERS:
            self.console.expect(self.patterns[pattern], timeout=timeout)
            marks.append((name, time.monotonic() - t0))
        self.console.expect(self.patterns[END_PATTERN], timeout=timeout)
        end = time.monotonic() - t0
        outcome = self.flasher.wait_outcome()
        if outcome.state is not UpdateState.SUCCESS:
            raise HilError(f"calibration install did not succeed: {outcome.states_seen}")
        profile = InstallProfile()
        for i, (name, start) in enumerate(marks):
            stop = marks[i + 1][1] if i + 1 < len(marks) else end
            profile.phases[name] = PhaseWindow(name, start, max(stop, start + 0.005))
        self.restore()
        return profile

    def restore(self) -> None:
        """Back to the baseline image (bench restore path) unless it already runs."""
        if self.dut.version() != self.baseline_version:
            outcome = self.flasher.update(self.baseline, ActivationMode.RESTORE, bench_level=True)
            if outcome.state is not UpdateState.SUCCESS:
                raise HilError(f"baseline restore failed: {outcome.states_seen}")

    def run(self, profile: InstallProfile, points_per_phase: int, extra_tries: int = 4) -> list[CutResult]:
        """One install per cut point; every result says whether the DUT stayed bootable and where it landed.

        A phase no planned cut was seen to land in (short phases, host latency) gets up to `extra_tries`
        more cuts at other points of its window; coverage is judged on the landings, not on this plan.
        The sweep stops at the first cut not proven to have taken effect: the bench cannot inject this
        fault, so no further cut would prove anything (the case fails on that one, naming it).
        """
        results = self._cut_at(profile.cut_offsets(points_per_phase))
        fractions = [0.15, 0.85, 0.35, 0.65, 0.05, 0.95][:extra_tries]
        for frac in fractions:
            missing = [w for name, w in profile.phases.items() if name not in {r.landed for r in results}]
            if not missing or not all(r.proven for r in results):
                break
            results += self._cut_at([(w.name, w.start_s + (w.end_s - w.start_s) * frac) for w in missing])
        return results

    @staticmethod
    def resolution_s(results: list[CutResult]) -> float:
        """How precisely this bench places a cut: twice the worst timing error seen (at least 5 ms)."""
        return max(0.005, 2.0 * max((r.timing_error_s for r in results), default=0.0))

    @staticmethod
    def uncovered(profile: InstallProfile, results: list[CutResult]) -> tuple[list[str], list[str]]:
        """(phases no proven cut landed in although the bench can target them, phases too short to target)."""
        landed = {r.landed for r in results if r.proven}
        res = PowerCutSweep.resolution_s(results)
        short = [n for n, w in profile.phases.items() if w.end_s - w.start_s < res and n not in landed]
        missing = [n for n in profile.phases if n not in landed and n not in short]
        return missing, short

    def _cut_at(self, points: list[tuple[str, float]]) -> list[CutResult]:
        results = []
        for phase, offset in points:
            staged = self.flasher.stage(self.image)
            if not staged.accepted:
                raise HilError(f"image rejected before cut {phase}+{offset:.3f}s: {staged.reason.name}")
            boots = self.dut.boot_count()
            since = self.console.mark()
            self.flasher.activate()
            cutter, ev = cut_after(self.psu, offset, self.off_s, self.console, since)
            cutter.join(offset + self.off_s + 10.0)
            results.append(self._judge(phase, offset, ev, boots))
            self.restore()
            if not results[-1].proven:
                break  # see run(): an unproven cut ends the sweep
        return results

    def _judge(self, phase: str, offset: float, ev: CutEvidence, boots: int) -> CutResult:
        try:
            outcome = self.flasher.wait_outcome()
            info = self.dut.boot_info()
            version = self.dut.version()
            proof = tuple(check_cut(ev, max_off_v=self.max_off_v, console=self.console, boot_count_before=boots,
                                    dut=self.dut))
        except (HilError, HilTimeout) as exc:
            return CutResult(phase, offset, "no answer", "?", False, str(exc).splitlines()[0], ev.landed,
                             timing_error_s=ev.timing_error_s)
        new_version = self.flasher_version_of_image()
        consistent = ((outcome.state is UpdateState.SUCCESS and version == new_version)
                      or (outcome.state is UpdateState.ROLLED_BACK and version == self.baseline_version))
        bootable = info.mode is BootMode.APPLICATION and consistent
        detail = "" if consistent else f"status {outcome.state.name} disagrees with running {version}"
        return CutResult(phase, offset, f"{outcome.state.name}/{outcome.reason.name}", version, bootable, detail,
                         ev.landed, proof, ev.timing_error_s)

    def flasher_version_of_image(self) -> str:
        return str(self.flasher.container.read(self.image).version_str)
