"""The framework's meanings, and the default profile's numbers.

The enums here (UpdateState, Reason, Did and Routine roles, ...) are what the framework means;
the numbers a board puts on the wire come from its DUT profile (hil/bench/dut_profile.py,
benches/profiles/*.yaml). The values given here are the *default* profile's (today's contract,
docs/bench-contract.md): code outside hil/bench/dut_profile.py never sends or compares them directly, it
asks the profile (`profile.did(Did.UPDATE_STATUS)`, `profile.encode(UpdateState.SUCCESS)`).

Adding an identifier: one line next to its kind here (the default) and one line in
benches/profiles/default.yaml (tests/test_dut_profile.py checks the two agree).
"""

from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass

# --------------------------------------------------------------------------- CAN / ISO-TP
#: 11-bit identifiers, normal addressing.
UDS_PHYS_REQUEST_ID = 0x7E0
UDS_PHYS_RESPONSE_ID = 0x7E8
UDS_FUNC_REQUEST_ID = 0x7DF

#: Periodic frames (names as in benches/dbc/bms.dbc).
MSG_SOC_CORE = "BMS_SocCore"  # 0x180, every SOC cycle
MSG_CYCLE_DIAG = "BMS_CycleDiag"  # 0x181, every SOC cycle
MSG_CELL_VOLTAGES = "BMS_CellVoltages"  # 0x190, multiplexed, every cycle
MSG_TEMPERATURES = "BMS_Temperatures"  # 0x191, multiplexed, every cycle
MSG_CHARGE_LIMITS = "BMS_ChargeLimits"  # 0x1A0, every 10th cycle
MSG_UPDATE_STATUS = "BMS_UpdateStatus"  # 0x1B0, every 10th cycle and on change
MSG_BALANCING = "BMS_Balancing"  # 0x1C0, only builds that declare it (2.0.0)
SIG_SOC_COUNTER = "RollingCounter"  # BMS_SocCore cycle counter; timing reads its range from the DBC
MSG_VEHICLE_STATE = "VCU_VehicleState"  # 0x3C0, sent by the vehicle (the bench) every 100 ms: charging window

#: Framework signal names (the default DBC's names; a profile's `can.signals` maps them to its DBC's).
#: BMS_SocCore
SIG_SOC = "SOC"
SIG_PACK_VOLTAGE = "PackVoltage"
SIG_PACK_CURRENT = "PackCurrent"
SIG_CYCLE_EXEC_TIME = "CycleExecTime"
#: BMS_CycleDiag
SIG_DIAG_CYCLE_COUNTER = "CycleCounter"
SIG_DIAG_START_LATENCY = "StartLatency"
SIG_DIAG_EXEC_TIME = "ExecTime"
#: BMS_ChargeLimits
SIG_MAX_CHARGE_CURRENT = "MaxChargeCurrent"
SIG_MAX_DISCHARGE_CURRENT = "MaxDischargeCurrent"
SIG_MAX_CHARGE_VOLTAGE = "MaxChargeVoltage"
SIG_MIN_DISCHARGE_VOLTAGE = "MinDischargeVoltage"
#: BMS_UpdateStatus
SIG_UPDATE_STATE = "State"
SIG_UPDATE_REASON = "Reason"
SIG_UPDATE_PROGRESS = "Progress"
SIG_BOOT_MODE = "BootMode"
SIG_BOOT_COUNT = "BootCount"
SIG_SW_MAJOR = "SwMajor"
SIG_SW_MINOR = "SwMinor"
#: BMS_Balancing
SIG_BALANCING_MASK = "BalancingMask"
SIG_BALANCING_MODE = "BalancingMode"
SIG_MAX_CELL_DELTA = "MaxCellDelta"
#: VCU_VehicleState
SIG_CHARGER_CONNECTED = "ChargerConnected"
SIG_IGNITION_ON = "IgnitionOn"
SIG_DRIVE_READY = "DriveReady"
SIG_VEHICLE_SPEED = "VehicleSpeed"
#: BMS_ChargeLimits and BMS_UpdateStatus go every this many SOC cycles (and at once on a change).
SLOW_FRAME_EVERY_CYCLES = 10
#: VCU_VehicleState period (the bench's vehicle sends it).
VEHICLE_STATE_PERIOD_MS = 100.0

