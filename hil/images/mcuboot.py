"""Our own MCUboot image parser and verifier (device side of the bench contract).

Written with `cryptography` and `hashlib` only - deliberately *not* with imgtool - so the tests
cross-check two independent implementations instead of checking imgtool with itself.

Image layout (little endian, as imgtool 2.x writes it):

    header (32 bytes, padded to hdr_size) | payload (img_size) |
    protected TLV area (magic 0x6908, hdr.protect_tlv_size bytes incl. its 4-byte info) |
    TLV area (magic 0x6907, it_tlv_tot bytes incl. its 4-byte info)

Every TLV entry is `u16 type, u16 length, value`. The SHA256 TLV covers header + payload +
protected TLV area; ECDSA-P256 and RSA-PSS (2048/3072, SHA-256, salt 32) sign that same byte range
(so they verify as signatures over the pre-computed SHA-256 digest), Ed25519 signs the 32-byte
SHA-256 digest itself. KEYHASH is the SHA-256 of the key's DER SubjectPublicKeyInfo (PKCS#1
RSAPublicKey for RSA, the form MCUboot embeds).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from hil.bench import contract
from hil.bench.contract import Reason
from hil.errors import BenchConfigError, ImageError

# --------------------------------------------------------------------------- format constants
IMAGE_MAGIC = 0x96F3B83D
HEADER_STRUCT = struct.Struct("<IIHHIIBBHII")  # magic, load, hdr_sz, ptlv_sz, img_sz, flags, ver(4), pad
HEADER_LEN = HEADER_STRUCT.size  # 32
TLV_INFO_MAGIC = 0x6907
TLV_PROT_INFO_MAGIC = 0x6908
TLV_INFO_STRUCT = struct.Struct("<HH")  # magic, total length including this info
TLV_ENTRY_STRUCT = struct.Struct("<HH")  # type, length

TLV_KEYHASH = 0x01
TLV_PUBKEY = 0x02
TLV_SHA256 = 0x10
TLV_SHA384 = 0x11
TLV_SHA512 = 0x12
TLV_RSA2048_PSS = 0x20
TLV_ECDSA_SIG = 0x22
TLV_RSA3072_PSS = 0x23
TLV_ED25519 = 0x24
TLV_SIG_PURE = 0x25
TLV_SEC_CNT = 0x50

SIGNATURE_TLVS = frozenset({TLV_RSA2048_PSS, TLV_ECDSA_SIG, TLV_RSA3072_PSS, TLV_ED25519})
#: Metadata the device trusts only when it is covered by the signature (protected area).
PROTECTED_ONLY_TLVS = frozenset({TLV_SEC_CNT, contract.TLV_HARDWARE_ID, contract.TLV_CONFIG_COMPAT})
#: Tags that must occur at most once: a second copy could shadow the checked one.
UNIQUE_TLVS = frozenset({TLV_KEYHASH, TLV_PUBKEY, TLV_SHA256, TLV_SHA384, TLV_SHA512, *SIGNATURE_TLVS, *PROTECTED_ONLY_TLVS})
TLV_NAMES = {
    TLV_KEYHASH: "KEYHASH", TLV_PUBKEY: "PUBKEY", TLV_SHA256: "SHA256", TLV_SHA384: "SHA384", TLV_SHA512: "SHA512",
    TLV_RSA2048_PSS: "RSA2048_PSS", TLV_ECDSA_SIG: "ECDSA_SIG", TLV_RSA3072_PSS: "RSA3072_PSS",
    TLV_ED25519: "ED25519", TLV_SIG_PURE: "SIG_PURE", TLV_SEC_CNT: "SEC_CNT", 0x60: "BOOT_RECORD", 0x40: "DEPENDENCY",
    contract.TLV_HARDWARE_ID: "HARDWARE_ID", contract.TLV_CONFIG_COMPAT: "CONFIG_COMPAT",
}

PublicKey = Union[ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, rsa.RSAPublicKey]
Buffer = Union[bytes, bytearray, memoryview]


def tlv_name(tag: int) -> str:
    """Human name of a TLV tag, e.g. 'SHA256 (0x10)'."""
    return f"{TLV_NAMES.get(tag, 'TLV')} (0x{tag:02x})"


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ImageHeader:
    """The 32-byte MCUboot image header."""

    magic: int
    load_addr: int
    hdr_size: int
    protect_tlv_size: int
    img_size: int
    flags: int
    version: tuple[int, int, int, int]  # major, minor, revision, build


@dataclass(frozen=True)
class ParsedImage:
    """A structurally valid image: header, payload and both TLV areas decoded (not yet verified)."""

    header: ImageHeader
    payload: bytes
    protected_tlvs: dict[int, bytes]
    tlvs: dict[int, bytes]
    total_size: int
    sha256: bytes | None
    security_counter: int | None
    hardware_id: str | None
    config_compat: tuple[int, int] | None

    @property
    def version_str(self) -> str:
        """'major.minor.revision' (the build number is not part of the image version we compare)."""
        return ".".join(str(v) for v in self.version_tuple)

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        """(major, minor, revision), the tuple downgrade checks compare."""
        major, minor, revision, _build = self.header.version
        return (major, minor, revision)

    @property
    def hashed_size(self) -> int:
        """Length of the region covered by SHA256 and the signature: header + payload + protected TLVs."""
        return self.header.hdr_size + self.header.img_size + self.header.protect_tlv_size


@dataclass(frozen=True)
class TrustedKey:
    """A public key the bootloader trusts; `keyhash` is what the image's KEYHASH TLV must hold."""

    name: str
    public_key: PublicKey
    keyhash: bytes

    @property
    def kind(self) -> str:
        """Key type name as hil.images.keys.KEY_TYPES spells it."""
        if isinstance(self.public_key, rsa.RSAPublicKey):
            return f"rsa-{self.public_key.key_size}"
        return "ed25519" if isinstance(self.public_key, ed25519.Ed25519PublicKey) else "ecdsa-p256"


