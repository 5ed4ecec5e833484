"""Defective virtual boards on purpose: each defect breaks exactly one promise a BMS must keep.

A validation suite is worth the defects it catches. The bench YAML's `sim:` section lists defects
(`defects: [name, ...]`, sim_only); the board, its bootloader, its SOC core and the bench's supply
model consult `Defects.has(name)` at the one place each promise is kept. `benchmarks/mutation_score.py`
runs the suite against every defective board and shows which test catches which defect.

This module is plain data plus one small class (no imports from the rest of hil.sim), so the bench
YAML loader can name the accepted defects in its error without starting a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class DefectInfo:
    """One defect: the promise it breaks, the fault-matrix rows of that promise, the tests named for it."""

    promise: str
    rows: tuple[int, ...]
    #: pytest -k expression selecting the cases named for this promise (the mutation run's selection).
    selection: str
    #: test files (under testcases/) holding those cases.
    files: tuple[str, ...]
    #: update families (hil/images/families.py) whose board can carry it; () = every family's.
    families: tuple[str, ...] = ()

    def applies_to(self, family: str) -> bool:
        """Whether a board of update family `family` can be built with this defect."""
        return not self.families or family in self.families


#: Every defect the virtual board can be built with. Names read as what the defective board does.
DEFECTS: dict[str, DefectInfo] = {
    # ---- configuration (row 15)
    "config_not_restored_on_revert": DefectInfo(
        "the bootloader restores the configuration backup when it reverts", (15,),
        "configuration_restored_on_rollback", ("test_configuration.py",)),
    "config_not_backed_up": DefectInfo(
        "the configuration is backed up before an install", (15,),
        "configuration_restored_on_rollback", ("test_configuration.py",)),
    # ---- new CAN message of a release (row 21)
    "new_message_never_sent": DefectInfo(
        "the 2.0.0 build sends its new CAN message BMS_Balancing", (21,),
        "new_can_message", ("test_new_features.py",)),
    "new_message_after_rollback": DefectInfo(
        "a rolled-back board stops sending the message of the build it left", (21,),
        "new_can_message_is_gone_after_rollback", ("test_new_features.py",)),
    "existing_signal_layout_changed": DefectInfo(
        "a new release keeps the layout of every existing message", (21,),
        "existing_messages_keep_their_layout", ("test_new_features.py",)),
    # ---- transport (rows 5, 12, 13)
    "short_download_accepted": DefectInfo(
        "RequestTransferExit refuses a download shorter than announced", (13,),
        "short_download", ("test_transport_faults.py",)),
    "wrong_block_sequence_accepted": DefectInfo(
        "TransferData refuses a block with the wrong sequence counter", (13,),
        "broken_block_sequence", ("test_transport_faults.py",)),
    "s3_never_expires": DefectInfo(
        "a silent tester's session falls back to the default one after S3 and its download is abandoned", (13,),
        "silent_tester", ("test_transport_faults.py",)),
    "tester_present_ignored": DefectInfo(
        "TesterPresent keeps a non-default session beyond S3", (13,),
        "tester_present_keeps", ("test_transport_faults.py",)),
    "endless_transfer_data_accepted": DefectInfo(
        "TransferData refuses data beyond the announced size", (12,),
        "endless_transfer_data", ("test_transport_faults.py",)),
    # ---- image verification (rows 5, 6, 7, 10, 11)
    "check_routine_passes_truncated_download": DefectInfo(
        "the check routine refuses a truncated download", (5,),
        "truncated", ("test_image_faults.py",)),
    "hash_check_skipped": DefectInfo(
        "a corrupted image fails its hash check", (5,),
        "flipped_payload_bit", ("test_image_faults.py",)),
    "unsigned_image_accepted": DefectInfo(
        "an unsigned image is refused", (6,),
        "signature-missing", ("test_image_faults.py",)),
    "unknown_key_accepted": DefectInfo(
        "an image signed with an untrusted key is refused", (6,),
        "unknown_key", ("test_image_faults.py",)),
    "downgrade_accepted": DefectInfo(
        "an older version is refused as a downgrade", (7,),
        "downgrade", ("test_image_faults.py",)),
    "wrong_hardware_accepted": DefectInfo(
        "an image built for other hardware is refused", (10,),
        "wrong_hardware", ("test_image_faults.py",)),
    "config_incompatible_accepted": DefectInfo(
        "firmware that cannot read the stored configuration is refused", (11,),
        "configuration_schema_unsupported", ("test_image_faults.py",)),
    # ---- anti-rollback counter (row 8)
    "counter_advanced_at_swap": DefectInfo(
        "the security counter advances when the image confirms, not when it is swapped in", (8,),
        "counter_not_advanced", ("test_anti_rollback.py",)),
    # ---- revert (row 9)
    "no_revert_on_self_test_failure": DefectInfo(
        "a firmware whose self-test fails is reverted", (9,),
        "self_test_fails", ("test_update.py",)),
    "watchdog_never_fires": DefectInfo(
        "the watchdog resets a hung firmware (then it is reverted)", (9,),
        "watchdog", ("test_update.py",)),
    "wrong_revert_reason_reported": DefectInfo(
        "a revert reports why it happened", (9,),
        "failed_update_is_rolled_back", ("test_update.py",)),
    # ---- preconditions (row 14)
    "pack_current_precondition_ignored": DefectInfo(
        "activation is refused while pack current flows", (14,),
        "pack_current", ("test_preconditions.py",)),
    "supply_precondition_ignored": DefectInfo(
        "activation is refused while the supply is low", (14,),
        "supply_is_low", ("test_preconditions.py",)),
    # ---- SecurityAccess (row 16)
    "security_access_never_locks_out": DefectInfo(
        "SecurityAccess locks out a brute-force tester", (16,),
        "brute_force", ("test_security_access.py",)),
    # ---- power cuts (rows 1, 2, 3, 4)
    "swap_resumed_from_wrong_step": DefectInfo(
        "an interrupted swap resumes at the step it was cut in", (3, 4),
        "power_cut", ("test_power_faults.py",), families=("mcuboot",)),
    "swap_status_written_before_copy": DefectInfo(
        "a swap step is recorded done only after its copy (a cut or torn write cannot lose data)", (1, 2),
        "power_cut-at_every_operation or torn_write", ("test_power_fail_sweep_exhaustive.py",), families=("mcuboot",)),
    # ---- SOC core (rows 17, 22)
    "soc_frames_dropped_while_downloading": DefectInfo(
        "the SOC core keeps sending while an image downloads", (17,),
        "update_succeeds_and_is_confirmed or during_download", ("test_update.py", "test_soc_timing.py")),
    "soc_stalls_during_erase": DefectInfo(
        "the SOC core keeps its cycle while the flash is erased", (17,),
        "during_erase", ("test_soc_timing.py",)),
    "soc_jumps_at_reset": DefectInfo(
        "SOC survives a reset without a jump (kept in NV, not re-estimated from scratch)", (22,),
        "soc", ("test_soc_across_updates.py",)),
    # ---- configuration profiles (rows 18, 19, 20)
    "profile_signature_not_checked": DefectInfo(
        "a configuration profile that is unsigned or signed with an unknown key is refused", (18,),
        "profile-unsigned or profile-signed_with_an_unknown_key", ("test_config_packages.py",)),
    "profile_written_value_by_value": DefectInfo(
        "a power cut while a profile is applied leaves the old or the new profile, whole", (19,),
        "power_cut_while_profile_applied", ("test_config_packages.py",)),
    "cold_charge_limit_ignores_profile": DefectInfo(
        "the cold-charge limit on CAN follows the active profile", (20,),
        "cold_charge_limit_follows_the_profile", ("test_config_package_behaviour.py",)),
    # ---- charging window and downtime (rows 23, 26)
    "install_outside_charging_window": DefectInfo(
        "an install is refused while the vehicle is driving or unplugged", (23,),
        "install_refused_outside_the_charging_window", ("test_charging_window.py",)),
    "soc_starved_during_charge_rampdown": DefectInfo(
        "the SOC core keeps its cycle, and sends the 0 A charge limit, while the charge ramps down for an install",
        (17, 23), "charging_paused_for_the_install", ("test_charging_window.py",)),
    "bms_offline_too_long_during_install": DefectInfo(
        "the BMS is offline for an install no longer than its budget", (26,),
        "charging_paused_for_the_install", ("test_charging_window.py",)),
    # ---- resumable download and update history (rows 24, 25)
    "download_progress_forgotten": DefectInfo(
        "an interrupted download resumes from the last stored block", (24,),
        "interrupted_download_resumes", ("test_resume_download.py",)),
    "rollback_not_recorded": DefectInfo(
        "every rolled-back update leaves a history entry and a DTC", (25,),
        "history_and_dtc_after_success_and_rollback", ("test_update_history.py",)),
    # ---- the OEM flash-bootloader family's own promises (docs/flash-bootloader.md)
    "check_memory_ignores_signature": DefectInfo(
        "the check-memory routine refuses a signature that does not verify", (6,),
        "signature-flipped_bit", ("test_image_faults.py",), families=("flash_bootloader",)),
    "dependency_check_skipped": DefectInfo(
        "the check-programming-dependencies routine refuses other hardware, downgrades and an incompatible "
        "configuration", (7, 10, 11),
        "downgrade or wrong_hardware or configuration_schema_unsupported", ("test_image_faults.py",),
        families=("flash_bootloader",)),
    "bank_marked_valid_before_check": DefectInfo(
        "a bank is marked valid (installs at the next reset) only after both check routines accepted it", (5,),
        "flipped_payload_bit", ("test_image_faults.py",), families=("flash_bootloader",)),
    "backup_bank_invalidated_at_switch": DefectInfo(
        "the bank switched away from stays valid: the backup a failed first boot falls back to", (9,),
        "self_test_fails", ("test_update.py",), families=("flash_bootloader",)),
    "history_records_wrong_outcome": DefectInfo(
        "the update history says how each attempt really ended (a fleet's deployment report is reconciled with it)",
        (25,), "campaign", ("test_campaign.py",)),
    # ---- the bench itself: a supply that acknowledges OUTP OFF and keeps the output on
    "supply_ignores_output_off": DefectInfo(
        "a power cut takes effect (reset cause, boot counter, supply read-back prove it)", (4,),
        "power_cut or black_box", ("test_power_faults.py",)),
}


def accepted_names() -> str:
    """The accepted defect names, for error messages."""
    return ", ".join(sorted(DEFECTS))


def check_names(names: Iterable[str]) -> list[str]:
    """The names, validated: ValueError naming the unknown ones and every accepted name."""
    names = list(names)
    unknown = [n for n in names if n not in DEFECTS]
    if unknown:
        raise ValueError(f"unknown defect(s) {', '.join(map(repr, unknown))}; accepted: {accepted_names()}")
    return names


class Defects:
    """The defects a virtual board is built with (empty: a board that keeps every promise)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = frozenset(check_names(names))

    def has(self, name: str) -> bool:
        """True when the board carries defect `name` (a typo in the simulator's own code fails loudly)."""
        if name not in DEFECTS:
            raise KeyError(f"no defect {name!r}; accepted: {accepted_names()}")
        return name in self.names

    def __bool__(self) -> bool:
        return bool(self.names)

    def __repr__(self) -> str:
        return f"Defects({sorted(self.names)})"