CAN_ID = {
    MSG_SOC_CORE: 0x180,
    MSG_CYCLE_DIAG: 0x181,
    MSG_CELL_VOLTAGES: 0x190,
    MSG_TEMPERATURES: 0x191,
    MSG_CHARGE_LIMITS: 0x1A0,
    MSG_UPDATE_STATUS: 0x1B0,
    MSG_BALANCING: 0x1C0,
    MSG_VEHICLE_STATE: 0x3C0,
}
#: Vehicle state older than this is no vehicle state: the board treats it as "not plugged in".
VEHICLE_STATE_TIMEOUT_S = 0.5
#: Vehicle speed (km/h) above which the vehicle counts as moving.
VEHICLE_MOVING_KMH = 0.5

N_CELLS = 12
N_TEMPS = 8
CELLS_PER_FRAME = 3
TEMPS_PER_FRAME = 4

#: Open-circuit voltage (V) against SOC (%) of the pack's NMC cells: the battery emulator holds the
#: truth as rested cell voltages, and the board's SOC is judged against this curve.
CELL_OCV_CURVE: tuple[tuple[float, float], ...] = (
    (3.00, 0.0), (3.45, 5.0), (3.55, 10.0), (3.62, 20.0), (3.66, 30.0), (3.71, 40.0),
    (3.77, 50.0), (3.84, 60.0), (3.92, 70.0), (4.00, 80.0), (4.08, 90.0), (4.20, 100.0))


def soc_from_ocv(volts: float) -> float:
    """SOC (%) for a rested cell voltage, by linear interpolation on CELL_OCV_CURVE."""
    xs = [v for v, _ in CELL_OCV_CURVE]
    i = bisect.bisect_left(xs, volts)
    if i <= 0:
        return 0.0
    if i >= len(xs):
        return 100.0
    (v0, s0), (v1, s1) = CELL_OCV_CURVE[i - 1], CELL_OCV_CURVE[i]
    return s0 + (s1 - s0) * (volts - v0) / (v1 - v0)


def ocv_for_soc(soc: float) -> float:
    """Rested cell voltage (V) of a cell at `soc` percent (inverse of soc_from_ocv)."""
    soc = min(100.0, max(0.0, soc))
    for (v0, s0), (v1, s1) in zip(CELL_OCV_CURVE, CELL_OCV_CURVE[1:]):
        if s0 <= soc <= s1:
            return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
    return CELL_OCV_CURVE[-1][0]


# --------------------------------------------------------------------------- UDS
class Session(enum.IntEnum):
    """Diagnostic sessions by role (values: the default profile's subfunctions)."""

    DEFAULT = 0x01
    PROGRAMMING = 0x02
    EXTENDED = 0x03


SESSION_DEFAULT = Session.DEFAULT
SESSION_PROGRAMMING = Session.PROGRAMMING
SESSION_EXTENDED = Session.EXTENDED

#: P2 / P2* the server reports in its 0x50 response (udsoncan adopts them).
P2_SERVER_MS = 50
P2_STAR_SERVER_MS = 5000
#: Non-default session falls back to default after this long without a request.
S3_SERVER_S = 5.0

SA_LEVEL_PROGRAMMING = 0x01  # seed 0x01, key 0x02
SA_LEVEL_BENCH = 0x61  # seed 0x61, key 0x62: development boards only (restore path)
SA_SEED_LENGTH = 4
SA_KEY_LENGTH = 4
SA_MAX_ATTEMPTS = 3
#: After the last failed attempt: requestSeed answers 0x37 for this long (also after a power-on with attempts pending).
SA_DELAY_S = 3.0

#: maxNumberOfBlockLength returned by RequestDownload: a 4094-byte request (SID + counter +
#: 4092 data bytes), which fills the last consecutive frame on classic CAN and CAN FD alike
#: (docs/can-limits.md, block length L = 4094).
MAX_BLOCK_LENGTH = 4094
TRANSFER_DATA_PER_BLOCK = MAX_BLOCK_LENGTH - 2


