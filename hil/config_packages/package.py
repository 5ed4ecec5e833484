"""The configuration package container: build, sign, parse and verify (tester and virtual board share it).

Format (all integers little endian, as MCUboot images; docs/bench-contract.md section 11):

    header   16 bytes  magic b"BMSPRF\\x01\\x00", u32 body length, u32 flags (0)
    body     TLVs      u16 type, u16 length, value: NAME, VEHICLE_GROUP, HARDWARE, SCHEMA (u8),
                       PROFILE_VERSION (u32), VALUES (compact UTF-8 JSON object, sorted keys)
    trailer  TLV info  u16 0x6907, u16 total length (info included), then MCUboot TLVs:
                       SHA256 (0x10, over header + body), KEYHASH (0x01, SHA-256 of the signing key's
                       DER SubjectPublicKeyInfo), ECDSA_SIG (0x22) or ED25519 (0x24) over the SHA-256

The signature covers header and body; the trailer is not covered (as MCUboot's unprotected TLVs).
The same keys sign images and packages (hil.images.keys); the board trusts the same key hashes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from hil.bench import contract
from hil.bench.contract import Reason
from hil.errors import ImageBuildError, ImageError
from hil.images.mcuboot import (TLV_ECDSA_SIG, TLV_ED25519, TLV_INFO_MAGIC, TLV_KEYHASH, TLV_SHA256, TrustedKey,
                                check_signature, public_key_hash)

MAGIC = b"BMSPRF\x01\x00"
HEADER = struct.Struct("<8sII")
TLV = struct.Struct("<HH")
INFO = struct.Struct("<HH")

#: Body TLV types (contract.PROFILE_TLV_* are the names a vendor reads).
BODY_TLVS = {
    contract.PROFILE_TLV_NAME: "NAME",
    contract.PROFILE_TLV_VEHICLE_GROUP: "VEHICLE_GROUP",
    contract.PROFILE_TLV_HARDWARE: "HARDWARE",
    contract.PROFILE_TLV_SCHEMA: "SCHEMA",
    contract.PROFILE_TLV_VERSION: "PROFILE_VERSION",
    contract.PROFILE_TLV_VALUES: "VALUES",
}


@dataclass(frozen=True)
class ConfigPackage:
    """A parsed configuration package (not yet trusted: see `verify_package`)."""

    name: str
    vehicle_group: str
    hardware: str
    schema: int
    version: int
    values: dict[str, Any]
    digest: bytes  # SHA-256 over header + body, as computed
    trailer: dict[int, bytes]

    @property
    def signed_length(self) -> int:
        return HEADER.size + len(self.body())

    def body(self) -> bytes:
        return encode_body(self.name, self.vehicle_group, self.hardware, self.schema, self.version, self.values)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "vehicle_group": self.vehicle_group, "hardware": self.hardware,
                "schema": self.schema, "version": self.version, "values": self.values}


def _tlv(tag: int, value: bytes) -> bytes:
    return TLV.pack(tag, len(value)) + value


def encode_values(values: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(values), sort_keys=True, separators=(",", ":")).encode()


def encode_body(name: str, group: str, hardware: str, schema: int, version: int, values: Mapping[str, Any]) -> bytes:
    """The body TLVs in their fixed order."""
    return b"".join([
        _tlv(contract.PROFILE_TLV_NAME, name.encode("ascii")),
        _tlv(contract.PROFILE_TLV_VEHICLE_GROUP, group.encode("ascii")),
        _tlv(contract.PROFILE_TLV_HARDWARE, hardware.encode("ascii")),
        _tlv(contract.PROFILE_TLV_SCHEMA, bytes([schema])),
        _tlv(contract.PROFILE_TLV_VERSION, struct.pack("<I", version)),
        _tlv(contract.PROFILE_TLV_VALUES, encode_values(values)),
    ])


def load_private_key(path: Path) -> Any:
    """A PEM private key (ECDSA P-256 or Ed25519), as `hil images` keys are written."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ImageBuildError(f"signing key {path}: cannot load an unencrypted PEM private key ({exc})") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ImageBuildError(f"signing key {path}: unsupported type {type(key).__name__}; accepted: ecdsa-p256, ed25519")


def build_package(*, name: str, vehicle_group: str, hardware: str, schema: int, version: int,
                  values: Mapping[str, Any], key_path: Path | None) -> bytes:
    """Header + body + trailer. `key_path` None builds an unsigned package (hash only), for negative tests."""
    body = encode_body(name, vehicle_group, hardware, schema, version, values)
    signed = HEADER.pack(MAGIC, len(body), 0) + body
    digest = hashlib.sha256(signed).digest()
    entries = [_tlv(TLV_SHA256, digest)]
    if key_path is not None:
        key = load_private_key(key_path)
        entries.append(_tlv(TLV_KEYHASH, public_key_hash(key.public_key())))
        if isinstance(key, ed25519.Ed25519PrivateKey):
            entries.append(_tlv(TLV_ED25519, key.sign(digest)))
        else:
            entries.append(_tlv(TLV_ECDSA_SIG, key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))))
    trailer = b"".join(entries)
    return signed + INFO.pack(TLV_INFO_MAGIC, INFO.size + len(trailer)) + trailer


def _fail(msg: str, reason: Reason) -> ImageError:
    return ImageError(msg, reason=reason)


