"""The OEM flash-bootloader family's images: Intel HEX or S-record data, a signed header, a detached signature.

A build is an Intel HEX (.hex) or Motorola S-record (.s19/.srec/.mot) file read and written with
bincopy, plus a detached signature file next to it (`<file>.sig`, e.g. 1.1.0.hex.sig; a delivery's
`<stem>.sig` is read too). The file's data fill the logical blocks of
the DUT profile (`update.blocks`); the first block starts with the application header:

    offset  size  field (big endian)
    0       4     magic "FBLH"
    4       2     header size (256)
    6       1     number of ranges (1..4)
    7       1     format version (1)
    8       32    4 x (address u32, length u32): the data ranges the image digest covers, in order
    40      8     version: major u8, minor u8, revision u16, build u32
    48      4     security counter u32
    52      2     configuration schema range: lowest u8, highest u8
    54      32    hardware id, ASCII, NUL padded
    86      170   reserved (0xFF), hashed like everything else

Range 0 is the firmware payload right after the header; further ranges are the other blocks'
data (calibration). The image digest is SHA-256(header || range 0 || range 1 ...). The signature
record (the .sig file, carried to the board by the check-memory routine) is:

    0   4   magic "FBS1"
    4   1   algorithm: 0 none (unsigned), 1 ECDSA P-256 over the digest (DER), 2 Ed25519 over the digest
    5   1   reserved (0)
    6   2   signature length
    8   32  key hash: SHA-256 of the signing key's DER SubjectPublicKeyInfo (which trusted key to use)
    40  32  the image digest
    72  n   signature

The board checks, in this order (check-memory routine): header present (BAD_MAGIC), every range
downloaded whole (TRUNCATED), the digest (HASH_MISMATCH), a signature at all (UNSIGNED), the key
(UNKNOWN_KEY), the signature (SIGNATURE_INVALID); then (check-programming-dependencies routine)
hardware id (WRONG_HARDWARE), security counter (DOWNGRADE_SECURITY_COUNTER), version
(DOWNGRADE_VERSION), configuration schema (CONFIG_INCOMPATIBLE). `check_memory` and
`check_dependencies` below are that board-side check; the virtual board runs them.

In the framework an image travels as one bytes value, a *bundle* of the file and its signature
record (`bundle`/`unbundle`): the signature stays detached on disk and on the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from hil.bench.contract import Reason
from hil.errors import ImageBuildError, ImageError
from hil.images.container import ImageInfo
from hil.images.families import FAMILIES
from hil.images.mcuboot import TrustedKey, public_key_hash

if TYPE_CHECKING:
    from hil.bench.config import FlashLayout
    from hil.bench.dut_profile import DutProfile, LogicalBlock
    from hil.images.recipes import Recipe

# --------------------------------------------------------------------------- format constants
HEADER_MAGIC = b"FBLH"
HEADER_SIZE = 256
FORMAT_VERSION = 1
MAX_RANGES = 4
HEAD = struct.Struct(">4sHBB")
RANGE = struct.Struct(">II")
META = struct.Struct(">BBHIIBB32s")  # major, minor, revision, build, security counter, compat lo/hi, hardware id
RANGES_OFFSET = HEAD.size  # 8
META_OFFSET = RANGES_OFFSET + MAX_RANGES * RANGE.size  # 40
RESERVED_OFFSET = META_OFFSET + META.size  # 86

SIG_MAGIC = b"FBS1"
SIG_HEAD = struct.Struct(">4sBBH32s32s")  # magic, algorithm, reserved, signature length, key hash, digest
ALG_NONE, ALG_ECDSA_P256, ALG_ED25519 = 0, 1, 2
ALGORITHMS = {ALG_NONE: "none", ALG_ECDSA_P256: "ecdsa-p256", ALG_ED25519: "ed25519"}

BUNDLE_MAGIC = b"FBLBNDL1"
#: Bytes of calibration data a build puts into the second logical block (if the profile has one).
CALIBRATION_SIZE = 1024
BUILDER_VERSION = 1
MANIFEST = "fbl-manifest.json"

IHEX_SUFFIXES = (".hex", ".ihex")
SUFFIXES: tuple[str, ...] = FAMILIES["flash_bootloader"].suffixes


# --------------------------------------------------------------------------- header
@dataclass(frozen=True)
class Header:
    """The application header, decoded (not yet verified)."""

    ranges: tuple[tuple[int, int], ...]
    version: tuple[int, int, int]
    build: int
    security_counter: int
    config_compat: tuple[int, int]
    hardware_id: str
    raw: bytes

    @property
    def version_str(self) -> str:
        return ".".join(str(v) for v in self.version)

    def pack(self) -> bytes:
        """The 256 header bytes for these fields (reserved bytes 0xFF)."""
        return pack_header(self.ranges, self.version, self.build, self.security_counter, self.config_compat,
                           self.hardware_id, reserved=self.raw[RESERVED_OFFSET:] if self.raw else None)


def pack_header(ranges: Sequence[tuple[int, int]], version: tuple[int, int, int], build: int, security_counter: int,
                config_compat: tuple[int, int], hardware_id: str, reserved: bytes | None = None) -> bytes:
    """An application header (see the module docstring)."""
    if not 1 <= len(ranges) <= MAX_RANGES:
        raise ImageBuildError(f"an image has 1..{MAX_RANGES} data ranges, got {len(ranges)}")
    hw = hardware_id.encode("ascii")
    if len(hw) > 32:
        raise ImageBuildError(f"hardware id {hardware_id!r} is longer than 32 bytes")
    out = bytearray(HEAD.pack(HEADER_MAGIC, HEADER_SIZE, len(ranges), FORMAT_VERSION))
    for i in range(MAX_RANGES):
        out += RANGE.pack(*ranges[i]) if i < len(ranges) else RANGE.pack(0, 0)
    out += META.pack(version[0], version[1], version[2], build & 0xFFFFFFFF, security_counter, config_compat[0],
                     config_compat[1], hw.ljust(32, b"\x00"))
    out += reserved if reserved is not None and len(reserved) == HEADER_SIZE - RESERVED_OFFSET else \
        b"\xff" * (HEADER_SIZE - RESERVED_OFFSET)
    return bytes(out)


def parse_header(raw: bytes) -> Header:
    """Decode an application header; ImageError BAD_MAGIC (no header) or BAD_TLV (inconsistent fields)."""
    if len(raw) < HEADER_SIZE or raw[:4] != HEADER_MAGIC:
        found = raw[:4].hex() if len(raw) >= 4 else f"{len(raw)} bytes"
        raise ImageError(f"no application header: magic {found}, expected {HEADER_MAGIC.hex()} ('FBLH')",
                         reason=Reason.BAD_MAGIC)
    _magic, size, count, fmt = HEAD.unpack_from(raw, 0)
    if size != HEADER_SIZE or fmt != FORMAT_VERSION:
        raise ImageError(f"header size {size} / format {fmt}, expected {HEADER_SIZE} / {FORMAT_VERSION}",
                         reason=Reason.BAD_TLV)
    if not 1 <= count <= MAX_RANGES:
        raise ImageError(f"header lists {count} data ranges, accepted 1..{MAX_RANGES}", reason=Reason.BAD_TLV)
    ranges = tuple(RANGE.unpack_from(raw, RANGES_OFFSET + i * RANGE.size) for i in range(count))
    major, minor, rev, build, seccnt, lo, hi, hw = META.unpack_from(raw, META_OFFSET)
    if lo > hi:
        raise ImageError(f"configuration schema range {lo}..{hi}: lowest above highest", reason=Reason.BAD_TLV)
    try:
        hardware = hw.rstrip(b"\x00").decode("ascii")
    except UnicodeDecodeError:
        raise ImageError(f"hardware id is not ASCII: {hw.hex()}", reason=Reason.BAD_TLV) from None
    return Header(tuple((int(a), int(n)) for a, n in ranges), (major, minor, rev), build, seccnt, (lo, hi), hardware,
                  bytes(raw[:HEADER_SIZE]))


def image_digest(header: bytes, read: Callable[[int, int], bytes], ranges: Sequence[tuple[int, int]]) -> bytes:
    """SHA-256 over the header and every range's bytes (`read(address, length)`)."""
    h = hashlib.sha256(header)
    for address, length in ranges:
        h.update(read(address, length))
    return h.digest()