class Did(enum.IntEnum):
    """DataIdentifiers served by ReadDataByIdentifier (0x22)."""

    ACTIVE_SESSION = 0xF186
    SPARE_PART_NUMBER = 0xF187
    SOFTWARE_VERSION = 0xF189  # ASCII, e.g. "1.1.0"
    SERIAL_NUMBER = 0xF18C  # ASCII
    HARDWARE_NUMBER = 0xF191  # ASCII, e.g. "BMS-HW-A2"
    SUPPLIER_SW_VERSION = 0xF195  # ASCII, "<version>+<build>"
    RXSWIN = 0xF1A0  # ASCII
    BOOT_INFO = 0xFD00  # see BootInfo
    UPDATE_STATUS = 0xFD01  # see UpdateStatusRecord
    BOOT_COUNTER = 0xFD02  # u32 big endian
    CONFIG_VERSION = 0xFD03  # u16 schema, u32 crc32 of the config record
    SECURITY_COUNTER = 0xFD04  # u32 stored anti-rollback counter
    BACKUP_IMAGE = 0xFD05  # version of the image in the secondary slot (ASCII, "" if none)
    FLASH_LAYOUT = 0xFD06  # u32 secondary slot address, u32 slot size, u32 sector size
    ACTIVE_IMAGE_HASH = 0xFD07  # SHA-256 of the primary slot's image (header to the end of its TLVs)
    BACKUP_IMAGE_HASH = 0xFD08  # SHA-256 of the secondary slot's image (32 zero bytes if none)
    PROFILE_STATUS = 0xFD0B  # UTF-8 JSON: active profile (name, group, version, schema) and last apply result
    VEHICLE_GROUP = 0xFD0C  # ASCII vehicle group the board is provisioned for; 0x2E at the bench level only
    VIN = 0xF190  # ASCII vehicle identification number (17 characters, ISO 3779); 0x2E at the bench level only
    UPDATE_HISTORY = 0xFD09  # u8 count, then count x UpdateHistoryEntry (newest last)
    DOWNLOAD_RESUME = 0xFD0A  # u32 announced size, u32 bytes stored (resume offset), u32 CRC-32 of them
    CONFIGURATION = 0xFD20  # UTF-8 JSON object; 0x2E only at the bench level (development restore path)
    FINGERPRINT = 0xF15A  # flash_bootloader: who programmed the board (BCD date, tester id); written before erasing


class Routine(enum.IntEnum):
    """RoutineControl (0x31) identifiers, all startRoutine (0x01). An update family uses some of them
    (hil/images/families.py); a profile gives identifiers to those its family uses."""

    ERASE_MEMORY = 0xFF00  # erase the inactive (secondary) slot; long -> 0x78
    CHECK_PROGRAMMING_DEPENDENCIES = 0xFF01  # verify the staged image: status record below
    ACTIVATE_UPDATE = 0x0301  # option record: ActivationMode; takes effect at the next reset
    APPLY_PROFILE = 0xFF02  # verify and apply the downloaded configuration package: status record below
    CHECK_MEMORY = 0x0202  # flash_bootloader: verify the downloaded blocks; option record: the detached signature


class ActivationMode(enum.IntEnum):
    TEST = 0x00  # run once; reverted at the next boot unless the image confirms itself
    PERMANENT = 0x01
    RESTORE = 0x02  # bench level only: install even if older, reset the counter to the image's


class Nrc(enum.IntEnum):
    GENERAL_REJECT = 0x10
    SERVICE_NOT_SUPPORTED = 0x11
    SUBFUNCTION_NOT_SUPPORTED = 0x12
    INCORRECT_MESSAGE_LENGTH = 0x13
    CONDITIONS_NOT_CORRECT = 0x22
    REQUEST_SEQUENCE_ERROR = 0x24
    REQUEST_OUT_OF_RANGE = 0x31
    SECURITY_ACCESS_DENIED = 0x33
    INVALID_KEY = 0x35
    EXCEEDED_NUMBER_OF_ATTEMPTS = 0x36
    REQUIRED_TIME_DELAY_NOT_EXPIRED = 0x37
    UPLOAD_DOWNLOAD_NOT_ACCEPTED = 0x70
    TRANSFER_DATA_SUSPENDED = 0x71
    GENERAL_PROGRAMMING_FAILURE = 0x72
    WRONG_BLOCK_SEQUENCE_COUNTER = 0x73
    RESPONSE_PENDING = 0x78
    SUBFUNCTION_NOT_SUPPORTED_IN_SESSION = 0x7E
    SERVICE_NOT_SUPPORTED_IN_SESSION = 0x7F
    VOLTAGE_TOO_HIGH = 0x92
    VOLTAGE_TOO_LOW = 0x93


