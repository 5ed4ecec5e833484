"""The virtual board of the `flash_bootloader` family: a dual-bank part with an OEM flash bootloader.

The application runs from the active bank; the tester programs the other (inactive) bank in the
background with the OEM sequence (hil/dut/fbl_sequence.py): fingerprint, erase by routine with
address and size, RequestDownload / TransferData / RequestTransferExit per logical block, the
check-memory routine with the detached signature, the check-programming-dependencies routine. Only
when both checks pass is the bank marked valid and pending; the next reset (the activation) switches
banks and trial-boots the new image. The previous bank stays valid: it is the backup. A trial boot
that does not confirm (self-test failed, crash, watchdog, power loss) is reverted at the next boot
by switching back - the board is never without a working image.

Flash layout (hil.bench.config.FlashLayout): NV | bank 0 | bank 1 | (scratch, unused). The profile's
logical blocks map onto a bank from the first block's address on. The bootloader's state lives in the
journaled NV store ("fbl": active bank, valid banks, pending install, trial boot), so every switch,
install and revert is one NV record: a power cut at any flash operation leaves the old or the new
state (the exhaustive sweep, hil/sim/sweep.py, proves it with `FblRig`).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Callable, Sequence, cast

from hil.bench.config import FlashLayout
from hil.bench.contract import BootMode, Did, Nrc, Reason, ResetCause, Routine, UpdateState
from hil.bench.dut_profile import DutProfile, LogicalBlock
from hil.errors import HilError, ImageError
from hil.images import fbl as fmt
from hil.images.mcuboot import TrustedKey
from hil.sim.bootloader import BootResult, revert_reason
from hil.sim.defects import Defects
from hil.sim.diag import RESUME_RECORD_EVERY, DiagServer, NegativeResponse, _Download, _FlashWriter, _require
from hil.sim.errors import FlashError, PowerLoss
from hil.sim.family import BoardParts
from hil.sim.flash import FlashModel
from hil.sim.nvstore import NvStore
from hil.sim.sweep import CONFIG, SweepRig

#: Checks a defective board skips (hil/sim/defects.py), by the Reason the check reports.
MEMORY_WAIVERS = {Reason.HASH_MISMATCH: "hash_check_skipped", Reason.UNSIGNED: "unsigned_image_accepted",
                  Reason.UNKNOWN_KEY: "unknown_key_accepted", Reason.SIGNATURE_INVALID: "check_memory_ignores_signature",
                  Reason.TRUNCATED: "check_routine_passes_truncated_download"}
DEPENDENCY_WAIVERS = {Reason.WRONG_HARDWARE: "wrong_hardware_accepted", Reason.DOWNGRADE_VERSION: "downgrade_accepted",
                      Reason.DOWNGRADE_SECURITY_COUNTER: "downgrade_accepted",
                      Reason.CONFIG_INCOMPATIBLE: "config_incompatible_accepted"}


def _state(nv: NvStore) -> dict[str, Any]:
    state = nv.get("fbl", None)
    return dict(state) if isinstance(state, dict) else {"active": 0, "valid": [False, False], "pending": None,
                                                        "trial": None}


class FblBootloader:
    """The flash bootloader of a dual-bank part (module docstring). The application's programming services use
    `erase_range`, `write`, `check_memory`, `check_dependencies`, `mark_pending`; the board uses `boot`,
    `confirm`, `is_confirmed`."""

    def __init__(self, flash: FlashModel, layout: FlashLayout, nv: NvStore, trusted: Sequence[TrustedKey],
                 hardware_id: str, *, log: Callable[[str], None] = lambda line: None, defects: Defects | None = None,
                 profile: DutProfile | None = None) -> None:
        if profile is None or not profile.update.blocks:
            raise FlashError("the flash-bootloader board needs the DUT profile's update.blocks")
        self.flash = flash
        self.layout = layout
        self.nv = nv
        self.trusted = list(trusted)
        self.hardware_id = hardware_id
        self.defects = defects or Defects()
        self.profile = profile
        self.blocks: list[LogicalBlock] = list(profile.update.blocks)
        self.base = self.blocks[0].address  # logical address of a bank's first byte
        self._log = log
        self._lines: list[str] = []
        self._bank_bytes = layout.slot_size + layout.sector_size  # a slot and its (here unused) trailer sector
        for b in self.blocks:
            if (b.address - self.base) % layout.sector_size or b.size % layout.sector_size:
                raise FlashError(f"logical block {b.name} 0x{b.address:X}+0x{b.size:X} is not aligned to the "
                                 f"{layout.sector_size}-byte sectors")
            if b.address + b.size - self.base > self._bank_bytes:
                raise FlashError(f"logical block {b.name} ends 0x{b.address + b.size - self.base:X} into a bank of "
                                 f"{self._bank_bytes} bytes (flash_layout.slot_sectors + 1 sectors)")
        self._tail: tuple[int, int, bytes] | None = None  # (bank, logical address, bytes) not yet programmed

    # ------------------------------------------------------------------ flash access
    def log(self, line: str) -> None:
        self._lines.append(line)
        self._log(line)

    def _phys(self, bank: int, address: int, length: int = 0) -> int:
        off = address - self.base
        if off < 0 or off + length > self._bank_bytes:
            raise FlashError(f"0x{address:X}+{length} lies outside the bank (0x{self.base:X}+{self._bank_bytes})")
        return (self.layout.primary_offset if bank == 0 else self.layout.secondary_offset) + off

    def read(self, bank: int, address: int, length: int) -> bytes:
        return self.flash.read(self._phys(bank, address, length), length)

    def state(self) -> dict[str, Any]:
        """The bootloader's NV record (a copy)."""
        return _state(self.nv)

    @property
    def active(self) -> int:
        return int(self.state()["active"])

    @property
    def inactive(self) -> int:
        return 1 - self.active

    def block_at(self, address: int) -> LogicalBlock | None:
        """The logical block that holds `address`."""
        return next((b for b in self.blocks if b.address <= address < b.address + b.size), None)

    def invalidate(self, bank: int) -> None:
        """The bank no longer holds a usable image (before anything in it is erased): one NV record."""
        s = self.state()
        valid = list(s["valid"])
        pending = s["pending"]
        if valid[bank] or (pending and pending.get("bank") == bank):
            valid[bank] = False
            self.nv.update(fbl={**s, "valid": valid, "pending": None if pending and pending.get("bank") == bank
                                else pending})

    def erase_range(self, bank: int, address: int, size: int) -> None:
        """Erase the sectors holding [address, address + size) in `bank` (only those not blank)."""
        self._tail = None
        sector = self.layout.sector_size
        start = self._phys(bank, address, size)
        for off in range(start - start % sector, start + size, sector):
            if not self.flash.is_erased(off, sector):
                self.flash.erase_sector(off)

    def write(self, bank: int, address: int, data: bytes, *, resumed: bool = False) -> None:
        """Program download bytes at logical `address` of `bank`. Blocks need not be phrase aligned: an unaligned
        tail waits in RAM for the next contiguous block or `flush`. `resumed`: phrases already programmed with
        the same bytes are skipped (a block resent after a cut between programming and recording it)."""
        align = self.layout.write_align
        if self._tail is not None:
            t_bank, t_addr, t_data = self._tail
            if t_bank == bank and address == t_addr + len(t_data):
                address, data = t_addr, t_data + bytes(data)
                self._tail = None
            else:
                self.flush()
        if (address - self.base) % align:
            raise FlashError(f"write at 0x{address:X} is neither phrase aligned nor contiguous with the previous block")
        if resumed:
            existing = self.read(bank, address, len(data))
            skip = 0
            while skip + align <= len(data) and existing[skip:skip + align] == data[skip:skip + align]:
                skip += align
            if skip + align <= len(data) and existing[skip:skip + align] != b"\xff" * align:
                raise FlashError(f"resume at 0x{address + skip:X}: programmed bytes differ from the resent block")
            address, data = address + skip, bytes(data[skip:])
        whole = len(data) - len(data) % align
        if whole:
            self.flash.program(self._phys(bank, address, whole), bytes(data[:whole]))
        if whole < len(data):
            self._tail = (bank, address + whole, bytes(data[whole:]))

    def flush(self) -> None:
        """Program a RAM tail, padded with 0xFF to a whole phrase."""
        if self._tail is None:
            return
        bank, address, data = self._tail
        self._tail = None
        padded = data + b"\xff" * (-len(data) % self.layout.write_align)
        self.flash.program(self._phys(bank, address, len(padded)), padded)

    def drop_tail(self) -> None:
        """A resumed download continues from what flash holds: a RAM tail of the interrupted one is gone."""
        self._tail = None

    def programmed_end(self, bank: int, address: int) -> int:
        """End of what is safely in flash of a download that started at `address` (the RAM tail not counted)."""
        if self._tail is not None and self._tail[0] == bank:
            return self._tail[1]
        return -1

    # ------------------------------------------------------------------ images
    def image(self, bank: int) -> fmt.FblImage | None:
        """The image a bank holds (its header parsed, not verified), None without a header."""
        try:
            return fmt.read_image(lambda a, n: self.read(bank, a, n), self.base)
        except (ImageError, FlashError):
            return None

    def _waive(self, table: dict[Reason, str]) -> Callable[[Reason], bool]:
        return lambda reason: reason in table and self.defects.has(table[reason])

    def check_memory(self, bank: int, record: bytes, downloaded: Callable[[int, int], bool]) -> fmt.FblImage:
        """The check-memory routine on `bank` (ImageError with the Reason)."""
        self.flush()
        return fmt.check_memory(lambda a, n: self.read(bank, a, n), self.base, downloaded, record, self.trusted,
                                waive=self._waive(MEMORY_WAIVERS))

    def check_dependencies(self, img: fmt.FblImage, *, restore: bool) -> None:
        """The check-programming-dependencies routine (a bench-level restore may go back in version and counter)."""
        if self.defects.has("dependency_check_skipped"):
            return
        running = self.image(self.active)
        schema = self.nv.get("config_schema")
        fmt.check_dependencies(img, hardware_id=self.hardware_id,
                               min_security_counter=0 if restore else int(self.nv.get("security_counter", 0) or 0),
                               current_version=None if restore or running is None else running.version_tuple,
                               config_schema=None if restore or schema is None else int(schema),
                               waive=self._waive(DEPENDENCY_WAIVERS))

    def mark_pending(self, bank: int, *, restore: bool) -> None:
        """Both checks passed: the bank is valid and installs at the next reset (one NV record)."""
        s = self.state()
        valid = list(s["valid"])
        valid[bank] = True
        self.nv.update(fbl={**s, "valid": valid, "pending": {"bank": bank, "restore": restore}})

    def pending(self) -> dict[str, Any] | None:
        pending = self.state()["pending"]
        return dict(pending) if pending else None

    # ------------------------------------------------------------------ boot
    def _set_update(self, state: UpdateState, reason: Reason, target: tuple[int, int, int] | None = None) -> dict[str, Any]:
        current = self.nv.get("update", {}) or {}
        record = {**current, "state": int(state), "reason": int(reason)}
        if target is not None:
            record["target"] = list(target)
        record.setdefault("target", [0, 0, 0])
        return record

    def boot(self, reset_cause: ResetCause) -> BootResult:
        """Revert an unconfirmed trial, or install a pending bank, then boot the active bank (or the other valid
        one; recovery when there is none). Each decision is one NV record. May raise PowerLoss from the flash."""
        self._lines = []
        self._tail = None
        s = self.state()
        trial = s["trial"]
        reverted = False
        if trial is not None and trial.get("bank") == s["active"]:
            reverted = self._revert(s, self._revert_reason(reset_cause))
        elif s["pending"]:
            self._install(s)
        return self._boot_active(reverted)

    def _revert_reason(self, cause: ResetCause) -> Reason:
        return revert_reason(cause, self.nv, self.defects)

    def _revert(self, s: dict[str, Any], reason: Reason) -> bool:
        failed, backup = int(s["active"]), int(s["trial"]["backup"])
        valid = list(s["valid"])
        if reason is Reason.SELFTEST_FAILED and self.defects.has("no_revert_on_self_test_failure"):
            self.log("FBL: keeping the image whose self-test failed")
            self.nv.update(fbl={**s, "trial": None})
            return False
        if not valid[backup] or self.image(backup) is None:
            # Nothing to go back to: keep the new image rather than brick (it is the only valid one).
            self.log("FBL: revert impossible, no valid backup bank; keeping the active bank")
            self.nv.update(fbl={**s, "trial": None})
            return False
        # the profile's line for the revert event (what cases wait for), then which bank
        self.log(self.profile.console.line("revert", reason=reason.name) + f" (bank {backup})")
        valid[failed] = False  # a failed image is never anybody's backup
        extra: dict[str, Any] = {}
        config = self.nv.get("config_backup")
        if config is not None and not self.defects.has("config_not_restored_on_revert"):
            extra["config"] = config
            schema = self.nv.get("config_schema_backup")
            if schema is not None:
                extra["config_schema"] = schema
        self.nv.update(fbl={**s, "active": backup, "valid": valid, "trial": None, "pending": None},
                       update=self._set_update(UpdateState.ROLLED_BACK, reason), **extra)
        return True

    def _install(self, s: dict[str, Any]) -> None:
        pending = s["pending"]
        bank, restore = int(pending["bank"]), bool(pending.get("restore"))
        img = self.image(bank)
        if not s["valid"][bank] or img is None:
            self.log(f"FBL: pending bank {bank} holds no valid image, install dropped")
            self.nv.update(fbl={**s, "pending": None})
            return
        old = int(s["active"])
        valid = list(s["valid"])
        if self.defects.has("backup_bank_invalidated_at_switch"):
            valid[old] = False
        self.log(f"FBL: switching to bank {bank} ({img.version_str}{', restore' if restore else ''})")
        changes: dict[str, Any] = {}
        if restore:
            # Bench-level restore: confirmed at once, and the stored counter follows the image (may go down).
            changes["security_counter"] = img.security_counter
            changes["update"] = self._set_update(UpdateState.SUCCESS, Reason.NONE, img.version_tuple)
            trial = None
        else:
            changes["update"] = self._set_update(UpdateState.TESTING, Reason.NONE, img.version_tuple)
            trial = {"bank": bank, "backup": old}
            if self.defects.has("counter_advanced_at_swap"):
                changes["security_counter"] = max(int(self.nv.get("security_counter", 0) or 0), img.security_counter)
        self.nv.update(fbl={**s, "active": bank, "valid": valid, "pending": None, "trial": trial}, **changes)

    def _boot_active(self, reverted: bool) -> BootResult:
        s = self.state()
        active = int(s["active"])
        img = self.image(active) if s["valid"][active] else None
        if img is None:
            other = 1 - active
            img = self.image(other) if s["valid"][other] else None
            if img is None:
                self.log("FBL: no valid image in either bank, staying in the bootloader")
                self.nv.update(update=self._set_update(UpdateState.RECOVERY, Reason.NO_VALID_IMAGE))
                return BootResult(BootMode.RECOVERY, None, False, False, Reason.NO_VALID_IMAGE, list(self._lines))
            self.log(f"FBL: active bank {active} holds no valid image, falling back to bank {other}")
            self.nv.update(fbl={**s, "active": other, "trial": None, "pending": None})
            s, active = self.state(), other
        trial = s["trial"] is not None and s["trial"].get("bank") == active
        if not trial:
            self._advance_counter(img)
        upd = self.nv.get("update", {}) or {}
        self.log(f"FBL: starting bank {active}: {img.version_str}" + (" (trial)" if trial else ""))
        return BootResult(BootMode.APPLICATION, img, trial, reverted, Reason(int(upd.get("reason", 0)))
                          if reverted else Reason.NONE, list(self._lines))

    def _advance_counter(self, img: fmt.FblImage) -> None:
        stored = int(self.nv.get("security_counter", 0) or 0)
        if img.security_counter > stored:
            self.nv.update(security_counter=img.security_counter)

    # ------------------------------------------------------------------ the application's side
    def confirm(self) -> None:
        """The running image passed its self-test: no longer a trial; the counter follows it."""
        s = self.state()
        if s["trial"] is not None:
            self.nv.update(fbl={**s, "trial": None})
        img = self.image(int(s["active"]))
        if img is not None:
            self._advance_counter(img)

    def is_confirmed(self) -> bool:
        s = self.state()
        return s["trial"] is None or s["trial"].get("bank") != s["active"]

    def primary_image(self) -> fmt.FblImage | None:
        return self.image(self.active)

    def backup_image(self) -> fmt.FblImage | None:
        """The previous image, kept valid in the other bank (None while that bank is programmed or after a revert)."""
        s = self.state()
        other = 1 - int(s["active"])
        pending = s["pending"]
        if not s["valid"][other] or (pending and pending.get("bank") == other):
            return None
        return self.image(other)

    def slot_image_hash(self, primary: bool) -> bytes:
        """The image digest of the active bank, or of the backup bank (32 zero bytes: none)."""
        img = self.primary_image() if primary else self.backup_image()
        return img.digest if img is not None else bytes(32)

    @staticmethod
    def factory_program(flash: FlashModel, layout: FlashLayout, image: bytes, profile: DutProfile | None = None) -> None:
        """Blank flash -> `image` (a flash-bootloader bundle) in bank 0, valid and active (production programming)."""
        if profile is None:
            raise FlashError("factory programming a flash-bootloader board needs its DUT profile")
        bl = FblBootloader(flash, layout, NvStore(flash, layout), [], "", profile=profile)
        for block, data in fmt.FblContainer(profile).blocks_of(image):
            bl.erase_range(0, block.address, block.size)
            bl.write(0, block.address, data)
            bl.flush()
        bl.nv.update(fbl={"active": 0, "valid": [True, False], "pending": None, "trial": None})