# --------------------------------------------------------------------------- signature record
@dataclass(frozen=True)
class SignatureRecord:
    """The detached signature record, decoded."""

    algorithm: int
    keyhash: bytes
    digest: bytes
    signature: bytes

    def pack(self) -> bytes:
        return SIG_HEAD.pack(SIG_MAGIC, self.algorithm, 0, len(self.signature), self.keyhash, self.digest) + self.signature


def parse_signature(record: bytes) -> SignatureRecord | None:
    """The record, None when there is none at all (unsigned); ImageError BAD_TLV when it is malformed."""
    if not record:
        return None
    if len(record) < SIG_HEAD.size or record[:4] != SIG_MAGIC:
        raise ImageError(f"signature record: {len(record)} bytes starting {record[:4].hex()}, expected magic "
                         f"{SIG_MAGIC.hex()} and at least {SIG_HEAD.size} bytes", reason=Reason.BAD_TLV)
    _magic, alg, _res, length, keyhash, digest = SIG_HEAD.unpack_from(record, 0)
    if alg not in ALGORITHMS:
        raise ImageError(f"signature record: algorithm {alg} unknown; accepted: "
                         + ", ".join(f"{k}={v}" for k, v in ALGORITHMS.items()), reason=Reason.BAD_TLV)
    if len(record) != SIG_HEAD.size + length:
        raise ImageError(f"signature record says {length} signature bytes, has {len(record) - SIG_HEAD.size}",
                         reason=Reason.BAD_TLV)
    return SignatureRecord(alg, keyhash, digest, bytes(record[SIG_HEAD.size:]))


