"""Power faults through the bench supply, including a black-box power-cut sweep that works on real hardware.

The sweep needs nothing but the supply, UDS/CAN and the console: a clean install is timed from
the DUT's console lines to find its phases (swap, trailer update, first boot and self-test), then
the install is repeated with a supply cut at N points spread over each phase. After every cut the
DUT must boot the old or the new image, with an update status that agrees with the image it runs.
"""

from __future__ import annotations

import csv
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hil import contract
from hil.contract import ActivationMode, BootMode, UpdateState
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
    """What one power cut led to."""

    phase: str
    offset_s: float
    state: str
    version: str
    bootable: bool
    detail: str = ""

    def __str__(self) -> str:
        return (f"cut in {self.phase} at +{self.offset_s * 1000:.0f} ms -> {self.state}, running {self.version}"
                f"{'' if self.bootable else ' (NOT BOOTABLE)'} {self.detail}")


def cut_after(psu: Any, delay_s: float, off_s: float) -> threading.Thread:
    """Drop the supply for `off_s` after `delay_s`, from a background thread (returned, already started)."""
    def cut() -> None:
        time.sleep(delay_s)  # this thread's only job is to wait, then cut
        psu.dropout(off_s)

    t = threading.Thread(target=cut, name="power-cut", daemon=True)
    t.start()
    return t


class SupplyMonitor:
    """Samples the supply's measured voltage and current every `interval_s` into a CSV, from a background thread.

    Gives the picture around a power cut (what the DUT really got) on a real bench as on the
    virtual one: only MEAS:VOLT? / MEAS:CURR? through the supply driver. `mark(label)` notes an
    instant (a cut, a restore) in seconds since the start, for the plot.
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
        with open(self.csv_path, "w", newline="", encoding="utf-8") as fh:
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
                 budgets: Any, off_s: float = 0.5, patterns: Mapping[str, str] | None = None) -> None:
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

    def run(self, profile: InstallProfile, points_per_phase: int) -> list[CutResult]:
        """One install per cut point; every result says whether the DUT stayed bootable."""
        results = []
        for phase, offset in profile.cut_offsets(points_per_phase):
            staged = self.flasher.stage(self.image)
            if not staged.accepted:
                raise HilError(f"image rejected before cut {phase}+{offset:.3f}s: {staged.reason.name}")
            self.flasher.activate()
            cutter = cut_after(self.psu, offset, self.off_s)
            cutter.join(offset + self.off_s + 10.0)
            results.append(self._judge(phase, offset))
            self.restore()
        return results

    def _judge(self, phase: str, offset: float) -> CutResult:
        try:
            outcome = self.flasher.wait_outcome()
            info = self.dut.boot_info()
            version = self.dut.version()
        except (HilError, HilTimeout) as exc:
            return CutResult(phase, offset, "no answer", "?", False, str(exc).splitlines()[0])
        new_version = self.flasher_version_of_image()
        consistent = ((outcome.state is UpdateState.SUCCESS and version == new_version)
                      or (outcome.state is UpdateState.ROLLED_BACK and version == self.baseline_version))
        bootable = info.mode is BootMode.APPLICATION and consistent
        detail = "" if consistent else f"status {outcome.state.name} disagrees with running {version}"
        return CutResult(phase, offset, f"{outcome.state.name}/{outcome.reason.name}", version, bootable, detail)

    def flasher_version_of_image(self) -> str:
        from hil.images.mcuboot import parse_image

        return parse_image(self.image).version_str