def public_key_hash(public_key: PublicKey) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo: what imgtool writes into KEYHASH (auto SHA for P-256/Ed25519)."""
    form = (serialization.PublicFormat.PKCS1 if isinstance(public_key, rsa.RSAPublicKey)
            else serialization.PublicFormat.SubjectPublicKeyInfo)
    der = public_key.public_bytes(serialization.Encoding.DER, form)
    return hashlib.sha256(der).digest()


def load_trusted_keys(paths: Iterable[Path]) -> list[TrustedKey]:
    """Load PEM keys (private or public; ECDSA P-256, Ed25519, RSA 2048/3072) as trusted public keys.

    Raises BenchConfigError naming the file when it is missing, not PEM, or of another key type.
    """
    keys: list[TrustedKey] = []
    for path in paths:
        p = Path(path)
        try:
            pem = p.read_bytes()
        except OSError as exc:
            raise BenchConfigError(f"trusted key {p}: cannot read ({exc.strerror}); development keys are generated "
                                   "by hil.images.keys.ensure_dev_keys / `hil images build`") from None
        public: object
        try:
            if b"PRIVATE KEY" in pem:
                public = serialization.load_pem_private_key(pem, password=None).public_key()
            else:
                public = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise BenchConfigError(f"trusted key {p}: not an unencrypted PEM key ({exc})") from None
        if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
            pass
        elif isinstance(public, rsa.RSAPublicKey) and public.key_size in (2048, 3072):
            pass
        elif not isinstance(public, ed25519.Ed25519PublicKey):
            raise BenchConfigError(f"trusted key {p}: unsupported key type {type(public).__name__}; "
                                   "accepted: ecdsa-p256, ed25519, rsa-2048, rsa-3072")
        keys.append(TrustedKey(name=p.stem, public_key=public, keyhash=public_key_hash(public)))
    return keys


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class _Layout:
    header: ImageHeader
    prot_off: int  # start of the protected TLV area (== hdr_size + img_size)
    tlv_off: int  # start of the unprotected TLV area
    total: int


def _header(data: Buffer) -> ImageHeader:
    if len(data) < 4 or int.from_bytes(data[:4], "little") != IMAGE_MAGIC:
        found = bytes(data[:4]).hex() if len(data) >= 4 else f"{len(data)} bytes"
        raise ImageError(f"bad image magic: found {found}, expected 3db8f396 (0x96f3b83d little endian)",
                         reason=Reason.BAD_MAGIC)
    if len(data) < HEADER_LEN:
        raise ImageError(f"image truncated inside the header: {len(data)} bytes, header needs {HEADER_LEN}",
                         reason=Reason.TRUNCATED)
    magic, load, hdr_size, ptlv, img_size, flags, major, minor, rev, build, _pad = HEADER_STRUCT.unpack_from(data, 0)
    if hdr_size < HEADER_LEN:
        raise ImageError(f"header size field is {hdr_size}, smaller than the {HEADER_LEN}-byte header",
                         reason=Reason.BAD_MAGIC)
    return ImageHeader(magic, load, hdr_size, ptlv, img_size, flags, (major, minor, rev, build))


def _layout(data: Buffer) -> _Layout:
    """Locate the areas; raises BAD_MAGIC / TRUNCATED / BAD_TLV (info-level inconsistencies)."""
    hdr = _header(data)
    prot_off = hdr.hdr_size + hdr.img_size
    off = prot_off
    if hdr.protect_tlv_size:
        if len(data) < off + TLV_INFO_STRUCT.size:
            raise ImageError(f"image truncated: {len(data)} bytes, protected TLV info expected at 0x{off:x} "
                             f"(header size {hdr.hdr_size} + image size {hdr.img_size})", reason=Reason.TRUNCATED)
        magic, tot = TLV_INFO_STRUCT.unpack_from(data, off)
        if magic != TLV_PROT_INFO_MAGIC:
            raise ImageError(f"protected TLV info magic missing at 0x{off:x}: found 0x{magic:04x}, expected 0x6908 "
                             "(image truncated or image size wrong)", reason=Reason.TRUNCATED)
        if tot != hdr.protect_tlv_size:
            raise ImageError(f"protected TLV area says {tot} bytes, header says {hdr.protect_tlv_size}",
                             reason=Reason.BAD_TLV)
        off += tot
    if len(data) < off + TLV_INFO_STRUCT.size:
        raise ImageError(f"image truncated: {len(data)} bytes, TLV info expected at 0x{off:x}", reason=Reason.TRUNCATED)
    magic, tot = TLV_INFO_STRUCT.unpack_from(data, off)
    if magic == TLV_PROT_INFO_MAGIC and not hdr.protect_tlv_size:
        raise ImageError(f"protected TLV area at 0x{off:x} but the header declares none", reason=Reason.BAD_TLV)
    if magic != TLV_INFO_MAGIC:
        raise ImageError(f"TLV info magic missing at 0x{off:x}: found 0x{magic:04x}, expected 0x6907 "
                         "(image truncated or sizes wrong)", reason=Reason.TRUNCATED)
    total = off + tot
    if len(data) < total:
        raise ImageError(f"image truncated: {len(data)} bytes, header and TLV info say {total}", reason=Reason.TRUNCATED)
    return _Layout(hdr, prot_off, off, total)


def _entries(data: Buffer, start: int, end: int, area: str) -> dict[int, bytes]:
    """Decode the TLV entries in [start+info, end); every entry must fit exactly."""
    out: dict[int, bytes] = {}
    off = start + TLV_INFO_STRUCT.size
    if end < off:
        raise ImageError(f"{area} TLV area length {end - start} is shorter than its 4-byte info", reason=Reason.BAD_TLV)
    while off < end:
        if off + TLV_ENTRY_STRUCT.size > end:
            raise ImageError(f"{area} TLV area: entry header at 0x{off:x} runs past the area end 0x{end:x}",
                             reason=Reason.BAD_TLV)
        tag, length = TLV_ENTRY_STRUCT.unpack_from(data, off)
        value_end = off + TLV_ENTRY_STRUCT.size + length
        if value_end > end:
            raise ImageError(f"{area} TLV area: {tlv_name(tag)} at 0x{off:x} has length {length}, "
                             f"runs past the area end 0x{end:x}", reason=Reason.BAD_TLV)
        if tag in out and tag in UNIQUE_TLVS:
            raise ImageError(f"{area} TLV area: duplicate {tlv_name(tag)}", reason=Reason.BAD_TLV)
        out.setdefault(tag, bytes(data[off + TLV_ENTRY_STRUCT.size:value_end]))
        off = value_end
    return out


def _decode(data: Buffer, lay: _Layout) -> ParsedImage:
    hdr = lay.header
    prot = _entries(data, lay.prot_off, lay.tlv_off, "protected") if hdr.protect_tlv_size else {}
    tlvs = _entries(data, lay.tlv_off, lay.total, "unprotected")
    smuggled = PROTECTED_ONLY_TLVS & tlvs.keys()
    if smuggled:
        names = ", ".join(tlv_name(t) for t in sorted(smuggled))
        raise ImageError(f"{names} found in the unprotected TLV area; it is only trusted when signed (protected)",
                         reason=Reason.BAD_TLV)
    sha = tlvs.get(TLV_SHA256)
    if sha is not None and len(sha) != 32:
        raise ImageError(f"SHA256 TLV is {len(sha)} bytes, expected 32", reason=Reason.BAD_TLV)
    keyhash = tlvs.get(TLV_KEYHASH)
    if keyhash is not None and len(keyhash) != 32:
        raise ImageError(f"KEYHASH TLV is {len(keyhash)} bytes, expected 32", reason=Reason.BAD_TLV)
    seccnt: int | None = None
    if TLV_SEC_CNT in prot:
        raw = prot[TLV_SEC_CNT]
        if len(raw) != 4:
            raise ImageError(f"SEC_CNT TLV is {len(raw)} bytes, expected 4", reason=Reason.BAD_TLV)
        seccnt = int.from_bytes(raw, "little")
    hwid: str | None = None
    if contract.TLV_HARDWARE_ID in prot:
        try:
            hwid = prot[contract.TLV_HARDWARE_ID].decode("ascii")
        except UnicodeDecodeError:
            raise ImageError(f"hardware ID TLV is not ASCII: {prot[contract.TLV_HARDWARE_ID].hex()}",
                             reason=Reason.BAD_TLV) from None
    compat: tuple[int, int] | None = None
    if contract.TLV_CONFIG_COMPAT in prot:
        raw = prot[contract.TLV_CONFIG_COMPAT]
        if len(raw) != 2 or raw[0] > raw[1]:
            raise ImageError(f"config compat TLV must be two bytes lowest <= highest, got {raw.hex()}",
                             reason=Reason.BAD_TLV)
        compat = (raw[0], raw[1])
    return ParsedImage(
        header=hdr,
        payload=bytes(data[hdr.hdr_size:lay.prot_off]),
        protected_tlvs=prot,
        tlvs=tlvs,
        total_size=lay.total,
        sha256=sha,
        security_counter=seccnt,
        hardware_id=hwid,
        config_compat=compat,
    )


def image_extent(data: Buffer) -> int | None:
    """Total image length (header + payload + both TLV areas) read from a slot's bytes.

    None when there is no valid header or the TLV info is not where the header says.
    """
    try:
        hdr = _header(data)
    except ImageError:
        return None
    off = hdr.hdr_size + hdr.img_size
    if hdr.protect_tlv_size:
        if len(data) < off + 4 or TLV_INFO_STRUCT.unpack_from(data, off)[0] != TLV_PROT_INFO_MAGIC:
            return None
        off += hdr.protect_tlv_size
    if len(data) < off + 4:
        return None
    magic, tot = TLV_INFO_STRUCT.unpack_from(data, off)
    return off + tot if magic == TLV_INFO_MAGIC else None


def parse_image(data: Buffer) -> ParsedImage:
    """Decode an image (or a whole slot: bytes past the image are ignored) without verifying it.

    Raises ImageError with reason BAD_MAGIC, TRUNCATED or BAD_TLV.
    """
    return _decode(data, _layout(data))


# --------------------------------------------------------------------------- verification
def _check_signature(key: TrustedKey, tlvs: dict[int, bytes], digest: bytes) -> None:
    if isinstance(key.public_key, ed25519.Ed25519PublicKey):
        expected_tag = TLV_ED25519
    elif isinstance(key.public_key, rsa.RSAPublicKey):
        expected_tag = TLV_RSA3072_PSS if key.public_key.key_size == 3072 else TLV_RSA2048_PSS
    else:
        expected_tag = TLV_ECDSA_SIG
    present = sorted(SIGNATURE_TLVS & tlvs.keys())
    sig = tlvs.get(expected_tag)
    if sig is None:
        raise ImageError(f"KEYHASH names {key.kind} key {key.name!r} but the signature TLV is "
                         f"{', '.join(tlv_name(t) for t in present)}; expected {tlv_name(expected_tag)}",
                         reason=Reason.SIGNATURE_INVALID)
    try:
        if expected_tag == TLV_ED25519:
            # imgtool's Ed25519 signs the 32-byte SHA-256 digest itself (not the image).
            key.public_key.verify(sig, digest)  # type: ignore[call-arg]
        elif isinstance(key.public_key, rsa.RSAPublicKey):
            key.public_key.verify(sig, digest, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                                  Prehashed(hashes.SHA256()))
        else:
            # imgtool may pad ECDSA DER signatures with zeros to 72 bytes; the DER length byte says what is real.
            if len(sig) < 8 or sig[0] != 0x30 or sig[1] + 2 > len(sig):
                raise InvalidSignature
            key.public_key.verify(sig[:sig[1] + 2], digest, ec.ECDSA(Prehashed(hashes.SHA256())))  # type: ignore[call-arg]
    except InvalidSignature:
        raise ImageError(f"{tlv_name(expected_tag)} does not verify with trusted key {key.name!r} "
                         f"over SHA-256 {digest.hex()[:16]}...", reason=Reason.SIGNATURE_INVALID) from None


def check_signature(key: TrustedKey, tlvs: dict[int, bytes], digest: bytes) -> None:
    """The signature TLV in `tlvs` verifies over `digest` with `key` (ImageError SIGNATURE_INVALID otherwise).

    Shared with configuration packages (hil.profiles.package), which are signed the same way.
    """
    _check_signature(key, tlvs, digest)


def verify_image(data: Buffer, trusted: Sequence[TrustedKey], *, hardware_id: str | None = None,
                 min_security_counter: int = 0, current_version: tuple[int, int, int] | None = None,
                 allow_downgrade: bool = False, config_schema: int | None = None,
                 slot_size: int | None = None) -> ParsedImage:
    """Verify an image as the bootloader / CheckProgrammingDependencies routine does.

    Raises ImageError(reason=...) with the first failing check, in this order: BAD_MAGIC, TRUNCATED,
    OVERSIZE, BAD_TLV, HASH_MISMATCH, UNSIGNED, UNKNOWN_KEY, SIGNATURE_INVALID, WRONG_HARDWARE,
    DOWNGRADE_SECURITY_COUNTER, DOWNGRADE_VERSION, CONFIG_INCOMPATIBLE. Returns the parsed image.
    `data` may be a whole slot; only the image's own extent is hashed.
    """
    lay = _layout(data)
    if slot_size is not None and lay.total > slot_size:
        raise ImageError(f"image is {lay.total} bytes, slot holds {slot_size}", reason=Reason.OVERSIZE)
    img = _decode(data, lay)

    hashed = img.hashed_size
    digest = hashlib.sha256(memoryview(data)[:hashed]).digest()
    if img.sha256 is None:
        other = [tlv_name(t) for t in (TLV_SHA384, TLV_SHA512) if t in img.tlvs]
        raise ImageError("SHA256 TLV absent" + (f" (found {', '.join(other)}, unsupported)" if other else ""),
                         reason=Reason.HASH_MISMATCH)
    if not hmac.compare_digest(digest, img.sha256):
        raise ImageError(f"SHA-256 over the first {hashed} bytes is {digest.hex()}, SHA256 TLV says {img.sha256.hex()}",
                         reason=Reason.HASH_MISMATCH)

    if not SIGNATURE_TLVS & img.tlvs.keys():
        raise ImageError("image is unsigned: no ECDSA_SIG (0x22), ED25519 (0x24) or RSA PSS (0x20, 0x23) TLV",
                         reason=Reason.UNSIGNED)
    keyhash = img.tlvs.get(TLV_KEYHASH)
    if keyhash is None:
        raise ImageError("KEYHASH TLV absent: cannot tell which key signed the image", reason=Reason.UNKNOWN_KEY)
    key = next((k for k in trusted if hmac.compare_digest(k.keyhash, keyhash)), None)
    if key is None:
        known = ", ".join(f"{k.name}={k.keyhash.hex()[:16]}" for k in trusted) or "none"
        raise ImageError(f"KEYHASH {keyhash.hex()[:16]}... matches no trusted key (trusted: {known})",
                         reason=Reason.UNKNOWN_KEY)
    _check_signature(key, img.tlvs, digest)

    if hardware_id is not None and img.hardware_id != hardware_id:
        found = "no hardware ID TLV" if img.hardware_id is None else f"hardware ID {img.hardware_id!r}"
        raise ImageError(f"image is built for {found}, this board is {hardware_id!r}", reason=Reason.WRONG_HARDWARE)
    seccnt = img.security_counter or 0
    if seccnt < min_security_counter:
        raise ImageError(f"image security counter {seccnt} is below the stored counter {min_security_counter}",
                         reason=Reason.DOWNGRADE_SECURITY_COUNTER)
    if current_version is not None and not allow_downgrade and img.version_tuple < tuple(current_version):
        cur = ".".join(str(v) for v in current_version)
        raise ImageError(f"image version {img.version_str} is older than the running {cur}",
                         reason=Reason.DOWNGRADE_VERSION)
    if config_schema is not None:
        if img.config_compat is None:
            raise ImageError(f"image declares no configuration compatibility; stored configuration is schema "
                             f"{config_schema}", reason=Reason.CONFIG_INCOMPATIBLE)
        lo, hi = img.config_compat
        if not lo <= config_schema <= hi:
            raise ImageError(f"image accepts configuration schema {lo}..{hi}, stored configuration is schema "
                             f"{config_schema}", reason=Reason.CONFIG_INCOMPATIBLE)
    return img