def sign_digest(digest: bytes, key_path: Path) -> bytes:
    """A signature record over `digest` with the private key in `key_path` (ECDSA P-256 or Ed25519 PEM)."""
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ImageBuildError(f"signing key {key_path}: cannot load an unencrypted PEM private key ({exc})") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        alg, sig = ALG_ED25519, key.sign(digest)
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        alg, sig = ALG_ECDSA_P256, key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    else:
        raise ImageBuildError(f"signing key {key_path}: {type(key).__name__} unsupported; accepted: ecdsa-p256, ed25519")
    return SignatureRecord(alg, public_key_hash(key.public_key()), digest, sig).pack()  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the board's checks
@dataclass(frozen=True)
class FblImage:
    """An image as the board holds it after the check-memory routine: header fields, payload, digest."""

    header: Header
    payload: bytes
    digest: bytes

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return self.header.version

    @property
    def version_str(self) -> str:
        return self.header.version_str

    @property
    def security_counter(self) -> int:
        return self.header.security_counter

    @property
    def hardware_id(self) -> str:
        return self.header.hardware_id

    @property
    def config_compat(self) -> tuple[int, int]:
        return self.header.config_compat


def read_image(read: Callable[[int, int], bytes], header_address: int) -> FblImage:
    """The image in a bank (header at `header_address`, `read(address, length)` the bank), not verified."""
    header = parse_header(read(header_address, HEADER_SIZE))
    address, length = header.ranges[0]
    return FblImage(header, read(address, length), image_digest(header.raw, read, header.ranges))


