"""Bench configuration: a YAML file validated into pydantic models at load.

A bad field fails at once with the file, the field path, the value and what is accepted.
Relative paths in a bench file resolve against the directory of that file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hil import contract
from hil.errors import BenchConfigError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecurityConfig(_Model):
    """Seed/key algorithm of one SecurityAccess level and where its secret comes from."""

    level: int = Field(contract.SA_LEVEL_PROGRAMMING, description="odd requestSeed subfunction")
    algorithm: Literal["hmac-sha256", "xor"] = "hmac-sha256"
    secret: str | None = Field(None, description="hex; inline secrets are for development benches only")
    secret_env: str | None = Field(None, description="environment variable holding the hex secret")
    secret_file: Path | None = Field(None, description="file holding the hex secret")

    @model_validator(mode="after")
    def _one_source(self) -> "SecurityConfig":
        sources = [s for s in (self.secret, self.secret_env, self.secret_file) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of secret, secret_env, secret_file")
        if self.level % 2 != 1:
            raise ValueError(f"level must be an odd requestSeed subfunction, got {self.level:#x}")
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
        return compute_key(self.algorithm, self.resolve_secret(), seed, self.level)


def compute_key(algorithm: str, secret: bytes, seed: bytes, level: int) -> bytes:
    """The contract's seed/key functions; the virtual board and the tester share this one."""
    if algorithm == "hmac-sha256":
        return hmac.new(secret, seed + bytes([level]), hashlib.sha256).digest()[: contract.SA_KEY_LENGTH]
    if algorithm == "xor":
        pad = (secret * (len(seed) // max(len(secret), 1) + 1))[: len(seed)]
        return bytes(a ^ b for a, b in zip(seed, pad))
    raise BenchConfigError(f"unknown security algorithm {algorithm!r}; accepted: hmac-sha256, xor")


class DutConfig(_Model):
    """What the device under test is and how it is addressed."""

    name: str = "bms"
    hardware_number: str
    serial_number: str | None = None
    baseline_image: str = Field("1.0.0", description="recipe name or image path the DUT is restored to")
    tx_id: int = contract.UDS_PHYS_REQUEST_ID
    rx_id: int = contract.UDS_PHYS_RESPONSE_ID
    security: SecurityConfig
    bench_security: SecurityConfig | None = Field(None, description="level 0x61: the restore path of development boards")
    boot_timeout_s: float = Field(15.0, gt=0)
    request_timeout_s: float = Field(2.0, gt=0)


#: Interfaces the framework itself knows how to open without a real adapter (virtual benches).
VIRTUAL_INTERFACES = ("udp_multicast", "virtual")


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
    dbc: Path = Path("dbc/bms.dbc")
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
    soc_restart_s: float = Field(5.0, gt=0, description="power-on/reset to first SOC frame")


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
    sa_lockout_s: float = Field(3.0, ge=0)
    selftest_ms: float = Field(300.0, ge=0)
    supply_current_a: float = Field(0.15, ge=0, description="what the board draws from the supply")


class ImagesConfig(_Model):
    recipes: Path = Path("../firmware_images/recipes")
    build_dir: Path = Path("../firmware_images/build")
    keys_dir: Path = Path("../firmware_images/keys")


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
    flash_layout: FlashLayout = FlashLayout()
    images: ImagesConfig = ImagesConfig()
    sim: SimConfig | None = None
    visa_library: str = Field("@py", description="pyvisa backend: @py (pyvisa-py), @ivi (a vendor VISA), or a library path")
    source: Path | None = Field(None, exclude=True, description="the file this was loaded from")

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
    def _virtual_needs_sim(self) -> "BenchConfig":
        if self.virtual and self.sim is None:
            raise ValueError("virtual: true needs a sim section")
        if self.virtual and not self.can.is_virtual:
            raise ValueError(f"a virtual bench needs a virtual CAN interface (udp_multicast or virtual), got {self.can.interface}")
        return self


_PATH_FIELDS = {
    ("can", "dbc"),
    ("sim", "flash_file"),
    ("images", "recipes"),
    ("images", "build_dir"),
    ("images", "keys_dir"),
    ("dut", "security", "secret_file"),
    ("dut", "bench_security", "secret_file"),
}


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative paths absolute against the bench file's directory (before validation)."""
    for path in _PATH_FIELDS:
        node: Any = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(path[-1]), str):
            node[path[-1]] = str((base / node[path[-1]]).resolve())
    sim = data.get("sim")
    if isinstance(sim, dict) and isinstance(sim.get("trusted_keys"), list):
        sim["trusted_keys"] = [str((base / k).resolve()) if isinstance(k, str) else k for k in sim["trusted_keys"]]
    images = data.setdefault("images", {}) if isinstance(data, dict) else None
    if isinstance(images, dict):
        for key, default in (("recipes", ImagesConfig().recipes), ("build_dir", ImagesConfig().build_dir), ("keys_dir", ImagesConfig().keys_dir)):
            images.setdefault(key, str((base / default).resolve()))
    can = data.get("can")
    if isinstance(can, dict):
        can.setdefault("dbc", str((base / "dbc/bms.dbc").resolve()))


def _accepted(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Field names accepted at `loc` (for unknown-key errors)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return ""
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return ""
    return ", ".join(n for n in current.model_fields if n != "source")


def format_validation_error(source: str, exc: ValidationError, model: type[BaseModel] = BenchConfig) -> str:
    """One line per problem: file, field path, value, what is accepted."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: {path}: unknown key; accepted here: {_accepted(model, loc)}")
        elif err["type"] == "missing":
            lines.append(f"{source}: {path}: required field is missing")
        else:
            value = err.get("input")
            shown = repr(value) if not isinstance(value, dict) else "{...}"
            lines.append(f"{source}: {path}: got {shown} - {err['msg']}")
    return "\n".join(lines)


def load_bench(path: str | os.PathLike[str]) -> BenchConfig:
    """Load and validate a bench YAML. Raises BenchConfigError naming what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise BenchConfigError(f"{p}: bench file not found (benches live in benches/*.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise BenchConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise BenchConfigError(f"{p}: the top level must be a mapping of bench fields, got {type(data).__name__}")
    _resolve_paths(data, p.resolve().parent)
    try:
        cfg = BenchConfig.model_validate(data)
    except ValidationError as exc:
        raise BenchConfigError(format_validation_error(str(p), exc)) from None
    return cfg.model_copy(update={"source": p.resolve()})


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