class UpdateState(enum.IntEnum):
    """Update status (DID 0xFD01 byte 0, CAN BMS_UpdateStatus.State); names after Mender/hawkBit."""

    IDLE = 0
    DOWNLOADING = 1
    DOWNLOADED = 2  # transfer complete, not yet verified
    VERIFIED = 3  # check routine passed
    REJECTED = 4  # check routine or bootloader refused the image: see Reason
    ACTIVATION_PENDING = 5  # activation accepted, waiting for reset
    INSTALLING = 6  # bootloader swapping
    TESTING = 7  # trial boot of the new image, self-test running
    SUCCESS = 8  # new image confirmed
    ROLLED_BACK = 9  # reverted to the previous image: see Reason
    RECOVERY = 10  # no bootable image: recovery server running


class Reason(enum.IntEnum):
    """Reason code (DID 0xFD01 byte 1): why an image was rejected or reverted."""

    NONE = 0x00
    SELFTEST_FAILED = 0x01
    CRASHED_AT_BOOT = 0x02
    WATCHDOG_RESET = 0x03
    NOT_CONFIRMED = 0x04  # reset or power loss during the trial boot
    BAD_MAGIC = 0x10
    HASH_MISMATCH = 0x11
    SIGNATURE_INVALID = 0x12
    UNKNOWN_KEY = 0x13
    UNSIGNED = 0x14
    DOWNGRADE_VERSION = 0x15
    DOWNGRADE_SECURITY_COUNTER = 0x16
    WRONG_HARDWARE = 0x17
    TRUNCATED = 0x18
    OVERSIZE = 0x19
    CONFIG_INCOMPATIBLE = 0x1A
    BAD_TLV = 0x1B
    CURRENT_FLOWING = 0x20
    SUPPLY_LOW = 0x21
    NOT_PLUGGED_IN = 0x22  # charging window: no charger connected (or no vehicle state on CAN)
    VEHICLE_NOT_IDLE = 0x23  # charging window: ignition/drive ready or the vehicle moves
    DOWNLOAD_ABORTED = 0x30
    NO_VALID_IMAGE = 0x40
    PROFILE_WRONG_GROUP = 0x50  # configuration package for another vehicle group
    PROFILE_DOWNGRADE = 0x51  # profile version not newer than the active one
    VALUE_OUT_OF_RANGE = 0x52  # a value outside the hardware's absolute limits, or an unknown key
    PROFILE_CHECK_FAILED = 0x53  # applied values did not read back: the old profile was restored


@dataclass(frozen=True)
class UpdateStatusRecord:
    """DID 0xFD01: state u8, reason u8, progress u8 (percent), target version (3 x u8)."""

    state: UpdateState
    reason: Reason
    progress: int
    target: tuple[int, int, int]

    def encode(self) -> bytes:
        return bytes([int(self.state), int(self.reason), self.progress, *self.target])

    @classmethod
    def decode(cls, data: bytes) -> "UpdateStatusRecord":
        if len(data) != 6:
            raise ValueError(f"update status record must be 6 bytes, got {len(data)}: {data.hex()}")
        return cls(UpdateState(data[0]), Reason(data[1]), data[2], (data[3], data[4], data[5]))


class ProfileState(enum.IntEnum):
    """Result of the last configuration package (DID FD0B "state", routine FF02 status record byte 0)."""

    NONE = 0
    APPLIED = 1
    REFUSED = 2  # verification, target, anti-rollback or range check failed: nothing changed
    ROLLED_BACK = 3  # applied, the check failed, the previous profile is back
    APPLYING = 4  # only seen after a power cut during the apply (resolved at the next boot)


#: RequestDownload address of the configuration package buffer (not in the flash map: a logical area).
PROFILE_DOWNLOAD_ADDRESS = 0xC0F1_0000
#: Largest configuration package the board accepts.
PROFILE_MAX_SIZE = 4096
#: Body TLV types of a configuration package (hil/config_packages/package.py, bench contract section 11).
PROFILE_TLV_NAME = 0x01
PROFILE_TLV_VEHICLE_GROUP = 0x02
PROFILE_TLV_HARDWARE = 0x03
PROFILE_TLV_SCHEMA = 0x04
PROFILE_TLV_VERSION = 0x05
PROFILE_TLV_VALUES = 0x06


