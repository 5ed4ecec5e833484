"""Image mutations for the fault-injection library: pure functions from image bytes to new bytes.

Each docstring names the Reason a correct device reports for the result (our verifier in
hil/images/mcuboot.py reports the same; tests/test_images.py holds both to it). Downgrades need
no mutation: they are older recipes (0.9.0-downgrade, or 2.0.0 after 1.3.0-seccnt-2).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from hil.bench import contract
from hil.errors import ImageBuildError, ImageError
from hil.images import mcuboot
from hil.images.mcuboot import (
    HEADER_STRUCT,
    SIGNATURE_TLVS,
    TLV_ENTRY_STRUCT,
    TLV_INFO_STRUCT,
    TLV_SEC_CNT,
    parse_image,
)

Region = Literal["header", "payload", "protected_tlv", "tlv", "signature"]
REGIONS: tuple[str, ...] = ("header", "payload", "protected_tlv", "tlv", "signature")
#: Header bytes from here on (version, padding; struct '<IIHHII' before it) are checked only by the hash; magic and sizes before it are structural.
HEADER_HASH_ONLY_OFFSET = 20
#: -S given to imgtool when re-signing: large enough never to refuse (slot checks are not the point there).
_RESIGN_SLOT_SIZE = 0x100000


def _entries(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, value offset, value length) of each TLV entry in the area starting at `start` (its info first)."""
    out = []
    off = start + TLV_INFO_STRUCT.size
    while off < end:
        tag, length = TLV_ENTRY_STRUCT.unpack_from(data, off)
        out.append((tag, off + TLV_ENTRY_STRUCT.size, length))
        off += TLV_ENTRY_STRUCT.size + length
    return out


def _areas(data: bytes) -> tuple[mcuboot.ParsedImage, int, int]:
    img = parse_image(data)
    prot_off = img.header.hdr_size + img.header.img_size
    return img, prot_off, prot_off + img.header.protect_tlv_size


def region_span(data: bytes, region: Region) -> tuple[int, int]:
    """[start, end) byte offsets of `region` in an image.

    header: from the version field to the end of the header padding (magic and size fields are
    excluded: see `bad_magic` for those); payload: the firmware; protected_tlv / tlv: the TLV
    entries after each area's 4-byte info; signature: the value of the signature TLV.
    """
    img, prot_off, tlv_off = _areas(data)
    if region == "header":
        return HEADER_HASH_ONLY_OFFSET, img.header.hdr_size
    if region == "payload":
        return img.header.hdr_size, prot_off
    if region == "protected_tlv":
        if not img.header.protect_tlv_size:
            raise ImageError("image has no protected TLV area", reason=contract.Reason.BAD_TLV)
        return prot_off + TLV_INFO_STRUCT.size, tlv_off
    if region == "tlv":
        return tlv_off + TLV_INFO_STRUCT.size, img.total_size
    if region == "signature":
        for tag, off, length in _entries(data, tlv_off, img.total_size):
            if tag in SIGNATURE_TLVS:
                return off, off + length
        raise ImageError("image has no signature TLV", reason=contract.Reason.UNSIGNED)
    raise ValueError(f"unknown region {region!r}; accepted: {', '.join(REGIONS)}")