def _split(data: bytes) -> tuple[int, dict[int, bytes]]:
    """Body end offset and trailer TLVs; ImageError BAD_MAGIC / TRUNCATED / BAD_TLV when the frame is broken."""
    if len(data) < HEADER.size or data[:len(MAGIC)] != MAGIC:
        raise _fail(f"not a configuration package: magic {bytes(data[:8]).hex()}, expected {MAGIC.hex()}", Reason.BAD_MAGIC)
    _magic, body_len, _flags = HEADER.unpack_from(data, 0)
    end = HEADER.size + body_len
    if len(data) < end + INFO.size:
        raise _fail(f"package truncated: {len(data)} bytes, body ends at {end} and the trailer info follows",
                    Reason.TRUNCATED)
    magic, total = INFO.unpack_from(data, end)
    if magic != TLV_INFO_MAGIC:
        raise _fail(f"trailer info magic 0x{magic:04x} at {end}, expected 0x6907", Reason.TRUNCATED)
    if len(data) < end + total:
        raise _fail(f"package truncated: {len(data)} bytes, trailer says {end + total}", Reason.TRUNCATED)
    trailer: dict[int, bytes] = {}
    off = end + INFO.size
    while off < end + total:
        if off + TLV.size > end + total:
            raise _fail("trailer TLV header runs past the trailer", Reason.BAD_TLV)
        tag, length = TLV.unpack_from(data, off)
        if off + TLV.size + length > end + total:
            raise _fail(f"trailer TLV 0x{tag:02x} runs past the trailer", Reason.BAD_TLV)
        if tag in trailer:
            raise _fail(f"duplicate trailer TLV 0x{tag:02x}", Reason.BAD_TLV)
        trailer[tag] = bytes(data[off + TLV.size:off + TLV.size + length])
        off += TLV.size + length
    return end, trailer


def parse_package(data: bytes) -> ConfigPackage:
    """Parse the container (no trust implied); ImageError with a Reason (BAD_MAGIC, TRUNCATED, BAD_TLV)."""
    end, trailer = _split(data)
    fields: dict[int, bytes] = {}
    off = HEADER.size
    while off < end:
        if off + TLV.size > end:
            raise _fail(f"body TLV header at {off} runs past the body end {end}", Reason.BAD_TLV)
        tag, length = TLV.unpack_from(data, off)
        if off + TLV.size + length > end:
            raise _fail(f"body TLV 0x{tag:02x} at {off} (length {length}) runs past the body end {end}", Reason.BAD_TLV)
        if tag in fields:
            raise _fail(f"duplicate body TLV {BODY_TLVS.get(tag, hex(tag))}", Reason.BAD_TLV)
        fields[tag] = bytes(data[off + TLV.size:off + TLV.size + length])
        off += TLV.size + length
    missing = [n for t, n in BODY_TLVS.items() if t not in fields]
    if missing:
        raise _fail(f"body lacks {', '.join(missing)}", Reason.BAD_TLV)
    try:
        values = json.loads(fields[contract.PROFILE_TLV_VALUES].decode())
        name = fields[contract.PROFILE_TLV_NAME].decode("ascii")
        group = fields[contract.PROFILE_TLV_VEHICLE_GROUP].decode("ascii")
        hardware = fields[contract.PROFILE_TLV_HARDWARE].decode("ascii")
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(f"body text fields are not ASCII / VALUES is not JSON: {exc}", Reason.BAD_TLV) from None
    if not isinstance(values, dict) or len(fields[contract.PROFILE_TLV_SCHEMA]) != 1 \
            or len(fields[contract.PROFILE_TLV_VERSION]) != 4:
        raise _fail("VALUES must be a JSON object, SCHEMA one byte, PROFILE_VERSION four bytes", Reason.BAD_TLV)
    return ConfigPackage(name, group, hardware, fields[contract.PROFILE_TLV_SCHEMA][0],
                          struct.unpack("<I", fields[contract.PROFILE_TLV_VERSION])[0], values,
                          hashlib.sha256(bytes(data[:end])).digest(), trailer)


def verify_package(data: bytes, trusted: Sequence[TrustedKey]) -> ConfigPackage:
    """Parse, check integrity (SHA256) and signature against `trusted`. Target and range checks are the board's.

    ImageError reasons: BAD_MAGIC / TRUNCATED / BAD_TLV (malformed), HASH_MISMATCH, UNSIGNED, UNKNOWN_KEY,
    SIGNATURE_INVALID.
    """
    # Integrity and authenticity first: nothing in the body is interpreted before they hold.
    end, trailer = _split(data)
    digest = hashlib.sha256(bytes(data[:end])).digest()
    sha = trailer.get(TLV_SHA256)
    if sha is None:
        raise _fail("no SHA256 TLV in the trailer", Reason.BAD_TLV)
    if sha != digest:
        raise _fail(f"SHA-256 mismatch: trailer {sha.hex()[:16]}..., computed {digest.hex()[:16]}...",
                    Reason.HASH_MISMATCH)
    keyhash = trailer.get(TLV_KEYHASH)
    if keyhash is None and not ({TLV_ECDSA_SIG, TLV_ED25519} & trailer.keys()):
        raise _fail("package is unsigned (no KEYHASH, no signature)", Reason.UNSIGNED)
    key = next((k for k in trusted if k.keyhash == keyhash), None)
    if key is None:
        raise _fail(f"KEYHASH {(keyhash or b'').hex()[:16]}... matches no trusted key "
                    f"({', '.join(k.name for k in trusted) or 'none'})", Reason.UNKNOWN_KEY)
    check_signature(key, trailer, digest)
    return parse_package(data)
