"""Build and sign firmware images from recipes with imgtool, with a content-addressed cache.

Each build writes `<name>.bin` (the signed image), `<name>.dumpinfo.txt` (imgtool's dump, evidence
for auditors) and an entry in `manifest.json` (sha256, size, version, key hash, the exact imgtool
command). A build is redone only when its cache key - recipe, signing key, imgtool version, slot
size - changed or the .bin on disk no longer matches the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from hil.bench import contract
from hil.bench.config import BenchConfig, FlashLayout
from hil.errors import ImageBuildError, ImageError
from hil.images.keys import resolve_key
from hil.images.mcuboot import TLV_KEYHASH, load_trusted_keys, verify_image
from hil.images.payload import encode_payload
from hil.images.recipes import Recipe, find_recipe, load_recipes

#: Bump when the way images are built changes (invalidates every cache entry).
BUILDER_VERSION = 1
HEADER_SIZE = contract.IMAGE_HEADER_SIZE
ALIGN = 8
MANIFEST = "manifest.json"
BUILD_LOCK_TIMEOUT_S = 120.0
IMGTOOL_TIMEOUT_S = 60.0


def imgtool_command() -> list[str]:
    """How to run the imgtool that belongs to this interpreter's environment."""
    return [sys.executable, "-m", "imgtool.main"]


def run_imgtool(args: list[str]) -> str:
    """Run `imgtool ARGS`; return stdout. ImageBuildError with the command and stderr on failure."""
    cmd = imgtool_command() + args
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=IMGTOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"imgtool {' '.join(args)} did not finish within {IMGTOOL_TIMEOUT_S:.0f} s; "
                              f"output so far: {exc.stdout!r}") from None
    if proc.returncode != 0:
        raise ImageBuildError(f"imgtool {' '.join(args)} failed (exit {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def sign_args(infile: Path, outfile: Path, key: Path, *, version: str, security_counter: int, slot_size: int,
              hardware_id: str | None, config_compat: tuple[int, int] | None, confirm: bool = False,
              build_number: int = 0) -> list[str]:
    """`imgtool sign` arguments with the bench's defaults (header 0x200, align 8, vendor TLVs protected)."""
    args = ["sign", "--pad-header", "-H", hex(HEADER_SIZE), "--align", str(ALIGN), "-S", hex(slot_size),
            "-v", f"{version}+{build_number}", "-s", str(security_counter), "-k", str(key)]
    # imgtool takes a "0x..." value as hex bytes and anything else as a UTF-8 string; hex is unambiguous.
    if hardware_id is not None:
        args += ["--custom-tlv", hex(contract.TLV_HARDWARE_ID), "0x" + hardware_id.encode("ascii").hex()]
    if config_compat is not None:
        args += ["--custom-tlv", hex(contract.TLV_CONFIG_COMPAT), "0x" + bytes(config_compat).hex()]
    if confirm:
        args += ["--pad", "--confirm"]
    return args + [str(infile), str(outfile)]


