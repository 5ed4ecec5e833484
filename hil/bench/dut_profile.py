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
import importlib.machinery
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hil.bench import contract
from hil.bench.validation import FieldProblem, format_validation_error, hex_id, problem
from hil.errors import BenchConfigError
from hil.images.families import DEFAULT_FAMILY, FAMILIES, family as update_family, shared_dids

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


#: Named groups a console pattern must have: the cases read these values from the line.
CONSOLE_PATTERN_GROUPS: dict[str, tuple[str, ...]] = {"swap_progress": ("sector", "total")}


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


ALGORITHM_ACCEPTED = f"{', '.join(BUILTIN_ALGORITHMS)} or module:function(secret, seed, level)"


def resolve_algorithm(name: str, folders: "tuple[Path, ...] | list[Path]" = ()) -> SeedKey:
    """A built-in algorithm by name, or a vendor's own `package.module:function(secret, seed, level)`.

    The module is imported from the Python path, else from `folders` (the bench file's and the
    profile's folders: a module beside the bench file needs no PYTHONPATH). Once imported it stays
    in `sys.modules`, so later look-ups by name (the tester's, the virtual board's) find it.
    """
    if name in BUILTIN_ALGORITHMS:
        return BUILTIN_ALGORITHMS[name]
    if ":" not in name:
        raise ProfileError(f"unknown seed-to-key algorithm {name!r}; accepted: {ALGORITHM_ACCEPTED}")
    module_name, _, attr = name.partition(":")
    try:
        module = _import_seed_key_module(module_name, folders)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ProfileError(f"seed-to-key algorithm {name!r} cannot be loaded: {exc}") from None
    if not callable(fn):
        raise ProfileError(f"seed-to-key algorithm {name!r} is not callable")
    return fn  # type: ignore[no-any-return]