@dataclass(frozen=True)
class UpdateHistoryEntry:
    """One update attempt in DID FD09: from version 3 x u8, to version 3 x u8, result u8 (UpdateState),
    reason u8, boot counter u32 BE at the time the result was recorded."""

    SIZE = 12
    from_version: tuple[int, int, int]
    to_version: tuple[int, int, int]
    result: UpdateState
    reason: Reason
    boot_count: int

    def encode(self) -> bytes:
        return bytes([*self.from_version, *self.to_version, int(self.result), int(self.reason)]) + \
            self.boot_count.to_bytes(4, "big")

    @classmethod
    def decode_all(cls, data: bytes) -> list["UpdateHistoryEntry"]:
        """The whole DID FD09 record."""
        if not data or len(data) != 1 + data[0] * cls.SIZE:
            raise ValueError(f"update history must be 1 + count x {cls.SIZE} bytes, got {len(data)}: {data.hex()}")
        out = []
        for i in range(data[0]):
            e = data[1 + i * cls.SIZE:1 + (i + 1) * cls.SIZE]
            out.append(cls((e[0], e[1], e[2]), (e[3], e[4], e[5]), UpdateState(e[6]), Reason(e[7]),
                           int.from_bytes(e[8:12], "big")))
        return out

    def __str__(self) -> str:
        return (f"{'.'.join(map(str, self.from_version))} -> {'.'.join(map(str, self.to_version))}: "
                f"{self.result.name}/{self.reason.name} at boot {self.boot_count}")


#: Characters of a VIN (ISO 3779: 17 of them; no I, O or Q) and what a board reads before it is provisioned.
VIN_LENGTH = 17
VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
VIN_UNPROVISIONED = "0" * VIN_LENGTH


def is_vin(text: str) -> bool:
    """Whether `text` is a VIN: 17 characters of the ISO 3779 alphabet."""
    return len(text) == VIN_LENGTH and all(c in VIN_ALPHABET for c in text)


#: Entries the board keeps (oldest dropped first).
UPDATE_HISTORY_DEPTH = 8
#: Record layouts of the default board (the DUT profile's `records:` can order them otherwise).
UPDATE_STATUS_FIELDS = ("state", "reason", "progress", "target_version")
HISTORY_ENTRY_FIELDS = ("from_version", "to_version", "result", "reason", "boot_count")
HISTORY_BOOT_COUNT_BYTES = 4


class Dtc(enum.IntEnum):
    """Diagnostic trouble codes (3-byte DTC numbers) for update outcomes, read with 0x19, cleared with 0x14."""

    UPDATE_ROLLED_BACK = 0xD10001  # an installed image failed and was reverted
    UPDATE_REJECTED = 0xD10002  # an image was refused at verification or install


#: DTC status bits set for an update failure: testFailed | testFailedThisOperationCycle | confirmedDTC
#: | testFailedSinceLastClear. The board's DTCStatusAvailabilityMask is the same set.
DTC_STATUS_FAILED = 0x2B


class BootMode(enum.IntEnum):
    APPLICATION = 0
    RECOVERY = 1


@dataclass(frozen=True)
class BootInfo:
    """DID 0xFD00: mode u8, active slot u8 (0 = primary), confirmed u8, reset cause u8."""

    mode: BootMode
    active_slot: int
    confirmed: bool
    reset_cause: int

    def encode(self) -> bytes:
        return bytes([int(self.mode), self.active_slot, int(self.confirmed), self.reset_cause])

    @classmethod
    def decode(cls, data: bytes) -> "BootInfo":
        if len(data) != 4:
            raise ValueError(f"boot info must be 4 bytes, got {len(data)}: {data.hex()}")
        return cls(BootMode(data[0]), data[1], bool(data[2]), data[3])


class ResetCause(enum.IntEnum):
    POWER_ON = 0
    SOFTWARE = 1  # ECUReset or a self-requested reset
    WATCHDOG = 2
    FAULT = 3  # crash (hard fault)
    BROWN_OUT = 4


