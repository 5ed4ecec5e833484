"""NOR flash model and the journaled NV store: semantics, persistence, tearing, cuts at every operation."""

from __future__ import annotations

import pytest

from hil.bench.config import FlashLayout
from hil.sim.errors import FlashError, PowerLoss
from hil.sim.flash import Cut, FlashModel, FlashOp
from hil.sim.nvstore import NvStore

LAYOUT = FlashLayout(sector_size=1024, nv_sectors=2, slot_sectors=4, scratch_sectors=1, write_align=8)


def test_erased_at_start_and_program_reads_back() -> None:
    flash = FlashModel.in_memory(LAYOUT)
    assert flash.size == LAYOUT.total_size and flash.is_erased(0, flash.size)
    flash.program(16, b"ABCDEFGH")
    assert flash.read(16, 8) == b"ABCDEFGH" and flash.ops == 1
    assert not flash.is_erased(16, 8) and flash.is_erased(24, 8)


def test_program_over_programmed_bytes_is_an_error_even_to_0x00() -> None:
    flash = FlashModel.in_memory(LAYOUT)
    flash.program(0, b"\x00" * 8)
    with pytest.raises(FlashError, match="not erased"):
        flash.program(0, b"\x00" * 8)
    flash.erase_sector(0)
    flash.program(0, b"\x00" * 8)  # fine after an erase


@pytest.mark.parametrize(("offset", "data"), [(4, b"12345678"), (0, b"123"), (8, b"123456789")])
def test_unaligned_program_is_an_error(offset: int, data: bytes) -> None:
    with pytest.raises(FlashError, match="aligned"):
        FlashModel.in_memory(LAYOUT).program(offset, data)


def test_unaligned_erase_and_out_of_range_are_errors() -> None:
    flash = FlashModel.in_memory(LAYOUT)
    with pytest.raises(FlashError, match="sector aligned"):
        flash.erase_sector(512)
    with pytest.raises(FlashError, match="outside"):
        flash.program(LAYOUT.total_size - 8, b"x" * 16)


def test_file_backing_persists_across_reopen(tmp_path) -> None:
    path = tmp_path / "board.flash"
    flash = FlashModel.open_file(path, LAYOUT)
    assert path.stat().st_size == LAYOUT.total_size
    flash.program(LAYOUT.primary_offset, b"persist!")
    flash.close()
    again = FlashModel.open_file(path, LAYOUT)
    assert again.read(LAYOUT.primary_offset, 8) == b"persist!"
    again.close()


def test_file_of_wrong_size_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "small.flash"
    path.write_bytes(b"\xff" * 100)
    with pytest.raises(FlashError, match=r"100 bytes.*delete the file"):
        FlashModel.open_file(path, LAYOUT)


def test_choke_point_sees_every_operation_with_its_duration() -> None:
    seen: list[tuple[FlashOp, float]] = []
    flash = FlashModel.in_memory(LAYOUT)
    flash.erase_s, flash.program_s_per_phrase = 0.015, 20e-6
    flash.interrupter = lambda op, d: seen.append((op, d)) or None
    observed: list[FlashOp] = []
    flash.observer = observed.append
    flash.erase_sector(1024)
    flash.program(1024, b"x" * 64)
    assert [(o.index, o.kind, o.offset, o.length) for o, _ in seen] == [(0, "erase", 1024, 1024), (1, "program", 1024, 64)]
    assert seen[0][1] == pytest.approx(0.015) and seen[1][1] == pytest.approx(8 * 20e-6)
    assert observed == [o for o, _ in seen]


def test_torn_program_writes_a_prefix_of_whole_phrases() -> None:
    flash = FlashModel.in_memory(LAYOUT)
    flash.interrupter = lambda op, d: Cut(torn=True, fraction=0.6)
    with pytest.raises(PowerLoss):
        flash.program(0, bytes(range(40)))  # 5 phrases -> floor(3.0) = 3 written
    assert flash.read(0, 24) == bytes(range(24)) and flash.is_erased(24, 16)


def test_cut_without_tearing_changes_nothing() -> None:
    flash = FlashModel.in_memory(LAYOUT)
    flash.interrupter = lambda op, d: Cut()
    with pytest.raises(PowerLoss):
        flash.program(0, b"y" * 16)
    assert flash.is_erased(0, LAYOUT.sector_size)


