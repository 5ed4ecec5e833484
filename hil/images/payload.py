"""The simulated firmware: a JSON descriptor the virtual board executes, padded to a real code size.

Layout of an image payload (the bytes MCUboot calls the image body):

    contract.PAYLOAD_MAGIC | u32 little-endian descriptor length | UTF-8 JSON descriptor | filler

The filler is a deterministic SHA-256 counter-mode stream seeded from version and build, so a
build is byte-for-byte reproducible while its bytes still look like code (no long runs that
would hide a stuck flash word or an un-erased sector).
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hil.bench import contract

_LEN = struct.Struct("<I")
_PREFIX = len(contract.PAYLOAD_MAGIC) + _LEN.size


class PayloadError(ValueError):
    """A payload is not a firmware descriptor: the simulated firmware crashes at boot."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FirmwareTiming(_Model):
    """Execution-time profile of the SOC cycle."""

    exec_ms: float = Field(2.0, ge=0, description="nominal SOC cycle execution time")
    jitter_ms: float = Field(0.3, ge=0)
    overrun_every: int = Field(0, ge=0, description="every n-th cycle overruns; 0 = never")
    overrun_ms: float = Field(0.0, ge=0, description="extra execution time of an overrunning cycle")
    stall_on_erase: bool = Field(default=False, description="single-bank part: the SOC task cannot run while the "
                                 "flash driver erases the inactive slot (code fetch stalls on the busy bank)")


class FirmwareDescriptor(_Model):
    """What a firmware build does, as far as the virtual board is concerned."""

    version: str = Field(pattern=r"^\d+\.\d+\.\d+$", description="image version, e.g. 1.1.0")
    build: str = Field(min_length=1)
    hardware: str = Field(min_length=1, description="hardware number the build targets, e.g. BMS-HW-A2")
    soc_algorithm: Literal["coulomb_ocv_v1", "coulomb_ocv_v2"] = "coulomb_ocv_v1"
    extra_messages: list[str] = Field(default_factory=list, description="DBC messages beyond the baseline set")
    self_test: Literal["pass", "fail", "crash", "hang"] = "pass"
    selftest_code: int = Field(0, ge=0, le=0xFF, description="failure code reported when self_test is 'fail'")
    config_schema: int = Field(1, ge=1, le=0xFF, description="schema the firmware migrates the configuration to")
    timing: FirmwareTiming = FirmwareTiming()
    rxswin: str = ""

    @model_validator(mode="after")
    def _fail_has_code(self) -> "FirmwareDescriptor":
        if self.self_test == "fail" and self.selftest_code == 0:
            raise ValueError("self_test 'fail' needs a nonzero selftest_code")
        return self


def _filler(seed: bytes, n: int) -> bytes:
    """n bytes of SHA-256(seed || counter) blocks."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        counter += 1
    return bytes(out[:n])


def encode_payload(desc: FirmwareDescriptor, code_size: int) -> bytes:
    """Serialise `desc` and pad with deterministic filler to exactly `code_size` bytes."""
    body = json.dumps(desc.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode("utf-8")
    head = contract.PAYLOAD_MAGIC + _LEN.pack(len(body)) + body
    if len(head) > code_size:
        raise PayloadError(f"descriptor needs {len(head)} bytes, code_size is only {code_size}")
    seed = hashlib.sha256(f"bms-fw-filler/{desc.version}+{desc.build}".encode()).digest()
    return head + _filler(seed, code_size - len(head))


def decode_payload(payload: bytes) -> FirmwareDescriptor:
    """The descriptor of an image payload; PayloadError (saying what was found) when it is not one."""
    magic = bytes(payload[: len(contract.PAYLOAD_MAGIC)])
    if magic != contract.PAYLOAD_MAGIC:
        raise PayloadError(f"payload magic is {magic.hex()}, expected {contract.PAYLOAD_MAGIC.hex()}")
    if len(payload) < _PREFIX:
        raise PayloadError(f"payload is {len(payload)} bytes, shorter than its {_PREFIX}-byte prefix")
    (length,) = _LEN.unpack_from(payload, len(contract.PAYLOAD_MAGIC))
    if _PREFIX + length > len(payload):
        raise PayloadError(f"descriptor length {length} runs past the {len(payload)}-byte payload")
    raw = bytes(payload[_PREFIX:_PREFIX + length])
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"descriptor is not UTF-8 JSON: {exc}") from None
    try:
        return FirmwareDescriptor.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise PayloadError(f"descriptor invalid: {problems}") from None