#: Length of each DID's record, for udsoncan's data-identifier codecs. None = variable
#: (the framework reads those with a codec that takes whatever remains).
DID_LENGTH: dict[Did, int | None] = {
    Did.ACTIVE_SESSION: 1,
    Did.SPARE_PART_NUMBER: None,
    Did.SOFTWARE_VERSION: None,
    Did.SERIAL_NUMBER: None,
    Did.HARDWARE_NUMBER: None,
    Did.SUPPLIER_SW_VERSION: None,
    Did.RXSWIN: None,
    Did.BOOT_INFO: 4,
    Did.UPDATE_STATUS: 6,
    Did.BOOT_COUNTER: 4,
    Did.CONFIG_VERSION: 6,
    Did.SECURITY_COUNTER: 4,
    Did.BACKUP_IMAGE: None,
    Did.FLASH_LAYOUT: 12,
    Did.ACTIVE_IMAGE_HASH: 32,
    Did.BACKUP_IMAGE_HASH: 32,
    Did.PROFILE_STATUS: None,
    Did.VEHICLE_GROUP: None,
    Did.VIN: None,
    Did.UPDATE_HISTORY: None,
    Did.DOWNLOAD_RESUME: 12,
    Did.CONFIGURATION: None,
    Did.FINGERPRINT: None,
}

# --------------------------------------------------------------------------- image
#: Vendor TLVs in the protected TLV area (covered by hash and signature).
TLV_HARDWARE_ID = 0x00A0  # ASCII hardware number the image is built for
TLV_CONFIG_COMPAT = 0x00A1  # two bytes: lowest and highest configuration schema supported

IMAGE_HEADER_SIZE = 0x200

#: Firmware payload: this magic, u32 little-endian descriptor length, UTF-8 JSON descriptor,
#: then filler bytes up to the build's code size. See hil/images/payload.py.
PAYLOAD_MAGIC = b"BMSFW1\x00\x00"

# --------------------------------------------------------------------------- SCPI / console
PSU_IDN_SIM = "Keysight Technologies,E36312A,MY-HILSIM-0001,2.1.0-sim"
LOAD_IDN_SIM = "HIL-SIM,BATTEMU-12S,SIM-0001,1.0.0"
CONSOLE_BAUD = 115200

#: Lines the virtual board prints at each event (the DUT profile's `console.lines` replaces any of them);
#: fields in braces are filled by the board. The patterns below match them.
CONSOLE_LINES: dict[str, str] = {
    "reset": "BOOT: reset cause={cause}",
    "swap_start": "BOOT: swap start type={type} sectors={sectors}",
    "swap_progress": "BOOT: swap sector {sector}/{total}",
    "swap_resume": "BOOT: resuming swap type={type}",
    "swap_done": "BOOT: swap done",
    "revert": "BOOT: revert start reason={reason}",
    "app_starting": "APP: BMS firmware {version} ({build}) starting{trial}",
    "selftest_running": "APP: self-test running",
    "selftest_passed": "APP: self-test passed, image confirmed",
    "selftest_failed": "APP: self-test FAILED code=0x{code:02x}",
}

#: Console lines cases wait for, by name (regular expressions; the default profile's).
CONSOLE_PATTERNS: dict[str, str] = {
    "swap_start": r"BOOT: swap start",
    "swap_progress": r"BOOT: swap sector (?P<sector>\d+)/(?P<total>\d+)",
    "swap_resume": r"BOOT: resuming swap",
    "swap_done": r"BOOT: swap done",
    "revert": r"BOOT: revert",
    "app_starting": r"APP: BMS firmware .* starting",
    "selftest_running": r"APP: self-test running",
    "selftest_passed": r"APP: self-test passed, image confirmed",
    "power_up": r"BOOT: reset cause=(POWER_ON|BROWN_OUT)",
}

# --------------------------------------------------------------------------- configuration packages
#: The recipes the configuration-package cases push (firmware_images/packages), by vehicle group: each
#: group's packages in the order they apply (each version newer than the one before). The bench file's
#: `config_packages:` section replaces these for a board with other recipes.
CONFIG_PACKAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "north": ("winter-north", "summer-north"),
    "south": ("winter-south", "summer-south"),
}
#: Packages a board must refuse, by role (each names its own target group).
CONFIG_PACKAGE_ROLES: dict[str, str] = {
    "unknown_key": "winter-north-wrong-key",
    "unsigned": "winter-north-unsigned",
    "value_out_of_range": "winter-north-out-of-range",
}