# --------------------------------------------------------------------------- the UDS application
class FblDiagServer(DiagServer):
    """The UDS application of the flash-bootloader board: the OEM programming services on the inactive bank, the
    reset as the (refusable) activation, the fingerprint DID. Everything else is the default application's."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._checked: fmt.FblImage | None = None  # the image check-memory accepted in this session

    @property
    def bl(self) -> FblBootloader:
        return cast(FblBootloader, self.ecu.bootloader)

    # ------------------------------------------------------------------ bookkeeping of what was downloaded
    def _progress_record(self) -> dict[str, Any]:
        """What this programming of the inactive bank has done so far, kept in NV across resets and power cuts:
        the logical blocks erased and not yet downloaded into, the ranges downloaded whole."""
        rec = self.ecu.nv_get("fbl_dl", None)
        if not isinstance(rec, dict) or rec.get("bank") != self.bl.inactive:
            return {"bank": self.bl.inactive, "done": [], "erased": []}
        return {"erased": [], **rec}

    def _downloaded(self, address: int, length: int) -> bool:
        spans = sorted((int(a), int(a) + int(n)) for a, n in self._progress_record()["done"])
        end = address
        for start, stop in spans:
            if start <= end < stop:
                end = stop
        return end >= address + length

    def _erased_block(self, block: LogicalBlock) -> None:
        """`block` was erased: nothing of it is downloaded, and it may take one fresh download."""
        rec = self._progress_record()
        done = [[a, n] for a, n in rec["done"] if not block.address <= int(a) < block.address + block.size]
        erased = sorted({*rec["erased"], block.name})
        self.ecu.nv_update(fbl_dl={**rec, "done": done, "erased": erased}, download=None)

    # ------------------------------------------------------------------ 0x31
    def _routine_control(self, req: bytes) -> bytes:
        _require(len(req) >= 4, Nrc.INCORRECT_MESSAGE_LENGTH)
        role = self.profile.routine_role(int.from_bytes(req[2:4], "big"))
        if role not in (Routine.ERASE_MEMORY, Routine.CHECK_MEMORY, Routine.CHECK_PROGRAMMING_DEPENDENCIES):
            return super()._routine_control(req)
        _require(req[1] & 0x7F == 0x01, Nrc.SUBFUNCTION_NOT_SUPPORTED)
        _require(self.session == self.profile.sessions.programming, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(self.unlocked_level != 0, Nrc.SECURITY_ACCESS_DENIED)
        head = bytes([0x71, 0x01]) + req[2:4]
        if role is Routine.ERASE_MEMORY:
            return head + self._erase(req[4:])
        if role is Routine.CHECK_MEMORY:
            return head + self._check_memory(req[4:])
        _require(len(req) == 4, Nrc.INCORRECT_MESSAGE_LENGTH)
        return head + self._check_dependencies()

    def _erase(self, record: bytes) -> bytes:
        _require(len(record) >= 1, Nrc.INCORRECT_MESSAGE_LENGTH)
        alfid = record[0]
        n_size, n_addr = alfid >> 4, alfid & 0x0F
        _require(1 <= n_addr <= 4 and 1 <= n_size <= 4, Nrc.REQUEST_OUT_OF_RANGE)
        _require(len(record) == 1 + n_addr + n_size, Nrc.INCORRECT_MESSAGE_LENGTH)
        address = int.from_bytes(record[1:1 + n_addr], "big")
        size = int.from_bytes(record[1 + n_addr:], "big")
        block = self.bl.block_at(address)
        _require(block is not None and block.address == address and 0 < size <= block.size, Nrc.REQUEST_OUT_OF_RANGE)
        _require(self._download is None, Nrc.CONDITIONS_NOT_CORRECT)
        assert block is not None
        bank = self.bl.inactive
        self.ecu.log(f"FBL: erasing {block.name} 0x{address:08X}+0x{size:X} in bank {bank}")
        self._checked = None
        try:
            self.bl.invalidate(bank)  # never a valid flag over a half-erased bank
            self.ecu.flash_erase(lambda: self.bl.erase_range(bank, address, block.size))
        except FlashError:
            raise NegativeResponse(Nrc.GENERAL_PROGRAMMING_FAILURE) from None
        self._erased_block(block)
        self._progress = 0
        self.ecu.set_update(UpdateState.IDLE, Reason.NONE)
        return b"\x00"

    def _check_memory(self, record: bytes) -> bytes:
        state = self.ecu.update_state()
        _require(state in (UpdateState.DOWNLOADED, UpdateState.VERIFIED, UpdateState.REJECTED), Nrc.REQUEST_SEQUENCE_ERROR)
        _require(self._download is None, Nrc.REQUEST_SEQUENCE_ERROR)
        bank = self.bl.inactive
        self._checked = None
        try:
            img = self.bl.check_memory(bank, record, self._downloaded)
        except (ImageError, FlashError) as exc:
            reason = Reason(exc.reason) if isinstance(exc, ImageError) else Reason.BAD_MAGIC
            header = self.bl.image(bank)
            self.ecu.log(f"FBL: check memory failed reason={reason.name}: {exc}")
            self.ecu.set_update(UpdateState.REJECTED, reason,
                                target=header.version_tuple if header is not None else (0, 0, 0))
            return bytes([0x01, self.profile.encode(reason)])
        self._checked = img
        self.ecu.log(f"FBL: check memory ok version={img.version_str} digest={img.digest.hex()[:16]}")
        return bytes([0x00, self.profile.encode(Reason.NONE)])

    def _check_dependencies(self) -> bytes:
        _require(self._checked is not None, Nrc.REQUEST_SEQUENCE_ERROR)
        img = self._checked
        assert img is not None
        restore = self._bench_level()
        try:
            self.bl.check_dependencies(img, restore=restore)
        except ImageError as exc:
            reason = Reason(exc.reason)
            self.ecu.log(f"FBL: dependency check failed reason={reason.name}: {exc}")
            self._checked = None
            self.ecu.set_update(UpdateState.REJECTED, reason, target=img.version_tuple)
            return bytes([0x01, self.profile.encode(reason)])
        self._back_up_config()
        self.bl.mark_pending(self.bl.inactive, restore=restore)
        self.ecu.nv_update(fbl_dl=None, download=None)
        self.ecu.log(f"FBL: dependencies ok, bank {self.bl.inactive} valid, installs at the next reset")
        self.ecu.set_update(UpdateState.VERIFIED, Reason.NONE, target=img.version_tuple)
        return bytes([0x00, self.profile.encode(Reason.NONE)])

    def _back_up_config(self) -> None:
        if not self.recovery and not self.ecu.defects.has("config_not_backed_up"):
            # The bootloader restores this configuration if the new image is reverted.
            self.ecu.nv_update(config_backup=self.ecu.nv_get("config", {}),
                               config_schema_backup=self.ecu.nv_get("config_schema", 1))

    # ------------------------------------------------------------------ 0x11: the activation
    def _ecu_reset(self, req: bytes) -> bytes | None:
        _require(len(req) == 2, Nrc.INCORRECT_MESSAGE_LENGTH)
        _require(req[1] & 0x7F in (0x01, 0x02, 0x03), Nrc.SUBFUNCTION_NOT_SUPPORTED)
        if self.bl.pending() is not None and self.ecu.update_state() in (UpdateState.VERIFIED,
                                                                          UpdateState.ACTIVATION_PENDING):
            self._activation_preconditions()
        return super()._ecu_reset(req)

    def _activation_preconditions(self) -> None:
        """The reset installs the pending image: refused (0x22 / 0x93, the reason recorded, nothing lost) outside
        the charging window, while current flows or with the supply low."""
        if not self.recovery:
            self._charging_window()
        volts = self.ecu.supply_voltage()
        if volts < self.ecu.sim.activation_min_supply_v and not self.ecu.defects.has("supply_precondition_ignored"):
            self.ecu.charge_inhibit = False
            self.ecu.log(f"FBL: activation refused, supply {volts:.2f} V")
            self.ecu.set_update(UpdateState.VERIFIED, Reason.SUPPLY_LOW)
            raise NegativeResponse(Nrc.VOLTAGE_TOO_LOW)
        self._back_up_config()
        self.ecu.log("FBL: activation accepted, switching banks at the reset")
        self.ecu.set_update(UpdateState.ACTIVATION_PENDING, Reason.NONE)
        self.ecu.charge_inhibit = False  # the update state holds the charge limit at 0 A from here

    # ------------------------------------------------------------------ 0x34 0x36 0x37
    def _request_download(self, req: bytes) -> bytes:
        from hil.bench import contract

        _require(len(req) >= 3, Nrc.INCORRECT_MESSAGE_LENGTH)
        n_size, n_addr = req[2] >> 4, req[2] & 0x0F
        address = int.from_bytes(req[3:3 + n_addr], "big") if 1 <= n_addr <= 4 and len(req) >= 3 + n_addr else -1
        if address == contract.PROFILE_DOWNLOAD_ADDRESS:
            return super()._request_download(req)  # a configuration package: the default application's
        _require(self.session == self.profile.sessions.programming, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(self.unlocked_level != 0, Nrc.SECURITY_ACCESS_DENIED)
        _require(req[1] == 0x00, Nrc.REQUEST_OUT_OF_RANGE)
        _require(1 <= n_addr <= 4 and 1 <= n_size <= 4, Nrc.REQUEST_OUT_OF_RANGE)
        _require(len(req) == 3 + n_addr + n_size, Nrc.INCORRECT_MESSAGE_LENGTH)
        size = int.from_bytes(req[3 + n_addr:], "big")
        _require(self._download is None, Nrc.CONDITIONS_NOT_CORRECT)
        block = self.bl.block_at(address)
        _require(block is not None and size > 0, Nrc.REQUEST_OUT_OF_RANGE)
        assert block is not None
        bank = self.bl.inactive
        if address != block.address:
            return self._resume_block(block, bank, address, size)
        if block is self.bl.blocks[0]:
            self.ecu.begin_attempt()  # the header's block starts an update attempt
        if size > block.size:
            self.ecu.log(f"FBL: download refused, {size} bytes exceed block {block.name} ({block.size})")
            self.ecu.set_update(UpdateState.REJECTED, Reason.OVERSIZE)
            raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE)
        rec = self._progress_record()
        _require(block.name in rec["erased"], Nrc.UPLOAD_DOWNLOAD_NOT_ACCEPTED)
        # A second download needs a fresh erase: NOR cannot be rewritten.
        self.ecu.nv_update(fbl_dl={**rec, "erased": [n for n in rec["erased"] if n != block.name]},
                           download={"address": block.address, "size": size, "stored": 0, "crc": 0})
        self._start_block(block, bank, 0, size)
        self.ecu.log(f"FBL: download of {block.name} started size={size}")
        return b"\x74\x20" + struct.pack(">H", self.profile.uds.max_block_length)

    def _start_block(self, block: LogicalBlock, bank: int, offset: int, size: int) -> None:
        self._checked = None
        resumed = offset > 0
        self._download = _Download(block.address, size, base=offset)
        self._download.writer = _FlashWriter(
            lambda off, data: self.bl.write(bank, block.address + off, data, resumed=resumed),
            self._stored_block(block, bank, offset + size))
        self._progress = offset * 100 // (offset + size)
        self.ecu.set_update(UpdateState.DOWNLOADING, Reason.NONE)

    def _resume_block(self, block: LogicalBlock, bank: int, address: int, size: int) -> bytes:
        """RequestDownload at block address + k: continue an interrupted download whose first k bytes are stored."""
        rec = self.ecu.nv_get("download") or {}
        offset = address - block.address
        total, stored = int(rec.get("size", 0)), int(rec.get("stored", 0))
        if not (rec.get("address") == block.address and 0 < stored == offset and offset + size == total):
            self.ecu.log(f"FBL: resume refused at {block.name}+{offset} +{size} (stored {stored} of {total})")
            raise NegativeResponse(Nrc.REQUEST_OUT_OF_RANGE)
        self.bl.drop_tail()
        self._start_block(block, bank, offset, size)
        self.ecu.log(f"FBL: download of {block.name} resumed at {offset} of {total} bytes")
        return b"\x74\x20" + struct.pack(">H", self.profile.uds.max_block_length)

    def _stored_block(self, block: LogicalBlock, bank: int, total: int) -> Callable[[int], None]:
        """Resume bookkeeping: after every few programmed blocks, how much of the logical block is safely in flash."""
        count = [0]

        def record(end: int) -> None:
            count[0] += 1
            if count[0] % RESUME_RECORD_EVERY or self.ecu.defects.has("download_progress_forgotten"):
                return
            held = self.bl.programmed_end(bank, block.address)
            stored = (held - block.address) if held >= 0 else end
            stored -= stored % self.ecu.layout.write_align
            crc = zlib.crc32(self.bl.read(bank, block.address, stored))
            self.ecu.nv_update(download={"address": block.address, "size": total, "stored": stored, "crc": crc})
        return record

    def _transfer_exit(self, req: bytes) -> bytes:
        dl = self._download
        if dl is None or dl.buffer is not None:
            return super()._transfer_exit(req)
        response = super()._transfer_exit(req)  # waits for the writer; DOWNLOADED
        try:
            self.bl.flush()
        except FlashError:
            self.ecu.set_update(UpdateState.IDLE, Reason.DOWNLOAD_ABORTED)
            raise NegativeResponse(Nrc.GENERAL_PROGRAMMING_FAILURE) from None
        rec = self._progress_record()
        done = [*rec["done"], [dl.address, dl.base + dl.size]]
        self.ecu.nv_update(fbl_dl={**rec, "done": done})
        if self.ecu.defects.has("bank_marked_valid_before_check") and dl.address == self.bl.base:
            self.bl.mark_pending(self.bl.inactive, restore=False)  # before any check ran
        return response

    def resume_record(self) -> tuple[int, int, int]:
        rec = self.ecu.nv_get("download") or {}
        return int(rec.get("size", 0)), int(rec.get("stored", 0)), int(rec.get("crc", 0))

    # ------------------------------------------------------------------ 0x22 0x2E
    def did_value(self, did: int) -> bytes:
        from hil.bench import contract

        role = self.profile.did_role(did)
        if role is Did.FINGERPRINT:
            stored = self.ecu.nv_get("fingerprint", None)
            n = self.profile.update.fingerprint_length
            return bytes.fromhex(stored) if isinstance(stored, str) else bytes(n)
        if role is Did.FLASH_LAYOUT:
            lay = self.ecu.layout
            return struct.pack(">III", self.bl.base, lay.slot_size, lay.sector_size)
        if role is Did.BOOT_INFO:
            return self.profile.encode_boot_info(contract.BootInfo(
                contract.BootMode.RECOVERY if self.recovery else contract.BootMode.APPLICATION,
                self.bl.active, self.bl.is_confirmed(), int(self.ecu.reset_cause)))
        return super().did_value(did)

    def _write_did(self, req: bytes) -> bytes:
        _require(len(req) >= 4, Nrc.INCORRECT_MESSAGE_LENGTH)
        if self.profile.did_role(int.from_bytes(req[1:3], "big")) is not Did.FINGERPRINT:
            return super()._write_did(req)
        _require(self.session == self.profile.sessions.programming, Nrc.SERVICE_NOT_SUPPORTED_IN_SESSION)
        _require(self.unlocked_level != 0, Nrc.SECURITY_ACCESS_DENIED)
        _require(len(req) == 3 + self.profile.update.fingerprint_length, Nrc.INCORRECT_MESSAGE_LENGTH)
        self.ecu.nv_update(fingerprint=req[3:].hex())
        self.ecu.log(f"FBL: fingerprint {req[3:].hex()}")
        return bytes([0x6E]) + req[1:3]


# --------------------------------------------------------------------------- the exhaustive sweep
class FblRig(SweepRig):
    """The flash-bootloader board for the exhaustive sweep. Its clean run includes programming the new image into
    the inactive bank (invalidate, erase, write, both checks, the pending record): a cut there must leave the old
    image running untouched; a cut after the pending record must end with the install (or, for a cut in the trial
    boot, a clean revert)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.container = fmt.FblContainer(self.profile)
        self.old_digest, self.new_digest = self.container.digest(self.old), self.container.digest(self.new)
        self.pending_op = -1  # index of the clean run's operation that writes the pending record

    def security_counter_of(self, image: bytes) -> int:
        return self.container.read(image).security_counter

    def prepare(self) -> bytes:
        if self.scenario == "permanent":
            raise HilError("the flash_bootloader family has no permanent activation (every install is a trial boot)")
        FblBootloader.factory_program(self.flash, self.layout, self.old, self.profile)
        self.nv.update(config=CONFIG, config_schema=1, security_counter=0, boot_count=0,
                       update={"state": 0, "reason": 0, "target": [0, 0, 0]})
        self.bl.boot(ResetCause.POWER_ON)
        return self.flash.snapshot()

    def _program(self) -> None:
        """What the application's programming services do with the tester's download (hil/sim/fbl.py FblDiagServer)."""
        bl = cast(FblBootloader, self.bl)
        bank = bl.inactive
        self.recorder.phase = "programming: invalidate"
        bl.invalidate(bank)
        done: list[tuple[int, int]] = []
        for block, data in self.container.blocks_of(self.new):
            self.recorder.phase = f"programming: erase {block.name}"
            bl.erase_range(bank, block.address, block.size)
            self.recorder.phase = f"programming: download {block.name}"
            for off in range(0, len(data), 1024):  # TransferData-sized writes
                bl.write(bank, block.address + off, data[off:off + 1024])
            bl.flush()
            done.append((block.address, len(data)))

        def downloaded(address: int, length: int) -> bool:
            return any(a <= address and address + length <= a + n for a, n in done)

        img = bl.check_memory(bank, self.container.signature(self.new), downloaded)
        bl.check_dependencies(img, restore=False)
        self.recorder.phase = "programming: configuration backup"
        self.nv.update(config_backup=CONFIG, config_schema_backup=1)
        self.recorder.phase = "programming: pending record"
        self.pending_op = len(self.recorder.ops)
        bl.mark_pending(bank, restore=False)
        self.nv.update(update={"state": int(UpdateState.ACTIVATION_PENDING), "reason": 0, "target": [0, 0, 0]})

    def clean_run(self) -> list[Any]:
        """Programming the inactive bank, then the boots of the base rig (the recorder keeps counting)."""
        self.flash.interrupter = self.recorder
        try:
            self._program()
        finally:
            self.flash.interrupter = None
        return super().clean_run()

    def expects_install(self, op_index: int) -> bool:
        return op_index > self.pending_op

    def check_untouched(self, result: BootResult) -> list[str]:
        bl = cast(FblBootloader, self.bl)
        s = bl.state()
        running = bl.primary_image()
        problems = []
        if running is None or running.digest != self.old_digest:
            problems.append(f"the active bank {s['active']} does not hold the old image intact")
        if s["pending"] or s["trial"]:
            problems.append(f"an interrupted programming left an install behind: {s}")
        counter = int(self.nv.get("security_counter", -1))
        if counter != self.security_counter_of(self.old):
            problems.append(f"stored security counter {counter}, expected {self.security_counter_of(self.old)}")
        return problems

    def check_images(self, result: BootResult, *, expect_new: bool) -> list[str]:
        bl = cast(FblBootloader, self.bl)
        s = bl.state()
        problems = []
        want = self.new_digest if expect_new else self.old_digest
        running = bl.primary_image()
        if running is None or running.digest != want:
            problems.append(f"the active bank {s['active']} does not hold the {'new' if expect_new else 'old'} image "
                            f"intact (boots {result.image.version_str if result.image else 'nothing'})")
        if s["pending"] or s["trial"]:
            problems.append(f"bootloader record not settled: {s}")
        if expect_new:
            backup = bl.backup_image()
            if backup is None or backup.digest != self.old_digest:
                problems.append("the other bank does not keep the old image as the valid backup")
        elif s["valid"][1 - int(s["active"])]:
            problems.append("the reverted image's bank is still marked valid")
        return problems


PARTS = BoardParts(bootloader=FblBootloader, diag_server=FblDiagServer, sweep_rig=FblRig)