def flip_bit(data: bytes, region: Region, bit_index: int = 0) -> bytes:
    """Flip bit `bit_index` (counted from the region start, LSB first; negative: back from its end) of `region`.

    Device reports: header, payload, protected_tlv -> HASH_MISMATCH (all hashed; the header
    region starts at the version field); signature -> SIGNATURE_INVALID; tlv -> bit 0 turns
    the SHA256 TLV into a SHA384 tag -> HASH_MISMATCH (other bits may give HASH_MISMATCH,
    UNKNOWN_KEY, SIGNATURE_INVALID or BAD_TLV depending on what they hit).
    """
    start, end = region_span(data, region)
    if bit_index < 0:
        bit_index += (end - start) * 8
    if not 0 <= bit_index < (end - start) * 8:
        raise ValueError(f"bit_index {bit_index} outside region {region} ({(end - start) * 8} bits)")
    out = bytearray(data)
    out[start + bit_index // 8] ^= 1 << (bit_index % 8)
    return bytes(out)


def truncate(data: bytes, n: int) -> bytes:
    """The first `n` bytes only (a download cut short). Device reports TRUNCATED."""
    if not 0 <= n < len(data):
        raise ValueError(f"truncate to {n} bytes: must be 0 <= n < {len(data)} (the image length)")
    return bytes(data[:n])


def strip_signature(data: bytes) -> bytes:
    """Remove the signature TLV(s); hash and KEYHASH stay valid. Device reports UNSIGNED."""
    img, _prot_off, tlv_off = _areas(data)
    kept = bytearray()
    for tag, off, length in _entries(data, tlv_off, img.total_size):
        if tag not in SIGNATURE_TLVS:
            kept += data[off - TLV_ENTRY_STRUCT.size:off + length]
    info = TLV_INFO_STRUCT.pack(mcuboot.TLV_INFO_MAGIC, TLV_INFO_STRUCT.size + len(kept))
    return bytes(data[:tlv_off]) + info + bytes(kept)


def bad_magic(data: bytes) -> bytes:
    """Zero the header magic (an erased or foreign slot). Device reports BAD_MAGIC."""
    return b"\x00\x00\x00\x00" + bytes(data[4:])


def break_tlv_area(data: bytes) -> bytes:
    """Make the first unprotected TLV entry claim more bytes than the area has. Device reports BAD_TLV."""
    img, _prot_off, tlv_off = _areas(data)
    out = bytearray(data)
    entry = tlv_off + TLV_INFO_STRUCT.size
    tag, _length = TLV_ENTRY_STRUCT.unpack_from(out, entry)
    TLV_ENTRY_STRUCT.pack_into(out, entry, tag, img.total_size - tlv_off)  # longer than what follows it
    return bytes(out)


def oversize(data: bytes, slot_size: int) -> bytes:
    """Grow the payload (and the header's image size) until the image is larger than `slot_size`.

    Device reports OVERSIZE (RequestDownload of more than a slot: NRC 0x31); the hash is no longer
    valid, but the size check comes first.
    """
    img, prot_off, _tlv_off = _areas(data)
    extra = slot_size - img.total_size + 1
    if extra <= 0:
        return bytes(data)
    out = bytearray(data[:prot_off]) + bytes([0xA5]) * extra + bytearray(data[prot_off:img.total_size])
    magic, load, hdr_size, ptlv, img_size, flags, major, minor, rev, build, pad = HEADER_STRUCT.unpack_from(out, 0)
    HEADER_STRUCT.pack_into(out, 0, magic, load, hdr_size, ptlv, img_size + extra, flags, major, minor, rev, build, pad)
    return bytes(out)


def resign(data: bytes, key_path: Path, *, hardware_id: str | None = None,
           config_compat: tuple[int, int] | None = None, security_counter: int | None = None,
           version: tuple[int, int, int] | None = None) -> bytes:
    """Re-sign the image's payload and metadata with another key (imgtool), optionally changing metadata.

    With an untrusted key the device reports UNKNOWN_KEY. Version, build number, security counter
    and vendor TLVs are kept unless overridden.
    """
    from hil.images.build import run_imgtool  # build imports nothing from here; lazy keeps import light

    img = parse_image(data)
    unsupported = [mcuboot.tlv_name(t) for t in img.protected_tlvs
                   if t != TLV_SEC_CNT and t < 0xA0]
    if unsupported:
        raise ImageBuildError(f"cannot re-sign: protected TLVs {', '.join(unsupported)} have no imgtool option here")
    custom = {t: v for t, v in img.protected_tlvs.items() if t >= 0xA0}
    if hardware_id is not None:
        custom[contract.TLV_HARDWARE_ID] = hardware_id.encode("ascii")
    if config_compat is not None:
        custom[contract.TLV_CONFIG_COMPAT] = bytes(config_compat)
    seccnt = security_counter if security_counter is not None else img.security_counter
    major, minor, rev, build = img.header.version
    if version is not None:
        major, minor, rev = version
    with tempfile.TemporaryDirectory(prefix="hil-resign-") as tmp:
        raw, out = Path(tmp) / "payload.bin", Path(tmp) / "signed.bin"
        raw.write_bytes(img.payload)
        args = ["sign", "--pad-header", "-H", hex(img.header.hdr_size), "--align", "8", "-S", hex(_RESIGN_SLOT_SIZE),
                "-v", f"{major}.{minor}.{rev}+{build}", "-k", str(key_path)]
        if seccnt is not None:
            args += ["-s", str(seccnt)]
        for tag, value in custom.items():
            args += ["--custom-tlv", hex(tag), "0x" + value.hex()]
        run_imgtool(args + [str(raw), str(out)])
        return out.read_bytes()


def set_hardware_id(data: bytes, hardware_id: str, key_path: Path) -> bytes:
    """Same image for another hardware number, re-signed with `key_path` (a trusted key).

    Device reports WRONG_HARDWARE. (The 1.1.0-wrong-hardware recipe is the built equivalent.)
    """
    return resign(data, key_path, hardware_id=hardware_id)