def _import_seed_key_module(module_name: str, folders: "tuple[Path, ...] | list[Path]") -> Any:
    """`module_name` from the Python path, else its top-level package or module found in one of `folders`."""
    top = module_name.split(".")[0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != top or not folders:
            raise
    spec = importlib.machinery.PathFinder.find_spec(top, [str(f) for f in folders])
    if spec is None or spec.loader is None:
        where = ", ".join(str(f) for f in folders)
        raise ModuleNotFoundError(f"no module named {top!r} on the Python path or in {where}", name=top)
    module = importlib.util.module_from_spec(spec)
    sys.modules[top] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[top]
        raise
    return importlib.import_module(module_name)


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

    @field_validator("messages")
    @classmethod
    def _framework_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name, dbc_name in v.items():
            if name not in FRAMEWORK_MESSAGES:
                raise FieldProblem(name, dbc_name, "not a framework message name (the key is the framework's "
                                   "name, the value your DBC's)", ", ".join(FRAMEWORK_MESSAGES))
        return v

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
            raise FieldProblem("phys_response_id", self.phys_response_id, "equals phys_request_id",
                               "a response id other than the request id")
        if not self.extended_ids:
            for key in ("phys_request_id", "phys_response_id", "functional_request_id"):
                ident = getattr(self, key)
                if ident is not None and ident > 0x7FF:
                    raise FieldProblem(key, ident, "does not fit 11 bits",
                                       "0x000-0x7FF, or extended_ids: true for 29-bit identifiers")
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
    max_attempts: int = Field(contract.SA_MAX_ATTEMPTS, ge=1, le=255, description="failed keys until 0x36 and the delay")
    delay_s: float = Field(contract.SA_DELAY_S, ge=0, le=3600, description="0x37 this long after the last failed attempt")

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
            raise ValueError(f"unknown algorithm; accepted: {ALGORITHM_ACCEPTED}")
        return v


#: Fields the virtual board fills into each console line (`console.lines`), with sample values: a line
#: rendered from these must match the pattern of the same event (`LINE_OF_PATTERN`).
LINE_FIELDS: dict[str, dict[str, Any]] = {
    "reset": {"cause": "POWER_ON"},
    "swap_start": {"type": "TEST", "sectors": 32, "resume": ""},
    "swap_progress": {"sector": 3, "total": 32},
    "swap_resume": {"type": "TEST"},
    "swap_done": {},
    "revert": {"reason": "SELFTEST_FAILED"},
    "app_starting": {"version": "1.1.0", "build": "2025.02.1100", "trial": ""},
    "selftest_running": {},
    "selftest_passed": {},
    "selftest_failed": {"code": 0x21},
}
#: Console pattern -> the line event it waits for (patterns not listed wait for the line of the same name).
LINE_OF_PATTERN: dict[str, str] = {"power_up": "reset"}


def _line_problems(name: str, template: str) -> list[str]:
    """What is wrong with one console line template (unknown event, unknown or malformed fields)."""
    import string

    if name not in LINE_FIELDS:
        return [f"{name}: unknown line; accepted: {', '.join(LINE_FIELDS)}"]
    accepted = LINE_FIELDS[name]
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        return [f"{name}: {template!r} is not a format string: {exc}"]
    unknown = sorted(f for f in used if f not in accepted)
    if unknown:
        return [f"{name}: unknown field(s) {', '.join(unknown)} in {template!r}; accepted: "
                f"{', '.join(accepted) or 'none (a fixed line)'}"]
    return []


class ConsoleProfile(_Model):
    """Regular expressions of the console lines cases wait for; a case needing a missing one is skipped.

    `lines`: what the *virtual* board prints at each event (templates with fields in braces, see
    LINE_FIELDS); events left out print the default board's line (contract.CONSOLE_LINES). A real
    board prints what it prints: its profile needs only the patterns."""

    patterns: dict[str, str] = Field(default_factory=lambda: dict(contract.CONSOLE_PATTERNS))
    lines: dict[str, str] = Field(default_factory=dict, description="event -> line template the virtual board prints")

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: dict[str, str]) -> dict[str, str]:
        for name, pattern in v.items():
            if name not in contract.CONSOLE_PATTERNS:
                raise FieldProblem(name, pattern, "no case waits for a console line of this name",
                                   ", ".join(contract.CONSOLE_PATTERNS))
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise FieldProblem(name, pattern, f"not a regular expression ({exc})",
                                   "a Python regular expression (re module)") from None
            needed = CONSOLE_PATTERN_GROUPS.get(name, ())
            missing = [g for g in needed if g not in compiled.groupindex]
            if missing:
                raise FieldProblem(name, pattern, f"lacks the named group(s) {', '.join(missing)}",
                                   "a pattern with " + ", ".join(f"(?P<{g}>...)" for g in needed))
        return v

    @field_validator("lines")
    @classmethod
    def _lines(cls, v: dict[str, str]) -> dict[str, str]:
        problems = [p for name, template in v.items() for p in _line_problems(name, template)]
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _lines_match(self) -> "ConsoleProfile":
        if self.lines:  # only lines the profile writes itself; a real board's profile has none
            problems = console_line_problems(self, only=set(self.lines))
            if problems:
                raise ValueError("; ".join(problems))
        return self

    def effective_lines(self) -> dict[str, str]:
        """Every event's line template: the profile's, else the default board's."""
        return {**contract.CONSOLE_LINES, **self.lines}

    def line(self, event: str, **fields: Any) -> str:
        """The line the virtual board prints for `event` with these field values."""
        return self.effective_lines()[event].format(**fields)


def console_line_problems(console: ConsoleProfile, only: set[str] | None = None) -> list[str]:
    """Patterns that would not match the line the virtual board prints for their event (sample values of
    LINE_FIELDS); `only`: check just these line events. Empty when every pattern matches its line."""
    import re

    lines = console.effective_lines()
    problems = []
    for name, pattern in console.patterns.items():
        event = LINE_OF_PATTERN.get(name, name)
        if event not in lines or (only is not None and event not in only):
            continue
        samples = [dict(LINE_FIELDS[event])]
        if event == "reset":
            samples = [{"cause": "POWER_ON"}, {"cause": "BROWN_OUT"}]
        for fields in samples:
            rendered = lines[event].format(**fields)
            m = re.search(pattern, rendered)
            if m is None:
                problems.append(f"pattern {name} {pattern!r} does not match the line {rendered!r} "
                                f"(lines.{event} {lines[event]!r})")
            elif name == "swap_progress" and {"sector", "total"} <= set(m.groupdict()) and \
                    (m.group("sector"), m.group("total")) != (str(fields["sector"]), str(fields["total"])):
                problems.append(f"pattern swap_progress {pattern!r} reads sector/total {m.group('sector')}/"
                                f"{m.group('total')} from {rendered!r}")
    if "power_up" in console.patterns and "reset" in lines and (only is None or "reset" in only):
        software = lines["reset"].format(cause="SOFTWARE")
        if re.search(console.patterns["power_up"], software):
            problems.append(f"pattern power_up {console.patterns['power_up']!r} also matches a software reset "
                            f"({software!r}): a power cut could not be told from an ECUReset")
    return problems