def check_memory(read: Callable[[int, int], bytes], header_address: int, downloaded: Callable[[int, int], bool],
                 record: bytes, trusted: Sequence[TrustedKey], *, waive: Callable[[Reason], bool] = lambda r: False,
                 ) -> FblImage:
    """The check-memory routine: structure, completeness, digest, signature. ImageError with the first Reason.

    `downloaded(address, length)`: whether this programming session wrote that range whole. `waive`: a
    defective board's skipped checks (hil/sim/defects.py); a correct board waives nothing.
    """
    def fail(message: str, reason: Reason) -> None:
        if not waive(reason):
            raise ImageError(message, reason=reason)

    if not downloaded(header_address, HEADER_SIZE):
        fail(f"the header at 0x{header_address:08X} was not downloaded", Reason.TRUNCATED)
    img = read_image(read, header_address)
    for address, length in img.header.ranges:
        if not downloaded(address, length):
            fail(f"range 0x{address:08X}+{length} was not downloaded whole", Reason.TRUNCATED)
    sig = parse_signature(record)
    if sig is not None and not hmac.compare_digest(sig.digest, img.digest):
        fail(f"image digest is {img.digest.hex()}, the signature record says {sig.digest.hex()}",
             Reason.HASH_MISMATCH)
    if sig is None or sig.algorithm == ALG_NONE or not sig.signature:
        fail("image is unsigned: the check-memory routine carried no signature", Reason.UNSIGNED)
        return img
    key = next((k for k in trusted if hmac.compare_digest(k.keyhash, sig.keyhash)), None)
    if key is None:
        known = ", ".join(f"{k.name}={k.keyhash.hex()[:16]}" for k in trusted) or "none"
        fail(f"key hash {sig.keyhash.hex()[:16]}... matches no trusted key (trusted: {known})", Reason.UNKNOWN_KEY)
        return img
    public = key.public_key
    try:
        if isinstance(public, ed25519.Ed25519PublicKey) and sig.algorithm == ALG_ED25519:
            public.verify(sig.signature, img.digest)
        elif isinstance(public, ec.EllipticCurvePublicKey) and sig.algorithm == ALG_ECDSA_P256:
            public.verify(sig.signature, img.digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        else:
            raise InvalidSignature  # another algorithm than the key's (an RSA key signs no record of this format)
    except InvalidSignature:
        fail(f"{ALGORITHMS[sig.algorithm]} signature does not verify with trusted key {key.name!r} ({key.kind}) "
             f"over digest {img.digest.hex()[:16]}...", Reason.SIGNATURE_INVALID)
    return img


def check_dependencies(img: FblImage, *, hardware_id: str | None, min_security_counter: int = 0,
                       current_version: tuple[int, int, int] | None = None, config_schema: int | None = None,
                       waive: Callable[[Reason], bool] = lambda r: False) -> None:
    """The check-programming-dependencies routine: hardware, anti-rollback, version, configuration schema."""
    def fail(message: str, reason: Reason) -> None:
        if not waive(reason):
            raise ImageError(message, reason=reason)

    if hardware_id is not None and img.hardware_id != hardware_id:
        fail(f"image is built for hardware {img.hardware_id!r}, this board is {hardware_id!r}", Reason.WRONG_HARDWARE)
    if img.security_counter < min_security_counter:
        fail(f"image security counter {img.security_counter} is below the stored counter {min_security_counter}",
             Reason.DOWNGRADE_SECURITY_COUNTER)
    if current_version is not None and img.version_tuple < tuple(current_version):
        cur = ".".join(str(v) for v in current_version)
        fail(f"image version {img.version_str} is older than the running {cur}", Reason.DOWNGRADE_VERSION)
    if config_schema is not None:
        lo, hi = img.config_compat
        if not lo <= config_schema <= hi:
            fail(f"image accepts configuration schema {lo}..{hi}, stored configuration is schema {config_schema}",
                 Reason.CONFIG_INCOMPATIBLE)


# --------------------------------------------------------------------------- files and bundles
def bundle(file_bytes: bytes, signature: bytes) -> bytes:
    """One bytes value for an image file and its detached signature record."""
    return BUNDLE_MAGIC + struct.pack(">I", len(file_bytes)) + file_bytes + struct.pack(">I", len(signature)) + signature


def unbundle(image: bytes) -> tuple[bytes, bytes]:
    """(file bytes, signature record) of a bundle; ImageError BAD_MAGIC when it is not one."""
    if image[:len(BUNDLE_MAGIC)] != BUNDLE_MAGIC or len(image) < len(BUNDLE_MAGIC) + 8:
        raise ImageError(f"not a flash-bootloader image bundle (starts {bytes(image[:8])!r}); load .hex/.s19 files "
                         "with the flash_bootloader container", reason=Reason.BAD_MAGIC)
    off = len(BUNDLE_MAGIC)
    (n,) = struct.unpack_from(">I", image, off)
    file_bytes = bytes(image[off + 4:off + 4 + n])
    off += 4 + n
    if len(image) < off + 4:
        raise ImageError("image bundle truncated before its signature length", reason=Reason.TRUNCATED)
    (m,) = struct.unpack_from(">I", image, off)
    signature = bytes(image[off + 4:off + 4 + m])
    if len(file_bytes) != n or len(signature) != m:
        raise ImageError("image bundle truncated", reason=Reason.TRUNCATED)
    return file_bytes, signature


def file_format(file_bytes: bytes) -> str:
    """'ihex' or 'srec' from the file's first record."""
    head = file_bytes.lstrip()[:1]
    if head == b":":
        return "ihex"
    if head in (b"S", b"s"):
        return "srec"
    raise ImageError(f"neither Intel HEX (':') nor Motorola S-record ('S') data: starts {file_bytes[:16]!r}",
                     reason=Reason.BAD_MAGIC)


def read_data(file_bytes: bytes) -> dict[int, bytes]:
    """The file's data as contiguous segments {address: bytes} (bincopy)."""
    import bincopy

    binfile = bincopy.BinFile()
    text = file_bytes.decode("ascii", errors="strict")
    try:
        if file_format(file_bytes) == "ihex":
            binfile.add_ihex(text)
        else:
            binfile.add_srec(text)
    except bincopy.Error as exc:
        raise ImageError(f"image file does not parse: {exc}", reason=Reason.BAD_TLV) from None
    return {int(seg.minimum_address): bytes(seg.data) for seg in binfile.segments}


def write_data(segments: dict[int, bytes], fmt: str) -> bytes:
    """Segments as an Intel HEX or S-record (S3, 32-bit addresses) file (bincopy)."""
    import bincopy

    binfile = bincopy.BinFile()
    for address, data in sorted(segments.items()):
        if data:
            binfile.add_binary(data, address=address)
    text = binfile.as_ihex(32, 32) if fmt == "ihex" else binfile.as_srec(32, 32)
    return text.encode("ascii")


def signature_path(path: Path) -> Path:
    """Where the detached signature of an image file lives: `<file>.sig` next to it."""
    return path.with_name(path.name + ".sig")


def format_of_suffix(suffix: str) -> str:
    """'ihex' for .hex/.ihex, 'srec' for the S-record suffixes."""
    return "ihex" if suffix.lower() in IHEX_SUFFIXES else "srec"


# --------------------------------------------------------------------------- the container
class _Memory:
    """An image's data as a sparse memory: read by address, blocks by the profile's layout."""

    def __init__(self, segments: dict[int, bytes]) -> None:
        self.segments = dict(sorted(segments.items()))

    def read(self, address: int, length: int) -> bytes:
        out = bytearray(b"\xff" * length)
        for start, data in self.segments.items():
            lo, hi = max(start, address), min(start + len(data), address + length)
            if lo < hi:
                out[lo - address:hi - address] = data[lo - start:hi - start]
        return bytes(out)

    def covers(self, address: int, length: int) -> bool:
        end = address + length
        for start, data in self.segments.items():
            if start <= address < start + len(data):
                address = start + len(data)
                if address >= end:
                    return True
        return length == 0

    def in_block(self, block: "LogicalBlock") -> bytes:
        """The file's data in `block`, from its start to the last byte the file has there (gaps 0xFF); b"" if none."""
        ends = [min(s + len(d), block.address + block.size) for s, d in self.segments.items()
                if s < block.address + block.size and s + len(d) > block.address]
        if not ends:
            return b""
        return self.read(block.address, max(ends) - block.address)


class FblContainer:
    """Images of the OEM flash-bootloader family (module docstring), for the board a DUT profile describes."""

    family = "flash_bootloader"
    suffixes: tuple[str, ...] = SUFFIXES
    regions: tuple[str, ...] = ("header", "payload", "protected_tlv", "signature")

    def __init__(self, profile: "DutProfile") -> None:
        self.profile = profile
        self.blocks = list(profile.update.blocks)
        if not self.blocks:
            raise ImageBuildError(f"profile {profile.name}: update family flash_bootloader needs update.blocks")

    # ------------------------------------------------------------------ reading
    @property
    def header_address(self) -> int:
        return self.blocks[0].address

    def _open(self, image: bytes) -> tuple[_Memory, bytes, str]:
        file_bytes, signature = unbundle(image)
        return _Memory(read_data(file_bytes)), signature, file_format(file_bytes)

    def _header(self, memory: _Memory) -> Header:
        return parse_header(memory.read(self.header_address, HEADER_SIZE))

    def read(self, image: bytes) -> ImageInfo:
        memory, _sig, _fmt = self._open(image)
        h = self._header(memory)
        return ImageInfo(h.version, h.build, h.security_counter, h.hardware_id, h.config_compat)

    def payload(self, image: bytes) -> bytes:
        memory, _sig, _fmt = self._open(image)
        address, length = self._header(memory).ranges[0]
        return memory.read(address, length)

    def digest(self, image: bytes) -> bytes:
        memory, _sig, _fmt = self._open(image)
        h = self._header(memory)
        return image_digest(h.raw, memory.read, h.ranges)

    def blocks_of(self, image: bytes) -> list[tuple["LogicalBlock", bytes]]:
        """(logical block, data) of every block the image fills, in address order: one RequestDownload each."""
        memory, _sig, _fmt = self._open(image)
        out = [(b, memory.in_block(b)) for b in self.blocks]
        outside = [hex(a) for a, d in memory.segments.items()
                   if not any(b.address <= a < b.address + b.size for b in self.blocks)]
        if outside:
            raise ImageError(f"image data at {', '.join(outside)} lies outside the profile's logical blocks "
                             + ", ".join(f"{b.name} 0x{b.address:X}+0x{b.size:X}" for b in self.blocks),
                             reason=Reason.OVERSIZE)
        return [(b, d) for b, d in out if d]

    def signature(self, image: bytes) -> bytes:
        """The detached signature record the check-memory routine carries."""
        return unbundle(image)[1]

    def size(self, image: bytes) -> int:
        return sum(len(d) for _b, d in self.blocks_of(image))

    def describe(self, image: bytes) -> str:
        file_bytes, signature = unbundle(image)
        memory = _Memory(read_data(file_bytes))
        lines = [f"format: {file_format(file_bytes)}, {len(file_bytes)} bytes of text"]
        lines += [f"segment 0x{a:08X}..0x{a + len(d) - 1:08X} ({len(d)} bytes)" for a, d in memory.segments.items()]
        try:
            h = self._header(memory)
            lines += [f"header at 0x{self.header_address:08X}: version {h.version_str}+{h.build}, security counter "
                      f"{h.security_counter}, hardware {h.hardware_id!r}, configuration schema {h.config_compat[0]}.."
                      f"{h.config_compat[1]}"]
            lines += [f"range {i}: 0x{a:08X}+{n}" for i, (a, n) in enumerate(h.ranges)]
            lines.append(f"digest: {image_digest(h.raw, memory.read, h.ranges).hex()}")
        except ImageError as exc:
            lines.append(f"header: {exc}")
        try:
            sig = parse_signature(signature)
            lines.append("signature: none" if sig is None else
                         f"signature: {ALGORITHMS[sig.algorithm]}, key hash {sig.keyhash.hex()[:16]}..., digest "
                         f"{sig.digest.hex()}, {len(sig.signature)} bytes")
        except ImageError as exc:
            lines.append(f"signature: {exc}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ mutations
    def _rebuild(self, memory: _Memory, signature: bytes, fmt: str) -> bytes:
        return bundle(write_data(memory.segments, fmt), signature)

    def _region(self, memory: _Memory, region: str) -> tuple[int, int]:
        h = self._header(memory)
        base = self.header_address
        if region == "header":
            return base + RESERVED_OFFSET, base + HEADER_SIZE
        if region == "protected_tlv":
            return base + META_OFFSET, base + RESERVED_OFFSET
        if region == "payload":
            address, length = h.ranges[0]
            return address, address + length
        raise ValueError(f"unknown region {region!r}; accepted: {', '.join(self.regions)}")

    def flip_bit(self, image: bytes, region: str, bit_index: int = 0) -> bytes:
        memory, signature, fmt = self._open(image)
        if region == "signature":
            sig = parse_signature(signature)
            if sig is None or not sig.signature:
                raise ImageError("image has no signature to flip a bit in", reason=Reason.UNSIGNED)
            start, end = SIG_HEAD.size, len(signature)
            target = bytearray(signature)
        else:
            start, end = self._region(memory, region)
            target = bytearray(memory.read(start, end - start))
            start, end = 0, end - start
        bits = (end - start) * 8
        index = bit_index + bits if bit_index < 0 else bit_index
        if not 0 <= index < bits:
            raise ValueError(f"bit_index {bit_index} outside region {region} ({bits} bits)")
        target[start + index // 8] ^= 1 << (index % 8)
        if region == "signature":
            return self._rebuild(memory, bytes(target), fmt)
        address = self._region(memory, region)[0]
        return self._rebuild(_Memory(_merge(memory.segments, address, bytes(target))), signature, fmt)

    def truncate(self, image: bytes, n: int) -> bytes:
        blocks = self.blocks_of(image)
        total = sum(len(d) for _b, d in blocks)
        if not 0 <= n < total:
            raise ValueError(f"truncate to {n} bytes: must be 0 <= n < {total} (the bytes a download sends)")
        _memory, signature, fmt = self._open(image)
        kept: dict[int, bytes] = {}
        left = n
        for block, data in blocks:
            if left <= 0:
                break
            kept[block.address] = data[:left]
            left -= len(data)
        return bundle(write_data(kept, fmt), signature)

    def strip_signature(self, image: bytes) -> bytes:
        memory, signature, fmt = self._open(image)
        sig = parse_signature(signature)
        digest = sig.digest if sig is not None else bytes(32)
        return self._rebuild(memory, SignatureRecord(ALG_NONE, bytes(32), digest, b"").pack(), fmt)

    def resign(self, image: bytes, key_path: Path, *, hardware_id: str | None = None,
               security_counter: int | None = None, version: tuple[int, int, int] | None = None) -> bytes:
        memory, _signature, fmt = self._open(image)
        h = self._header(memory)
        raw = pack_header(h.ranges, version or h.version, h.build,
                          h.security_counter if security_counter is None else security_counter, h.config_compat,
                          h.hardware_id if hardware_id is None else hardware_id, reserved=h.raw[RESERVED_OFFSET:])
        memory = _Memory(_merge(memory.segments, self.header_address, raw))
        digest = image_digest(raw, memory.read, h.ranges)
        return self._rebuild(memory, sign_digest(digest, key_path), fmt)

    # ------------------------------------------------------------------ builds
    def layout_for(self, recipe: "Recipe") -> tuple[dict[int, bytes], list[tuple[int, int]]]:
        """The data segments and the ranges of a recipe's build on this profile's blocks (header not yet added)."""
        from hil.images.payload import encode_payload

        app = self.blocks[0]
        payload = encode_payload(recipe.descriptor(), recipe.code_size)
        if HEADER_SIZE + len(payload) > app.size:
            raise ImageBuildError(f"recipe {recipe.name}: header and {len(payload)}-byte payload exceed logical block "
                                  f"{app.name} ({app.size} bytes)")
        segments = {app.address + HEADER_SIZE: payload}
        ranges = [(app.address + HEADER_SIZE, len(payload))]
        for block in self.blocks[1:2]:  # the calibration block: deterministic data of the build
            size = min(CALIBRATION_SIZE, block.size)
            seed = hashlib.sha256(f"bms-fw-calibration/{recipe.version}+{recipe.build}".encode()).digest()
            data = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(-(-size // 32)))[:size]
            segments[block.address] = data
            ranges.append((block.address, size))
        return segments, ranges

    def build(self, recipe: "Recipe", keys_dir: Path, out_dir: Path, *, layout: "FlashLayout | None" = None,
              suffix: str | None = None, hardware: str | None = None) -> Path:
        from filelock import FileLock, Timeout

        from hil.images.build import BUILD_LOCK_TIMEOUT_S, read_manifest
        from hil.images.keys import resolve_key

        recipe = recipe.for_hardware(hardware)
        recipe.descriptor()  # no hardware at all fails here, naming the recipe
        suffix = suffix or self.suffixes[0]
        if suffix not in self.suffixes:
            raise ImageBuildError(f"recipe {recipe.name}: flash-bootloader builds are {', '.join(self.suffixes)}, "
                                  f"not {suffix}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        key_path = resolve_key(recipe.key, Path(keys_dir))
        path = out_dir / f"{recipe.name}{suffix}"
        sig_path = signature_path(path)
        cache_key = hashlib.sha256("|".join([
            str(BUILDER_VERSION), recipe.fingerprint(), hashlib.sha256(key_path.read_bytes()).hexdigest(), suffix,
            json.dumps([b.model_dump() for b in self.blocks]), package_version("bincopy")]).encode()).hexdigest()
        try:
            with FileLock(str(out_dir / ".build.lock")).acquire(timeout=BUILD_LOCK_TIMEOUT_S):
                manifest = read_manifest(out_dir, MANIFEST)
                entry = manifest.get(path.name)
                if (isinstance(entry, dict) and entry.get("cache_key") == cache_key and path.is_file()
                        and sig_path.is_file()
                        and entry.get("sha256") == hashlib.sha256(path.read_bytes() + sig_path.read_bytes()).hexdigest()):
                    return path
                manifest[path.name] = self._build(recipe, key_path, path, sig_path, cache_key)
                _write_atomic(out_dir / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        except Timeout:
            raise ImageBuildError(f"another process has held {out_dir / '.build.lock'} for "
                                  f"{BUILD_LOCK_TIMEOUT_S:.0f} s; cannot build {recipe.name}") from None
        return path

    def _build(self, recipe: "Recipe", key_path: Path, path: Path, sig_path: Path, cache_key: str) -> dict[str, Any]:
        from hil.images.mcuboot import load_trusted_keys

        assert recipe.hardware_id is not None  # build() gave it the bench's
        segments, ranges = self.layout_for(recipe)
        header = pack_header(ranges, recipe.version_tuple, _build_number(recipe.build), recipe.security_counter,
                             recipe.config_compat, recipe.hardware_id)
        memory = _Memory(_merge(segments, self.header_address, header))
        digest = image_digest(header, memory.read, ranges)
        record = sign_digest(digest, key_path)
        file_bytes = write_data(memory.segments, format_of_suffix(path.suffix))
        image = bundle(file_bytes, record)
        # Cross-check with the board's own check at build time, so a bad build never reaches a bench.
        try:
            img = check_memory(memory.read, self.header_address, memory.covers, record, load_trusted_keys([key_path]))
            check_dependencies(img, hardware_id=recipe.hardware_id)
        except ImageError as exc:
            raise ImageBuildError(f"recipe {recipe.name}: the build fails the board's check: {exc}") from None
        _write_atomic(path, file_bytes)
        _write_atomic(sig_path, record)
        _write_atomic(path.with_name(f"{path.name}.txt"), (self.describe(image) + "\n").encode())
        return {"file": path.name, "signature": sig_path.name,
                "sha256": hashlib.sha256(file_bytes + record).hexdigest(), "size": self.size(image),
                "version": recipe.version, "build": recipe.build, "security_counter": recipe.security_counter,
                "hardware_id": recipe.hardware_id, "config_compat": list(recipe.config_compat), "key": recipe.key,
                "keyhash": record[8:40].hex(),
                "image_digest": digest.hex(), "bincopy": package_version("bincopy"), "cache_key": cache_key}

    # ------------------------------------------------------------------ files
    def load(self, path: Path) -> bytes:
        path = Path(path)
        try:
            file_bytes = path.read_bytes()
        except OSError as exc:
            raise ImageBuildError(f"image file {path}: cannot read ({exc.strerror})") from None
        file_format(file_bytes)  # a file of neither format is named now, not at the first download
        sig_path = next((p for p in (signature_path(path), path.with_suffix(".sig")) if p.is_file()), None)
        return bundle(file_bytes, sig_path.read_bytes() if sig_path is not None else b"")

    def save(self, image: bytes, path: Path) -> list[Path]:
        path = Path(path)
        file_bytes, signature = unbundle(image)
        path.write_bytes(file_bytes)
        sig_path = signature_path(path)
        sig_path.write_bytes(signature)
        return [path, sig_path]


def _merge(segments: dict[int, bytes], address: int, data: bytes) -> dict[int, bytes]:
    """`segments` with `data` written at `address` (overwriting what is there; segments may touch)."""
    memory = _Memory(segments)
    lo = min([address, *segments])
    hi = max([address + len(data), *(a + len(d) for a, d in segments.items())])
    flat = bytearray(memory.read(lo, hi - lo))
    flat[address - lo:address - lo + len(data)] = data
    covered = [(a, a + len(d)) for a, d in segments.items()] + [(address, address + len(data))]
    out: dict[int, bytes] = {}
    for start, end in _union(covered):
        out[start] = bytes(flat[start - lo:end - lo])
    return out


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _build_number(build: str) -> int:
    """The recipe's build id as the header's u32 (its digits, else a stable hash)."""
    digits = "".join(ch for ch in build if ch.isdigit())
    if digits and int(digits) <= 0xFFFFFFFF:
        return int(digits)
    return int.from_bytes(hashlib.sha256(build.encode()).digest()[:4], "big")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
