"""The MCUboot family's image container: imgtool builds and signs, our parser reads, `mutate` breaks.

A thin face on what already exists (hil/images/mcuboot.py, build.py, mutate.py): the suite asks it,
through hil/images/container.py, instead of importing the MCUboot modules itself.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, cast

from hil.errors import ImageBuildError
from hil.images import mutate
from hil.images.container import ImageInfo
from hil.images.families import FAMILIES
from hil.images.mcuboot import image_extent, parse_image

if TYPE_CHECKING:
    from hil.bench.config import FlashLayout
    from hil.bench.dut_profile import DutProfile
    from hil.images.recipes import Recipe


class McubootContainer:
    """MCUboot images (header, payload, protected and unprotected TLVs) as signed .bin files."""

    family = "mcuboot"
    suffixes: tuple[str, ...] = FAMILIES["mcuboot"].suffixes
    regions: tuple[str, ...] = mutate.REGIONS

    def __init__(self, profile: "DutProfile | None" = None) -> None:
        self.profile = profile

    def read(self, image: bytes) -> ImageInfo:
        img = parse_image(image)
        major, minor, revision, build = img.header.version
        return ImageInfo((major, minor, revision), build, img.security_counter or 0, img.hardware_id, img.config_compat)

    def payload(self, image: bytes) -> bytes:
        return parse_image(image).payload

    def digest(self, image: bytes) -> bytes:
        extent = image_extent(image)
        return hashlib.sha256(image[:extent] if extent is not None else image).digest()

    def size(self, image: bytes) -> int:
        return len(image)

    def describe(self, image: bytes) -> str:
        from hil.images.build import dumpinfo

        with tempfile.TemporaryDirectory(prefix="hil-dumpinfo-") as tmp:
            path = Path(tmp) / "image.bin"
            path.write_bytes(image)
            return dumpinfo(path)

    def flip_bit(self, image: bytes, region: str, bit_index: int = 0) -> bytes:
        if region not in self.regions:
            raise ValueError(f"unknown region {region!r}; accepted: {', '.join(self.regions)}")
        return mutate.flip_bit(image, cast(mutate.Region, region), bit_index)

    def truncate(self, image: bytes, n: int) -> bytes:
        return mutate.truncate(image, n)

    def strip_signature(self, image: bytes) -> bytes:
        return mutate.strip_signature(image)

    def resign(self, image: bytes, key_path: Path, *, hardware_id: str | None = None,
               security_counter: int | None = None, version: tuple[int, int, int] | None = None) -> bytes:
        return mutate.resign(image, key_path, hardware_id=hardware_id, security_counter=security_counter,
                             version=version)

    def build(self, recipe: "Recipe", keys_dir: Path, out_dir: Path, *, layout: "FlashLayout | None" = None,
              suffix: str | None = None, hardware: str | None = None) -> Path:
        from hil.images.build import build_image

        if suffix not in (None, ".bin"):
            raise ImageBuildError(f"recipe {recipe.name}: MCUboot images are .bin files, not {suffix}")
        return build_image(recipe, keys_dir, out_dir, layout=layout, hardware=hardware)

    def load(self, path: Path) -> bytes:
        return Path(path).read_bytes()

    def save(self, image: bytes, path: Path) -> list[Path]:
        path = Path(path)
        path.write_bytes(image)
        return [path]
