"""The image container seam: what the suite does with a firmware image, whatever its format.

Images travel through the framework as `bytes` (the `images` fixture, the Flasher, the evidence);
only the container of the board's update family (the DUT profile's `update.family`,
hil/images/families.py) knows what they mean: where the version, hardware id and security counter
are, how an image is built and signed, and how each fault-injection mutation is made. MCUboot
(hil/images/mcuboot_container.py) is one implementation, the OEM flash-bootloader family
(hil/images/fbl.py) another.

Regions a mutation may corrupt, by the name the test cases use:
- `payload`: the firmware bytes; `header`: hashed header bytes that are neither structure nor metadata;
- `protected_tlv`: the signed metadata (version, security counter, hardware id, configuration range);
- `signature`: the signature value; `tlv`: unsigned metadata (a container without it refuses the region).
A correct board reports HASH_MISMATCH for a flipped bit in payload, header or protected_tlv and
SIGNATURE_INVALID for one in the signature, in every family.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # type-only: the container modules import this one, never the other way round at runtime
    from hil.bench.config import FlashLayout
    from hil.bench.dut_profile import DutProfile
    from hil.images.recipes import Recipe


@dataclass(frozen=True)
class ImageInfo:
    """What an image says about itself (read, not verified)."""

    version: tuple[int, int, int]
    build: int
    security_counter: int
    hardware_id: str | None
    config_compat: tuple[int, int] | None

    @property
    def version_str(self) -> str:
        """'major.minor.revision' as the board reports it in its software-version DID."""
        return ".".join(str(v) for v in self.version)


class BootImage(Protocol):
    """An image as a board's bootloader hands it to the application: what runs, which version, which counter."""

    @property
    def payload(self) -> bytes: ...

    @property
    def version_tuple(self) -> tuple[int, int, int]: ...

    @property
    def version_str(self) -> str: ...

    @property
    def security_counter(self) -> int | None: ...


@runtime_checkable
class ImageContainer(Protocol):
    """An update family's image format, as the tester builds, reads and breaks it."""

    #: the family's name (hil/images/families.py)
    family: str
    #: file suffixes of its builds on disk, the first one is what `build` writes by default
    suffixes: tuple[str, ...]
    #: the regions `flip_bit` accepts (module docstring)
    regions: tuple[str, ...]

    def read(self, image: bytes) -> ImageInfo:
        """Version, security counter, hardware id of an image; ImageError (with a Reason) if it is not one."""
        ...

    def payload(self, image: bytes) -> bytes:
        """The firmware bytes (what the board runs), without the container around them."""
        ...

    def digest(self, image: bytes) -> bytes:
        """The SHA-256 the board reports for this image once it holds it (active/backup image hash DIDs)."""
        ...

    def size(self, image: bytes) -> int:
        """The bytes a download of the image sends (what `truncate` counts)."""
        ...

    def describe(self, image: bytes) -> str:
        """A human-readable dump of the image's structure (evidence for auditors)."""
        ...

    def flip_bit(self, image: bytes, region: str, bit_index: int = 0) -> bytes:
        """Flip bit `bit_index` of `region` (negative: counted back from the region's end)."""
        ...

    def truncate(self, image: bytes, n: int) -> bytes:
        """Only the first `n` of the `size(image)` bytes a download sends: a download cut short (TRUNCATED)."""
        ...

    def strip_signature(self, image: bytes) -> bytes:
        """The image without its signature (UNSIGNED)."""
        ...

    def resign(self, image: bytes, key_path: Path, *, hardware_id: str | None = None,
               security_counter: int | None = None, version: tuple[int, int, int] | None = None) -> bytes:
        """Signed again with `key_path`, metadata kept unless overridden (UNKNOWN_KEY with a foreign key)."""
        ...

    def build(self, recipe: "Recipe", keys_dir: Path, out_dir: Path, *, layout: "FlashLayout | None" = None,
              suffix: str | None = None, hardware: str | None = None) -> Path:
        """Build and sign `recipe` into `out_dir` (cached); the path of the build. `hardware`: the board's
        hardware number, for a recipe that names none (the bench's dut.hardware_number)."""
        ...

    def load(self, path: Path) -> bytes:
        """An image file as delivered (with its detached parts, if the format has any) as image bytes."""
        ...

    def save(self, image: bytes, path: Path) -> list[Path]:
        """Write the image as files a flashing tool takes (the files written)."""
        ...


def container_for(profile: "DutProfile") -> ImageContainer:
    """The image container of the board the DUT profile describes."""
    from hil.images.families import family, load

    return load(family(profile.update.family).container)(profile)  # type: ignore[no-any-return]