def dumpinfo(image: Path) -> str:
    """`imgtool dumpinfo IMAGE` output."""
    return run_imgtool(["dumpinfo", str(image)])


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(out_dir: Path, name: str = MANIFEST) -> dict[str, Any]:
    """The build manifest `name` in `out_dir` ({} when there is none or it is unreadable: everything is rebuilt)."""
    try:
        data = json.loads((Path(out_dir) / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; builds and manifests are not secret
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cache_key(recipe: Recipe, key_path: Path, slot_size: int) -> str:
    parts = [str(BUILDER_VERSION), recipe.fingerprint(), hashlib.sha256(key_path.read_bytes()).hexdigest(),
             package_version("imgtool"), str(slot_size)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _resolve_layout(slot_size: int | None, layout: FlashLayout | None) -> FlashLayout:
    layout = layout or FlashLayout()
    if slot_size is not None and slot_size != layout.slot_size:
        if slot_size % layout.sector_size:
            raise ImageBuildError(f"slot size {slot_size} is not a multiple of the sector size {layout.sector_size}")
        layout = layout.model_copy(update={"slot_sectors": slot_size // layout.sector_size})
    return layout


def build_image(recipe: Recipe, keys_dir: Path, out_dir: Path, *, slot_size: int | None = None,
                layout: FlashLayout | None = None, hardware: str | None = None) -> Path:
    """Build and sign `recipe` into `out_dir/<name>.bin` unless an identical build is cached; return its path.

    `hardware`: the board's hardware number (the bench's dut.hardware_number), for recipes that name none.

    Slot size defaults to FlashLayout's (131072). A `confirm` recipe is padded to the slot plus its
    trailer sector with image_ok set. Serialised across processes by a lock file in `out_dir`.
    """
    layout = _resolve_layout(slot_size, layout)
    recipe = recipe.for_hardware(hardware)
    recipe.descriptor()  # no hardware at all fails here, naming the recipe
    keys_dir, out_dir = Path(keys_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path = resolve_key(recipe.key, keys_dir)
    bin_path = out_dir / f"{recipe.name}.bin"
    try:
        with FileLock(str(out_dir / ".build.lock")).acquire(timeout=BUILD_LOCK_TIMEOUT_S):
            cache_key = _cache_key(recipe, key_path, layout.slot_size)
            manifest = read_manifest(out_dir)
            entry = manifest.get(recipe.name)
            if (isinstance(entry, dict) and entry.get("cache_key") == cache_key and bin_path.is_file()
                    and (out_dir / f"{recipe.name}.dumpinfo.txt").is_file()
                    and entry.get("sha256") == _sha256_file(bin_path)):
                return bin_path
            manifest[recipe.name] = _build(recipe, key_path, out_dir, bin_path, layout, cache_key)
            _write_atomic(out_dir / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    except Timeout:
        raise ImageBuildError(f"another process has held {out_dir / '.build.lock'} for "
                              f"{BUILD_LOCK_TIMEOUT_S:.0f} s; cannot build {recipe.name}") from None
    return bin_path


def _build(recipe: Recipe, key_path: Path, out_dir: Path, bin_path: Path, layout: FlashLayout,
           cache_key: str) -> dict[str, Any]:
    payload = encode_payload(recipe.descriptor(), recipe.code_size)
    # imgtool's -S checks image + trailer against the slot; a confirmed (padded) image also carries the
    # trailer, which on this layout lives in the sector after the image area.
    pad_size = layout.slot_size + layout.sector_size if recipe.confirm else layout.slot_size
    with tempfile.TemporaryDirectory(prefix=f".{recipe.name}.", dir=out_dir) as tmp:
        raw, signed = Path(tmp) / f"{recipe.name}.raw", Path(tmp) / f"{recipe.name}.bin"
        raw.write_bytes(payload)
        args = sign_args(raw, signed, key_path, version=recipe.version, security_counter=recipe.security_counter,
                         slot_size=pad_size, hardware_id=recipe.hardware_id, config_compat=recipe.config_compat,
                         confirm=recipe.confirm)
        run_imgtool(args)
        data = signed.read_bytes()
        # Cross-check with our verifier at build time, so a bad build never reaches a bench.
        try:
            img = verify_image(data, load_trusted_keys([key_path]), hardware_id=recipe.hardware_id,
                               slot_size=layout.slot_size if not recipe.confirm else pad_size)
        except ImageError as exc:
            raise ImageBuildError(f"recipe {recipe.name}: imgtool's output fails our verifier: {exc}") from None
        if recipe.confirm and img.total_size > layout.slot_size:
            raise ImageBuildError(f"recipe {recipe.name}: image is {img.total_size} bytes, slot holds {layout.slot_size}")
        os.replace(signed, bin_path)
    info = dumpinfo(bin_path)
    _write_atomic(out_dir / f"{recipe.name}.dumpinfo.txt", info.encode())
    shown = ["imgtool", *args[:-2], f"<{recipe.name} payload>", bin_path.name]
    return {
        "file": bin_path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "image_size": img.total_size,
        "version": recipe.version,
        "build": recipe.build,
        "security_counter": recipe.security_counter,
        "hardware_id": recipe.hardware_id,
        "config_compat": list(recipe.config_compat),
        "key": recipe.key,
        "keyhash": img.tlvs[TLV_KEYHASH].hex(),
        "image_digest": (img.sha256 or b"").hex(),
        "imgtool": package_version("imgtool"),
        "command": " ".join(str(a) for a in shown).replace(str(key_path), key_path.name),
        "cache_key": cache_key,
    }


def build_all(recipes_dir: Path, keys_dir: Path, out_dir: Path, *, names: Iterable[str] | None = None,
              slot_size: int | None = None, layout: FlashLayout | None = None,
              hardware: str | None = None) -> dict[str, Path]:
    """Build every recipe in `recipes_dir` (or only `names`); return {name: image path}."""
    wanted = list(names) if names else None
    recipes = [find_recipe(n, recipes_dir) for n in wanted] if wanted else list(load_recipes(recipes_dir).values())
    return {r.name: build_image(r, keys_dir, out_dir, slot_size=slot_size, layout=layout, hardware=hardware)
            for r in recipes}


def load_image(name_or_path: str | os.PathLike[str], cfg: BenchConfig) -> bytes:
    """Image bytes for a recipe name (built on demand for `cfg`'s layout and keys), a path to a recipe
    .yaml of your own (built the same way), or a path to a signed .bin."""
    candidate = Path(name_or_path)
    if candidate.is_file() and candidate.suffix in (".yaml", ".yml"):
        from hil.images.recipes import load_recipe

        return build_image(load_recipe(candidate), cfg.images.keys_dir, cfg.images.build_dir,
                           layout=cfg.flash_layout, hardware=cfg.dut.hardware_number).read_bytes()
    if candidate.is_file():
        return candidate.read_bytes()
    name = str(name_or_path)
    if candidate.suffix == ".bin" or os.sep in name:
        raise ImageBuildError(f"image file {candidate} not found (give a recipe name or an existing .bin path)")
    recipe = find_recipe(name, cfg.images.recipes)
    path = build_image(recipe, cfg.images.keys_dir, cfg.images.build_dir, layout=cfg.flash_layout,
                       hardware=cfg.dut.hardware_number)
    return path.read_bytes()
