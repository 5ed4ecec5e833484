"""The DUT profile: everything the framework assumes about a board, as one validated YAML file.

The bench YAML names it (`dut.profile: profiles/default.yaml`, relative to the bench file); without
one a bench gets `DutProfile()`, whose values are today's contract (hil/bench/contract.py, written out in
benches/profiles/default.yaml). The framework's *meanings* stay in hil/bench/contract.py (UpdateState,
Reason, Did roles, ...); the *numbers on the wire* come from here: DIDs and routine ids by role
name, CAN ids and message/signal names through the profile's DBC, UDS addressing and padding,
session ids and security levels, the seed-to-key algorithm, the encoding of states and reasons,
console patterns, and how the bench returns the board to its baseline.

Tester (drivers, flasher, checks, plugin) and virtual board (hil/sim) both read the same profile,
so every number in it can change without touching code.

Adding an identifier is one line per kind: a DID role is a member of `contract.Did` (its default
number) plus one line under `dids:` in benches/profiles/default.yaml; likewise routines
(`contract.Routine` / `routines:`), messages (`contract.MSG_*` / `can.messages:`), state codes
(the enum member / `encodings.<table>:`).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import importlib
import os
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hil.bench import contract
from hil.bench.validation import format_validation_error
from hil.errors import BenchConfigError

E = TypeVar("E", bound=enum.IntEnum)

#: Framework message names: every contract.MSG_* (adding one there adds it here and to the default profile).
FRAMEWORK_MESSAGES: tuple[str, ...] = tuple(v for k, v in vars(contract).items() if k.startswith("MSG_") and isinstance(v, str))

#: Encoding tables: profile key -> framework enum.
ENCODED_ENUMS: dict[str, type[enum.IntEnum]] = {
    "update_state": contract.UpdateState,
    "reason": contract.Reason,
    "reset_cause": contract.ResetCause,
    "boot_mode": contract.BootMode,
    "activation_mode": contract.ActivationMode,
}


class ProfileError(BenchConfigError):
    """A DUT profile is invalid, or a board value has no meaning in it (names the table and what is accepted)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _enum_table(e: type[enum.IntEnum]) -> dict[str, int]:
    return {m.name: int(m.value) for m in e}


# --------------------------------------------------------------------------- seed to key
SeedKey = Callable[[bytes, bytes, int], bytes]


def _hmac_sha256(secret: bytes, seed: bytes, level: int) -> bytes:
    return hmac.new(secret, seed + bytes([level]), hashlib.sha256).digest()


