"""Power faults through the bench supply, including a black-box power-cut sweep that works on real hardware.

The sweep needs nothing but the supply, UDS/CAN and the console: a clean install is timed from
the DUT's console lines to find its phases (swap, trailer update, first boot and self-test), then
the install is repeated with a supply cut at N points spread over each phase. After every cut the
DUT must boot the old or the new image, with an update status that agrees with the image it runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from hil.contract import ActivationMode, BootMode, UpdateState
from hil.errors import HilError, HilTimeout

#: Console lines (bench contract) that open each install phase, in order; the last one closes it.
PHASE_MARKERS: list[tuple[str, str]] = [
    ("swap", r"BOOT: swap start"),
    ("trailer_update", r"BOOT: swap done"),
    ("first_boot", r"APP: BMS firmware .* starting"),
]
END_MARKER = r"APP: self-test passed"


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


class PowerCutSweep:
    """Black-box power cuts across a calibrated install."""

    def __init__(self, *, dut: Any, flasher: Any, psu: Any, console: Any, image: bytes, baseline: bytes,
                 budgets: Any, off_s: float = 0.5) -> None:
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
            self.console.expect(pattern, timeout=timeout)
            marks.append((name, time.monotonic() - t0))
        self.console.expect(END_MARKER, timeout=timeout)
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