class SocCoreProfile(_Model):
    """The SOC core's frames as this board sends them (message and signal names through `can.messages` /
    `can.signals`; frame layouts and signal widths from the DBC)."""

    counter: str | None = Field(contract.SIG_SOC_COUNTER,
                                description="DBC signal of the SOC frame counting cycles (its width from the DBC); "
                                            "null: the board has none - missed/repeated cycles are then NOT COVERED")
    cells: int = Field(contract.N_CELLS, ge=1, le=255, description="cells of the pack (the cell frame's "
                       "multiplexed signals, in DBC order, carry cells 1..n)")
    temperatures: int = Field(contract.N_TEMPS, ge=1, le=255, description="temperature sensors (the temperature frame)")
    slow_every_cycles: int = Field(contract.SLOW_FRAME_EVERY_CYCLES, ge=1, le=1000,
                                   description="charge limits and update status: every Nth SOC cycle (and at once on a change)")


class VehicleStateProfile(_Model):
    """The vehicle's state message the board reads for its charging window."""

    period_ms: float = Field(contract.VEHICLE_STATE_PERIOD_MS, gt=0, le=10_000, description="the bench's vehicle sends it this often")
    timeout_ms: float = Field(contract.VEHICLE_STATE_TIMEOUT_S * 1000.0, gt=0,
                              description="an older state is none: the board treats the vehicle as unplugged")

    @model_validator(mode="after")
    def _longer(self) -> "VehicleStateProfile":
        if self.timeout_ms <= self.period_ms:
            raise ValueError(f"timeout_ms {self.timeout_ms:g} must exceed period_ms {self.period_ms:g}")
        return self


#: Bytes of each record field (versions are major, minor, revision as three bytes).
FIELD_BYTES: dict[str, int] = {"state": 1, "reason": 1, "progress": 1, "target_version": 3, "from_version": 3,
                               "to_version": 3, "result": 1}


class RecordsProfile(_Model):
    """Byte layouts of the update status record (DID role UPDATE_STATUS) and the update history (UPDATE_HISTORY)."""

    update_status: list[str] = Field(default_factory=lambda: list(contract.UPDATE_STATUS_FIELDS),
                                             description="fields in order: state u8, reason u8, progress u8, target_version 3 x u8")
    history_entry: list[str] = Field(default_factory=lambda: list(contract.HISTORY_ENTRY_FIELDS),
                                              description="fields of one entry in order (after a u8 count)")
    history_depth: int = Field(contract.UPDATE_HISTORY_DEPTH, ge=1, le=64, description="entries the board keeps")
    boot_count_bytes: int = Field(contract.HISTORY_BOOT_COUNT_BYTES, description="width of boot_count: 2 or 4")
    byte_order: Literal["big", "little"] = Field("big", description="of boot_count")

    @field_validator("update_status", "history_entry")
    @classmethod
    def _each_once(cls, v: list[str], info: Any) -> list[str]:
        wanted = contract.UPDATE_STATUS_FIELDS if info.field_name == "update_status" else contract.HISTORY_ENTRY_FIELDS
        if sorted(v) != sorted(wanted):
            raise ValueError(f"must list each of {', '.join(wanted)} exactly once, got {', '.join(v) or 'nothing'}")
        return v

    @field_validator("boot_count_bytes")
    @classmethod
    def _width(cls, v: int) -> int:
        if v not in (2, 4):
            raise ValueError(f"must be 2 or 4, got {v}")
        return v

    def entry_size(self) -> int:
        """Bytes of one history entry."""
        return sum(FIELD_BYTES.get(f, self.boot_count_bytes) for f in self.history_entry)


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


class LogicalBlock(_Model):
    """One address range of the board's memory map that a download fills (an OEM flash bootloader's logical block)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    address: int = Field(ge=0, le=0xFFFFFFFF, description="first address (the board's logical address)")
    size: int = Field(gt=0, le=0xFFFFFFFF, description="bytes the block holds at most")


class UpdateProfile(_Model):
    """How the board is updated: its update family (hil/images/families.py) and that family's layout facts."""

    family: str = Field(DEFAULT_FAMILY, description="update family: image container and programming sequence")
    blocks: list[LogicalBlock] = Field(default_factory=list, description="flash_bootloader: the logical blocks, "
                                       "in address order; an image's header sits at the start of the first")
    fingerprint_length: int = Field(16, ge=4, le=64, description="flash_bootloader: bytes of the fingerprint DID "
                                    "record (3 bytes BCD date, then the tester id)")
    address_length_format: int = Field(0x44, ge=0x11, le=0x44, description="flash_bootloader: the "
                                       "addressAndLengthFormatIdentifier of the erase routine's option record")

    @field_validator("family")
    @classmethod
    def _known_family(cls, v: str) -> str:
        update_family(v)  # ValueError naming the accepted families
        return v

    @field_validator("address_length_format")
    @classmethod
    def _format(cls, v: int) -> int:
        if not (1 <= v >> 4 <= 4 and 1 <= v & 0x0F <= 4):
            raise ValueError(f"0x{v:02X}: both nibbles (length bytes, address bytes) must be 1..4")
        return v

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, v: list[LogicalBlock]) -> list[LogicalBlock]:
        end = -1
        for b in v:
            if b.address <= end:
                raise ValueError(f"block {b.name} at 0x{b.address:X} overlaps or precedes the block before it "
                                 "(blocks are listed in address order, without overlap)")
            end = b.address + b.size - 1
        return v