def test_torn_erase_leaves_the_sector_partly_erased() -> None:
    flash = FlashModel.in_memory(LAYOUT)
    flash.program(0, b"\x11" * 1024)
    flash.interrupter = lambda op, d: Cut(torn=True, fraction=0.25)
    with pytest.raises(PowerLoss):
        flash.erase_sector(0)
    assert flash.is_erased(0, 256) and flash.read(256, 768) == b"\x11" * 768


def test_snapshot_restore_round_trip() -> None:
    flash = FlashModel.in_memory(LAYOUT)
    snap = flash.snapshot()
    flash.program(0, b"z" * 8)
    flash.restore(snap)
    assert flash.is_erased(0, 8)


# --------------------------------------------------------------------------- NvStore
def test_nvstore_blank_update_get_and_newest_wins() -> None:
    flash = FlashModel.in_memory(LAYOUT)
    nv = NvStore(flash, LAYOUT)
    assert nv.load() == {}
    nv.update(boot_count=1, config={"a": 1})
    nv.update(boot_count=2)
    assert NvStore(flash, LAYOUT).load() == {"boot_count": 2, "config": {"a": 1}}
    assert nv.get("missing", 7) == 7
    ops = flash.ops
    nv.update(boot_count=2)
    assert flash.ops == ops, "an unchanged state must not be rewritten"


def test_nvstore_rotates_sectors_and_keeps_state() -> None:
    flash = FlashModel.in_memory(LAYOUT)
    nv = NvStore(flash, LAYOUT)
    for n in range(200):  # many sector fills
        nv.update(boot_count=n, soc=n / 2)
    assert NvStore(flash, LAYOUT).load() == {"boot_count": 199, "soc": 99.5}


def test_nvstore_ignores_a_torn_record() -> None:
    flash = FlashModel.in_memory(LAYOUT)
    nv = NvStore(flash, LAYOUT)
    nv.update(security_counter=3)
    flash.interrupter = lambda op, d: Cut(torn=True, fraction=0.5)
    with pytest.raises(PowerLoss):
        nv.update(security_counter=4, config={"long": "x" * 40})
    flash.interrupter = None
    assert NvStore(flash, LAYOUT).load() == {"security_counter": 3}
    nv.update(security_counter=5)
    assert NvStore(flash, LAYOUT).load() == {"security_counter": 5}


@pytest.mark.parametrize("torn", [False, True])
def test_nvstore_survives_a_cut_at_every_operation(torn: bool) -> None:
    """Each update is cut at each of its operations: the store always holds the old or the new state."""
    base = FlashModel.in_memory(LAYOUT)
    nv = NvStore(base, LAYOUT)
    states = []
    for n in range(60):  # enough updates to rotate through both sectors several times
        states.append(nv.update(boot_count=n, pad="p" * (n % 7) * 5))
    checked = 0
    flash = FlashModel.in_memory(LAYOUT, base.snapshot())
    store = NvStore(flash, LAYOUT)
    for n in range(60, 120):
        before = flash.snapshot()
        old = store.load()
        new = {**old, "boot_count": n, "pad": "q" * (n % 9) * 7}
        for cut_at in range(4):  # an update is at most erase + program; beyond that it completes
            flash.restore(before)
            countdown = iter(range(cut_at, -1, -1))
            flash.interrupter = lambda op, d: (Cut(torn=torn, fraction=0.5) if next(countdown) == 0 else None)
            try:
                store.update(**{k: v for k, v in new.items() if k in ("boot_count", "pad")})
            except PowerLoss:
                pass
            flash.interrupter = None
            survived = NvStore(flash, LAYOUT).load()
            assert survived in (old, new), f"update {n}, cut at op {cut_at}: {survived}"
            # and the store keeps working after the cut
            after = NvStore(flash, LAYOUT)
            after.update(marker=n)
            assert NvStore(flash, LAYOUT).get("marker") == n
            checked += 1
        flash.restore(before)
        store.update(boot_count=n, pad="q" * (n % 9) * 7)
    assert checked == 240