def _xor(secret: bytes, seed: bytes, level: int) -> bytes:
    pad = (secret * (len(seed) // max(len(secret), 1) + 1))[: len(seed)]
    return bytes(a ^ b for a, b in zip(seed, pad))


#: Seed-to-key algorithms by name: f(secret, seed, level) -> key bytes (cut to the profile's key length).
BUILTIN_ALGORITHMS: dict[str, SeedKey] = {"hmac-sha256": _hmac_sha256, "xor": _xor}


def resolve_algorithm(name: str) -> SeedKey:
    """A built-in algorithm by name, or a vendor's own `package.module:function(secret, seed, level)`."""
    if name in BUILTIN_ALGORITHMS:
        return BUILTIN_ALGORITHMS[name]
    if ":" not in name:
        raise ProfileError(f"unknown seed-to-key algorithm {name!r}; accepted: {', '.join(BUILTIN_ALGORITHMS)} "
                           "or a dotted path module:function")
    module_name, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ProfileError(f"seed-to-key algorithm {name!r} cannot be loaded: {exc}") from None
    if not callable(fn):
        raise ProfileError(f"seed-to-key algorithm {name!r} is not callable")
    return fn  # type: ignore[no-any-return]


def compute_key(algorithm: str, secret: bytes, seed: bytes, level: int, key_length: int = contract.SA_KEY_LENGTH) -> bytes:
    """The key for `seed` at `level`: the tester and the virtual board share this one function."""
    key = bytes(resolve_algorithm(algorithm)(secret, seed, level))
    if len(key) < key_length:
        raise ProfileError(f"seed-to-key algorithm {algorithm!r} returned {len(key)} bytes, the profile needs {key_length}")
    return key[:key_length]


# --------------------------------------------------------------------------- sections
class CanProfile(_Model):
    """The DBC and the names the framework reads in it."""

    dbc: Path | None = Field(None, description="DBC file (relative to the profile); None = the bench's can.dbc")
    messages: dict[str, str] = Field(default_factory=lambda: {m: m for m in FRAMEWORK_MESSAGES},
                                     description="framework message name -> DBC message name")
    signals: dict[str, dict[str, str]] = Field(default_factory=dict,
                                               description="framework message -> {framework signal: DBC signal}, "
                                                           "only where the DBC names differ")

    @model_validator(mode="after")
    def _known(self) -> "CanProfile":
        for name in self.signals:
            if name not in self.messages:
                raise ValueError(f"signals names message {name!r}, which is not under messages; "
                                 f"accepted: {', '.join(self.messages)}")
        return self

    def dbc_message(self, name: str) -> str:
        """The DBC name of framework message `name` (names the profile does not map pass through)."""
        return self.messages.get(name, name)

    def framework_message(self, dbc_name: str) -> str:
        for k, v in self.messages.items():
            if v == dbc_name:
                return k
        return dbc_name

    def to_dbc_signals(self, message: str, signals: Mapping[str, Any]) -> dict[str, Any]:
        rename = self.signals.get(message, {})
        return {rename.get(k, k): v for k, v in signals.items()}

    def to_framework_signals(self, message: str, signals: Mapping[str, Any]) -> dict[str, Any]:
        rename = {v: k for k, v in self.signals.get(message, {}).items()}
        return {rename.get(k, k): v for k, v in signals.items()}


class UdsProfile(_Model):
    """UDS on ISO-TP: addressing, padding, timing, block length."""

    phys_request_id: int = Field(contract.UDS_PHYS_REQUEST_ID, ge=0, le=0x1FFFFFFF)
    phys_response_id: int = Field(contract.UDS_PHYS_RESPONSE_ID, ge=0, le=0x1FFFFFFF)
    functional_request_id: int | None = Field(contract.UDS_FUNC_REQUEST_ID, ge=0, le=0x1FFFFFFF)
    extended_ids: bool = Field(False, description="29-bit identifiers (ISO-TP Normal_29bits)")
    padding: int | None = Field(0xCC, ge=0, le=0xFF, description="ISO-TP padding byte; None = no padding")
    p2_ms: int = Field(contract.P2_SERVER_MS, gt=0)
    p2_star_ms: int = Field(contract.P2_STAR_SERVER_MS, gt=0)
    s3_s: float = Field(contract.S3_SERVER_S, gt=0)
    max_block_length: int = Field(contract.MAX_BLOCK_LENGTH, ge=3)

    @model_validator(mode="after")
    def _distinct(self) -> "UdsProfile":
        if self.phys_request_id == self.phys_response_id:
            raise ValueError(f"phys_request_id and phys_response_id are both 0x{self.phys_request_id:X}")
        return self


class SessionProfile(_Model):
    """DiagnosticSessionControl subfunctions."""

    default: int = Field(int(contract.SESSION_DEFAULT), ge=1, le=0x7F)
    programming: int = Field(int(contract.SESSION_PROGRAMMING), ge=1, le=0x7F)
    extended: int = Field(int(contract.SESSION_EXTENDED), ge=1, le=0x7F)

    def of(self, session: int) -> int:
        """The board's subfunction for a framework session (contract.Session)."""
        return {contract.Session.DEFAULT: self.default, contract.Session.PROGRAMMING: self.programming,
                contract.Session.EXTENDED: self.extended}[contract.Session(session)]


class SecurityProfile(_Model):
    """SecurityAccess levels and the seed-to-key algorithm (the secret is the bench's, never the profile's)."""

    programming_level: int = Field(contract.SA_LEVEL_PROGRAMMING, ge=1, le=0x7D)
    bench_level: int | None = Field(contract.SA_LEVEL_BENCH, ge=1, le=0x7D,
                                    description="development boards' restore level; None = the board has none")
    algorithm: str = Field("hmac-sha256", description="built-in name or module:function(secret, seed, level)")
    seed_length: int = Field(contract.SA_SEED_LENGTH, ge=1, le=64)
    key_length: int = Field(contract.SA_KEY_LENGTH, ge=1, le=64)
    max_attempts: int = Field(contract.SA_MAX_ATTEMPTS, ge=1)

    @field_validator("programming_level", "bench_level")
    @classmethod
    def _odd(cls, v: int | None) -> int | None:
        if v is not None and v % 2 != 1:
            raise ValueError(f"must be an odd requestSeed subfunction, got 0x{v:02X}")
        return v

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, v: str) -> str:
        if v not in BUILTIN_ALGORITHMS and ":" not in v:
            raise ValueError(f"unknown algorithm; accepted: {', '.join(BUILTIN_ALGORITHMS)} or module:function")
        return v


class ConsoleProfile(_Model):
    """Regular expressions of the console lines cases wait for; a case needing a missing one is skipped."""

    patterns: dict[str, str] = Field(default_factory=lambda: dict(contract.CONSOLE_PATTERNS))


class RestoreProfile(_Model):
    """How the bench returns the board to its baseline image."""

    method: Literal["uds_restore", "pyocd", "command"] = "uds_restore"
    command: str | None = Field(None, description="method command: a command line with {image} {image_bin} {hex_address}")
    target: str | None = Field(None, description="method pyocd: pyOCD target name, e.g. stm32g474retx")
    probe: str | None = Field(None, description="method pyocd: probe unique id (None = the only probe)")
    address: int = Field(0x0800_0000, ge=0, description="flash address the baseline image is programmed at")
    timeout_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> "RestoreProfile":
        if self.method == "command" and not self.command:
            raise ValueError("method command needs command (e.g. 'JLinkExe -CommandFile {image}.jlink')")
        if self.method == "pyocd" and not self.target:
            raise ValueError("method pyocd needs target (a pyOCD target name)")
        return self


class SettlingProfile(_Model):
    """How long the board takes to act on an input it samples: from the input's change to the value it derives.

    A board scans its cell temperatures, measures its pack current and supply, reads the vehicle
    state from CAN and applies a configuration package at its own pace, so a frame sent just after
    an input changed may still carry the old value. Cases wait until the value has settled and
    record the time it took as a measurement with these limits (hil.dut.settle), never the first
    frame after the change.
    """

    temperature_s: float = Field(2.0, gt=0, description="cell temperatures -> BMS_Temperatures and the charge limits")
    pack_s: float = Field(1.0, gt=0, description="pack current and cell voltages -> BMS_SocCore, BMS_CellVoltages and "
                                                "the activation precondition")
    configuration_s: float = Field(2.0, gt=0, description="an applied configuration package -> the limits it sets")
    vehicle_state_s: float = Field(1.0, gt=0, description="VCU_VehicleState -> the charging window the activation checks")
    supply_s: float = Field(0.5, gt=0, description="the supply voltage -> the activation precondition")


def _default_encodings() -> dict[str, dict[str, int]]:
    return {k: _enum_table(e) for k, e in ENCODED_ENUMS.items()}


class DutProfile(_Model):
    """Everything the framework assumes about one kind of board."""

    name: str = "default"
    can: CanProfile = CanProfile()
    uds: UdsProfile = UdsProfile()
    sessions: SessionProfile = SessionProfile()
    security: SecurityProfile = SecurityProfile()
    dids: dict[str, int] = Field(default_factory=lambda: _enum_table(contract.Did),
                                 description="DID role (contract.Did name) -> identifier")
    routines: dict[str, int] = Field(default_factory=lambda: _enum_table(contract.Routine),
                                     description="routine role (contract.Routine name) -> identifier")
    encodings: dict[str, dict[str, int]] = Field(default_factory=_default_encodings,
                                                 description="table -> {framework enum name: board value}")
    console: ConsoleProfile = ConsoleProfile()
    restore: RestoreProfile = RestoreProfile()
    settling: SettlingProfile = SettlingProfile()
    source: Path | None = Field(None, exclude=True)

    @field_validator("dids", "routines")
    @classmethod
    def _ids(cls, v: dict[str, int], info: Any) -> dict[str, int]:
        roles = contract.Did if info.field_name == "dids" else contract.Routine
        accepted = ", ".join(m.name for m in roles)
        for role, ident in v.items():
            if role not in roles.__members__:
                raise ValueError(f"unknown role {role!r}; accepted: {accepted}")
            if not 0 <= ident <= 0xFFFF:
                raise ValueError(f"{role}: identifier 0x{ident:X} does not fit 16 bits")
        missing = [m.name for m in roles if m.name not in v]
        if missing:
            raise ValueError(f"roles without an identifier: {', '.join(missing)}")
        seen: dict[int, str] = {}
        for role, ident in v.items():
            if ident in seen:
                raise ValueError(f"{role} and {seen[ident]} share the identifier 0x{ident:04X}")
            seen[ident] = role
        return v

    @field_validator("encodings")
    @classmethod
    def _encodings(cls, v: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        out = _default_encodings()
        for table, entries in v.items():
            if table not in ENCODED_ENUMS:
                raise ValueError(f"unknown table {table!r}; accepted: {', '.join(ENCODED_ENUMS)}")
            members = ENCODED_ENUMS[table].__members__
            for name, value in entries.items():
                if name not in members:
                    raise ValueError(f"{table}.{name}: unknown name; accepted: {', '.join(members)}")
                if not 0 <= value <= 0xFF:
                    raise ValueError(f"{table}.{name}: board value {value} does not fit a byte")
            values = list(entries.values())
            if len(set(values)) != len(values):
                dup = sorted({x for x in values if values.count(x) > 1})
                raise ValueError(f"{table}: board values {dup} are used for more than one name")
            out[table] = dict(entries)
        return out

    # ------------------------------------------------------------------ identifiers
    def did(self, role: str | contract.Did) -> int:
        """The board's identifier of a DID role (a contract.Did member or its name)."""
        name = role.name if isinstance(role, contract.Did) else role
        try:
            return self.dids[name]
        except KeyError:
            raise ProfileError(f"profile {self.name}: no DID for role {name!r}; accepted: {', '.join(self.dids)}") from None

    def did_role(self, ident: int) -> contract.Did | None:
        """The framework's role of a board DID, None for identifiers the profile does not know."""
        for name, value in self.dids.items():
            if value == ident:
                return contract.Did[name]
        return None

    def routine(self, role: str | contract.Routine) -> int:
        """The board's identifier of a routine role (a contract.Routine member or its name)."""
        name = role.name if isinstance(role, contract.Routine) else role
        try:
            return self.routines[name]
        except KeyError:
            raise ProfileError(f"profile {self.name}: no routine for role {name!r}; "
                               f"accepted: {', '.join(self.routines)}") from None

    def routine_role(self, ident: int) -> contract.Routine | None:
        for name, value in self.routines.items():
            if value == ident:
                return contract.Routine[name]
        return None

    # ------------------------------------------------------------------ encodings
    def encode(self, member: enum.IntEnum) -> int:
        """The board value of a framework enum member (UpdateState.SUCCESS -> the board's code)."""
        table = _table_of(type(member))
        try:
            return self.encodings[table][member.name]
        except KeyError:
            raise ProfileError(f"profile {self.name}: encodings.{table} has no board value for {member.name}; "
                               f"it has: {', '.join(self.encodings[table])}") from None

    def decode(self, enum_type: type[E], value: int) -> E:
        """The framework meaning of a board value; ProfileError naming the table and its values otherwise."""
        table = _table_of(enum_type)
        for name, v in self.encodings[table].items():
            if v == int(value):
                return enum_type[name]
        known = ", ".join(f"{v}={n}" for n, v in self.encodings[table].items())
        raise ProfileError(f"profile {self.name}: board value {int(value)} has no meaning in encodings.{table} ({known})")

    # ------------------------------------------------------------------ records
    def encode_status(self, rec: contract.UpdateStatusRecord) -> bytes:
        """The update-status DID record: state, reason, progress, target version."""
        return bytes([self.encode(rec.state), self.encode(rec.reason), rec.progress, *rec.target])

    def decode_status(self, data: bytes) -> contract.UpdateStatusRecord:
        if len(data) != 6:
            raise ValueError(f"update status record must be 6 bytes, got {len(data)}: {data.hex()}")
        return contract.UpdateStatusRecord(self.decode(contract.UpdateState, data[0]), self.decode(contract.Reason, data[1]),
                                           data[2], (data[3], data[4], data[5]))

    def encode_boot_info(self, info: contract.BootInfo) -> bytes:
        return bytes([self.encode(info.mode), info.active_slot, int(info.confirmed),
                      self.encode(contract.ResetCause(info.reset_cause))])

    def decode_boot_info(self, data: bytes) -> contract.BootInfo:
        if len(data) != 4:
            raise ValueError(f"boot info must be 4 bytes, got {len(data)}: {data.hex()}")
        return contract.BootInfo(self.decode(contract.BootMode, data[0]), data[1], bool(data[2]),
                                 int(self.decode(contract.ResetCause, data[3])))

    # ------------------------------------------------------------------ transport
    def isotp_params(self, fd: bool, bitrate_switch: bool, *, blocking_send: bool,
                     timeout_ms: float = 1000.0) -> dict[str, Any]:
        """ISO-TP parameters for both ends: no STmin, one flow control per message, the profile's padding.

        `timeout_ms`: N_Bs / N_Cr (the bench file's `tester.isotp_timeout_ms` on the tester's side).
        """
        return {
            "stmin": 0,  # STmin is slept per frame: 1 ms would cut throughput by 25x
            "blocksize": 0,
            "tx_data_length": 64 if fd else 8,
            "tx_data_min_length": 8 if fd and self.uds.padding is not None else None,
            "tx_padding": self.uds.padding,
            "max_frame_size": max(8192, self.uds.max_block_length * 2),
            "can_fd": fd,
            "bitrate_switch": bitrate_switch,
            "blocking_send": blocking_send,  # P2 must start after the last frame, not while a 4 KiB request is segmented
            "rx_flowcontrol_timeout": int(timeout_ms),
            "rx_consecutive_frame_timeout": int(timeout_ms),
        }

    def console_pattern(self, name: str) -> str | None:
        """A console pattern by name; None when the profile has none (cases then skip, naming it)."""
        return self.console.patterns.get(name)


def _table_of(enum_type: type[enum.IntEnum]) -> str:
    for table, e in ENCODED_ENUMS.items():
        if e is enum_type:
            return table
    raise ProfileError(f"{enum_type.__name__} is not an encoded table; accepted: "
                       f"{', '.join(e.__name__ for e in ENCODED_ENUMS.values())}")


# --------------------------------------------------------------------------- loading
def load_profile(path: str | os.PathLike[str]) -> DutProfile:
    """Load and validate a DUT profile YAML. Relative paths (the DBC) resolve against its directory."""
    p = Path(path)
    if not p.is_file():
        raise ProfileError(f"{p}: DUT profile not found (profiles live next to the bench, e.g. benches/profiles/)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{p}: the top level must be a mapping of profile fields, got {type(data).__name__}")
    can = data.get("can")
    if isinstance(can, dict) and isinstance(can.get("dbc"), str):
        can["dbc"] = str((p.resolve().parent / can["dbc"]).resolve())
    try:
        profile = DutProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(format_validation_error(str(p), exc, DutProfile)) from None
    return profile.model_copy(update={"source": p.resolve()})


def check_against_dbc(profile: DutProfile, dbc: Path) -> None:
    """Every message and signal the profile names exists in the DBC (ProfileError lists what it has)."""
    import cantools

    db = cantools.database.load_file(str(dbc))
    names = {m.name: m for m in getattr(db, "messages", [])}
    where = str(profile.source or f"profile {profile.name}")
    problems = []
    for fw, dbc_name in profile.can.messages.items():
        if dbc_name not in names:
            problems.append(f"{where}: can.messages.{fw}: got {dbc_name!r} - not in {dbc}; "
                            f"accepted: {', '.join(sorted(names))}")
    for fw, renames in profile.can.signals.items():
        msg = names.get(profile.can.dbc_message(fw))
        if msg is None:
            continue
        have = {s.name for s in msg.signals}
        for fw_sig, dbc_sig in renames.items():
            if dbc_sig not in have:
                problems.append(f"{where}: can.signals.{fw}.{fw_sig}: got {dbc_sig!r} - not a signal of "
                                f"{msg.name}; accepted: {', '.join(sorted(have))}")
    if problems:
        raise ProfileError("\n".join(problems))
