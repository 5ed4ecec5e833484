"""Bench configuration: a YAML file validated into pydantic models at load.

A bad field fails at once with the file, the field path, the value and what is accepted.
Relative paths in a bench file resolve against the directory of that file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hil.bench import contract
from hil.bench.validation import format_validation_error  # noqa: F401  (bench, recipe and rack loaders use it from here)
from hil.errors import BenchConfigError
from hil.images.families import image_file_suffixes
from hil.images.roles import ROLES
from hil.bench.dut_profile import (ALGORITHM_ACCEPTED, BUILTIN_ALGORITHMS, DutProfile, ProfileError, check_against_dbc,
                                   compute_key, load_profile, resolve_algorithm)
from hil.bench.validation import FieldProblem, problem

__all__ = ["BenchConfig", "DutProfile", "ProfileError", "compute_key", "load_bench"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecurityConfig(_Model):
    """One SecurityAccess level of this board: its secret, and (if they differ from the profile's) level and algorithm."""

    level: int | None = Field(None, description="odd requestSeed subfunction; None = the profile's level for this role")
    algorithm: str | None = Field(None, description="hmac-sha256, xor or module:function; None = the profile's")
    secret: str | None = Field(None, description="hex; inline secrets are for development benches only")
    secret_env: str | None = Field(None, description="environment variable holding the hex secret")
    secret_file: Path | None = Field(None, description="file holding the hex secret")
    key_length: int = Field(contract.SA_KEY_LENGTH, ge=1, description="filled from the profile at load")

    @model_validator(mode="after")
    def _one_source(self) -> "SecurityConfig":
        sources = [s for s in (self.secret, self.secret_env, self.secret_file) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of secret, secret_env, secret_file")
        if self.level is not None and self.level % 2 != 1:
            raise ValueError(f"level must be an odd requestSeed subfunction, got {self.level:#x}")
        if self.algorithm is not None and self.algorithm not in BUILTIN_ALGORITHMS and ":" not in self.algorithm:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; accepted: {ALGORITHM_ACCEPTED}")
        return self

    def resolve_secret(self) -> bytes:
        """The secret bytes, read from wherever the bench file says."""
        if self.secret is not None:
            text = self.secret
        elif self.secret_env is not None:
            text = os.environ.get(self.secret_env, "")
            if not text:
                raise BenchConfigError(f"security secret: environment variable {self.secret_env} is not set")
        else:
            assert self.secret_file is not None
            text = self.secret_file.read_text().strip()
        try:
            return bytes.fromhex(text)
        except ValueError as exc:
            raise BenchConfigError(f"security secret is not hex: {exc}") from exc

    def compute_key(self, seed: bytes) -> bytes:
        """Key for `seed` under this level's algorithm (bench contract, SecurityAccess)."""
        level = self.level if self.level is not None else contract.SA_LEVEL_PROGRAMMING
        return compute_key(self.algorithm or "hmac-sha256", self.resolve_secret(), seed, level, self.key_length)


class DutConfig(_Model):
    """What the device under test is and how it is addressed."""

    name: str = "bms"
    hardware_number: str
    serial_number: str | None = None
    profile: Path | None = Field(None, description="DUT profile YAML (relative to the bench file); None = the default profile")
    baseline_image: str = Field("1.0.0", description="recipe name or image path the DUT is restored to")
    tx_id: int = Field(contract.UDS_PHYS_REQUEST_ID, ge=0, le=0x1FFFFFFF,
                       description="UDS physical request id; omitted = the profile's")
    rx_id: int = Field(contract.UDS_PHYS_RESPONSE_ID, ge=0, le=0x1FFFFFFF,
                       description="UDS physical response id; omitted = the profile's")
    security: SecurityConfig
    bench_security: SecurityConfig | None = Field(None, description="the profile's bench level: the restore path of "
                                                                    "development boards")
    boot_timeout_s: float = Field(15.0, gt=0)
    request_timeout_s: float = Field(2.0, gt=0)


#: Interfaces the framework itself knows how to open without a real adapter (virtual benches).
VIRTUAL_INTERFACES = ("udp_multicast", "virtual")

#: The virtual board's bootloader copies a sector in pieces of this many bytes (hil.sim.bootloader.Bootloader's chunk).
SIM_COPY_CHUNK = 1024

#: The bench every command and the pytest plugin use when none is given: the virtual bench.
DEFAULT_BENCH = "benches/sim.yaml"


class CanTiming(_Model):
    """Bit timing from sample points (python-can `BitTiming` / `BitTimingFd.from_sample_point`).

    What PCAN and Kvaser FD adapters need instead of bare bit rates: the controller clock and where
    in the bit the bus is sampled, for the nominal and (FD) the data phase.
    """

    f_clock: int = Field(gt=0, description="CAN controller clock, Hz (PCAN FD: 80000000; Kvaser FD: 80000000)")
    sample_point: float = Field(80.0, gt=50, lt=100, description="nominal (arbitration) phase, percent")
    data_sample_point: float | None = Field(None, gt=50, lt=100, description="FD data phase, percent")


class CanConfig(_Model):
    """python-can interface and bus timing."""

    interface: str = Field(description="a python-can interface name (can.interfaces.VALID_INTERFACES)")
    channel: str
    bitrate: int = Field(500_000, gt=0)
    fd: bool = False
    data_bitrate: int | None = Field(None, gt=0)
    timing: CanTiming | None = Field(None, description="bit timing as sample points (passed as python-can `timing`)")
    pacing: bool = Field(False, description="virtual buses only: pace frames at the bus bit rate")
    dbc: Path | None = Field(None, description="DBC file; None = the DUT profile's (or dbc/bms.dbc next to the bench)")
    args: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for can.Bus")

    @field_validator("interface")
    @classmethod
    def _known_interface(cls, v: str) -> str:
        import can  # python-can's own registry, plugins (entry points) included

        valid = sorted(can.interfaces.VALID_INTERFACES)
        if v not in valid:
            raise ValueError(f"{v!r} is not a python-can interface; accepted: {', '.join(valid)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "CanConfig":
        if self.fd and self.data_bitrate is None:
            raise ValueError("fd: true needs data_bitrate")
        if self.pacing and self.interface not in VIRTUAL_INTERFACES:
            raise ValueError(f"pacing is for virtual buses (udp_multicast, virtual); a {self.interface} bus paces itself")
        if self.timing is not None:
            if self.fd and self.timing.data_sample_point is None:
                raise ValueError("timing: an FD bus needs data_sample_point as well as sample_point")
            if not self.fd and self.timing.data_sample_point is not None:
                raise ValueError("timing.data_sample_point is for CAN FD (fd: true)")
            self.bit_timing()  # no solution for this clock and these rates fails here, at load
        return self

    def bit_timing(self) -> Any:
        """python-can `BitTiming`/`BitTimingFd` for `timing`, or None when the file gives bare bit rates."""
        import can

        t = self.timing
        if t is None:
            return None
        try:
            if self.fd:
                assert self.data_bitrate is not None and t.data_sample_point is not None
                return can.BitTimingFd.from_sample_point(f_clock=t.f_clock, nom_bitrate=self.bitrate,
                                                         nom_sample_point=t.sample_point,
                                                         data_bitrate=self.data_bitrate,
                                                         data_sample_point=t.data_sample_point)
            return can.BitTiming.from_sample_point(f_clock=t.f_clock, bitrate=self.bitrate, sample_point=t.sample_point)
        except ValueError as exc:
            raise ValueError(f"timing: no bit timing for f_clock {t.f_clock} Hz, bitrate {self.bitrate}"
                             + (f"/{self.data_bitrate}" if self.fd else "") + f" at these sample points: {exc}") from None

    @property
    def is_virtual(self) -> bool:
        return self.interface in VIRTUAL_INTERFACES


class PsuLimits(_Model):
    """Hard safety limits: nothing outside them is ever sent to the supply."""

    max_voltage: float = Field(gt=0)
    max_current: float = Field(gt=0)

class PsuConfig(_Model):
    """Programmable supply powering the DUT."""

    resource: str = Field(description="VISA resource, e.g. TCPIP0::192.0.2.10::5025::SOCKET")
    dialect: Literal["keysight_e36300", "rigol_dp800", "rs_hmp", "scpi"] = "keysight_e36300"
    channel: int = Field(1, ge=1, le=4)
    nominal_voltage: float = Field(gt=0)
    current_limit: float = Field(gt=0)
    limits: PsuLimits
    low_voltage: float = Field(10.0, gt=0, description="below the DUT's programming threshold, for precondition tests")
    brownout_voltage: float = Field(5.0, ge=0, description="voltage used for brown-out dips")
    timeout_ms: int = Field(2000, gt=0)

    @model_validator(mode="after")
    def _within_limits(self) -> "PsuConfig":
        if self.nominal_voltage > self.limits.max_voltage:
            raise ValueError(f"nominal_voltage {self.nominal_voltage} V exceeds limits.max_voltage {self.limits.max_voltage} V")
        if self.current_limit > self.limits.max_current:
            raise ValueError(f"current_limit {self.current_limit} A exceeds limits.max_current {self.limits.max_current} A")
        return self


class LoadConfig(_Model):
    """Battery/load emulator: pack current, cell temperatures and voltages."""

    resource: str
    dialect: Literal["hil_sim", "keysight_el30000"] = Field(
        "hil_sim", description="command set: the virtual bench's own emulator, or a Keysight EL30000 electronic load")
    max_current: float = Field(200.0, gt=0, description="largest pack current magnitude ever commanded, A")
    timeout_ms: int = Field(2000, gt=0)


class ConsoleConfig(_Model):
    url: str = Field(description="pyserial URL: /dev/ttyUSB0, socket://host:port, loop://")
    baudrate: int = contract.CONSOLE_BAUD


class TimingBudgets(_Model):
    """Budgets the SOC core is measured against (report shows value and limit)."""

    soc_period_ms: float = Field(100.0, gt=0)
    period_tolerance_ms: float = Field(10.0, ge=0, description="allowed deviation of one observed period")
    max_exec_ms: float = Field(20.0, gt=0)
    max_start_latency_ms: float = Field(5.0, ge=0)
    max_missed_cycles: int = Field(0, ge=0)
    max_repeated_cycles: int = Field(0, ge=0, description="SOC frames sent twice for one cycle")
    period_std_ms: float = Field(3.0, gt=0, description="standard deviation of the period")
    period_p99_tolerance_ms: float = Field(8.0, ge=0, description="99th percentile of the period above nominal")
    marginal_fraction: float = Field(0.8, gt=0, le=1, description="a value past this fraction of its budget is MARGINAL")
    soc_restart_s: float = Field(5.0, gt=0, description="power-on/reset to first SOC frame")
    install_first_frame_s: float = Field(60.0, gt=0, description="activation reset to the new firmware's first SOC frame")
    install_offline_s: float = Field(10.0, gt=0, description="longest time without SOC frames during an install")


class TesterConfig(_Model):
    """Allowances for the host the tester runs on (its scheduling, OS and bus driver), never for the board.

    Each is added on top of a time the board promises (P2/P2*, a boot, a console line); the promise
    itself, and every timing budget, stays as the contract and `timing` say. A loaded CI runner or
    a virtual bench sharing the host with other jobs may need more than a quiet lab PC.
    """

    host_margin_ms: float = Field(200.0, ge=0, le=10_000, description="added to the server's P2 and P2* "
                                  "(udsoncan's client timeouts, ISO 14229-2 delta P2) and to every console wait")
    isotp_timeout_ms: float = Field(1000.0, gt=0, le=60_000, description="ISO-TP N_Bs / N_Cr: how long the "
                                    "tester waits for a flow control or the next consecutive frame")


class SocBudgets(_Model):
    """What the SOC estimate promises against the battery emulator's truth (white paper: SOC improvements)."""

    accuracy_pct: float = Field(3.0, gt=0, description="largest |SOC - truth| once the pack has rested, percentage points")
    max_step_pct: float = Field(1.0, gt=0, description="largest SOC change between two consecutive frames, resets included")
    settle_s: float = Field(40.0, gt=0, description="time a rested pack is given to reach the accuracy")


class FlashLayout(_Model):
    """Sector-level layout of the DUT's program flash (for fault targeting and the simulator)."""

    sector_size: int = Field(4096, gt=0)
    nv_sectors: int = Field(2, ge=2)
    slot_sectors: int = Field(32, ge=1, description="image area of each slot; each slot has one more sector for its trailer")
    scratch_sectors: int = Field(1, ge=1)
    write_align: int = Field(8, gt=0)

    @field_validator("sector_size", "write_align")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two, got {v}")
        return v

    @model_validator(mode="after")
    def _trailer_fits(self) -> "FlashLayout":
        if self.write_align > self.sector_size:
            raise FieldProblem("write_align", self.write_align, f"larger than sector_size {self.sector_size}",
                               f"a power of two up to {self.sector_size}")
        if self.trailer_bytes > self.sector_size:
            most = (self.sector_size - self.trailer_bytes + 3 * self.slot_sectors * self._trailer_unit) \
                // (3 * self._trailer_unit)
            raise FieldProblem("slot_sectors", self.slot_sectors,
                               f"the slot trailer needs {self.trailer_bytes} bytes for {self.slot_sectors} image sectors "
                               f"(3 swap-status entries of {self._trailer_unit} bytes per sector), a trailer sector "
                               f"has {self.sector_size}",
                               f"at most {max(most, 0)} image sectors with {self.sector_size}-byte sectors and "
                               f"write_align {self.write_align}, or larger sectors")
        return self

    @property
    def _trailer_unit(self) -> int:
        return max(8, self.write_align)

    @property
    def trailer_bytes(self) -> int:
        """Bytes an MCUboot swap trailer takes in a slot's trailer sector: magic (16 bytes, padded to
        write_align), swap info, swap size, copy_done, image_ok, and 3 swap-status entries per image
        sector, each field one write unit (hil/sim/bootloader.py TrailerLayout lays them out)."""
        unit = self._trailer_unit
        magic = -(-16 // self.write_align) * self.write_align
        return magic + 4 * unit + 3 * self.slot_sectors * unit

    @property
    def nv_offset(self) -> int:
        return 0

    @property
    def slot_size(self) -> int:
        """Bytes of one slot's image area (the trailer sector is extra)."""
        return self.slot_sectors * self.sector_size

    @property
    def primary_offset(self) -> int:
        return self.nv_sectors * self.sector_size

    @property
    def secondary_offset(self) -> int:
        return self.primary_offset + (self.slot_sectors + 1) * self.sector_size

    @property
    def scratch_offset(self) -> int:
        return self.secondary_offset + (self.slot_sectors + 1) * self.sector_size

    @property
    def total_size(self) -> int:
        return self.scratch_offset + self.scratch_sectors * self.sector_size


class SimConfig(_Model):
    """How the virtual bench models the board (ignored on real benches)."""

    flash_file: Path
    flash_timing: Literal["realistic", "fast"] = "realistic"
    erase_sector_ms: float = Field(15.0, ge=0)
    program_us_per_phrase: float = Field(20.0, ge=0, description="time to program write_align bytes")
    trusted_keys: list[Path] = Field(min_length=1, description="PEM keys whose public-key hashes the bootloader trusts")
    initial_image: str = Field("1.0.0", description="recipe factory-programmed into a new flash file")
    watchdog_ms: float = Field(1000.0, gt=0)
    brownout_v: float = Field(8.0, gt=0)
    activation_max_current_a: float = Field(1.0, ge=0)
    activation_min_supply_v: float = Field(11.0, ge=0)
    sa_lockout_s: float | None = Field(None, ge=0, description="SecurityAccess delay of this virtual board; "
                                       "None = the DUT profile's security.delay_s (set it only to build a board "
                                       "that differs from its profile)")
    selftest_ms: float = Field(300.0, ge=0)
    supply_current_a: float = Field(0.15, ge=0, description="what the board draws from the supply")
    defects: list[str] = Field(default_factory=list,
                               description="sim_only: build a defective board, each name breaks one promise (hil/sim/defects.py)")

    @field_validator("defects")
    @classmethod
    def _known_defects(cls, v: list[str]) -> list[str]:
        # The catalogue lives beside the simulator it breaks; plain data, no simulator is started.
        from hil.sim.defects import check_names

        return check_names(v)
    vehicle_group: str = Field("north", pattern=r"^[\x21-\x7e]{1,16}$",
                               description="vehicle group a new board is provisioned for (DID FD0C)")
    charge_rampdown_s: float = Field(3.0, ge=0, description="how long activation waits for the charge current to fall")


class PrebuildConfig(_Model):
    """Virtual benches only: make the catalogue's missing image files from the recipes of the same name."""

    key: str = Field(description="signing key name in keys_dir, or a .pem path (relative to the bench file); "
                                 "generated on first use")
    # the key types imgtool makes and our verifier checks (hil.images.keys.KEY_TYPES)
    key_type: Literal["ecdsa-p256", "ed25519", "rsa-2048", "rsa-3072"] = Field(
        "ecdsa-p256", description="the type of key generated when it does not exist yet (what the board verifies)")


class ImagesConfig(_Model):
    """Where images come from: the catalogue by role, recipes and keys of the virtual bench."""

    recipes: Path = Path("../firmware_images/recipes")
    build_dir: Path = Path("../firmware_images/build")
    keys_dir: Path = Path("../firmware_images/keys")
    catalogue: dict[str, str] | None = Field(None, description="image role -> signed image file (.bin, .hex, .s19, "
                                                                "...) or recipe name; None = the recipe catalogue "
                                                                "on virtual benches")
    signing_key: Path | None = Field(None, description="the board's development signing key (PEM), for derived variants")
    signing_key_env: str | None = Field(None, description="environment variable holding the signing key's path")
    prebuild: PrebuildConfig | None = None
    packages: Path = Field(Path("../firmware_images/packages"),
                           description="configuration package recipes (*.yaml): what a fleet manager pushes")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "profiles" in data:
            raise ValueError("'profiles' was renamed 'packages' (configuration package recipes); "
                             "the DUT profile is dut.profile")
        return data

    @field_validator("catalogue")
    @classmethod
    def _roles(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for role in v or {}:
            if role not in ROLES:
                raise ValueError(f"unknown image role {role!r}; accepted: {', '.join(ROLES)}")
        return v


#: What a package role must make the board refuse (each recipe names its own target group).
PACKAGE_ROLES: dict[str, str] = {
    "unknown_key": "signed with a key the board does not trust",
    "unsigned": "carries no signature",
    "value_out_of_range": "a value beyond the hardware's absolute limits",
}


class ConfigPackagesConfig(_Model):
    """The configuration packages the cases push (recipes in `images.packages`): what a fleet manager sends."""

    groups: dict[str, list[str]] = Field(
        default_factory=lambda: {g: list(names) for g, names in contract.CONFIG_PACKAGE_GROUPS.items()},
        description="vehicle group -> its packages (recipe names) in the order they apply, each version newer")
    roles: dict[str, str] = Field(default_factory=lambda: dict(contract.CONFIG_PACKAGE_ROLES),
                                  description="package role -> recipe the board must refuse; roles left out are NOT COVERED")

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        if not v:
            raise ValueError("needs at least one vehicle group")
        for group, names in v.items():
            if not re.fullmatch(r"[\x21-\x7e]{1,16}", group):
                raise ValueError(f"vehicle group {group!r} must be 1-16 printable ASCII characters without spaces")
            if not names:
                raise ValueError(f"vehicle group {group!r} has no packages")
        return v

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: dict[str, str]) -> dict[str, str]:
        for role in v:
            if role not in PACKAGE_ROLES:
                raise ValueError(f"unknown package role {role!r}; accepted: {', '.join(PACKAGE_ROLES)}")
        return v


class BenchConfig(_Model):
    """One bench: a DUT, its CAN interface, supply, console and load emulator."""

    bench: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    virtual: bool = False
    dut: DutConfig
    can: CanConfig
    psu: PsuConfig
    console: ConsoleConfig | None = None
    load: LoadConfig | None = None
    timing: TimingBudgets = TimingBudgets()
    tester: TesterConfig = Field(default_factory=TesterConfig)
    soc: SocBudgets = SocBudgets()
    flash_layout: FlashLayout = FlashLayout()
    images: ImagesConfig = ImagesConfig()
    config_packages: ConfigPackagesConfig = Field(default_factory=ConfigPackagesConfig)
    sim: SimConfig | None = None
    visa_library: str = Field("@py", description="pyvisa backend: @py (pyvisa-py), @ivi (a vendor VISA), or a library path")
    source: Path | None = Field(None, exclude=True, description="the file this was loaded from")
    profile: DutProfile = Field(default_factory=DutProfile, exclude=True,
                                description="loaded from dut.profile by load_bench, never written in the bench YAML")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        """Addressing and security levels the bench file leaves out come from the DUT profile."""
        if isinstance(data, dict) and isinstance(data.get("dut"), dict):
            profile = data.get("profile")
            if not isinstance(profile, DutProfile):
                profile = DutProfile.model_validate(profile) if isinstance(profile, dict) else DutProfile()
            data = {**data, "dut": _fill_from_profile(dict(data["dut"]), profile)}
        return data

    def with_endpoints(self, endpoints: dict[str, Any]) -> "BenchConfig":
        """This config with the addresses a started virtual bench actually listens on
        (`{"psu": resource, "load": resource, "console": url}`; other keys are ignored)."""
        update: dict[str, Any] = {}
        if "psu" in endpoints:
            update["psu"] = self.psu.model_copy(update={"resource": endpoints["psu"]})
        if "load" in endpoints and self.load is not None:
            update["load"] = self.load.model_copy(update={"resource": endpoints["load"]})
        if "console" in endpoints and self.console is not None:
            update["console"] = self.console.model_copy(update={"url": endpoints["console"]})
        return self.model_copy(update=update)

    @model_validator(mode="after")
    def _defects_fit_the_family(self) -> "BenchConfig":
        from hil.sim.defects import DEFECTS

        family = self.profile.update.family
        foreign = [n for n in (self.sim.defects if self.sim else []) if not DEFECTS[n].applies_to(family)]
        if foreign:
            raise ValueError(f"sim.defects {foreign}: a board of update family {family} cannot carry them (they break "
                             f"promises of {', '.join(sorted({f for n in foreign for f in DEFECTS[n].families}))} boards)")
        return self

    @model_validator(mode="after")
    def _virtual_needs_sim(self) -> "BenchConfig":
        if self.virtual and self.sim is None:
            raise ValueError("virtual: true needs a sim section")
        lay = self.flash_layout
        if self.sim is not None and lay.sector_size % SIM_COPY_CHUNK:
            raise FieldProblem("flash_layout.sector_size", lay.sector_size, f"the virtual board copies sectors "
                               f"{SIM_COPY_CHUNK} bytes at a time", f"a multiple of {SIM_COPY_CHUNK}")
        if self.virtual and not self.can.is_virtual:
            raise ValueError(f"a virtual bench needs a virtual CAN interface (udp_multicast or virtual), got {self.can.interface}")
        return self


_PATH_FIELDS = {
    ("can", "dbc"),
    ("sim", "flash_file"),
    ("images", "recipes"),
    ("images", "build_dir"),
    ("images", "keys_dir"),
    ("images", "signing_key"),
    ("images", "packages"),
    ("dut", "security", "secret_file"),
    ("dut", "bench_security", "secret_file"),
    ("dut", "profile"),
}


#: Suffixes that make an image or key entry a file path (relative to the bench file) rather than a name.
_FILE_SUFFIXES = (".bin", ".yaml", ".yml", ".pem", ".hex", ".s19", ".srec", ".mot")


def _is_path(value: Any) -> bool:
    """Whether a name-or-file entry (an image, a recipe, a key) names a file: a folder in it or a file suffix."""
    return isinstance(value, str) and ("/" in value or os.sep in value or value.endswith(_FILE_SUFFIXES))


def _resolve(base: Path, value: str, field: str) -> str:
    """`value` made absolute against `base`; a path the OS cannot take (a NUL byte) names its field."""
    if "\x00" in value:
        raise BenchConfigError(f"{field}: got {value!r} - a path cannot contain a NUL byte")
    return str((base / value).resolve())


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative paths absolute against the bench file's directory (before validation)."""
    for path in _PATH_FIELDS:
        node: Any = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(path[-1]), str):
            node[path[-1]] = _resolve(base, node[path[-1]], ".".join(path))
    sim = data.get("sim")
    if isinstance(sim, dict) and isinstance(sim.get("trusted_keys"), list):
        sim["trusted_keys"] = [_resolve(base, k, f"sim.trusted_keys.{i}") if isinstance(k, str) else k
                               for i, k in enumerate(sim["trusted_keys"])]
    images = data.setdefault("images", {}) if isinstance(data, dict) else None
    if isinstance(images, dict) and isinstance(images.get("catalogue"), dict):
        # image files (.bin, .hex, .s19, ...: every update family's suffixes) are paths relative to the bench
        # file; anything else is a recipe name
        suffixes = image_file_suffixes()
        images["catalogue"] = {role: _resolve(base, v, f"images.catalogue.{role}")
                               if _is_path(v) or (isinstance(v, str) and v.endswith(suffixes)) else v
                               for role, v in images["catalogue"].items()}
    prebuild = images.get("prebuild") if isinstance(images, dict) else None
    if isinstance(prebuild, dict) and _is_path(prebuild.get("key")):
        prebuild["key"] = _resolve(base, prebuild["key"], "images.prebuild.key")
    for section, key in (("dut", "baseline_image"), ("sim", "initial_image")):
        node = data.get(section)
        if isinstance(node, dict) and _is_path(node.get(key)):
            node[key] = _resolve(base, node[key], f"{section}.{key}")
    if isinstance(images, dict):
        for key, default in (("recipes", ImagesConfig().recipes), ("build_dir", ImagesConfig().build_dir), ("keys_dir", ImagesConfig().keys_dir),
                             ("packages", ImagesConfig().packages)):
            images.setdefault(key, str((base / default).resolve()))


def load_bench(path: str | os.PathLike[str]) -> BenchConfig:
    """Load and validate a bench YAML and its DUT profile. Raises BenchConfigError naming what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise BenchConfigError(f"{p}: bench file not found (benches live in benches/*.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise BenchConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise BenchConfigError(f"{p}: the top level must be a mapping of bench fields, got {type(data).__name__}")
    if "profile" in data:
        raise BenchConfigError(f"{p}: profile: unknown key at the top level; the DUT profile is named by dut.profile")
    base = p.resolve().parent
    try:
        _resolve_paths(data, base)
    except BenchConfigError as exc:
        raise BenchConfigError(f"{p}: {exc}") from None
    dut = data.get("dut")
    profile_file = dut.get("profile") if isinstance(dut, dict) else None
    profile = load_profile(profile_file) if isinstance(profile_file, str) else DutProfile()
    can = data.get("can")
    if isinstance(can, dict) and "dbc" not in can:
        can["dbc"] = str(profile.can.dbc or (base / "dbc/bms.dbc").resolve())
    try:
        cfg = BenchConfig.model_validate({**data, "profile": profile})
    except ValidationError as exc:
        raise BenchConfigError(format_validation_error(str(p), exc, BenchConfig)) from None
    if cfg.can.dbc is not None and cfg.can.dbc.is_file():
        check_against_dbc(profile, cfg.can.dbc)
        _check_frames(profile, cfg.can.dbc)
    _load_seed_keys(cfg, data, p, profile)
    return cfg.model_copy(update={"source": p.resolve()})


def _load_seed_keys(cfg: BenchConfig, data: dict[str, Any], bench_file: Path, profile: DutProfile) -> None:
    """Import every seed-to-key function the bench will call, now: from the Python path, else from the
    bench file's folder or the profile's (so a console script such as `hil doctor` finds a module beside
    the bench file without PYTHONPATH). A typo fails here, naming the file and the field."""
    folders = [bench_file.resolve().parent]
    if profile.source is not None and profile.source.parent not in folders:
        folders.append(profile.source.parent)
    where = ", ".join(str(f) for f in folders)
    raw_dut: dict[str, Any] = data["dut"] if isinstance(data.get("dut"), dict) else {}
    for key in ("security", "bench_security"):
        sec: SecurityConfig | None = getattr(cfg.dut, key)
        if sec is None or sec.algorithm is None:
            continue
        raw: dict[str, Any] = raw_dut[key] if isinstance(raw_dut.get(key), dict) else {}
        if raw.get("algorithm") is not None:
            source, path = str(bench_file), f"dut.{key}.algorithm"
        else:
            source, path = str(profile.source or bench_file), "security.algorithm"
        try:
            resolve_algorithm(sec.algorithm, folders)
        except ProfileError as exc:
            raise BenchConfigError(problem(source, path, sec.algorithm, str(exc),
                                           f"{ALGORITHM_ACCEPTED}, importable from the Python path or from {where}")) \
                from None


def _check_frames(profile: DutProfile, dbc: Path) -> None:
    """The profile's frame facts (cycle counter, cells, temperature sensors) against the DBC."""
    import cantools

    from hil.bench.frames import dbc_problems

    problems = dbc_problems(cantools.database.load_file(str(dbc)), profile)
    if problems:
        raise ProfileError(f"{profile.source or profile.name}: " + "\n".join(problems))


def _fill_from_profile(dut: dict[str, Any], profile: DutProfile) -> dict[str, Any]:
    """`dut` with what it leaves out taken from the profile (addressing, security levels and algorithm)."""
    if dut.get("tx_id") is None:
        dut["tx_id"] = profile.uds.phys_request_id
    if dut.get("rx_id") is None:
        dut["rx_id"] = profile.uds.phys_response_id
    for key, level in (("security", profile.security.programming_level), ("bench_security", profile.security.bench_level)):
        sec = dut.get(key)
        if isinstance(sec, SecurityConfig):
            sec = sec.model_dump(exclude_unset=True)
        if isinstance(sec, dict):
            sec = dict(sec)
            if sec.get("level") is None and level is not None:
                sec["level"] = level
            if sec.get("algorithm") is None:
                sec["algorithm"] = profile.security.algorithm
            sec.setdefault("key_length", profile.security.key_length)
            dut[key] = sec
    return dut


_SOCKET_RESOURCE = re.compile(r"^TCPIP\d*::(?P<host>[^:]+)::(?P<port>\d+)::SOCKET$", re.IGNORECASE)


def socket_resource_address(resource: str) -> tuple[str, int]:
    """Host and port of a `TCPIP0::host::port::SOCKET` VISA resource (raw SCPI over TCP)."""
    m = _SOCKET_RESOURCE.match(resource)
    if not m:
        raise BenchConfigError(f"resource {resource!r} is not a raw socket resource; accepted: TCPIP0::<host>::<port>::SOCKET")
    return m.group("host"), int(m.group("port"))


def socket_url_address(url: str) -> tuple[str, int]:
    """Host and port of a pyserial `socket://host:port` URL."""
    m = re.match(r"^socket://(?P<host>[^:/]+):(?P<port>\d+)", url)
    if not m:
        raise BenchConfigError(f"console url {url!r} is not socket://host:port")
    return m.group("host"), int(m.group("port"))
