"""Exhaustive power-fail sweep on a small geometry: zero bricks, and proof that it does find broken bootloaders."""

from __future__ import annotations

import pytest

from hil.sim.bootloader import Bootloader
from hil.sim.sweep import SweepReport, sweep
from test_bootloader import HWID, LAYOUT, Images, make_images


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return make_images(tmp_path_factory.mktemp("sweep-images"))


def run(images: Images, scenario: str, **kw: object) -> SweepReport:
    return sweep(LAYOUT, images.old, images.new, images.trusted, HWID, scenario=scenario, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("scenario", ["install", "revert", "permanent"])
@pytest.mark.parametrize("torn", [False, True])
def test_every_fail_point_ends_old_or_new(images: Images, scenario: str, torn: bool) -> None:
    report = run(images, scenario, torn=torn)
    assert report.total_ops > 50 and report.bricks == 0, "\n".join(str(p) for p in report.points if p.outcome == "brick")
    cuts = {p.cut for p in report.points}
    assert cuts == ({"between", "torn"} if torn else {"between"})
    assert sum(p.cut == "between" for p in report.points) == report.total_ops
    expected = "old" if scenario == "revert" else "new"
    assert {p.outcome for p in report.points} == {expected}
    kinds = {p.kind for p in report.points}
    assert kinds == {"erase", "program"}
    if scenario == "revert":  # both the test swap and the revert are interrupted
        phases = " ".join(p.phase for p in report.points)
        assert "boot 1 (SOFTWARE)" in phases and "boot 2 (WATCHDOG)" in phases


@pytest.mark.parametrize("scenario", ["install", "revert", "permanent"])
def test_multi_cut_mode_converges(images: Images, scenario: str) -> None:
    report = run(images, scenario, torn=True, multi=5, seed=7)
    assert report.points and report.bricks == 0, "\n".join(str(p) for p in report.points if p.outcome == "brick")
    assert any(p.cut != "multi:1" for p in report.points)
    assert any("after further cuts" in p.detail for p in report.points), "no point stacked a second cut"


def test_workers_split_the_same_points(images: Images) -> None:
    one = run(images, "install", torn=True)
    two = run(images, "install", torn=True, workers=2)
    assert [(p.op_index, p.cut, p.outcome) for p in one.points] == [(p.op_index, p.cut, p.outcome) for p in two.points]


class StatusBeforeCopy(Bootloader):
    """Broken on purpose: records a swap step as done before doing it."""

    def _swap_step(self, k: int) -> None:
        self._set(self._primary, self.tl.status(k))
        i, step = divmod(k, 3)
        p, s = self._primary + i * self._sector, self._secondary + i * self._sector
        src, dst = [(s, self._scratch), (p, s), (self._scratch, p)][step]
        self._copy(src, dst)


class CopyDoneBeforeImageOk(Bootloader):
    """Broken on purpose: a permanent swap marks copy_done first, so a cut there looks like a trial boot."""

    def _set(self, slot: int, field_off: int, value: bytes = b"\x01") -> None:
        if field_off == self.tl.image_ok and slot == self._primary and self.flash.is_erased(
                self._trailer_off(slot) + self.tl.copy_done, self.tl.unit):
            super()._set(slot, self.tl.copy_done)
        super()._set(slot, field_off, value)


class ResumeTrustsSecondaryTrailer(Bootloader):
    """Broken on purpose: assumes the secondary trailer is blank when resuming (a partial erase is not)."""

    def _ensure_blank_trailer(self, slot: int) -> None:
        if slot != self._secondary:
            super()._ensure_blank_trailer(slot)


@pytest.mark.parametrize(("broken", "scenario", "torn"), [
    (StatusBeforeCopy, "install", False),
    (StatusBeforeCopy, "revert", False),
    (CopyDoneBeforeImageOk, "permanent", False),
    (ResumeTrustsSecondaryTrailer, "install", True),
])
def test_sweep_finds_bricks_in_a_broken_bootloader(images: Images, broken: type[Bootloader], scenario: str,
                                                   torn: bool) -> None:
    report = run(images, scenario, torn=torn, make_bootloader=broken)
    assert report.bricks > 0, f"{broken.__name__}: the sweep did not notice"
    bad = next(p for p in report.points if p.outcome == "brick")
    assert bad.detail, "a brick must say what is wrong"