def _default_roles(roles: type[enum.IntEnum]) -> dict[str, int]:
    """The default board's identifiers: the roles its update family (the default one) uses."""
    fam = FAMILIES[DEFAULT_FAMILY]
    wanted = fam.routines if roles is contract.Routine else (*shared_dids(tuple(m.name for m in roles)), *fam.dids)
    return {m.name: int(m.value) for m in roles if m.name in wanted}


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
    dids: dict[str, int] = Field(default_factory=lambda: _default_roles(contract.Did),
                                 description="DID role (contract.Did name) -> identifier")
    routines: dict[str, int] = Field(default_factory=lambda: _default_roles(contract.Routine),
                                     description="routine role (contract.Routine name) -> identifier")
    encodings: dict[str, dict[str, int]] = Field(default_factory=_default_encodings,
                                                 description="table -> {framework enum name: board value}")
    console: ConsoleProfile = ConsoleProfile()
    restore: RestoreProfile = RestoreProfile()
    update: UpdateProfile = UpdateProfile()
    soc_core: SocCoreProfile = SocCoreProfile()
    vehicle_state: VehicleStateProfile = VehicleStateProfile()
    records: RecordsProfile = RecordsProfile()
    settling: SettlingProfile = SettlingProfile()
    source: Path | None = Field(None, exclude=True)

    @field_validator("dids", "routines")
    @classmethod
    def _ids(cls, v: dict[str, int], info: Any) -> dict[str, int]:
        roles = contract.Did if info.field_name == "dids" else contract.Routine
        accepted = ", ".join(m.name for m in roles)
        for role, ident in v.items():
            if role not in roles.__members__:
                raise FieldProblem(role, ident, "unknown role", accepted)
            if not 0 <= ident <= 0xFFFF:
                raise FieldProblem(role, ident, "identifier does not fit 16 bits", "0x0000-0xFFFF")
        seen: dict[int, str] = {}
        for role, ident in v.items():
            if ident in seen:
                raise FieldProblem(role, ident, f"{seen[ident]} has the same identifier", "one identifier per role")
            seen[ident] = role
        return v

    @field_validator("encodings")
    @classmethod
    def _encodings(cls, v: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        """A table given is the board's whole table: a partial one is refused naming the missing names
        (merging with the default would give the missing names the default board's bytes, which may be
        codes that mean something else on this board). Tables left out are the default's."""
        out = _default_encodings()
        for table, entries in v.items():
            if table not in ENCODED_ENUMS:
                raise FieldProblem(table, entries, "unknown table", ", ".join(ENCODED_ENUMS))
            members = ENCODED_ENUMS[table].__members__
            for name, value in entries.items():
                if name not in members:
                    raise FieldProblem(f"{table}.{name}", value, "unknown name", ", ".join(members))
                if not 0 <= value <= 0xFF:
                    raise FieldProblem(f"{table}.{name}", value, "board value does not fit a byte", "0x00-0xFF")
            missing = [m for m in members if m not in entries]
            if missing:
                raise FieldProblem(table, entries, f"no board value for {', '.join(missing)} (a table given replaces "
                                   "the default's whole table: give every name, or leave the table out)",
                                   ", ".join(members))
            values = list(entries.values())
            if len(set(values)) != len(values):
                dup = sorted({x for x in values if values.count(x) > 1})
                raise FieldProblem(table, entries, f"board values {', '.join(hex_id(x) for x in dup)} are used for "
                                   "more than one name", "one board value per name")
            out[table] = dict(entries)
        return out

    @model_validator(mode="after")
    def _family_roles(self) -> "DutProfile":
        """Every DID and routine role the board's update family uses has an identifier."""
        fam = FAMILIES[self.update.family]
        required_dids = (*shared_dids(tuple(m.name for m in contract.Did), optional=False), *fam.dids)
        for kind, needed, given in (("dids", required_dids, self.dids),
                                    ("routines", fam.routines, self.routines)):
            missing = [r for r in needed if r not in given]
            if missing:
                raise ValueError(f"{kind}: roles without an identifier: {', '.join(missing)} "
                                 f"(update family {fam.name} uses them)")
        for name in fam.profile_fields:
            if not getattr(self.update, name):
                raise ValueError(f"update.{name}: update family {fam.name} needs it (see docs for the family)")
        return self

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
        known = ", ".join(f"{hex_id(v)}={n}" for n, v in self.encodings[table].items())
        raise ProfileError(f"profile {self.name}: board value {hex_id(int(value))} has no meaning in "
                           f"encodings.{table} ({known})")

    # ------------------------------------------------------------------ records
    def encode_status(self, rec: contract.UpdateStatusRecord) -> bytes:
        """The update-status DID record: state, reason, progress, target version, in `records.update_status` order."""
        parts = {"state": bytes([self.encode(rec.state)]), "reason": bytes([self.encode(rec.reason)]),
                 "progress": bytes([rec.progress]), "target_version": bytes(rec.target)}
        return b"".join(parts[f] for f in self.records.update_status)

    def decode_status(self, data: bytes) -> contract.UpdateStatusRecord:
        fields = self._split(data, self.records.update_status, "update status record")
        return contract.UpdateStatusRecord(self.decode(contract.UpdateState, fields["state"][0]),
                                           self.decode(contract.Reason, fields["reason"][0]), fields["progress"][0],
                                           _version(fields["target_version"]))

    def _field_bytes(self, name: str) -> int:
        return FIELD_BYTES.get(name, self.records.boot_count_bytes)

    def _split(self, data: bytes, order: list[str], what: str) -> dict[str, bytes]:
        size = sum(self._field_bytes(f) for f in order)
        if len(data) != size:
            raise ValueError(f"{what} must be {size} bytes ({', '.join(order)}; profile {self.name}), "
                             f"got {len(data)}: {data.hex()}")
        out, at = {}, 0
        for f in order:
            n = self._field_bytes(f)
            out[f] = data[at:at + n]
            at += n
        return out

    def encode_history(self, entries: list[contract.UpdateHistoryEntry]) -> bytes:
        """The update history DID record: u8 count, then each entry in `records.history_entry` layout (newest last)."""
        rec = self.records
        out = bytearray([len(entries)])
        for e in entries:
            parts = {"from_version": bytes(e.from_version), "to_version": bytes(e.to_version),
                     "result": bytes([self.encode(e.result)]), "reason": bytes([self.encode(e.reason)]),
                     "boot_count": (e.boot_count % (1 << (8 * rec.boot_count_bytes))).to_bytes(rec.boot_count_bytes,
                                                                                               rec.byte_order)}
            out += b"".join(parts[f] for f in rec.history_entry)
        return bytes(out)

    def decode_history(self, data: bytes) -> list[contract.UpdateHistoryEntry]:
        """The entries of an update history record (oldest first), decoded through the profile."""
        rec = self.records
        size = rec.entry_size()
        if not data or len(data) != 1 + data[0] * size:
            raise ValueError(f"update history must be 1 + count x {size} bytes (profile {self.name}), "
                             f"got {len(data)}: {data.hex()}")
        out = []
        for i in range(data[0]):
            f = self._split(data[1 + i * size:1 + (i + 1) * size], rec.history_entry, "history entry")
            out.append(contract.UpdateHistoryEntry(_version(f["from_version"]), _version(f["to_version"]),
                                                   self.decode(contract.UpdateState, f["result"][0]),
                                                   self.decode(contract.Reason, f["reason"][0]),
                                                   int.from_bytes(f["boot_count"], rec.byte_order)))
        return out

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


def _version(data: bytes) -> tuple[int, int, int]:
    return (data[0], data[1], data[2])


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
            problems.append(problem(where, f"can.messages.{fw}", dbc_name, f"not in {dbc}", ", ".join(sorted(names))))
    for fw, renames in profile.can.signals.items():
        msg = names.get(profile.can.dbc_message(fw))
        if msg is None:
            continue
        have = {s.name for s in msg.signals}
        for fw_sig, dbc_sig in renames.items():
            if dbc_sig not in have:
                problems.append(problem(where, f"can.signals.{fw}.{fw_sig}", dbc_sig, f"not a signal of {msg.name}",
                                        ", ".join(sorted(have))))
    if problems:
        raise ProfileError("\n".join(problems))
