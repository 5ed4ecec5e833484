"""Bootloader: TEST/PERM/RESTORE installs, confirm, revert with reasons, rejections, anti-rollback, recovery."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hil.bench.config import FlashLayout
from hil.bench.contract import ActivationMode, BootMode, Reason, ResetCause, UpdateState
from hil.errors import ImageError
from hil.sim.errors import FlashError, PowerLoss
from hil.images.mcuboot import TrustedKey, load_trusted_keys
from hil.sim.bootloader import Bootloader
from hil.sim.flash import Cut, FlashModel
from hil.sim.nvstore import NvStore

HWID = "BMS-HW-A2"
#: Small geometry so every test is fast: 8 image sectors of 1 KiB per slot.
LAYOUT = FlashLayout(sector_size=1024, nv_sectors=2, slot_sectors=8, scratch_sectors=1, write_align=8)


@dataclass(frozen=True)
class Images:
    trusted: list[TrustedKey]
    old: bytes  # 1.0.0, counter 1
    new: bytes  # 1.1.0, counter 2
    bumped: bytes  # 1.2.0, counter 3
    older: bytes  # 0.9.0, counter 0
    wrong_hw: bytes  # 1.1.0 built for another board
    untrusted: bytes  # 1.1.0 signed with a key the board does not trust
    no_config: bytes  # 1.1.0 accepting config schema 2..3 only


def sign(work: Path, key: Path, version: str, counter: int, size: int, *, hwid: str = HWID,
         compat: str = "0x0102") -> bytes:
    """Sign `size` random payload bytes with the imgtool CLI (an implementation independent of ours)."""
    imgtool = Path(sys.executable).with_name("imgtool")
    raw = work / f"{version}-{hwid}-{key.stem}-{compat}.bin"
    raw.write_bytes(os.urandom(size))
    out = raw.with_suffix(".img")
    subprocess.run([str(imgtool), "sign", "-k", str(key), "--pad-header", "-H", "0x200", "--align", "8",
                    "-S", "131072", "-v", version, "-s", str(counter), "--custom-tlv", "0xa0", hwid,
                    "--custom-tlv", "0xa1", compat, str(raw), str(out)], check=True, capture_output=True, timeout=60)
    return out.read_bytes()


def make_images(work: Path) -> Images:
    imgtool = Path(sys.executable).with_name("imgtool")
    keys = [work / "trusted.pem", work / "rogue.pem"]
    for key in keys:
        subprocess.run([str(imgtool), "keygen", "-k", str(key), "-t", "ecdsa-p256"], check=True, capture_output=True,
                       timeout=60)
    good = keys[0]
    return Images(
        trusted=load_trusted_keys([good]),
        old=sign(work, good, "1.0.0", 1, 5000),
        new=sign(work, good, "1.1.0", 2, 6600),
        bumped=sign(work, good, "1.2.0", 3, 4000),
        older=sign(work, good, "0.9.0", 0, 3000),
        wrong_hw=sign(work, good, "1.1.0", 2, 3000, hwid="BMS-HW-B1"),
        untrusted=sign(work, keys[1], "1.1.0", 2, 3000),
        no_config=sign(work, good, "1.1.0", 2, 3000, compat="0x0203"),
    )


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return make_images(tmp_path_factory.mktemp("bootloader-images"))


class Board:
    """Flash + NV + bootloader, as the virtual board wires them."""

    def __init__(self, images: Images, layout: FlashLayout = LAYOUT) -> None:
        self.flash = FlashModel.in_memory(layout)
        self.nv = NvStore(self.flash, layout)
        self.lines: list[str] = []
        self.bl = Bootloader(self.flash, layout, self.nv, images.trusted, HWID, log=self.lines.append, chunk=256)
        self.layout = layout

    def factory(self, image: bytes) -> "Board":
        Bootloader.factory_program(self.flash, self.layout, image)
        self.nv.update(config={"cells": 12}, config_schema=1, security_counter=0)
        assert self.bl.boot(ResetCause.POWER_ON).image is not None
        return self

    def stage(self, image: bytes, mode: ActivationMode | None = ActivationMode.TEST) -> None:
        self.bl.erase_secondary()
        for off in range(0, len(image), 4094):  # UDS TransferData blocks: unaligned offsets
            self.bl.write_secondary(off, image[off:off + 4094])
        if mode is not None:
            self.nv.update(config_backup=self.nv.get("config"), config_schema_backup=1)
            self.bl.request_upgrade(mode)

    def primary(self, n: int) -> bytes:
        return self.flash.read(self.layout.primary_offset, n)

    def update(self) -> tuple[UpdateState, Reason]:
        upd = self.nv.get("update", {})
        return UpdateState(upd.get("state", 0)), Reason(upd.get("reason", 0))


def test_factory_board_boots_confirmed_and_adopts_the_counter(images: Images) -> None:
    board = Board(images).factory(images.old)
    assert board.bl.is_confirmed() and board.bl.primary_image().version_str == "1.0.0"
    assert board.nv.get("security_counter") == 1 and board.bl.backup_image() is None


def test_staged_image_reads_back_from_unaligned_blocks(images: Images) -> None:
    board = Board(images).factory(images.old)
    board.stage(images.new, mode=None)
    assert board.bl.staged_image() == images.new
    assert board.bl.verify_staged().version_str == "1.1.0"


def test_test_upgrade_trial_then_confirm_advances_counter_only_then(images: Images) -> None:
    board = Board(images).factory(images.old)
    board.stage(images.new)
    result = board.bl.boot(ResetCause.SOFTWARE)
    assert result.mode is BootMode.APPLICATION and result.trial and result.image.version_str == "1.1.0"
    assert "BOOT: swap start type=TEST sectors=8" in board.lines and "BOOT: booting 1.1.0 (trial)" in board.lines
    assert board.primary(len(images.new)) == images.new
    assert board.bl.backup_image().version_str == "1.0.0"
    assert board.update()[0] is UpdateState.TESTING
    assert not board.bl.is_confirmed() and board.nv.get("security_counter") == 1, "counter must wait for confirm"
    board.bl.confirm()
    assert board.bl.is_confirmed() and board.nv.get("security_counter") == 2
    again = board.bl.boot(ResetCause.POWER_ON)
    assert not again.trial and not again.reverted and again.image.version_str == "1.1.0"


@pytest.mark.parametrize(("cause", "firmware_reason", "expected"), [
    (ResetCause.WATCHDOG, None, Reason.WATCHDOG_RESET),
    (ResetCause.FAULT, None, Reason.CRASHED_AT_BOOT),
    (ResetCause.SOFTWARE, Reason.SELFTEST_FAILED, Reason.SELFTEST_FAILED),
    (ResetCause.SOFTWARE, None, Reason.NOT_CONFIRMED),
    (ResetCause.POWER_ON, None, Reason.NOT_CONFIRMED),
])
def test_unconfirmed_trial_reverts_with_reason_and_config(images: Images, cause: ResetCause,
                                                          firmware_reason: Reason | None, expected: Reason) -> None:
    board = Board(images).factory(images.old)
    board.stage(images.new)
    assert board.bl.boot(ResetCause.SOFTWARE).trial
    board.nv.update(config={"cells": 12, "migrated": True}, config_schema=2)  # the new firmware migrated it
    if firmware_reason is not None:
        board.nv.update(update={**board.nv.get("update"), "reason": int(firmware_reason)})
    result = board.bl.boot(cause)
    assert result.reverted and result.reason is expected and result.image.version_str == "1.0.0"
    assert f"BOOT: revert start reason={expected.name}" in board.lines
    assert board.primary(len(images.old)) == images.old
    assert board.bl.backup_image().version_str == "1.1.0" and board.bl.is_confirmed()
    assert board.update() == (UpdateState.ROLLED_BACK, expected)
    assert board.nv.get("config") == {"cells": 12} and board.nv.get("config_schema") == 1
    assert board.nv.get("security_counter") == 1
    assert not board.bl.boot(ResetCause.POWER_ON).reverted  # stable afterwards


def test_permanent_upgrade_is_confirmed_by_the_swap(images: Images) -> None:
    board = Board(images).factory(images.old)
    board.stage(images.new, ActivationMode.PERMANENT)
    result = board.bl.boot(ResetCause.SOFTWARE)
    assert not result.trial and result.image.version_str == "1.1.0" and board.bl.is_confirmed()
    assert board.nv.get("security_counter") == 2
    assert not board.bl.boot(ResetCause.WATCHDOG).reverted


def test_restore_installs_an_older_image_and_resets_the_counter(images: Images) -> None:
    board = Board(images).factory(images.old)
    board.stage(images.bumped, ActivationMode.PERMANENT)
    board.bl.boot(ResetCause.SOFTWARE)
    assert board.nv.get("security_counter") == 3
    board.stage(images.old, mode=None)
    with pytest.raises(ImageError) as err:
        board.bl.verify_staged()
    assert err.value.reason == Reason.DOWNGRADE_SECURITY_COUNTER
    assert board.bl.verify_staged(allow_downgrade=True).version_str == "1.0.0"
    board.bl.request_upgrade(ActivationMode.RESTORE)
    result = board.bl.boot(ResetCause.SOFTWARE)
    assert result.image.version_str == "1.0.0" and board.nv.get("security_counter") == 1


@pytest.mark.parametrize(("image_name", "reason"), [
    ("untrusted", Reason.UNKNOWN_KEY),
    ("wrong_hw", Reason.WRONG_HARDWARE),
    ("older", Reason.DOWNGRADE_SECURITY_COUNTER),
    ("no_config", Reason.CONFIG_INCOMPATIBLE),
    ("tampered", Reason.HASH_MISMATCH),
    ("truncated", Reason.TRUNCATED),
])
def test_rejected_image_leaves_the_primary_untouched(images: Images, image_name: str, reason: Reason) -> None:
    board = Board(images).factory(images.old)
    if image_name == "tampered":
        image = bytearray(images.new)
        image[0x400] ^= 0x01
    elif image_name == "truncated":
        image = bytearray(images.new[:3000])
    else:
        image = bytearray(getattr(images, image_name))
    board.stage(bytes(image))
    before = board.flash.read(board.layout.primary_offset, board.layout.slot_size + board.layout.sector_size)
    result = board.bl.boot(ResetCause.SOFTWARE)
    assert result.image.version_str == "1.0.0" and not result.trial
    assert f"BOOT: rejected reason={reason.name}" in board.lines
    assert board.update() == (UpdateState.REJECTED, reason)
    assert board.flash.read(board.layout.primary_offset, len(before)) == before
    assert board.flash.is_erased(board.layout.secondary_offset + board.layout.slot_size, board.layout.sector_size)
    assert board.nv.get("security_counter") == 1


def test_counter_catches_up_at_boot_after_a_cut_between_image_ok_and_counter(images: Images) -> None:
    board = Board(images).factory(images.old)
    board.stage(images.new)
    board.bl.boot(ResetCause.SOFTWARE)
    nv_end = board.layout.nv_offset + board.layout.nv_sectors * board.layout.sector_size
    # Power fails at the NV write that follows image_ok.
    board.flash.interrupter = lambda op, d: Cut() if op.offset < nv_end else None
    with pytest.raises(PowerLoss):
        board.bl.confirm()
    board.flash.interrupter = None
    assert board.bl.is_confirmed() and board.nv.get("security_counter") == 1
    result = board.bl.boot(ResetCause.POWER_ON)
    assert not result.reverted and board.nv.get("security_counter") == 2


@pytest.mark.parametrize("content", ["blank", "garbage"])
def test_blank_or_garbage_flash_boots_into_recovery(images: Images, content: str) -> None:
    board = Board(images)
    if content == "garbage":
        board.flash.restore(bytes((i * 7 + 3) % 256 for i in range(board.layout.total_size)))
    result = board.bl.boot(ResetCause.POWER_ON)
    assert result.mode is BootMode.RECOVERY and result.image is None and result.reason is Reason.NO_VALID_IMAGE
    assert "BOOT: no valid image, entering recovery" in board.lines
    assert board.update() == (UpdateState.RECOVERY, Reason.NO_VALID_IMAGE)


def test_recovery_board_installs_a_permanent_image(images: Images) -> None:
    board = Board(images)
    assert board.bl.boot(ResetCause.POWER_ON).mode is BootMode.RECOVERY
    board.stage(images.new, ActivationMode.PERMANENT)
    result = board.bl.boot(ResetCause.SOFTWARE)
    assert result.mode is BootMode.APPLICATION and result.image.version_str == "1.1.0" and board.bl.is_confirmed()


def test_cut_mid_swap_resumes_on_the_next_boot(images: Images) -> None:
    board = Board(images).factory(images.old)
    board.stage(images.new)
    countdown = iter(range(40, -1, -1))
    board.flash.interrupter = lambda op, d: Cut(torn=True, fraction=0.5) if next(countdown) == 0 else None
    with pytest.raises(PowerLoss):
        board.bl.boot(ResetCause.SOFTWARE)
    board.flash.interrupter = None
    result = board.bl.boot(ResetCause.POWER_ON)
    assert any(line.startswith("BOOT: resuming swap type=TEST") for line in board.lines)
    assert result.trial and board.primary(len(images.new)) == images.new


@pytest.mark.parametrize("sent_blocks, stored_blocks", [(6, 4), (5, 4), (4, 4), (7, 0)])
def test_resumed_download_skips_what_is_programmed_and_writes_the_rest(images: Images, sent_blocks: int,
                                                                        stored_blocks: int) -> None:
    board = Board(images).factory(images.old)
    block = 1020  # unaligned like the 4092-byte UDS blocks, small enough for this layout
    image = images.new
    board.bl.erase_secondary()
    for off in range(0, sent_blocks * block, block):
        board.bl.write_secondary(off, image[off:off + block])
    # Link lost: the board's resume record says `stored_blocks` blocks (aligned down); the RAM tail is gone.
    resume_at = stored_blocks * block - (stored_blocks * block) % LAYOUT.write_align
    board.bl.resume_secondary(resume_at)
    for off in range(resume_at, len(image), block):
        board.bl.write_secondary_resumed(off, image[off:off + block])
    assert board.bl.staged_image() == image


def test_resume_with_different_programmed_bytes_is_a_programming_failure(images: Images) -> None:
    board = Board(images).factory(images.old)
    board.bl.erase_secondary()
    board.bl.write_secondary(0, images.new[:8192])
    board.bl.resume_secondary(0)
    with pytest.raises(FlashError):
        board.bl.write_secondary_resumed(0, bytes(b ^ 0xFF for b in images.new[:8192]))
