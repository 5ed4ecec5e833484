"""Firmware recipes: one YAML per build of the simulator's firmware, validated with pydantic.

A recipe says what the image header and protected TLVs carry (version, security counter,
hardware ID, configuration compatibility, signing key) and what the firmware does (the payload
descriptor fields). Errors name the file and the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Generic, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hil.bench.validation import format_validation_error
from hil.errors import ImageBuildError
from hil.images.payload import FirmwareDescriptor, FirmwareTiming

RECIPE_SUFFIX = ".yaml"


class NamedRecipe(BaseModel):
    """A recipe is named after its file."""

    name: str


RecipeT = TypeVar("RecipeT", bound=NamedRecipe)


class Recipe(NamedRecipe):
    """One firmware build."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", description="build name; equals the file name")
    description: str = ""
    version: str = Field(pattern=r"^\d{1,3}\.\d{1,3}\.\d{1,5}$", description="image version major.minor.revision")
    build: str = Field(min_length=1, description="build identifier reported in DID 0xF195")
    security_counter: int = Field(1, ge=0, le=0xFFFFFFFF)
    key: str = Field("dev-ecdsa-p256", description="signing key: a name in the keys dir or a .pem path")
    code_size: int = Field(40960, ge=256, description="payload bytes after the 0x200-byte header")
    hardware_id: str | None = Field(None, min_length=1, pattern=r"^[\x20-\x7e]+$",
                                    description="hardware number the image is built for; None: the bench's "
                                                "dut.hardware_number")
    config_compat: tuple[int, int] = Field((1, 1), description="lowest, highest configuration schema accepted")
    confirm: bool = Field(False, description="pad to the slot and mark confirmed (factory image)")
    # firmware descriptor fields
    soc_algorithm: Literal["coulomb_ocv_v1", "coulomb_ocv_v2"] = "coulomb_ocv_v1"
    extra_messages: list[str] = Field(default_factory=list)
    self_test: Literal["pass", "fail", "crash", "hang"] = "pass"
    selftest_code: int = Field(0, ge=0, le=0xFF)
    config_schema: int = Field(1, ge=1, le=0xFF)
    timing: FirmwareTiming = FirmwareTiming()
    rxswin: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        major, minor, revision = (int(p) for p in self.version.split("."))
        if major > 0xFF or minor > 0xFF or revision > 0xFFFF:
            raise ValueError(f"version {self.version}: major and minor must be <= 255, revision <= 65535")
        lo, hi = self.config_compat
        if not 0 <= lo <= hi <= 0xFF:
            raise ValueError(f"config_compat {list(self.config_compat)} must be [lowest, highest] with 0 <= lowest <= highest <= 255")
        if not lo <= self.config_schema <= hi:
            raise ValueError(f"config_schema {self.config_schema} must lie within config_compat {list(self.config_compat)} "
                             "(the firmware must accept the schema it migrates to)")
        if self.self_test == "fail" and self.selftest_code == 0:
            raise ValueError("self_test 'fail' needs a nonzero selftest_code")
        return self

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        """(major, minor, revision)."""
        major, minor, revision = (int(p) for p in self.version.split("."))
        return (major, minor, revision)

    def for_hardware(self, hardware: str | None) -> "Recipe":
        """This recipe built for `hardware` unless it names its own (the wrong-hardware builds do)."""
        if self.hardware_id is not None or hardware is None:
            return self
        return self.model_copy(update={"hardware_id": hardware})

    def descriptor(self) -> FirmwareDescriptor:
        """The payload descriptor the simulated firmware runs."""
        if self.hardware_id is None:
            raise ImageBuildError(f"recipe {self.name}: no hardware_id and no bench to take dut.hardware_number "
                                  "from; accepted: hardware_id: <the board's hardware number>")
        return FirmwareDescriptor(version=self.version, build=self.build, hardware=self.hardware_id,
                                  soc_algorithm=self.soc_algorithm, extra_messages=list(self.extra_messages),
                                  self_test=self.self_test, selftest_code=self.selftest_code,
                                  config_schema=self.config_schema, timing=self.timing, rxswin=self.rxswin)

    def fingerprint(self) -> str:
        """SHA-256 of the normalised recipe (part of the build cache key)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


class RecipeFiles(Generic[RecipeT]):
    """One folder of YAML recipes of one kind (firmware builds, configuration profiles).

    Loading, listing and finding by name are the same for every kind; errors name the file, the
    field and what is accepted, and call the recipe by its kind (`what`).
    """

    def __init__(self, model: type[RecipeT], what: str) -> None:
        self.model = model
        self.what = what

    def load(self, path: Path) -> RecipeT:
        """Load and validate one recipe file; ImageBuildError names the file, the field and what is accepted."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ImageBuildError(f"{path}: cannot read {self.what} ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ImageBuildError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ImageBuildError(f"{path}: a {self.what} must be a mapping of fields, got {type(data).__name__}")
        data.setdefault("name", path.stem)
        try:
            recipe = self.model.model_validate(data)
        except ValidationError as exc:
            raise ImageBuildError(format_validation_error(str(path), exc, model=self.model)) from None
        if recipe.name != path.stem:
            raise ImageBuildError(f"{path}: name: got {recipe.name!r} - must equal the file name {path.stem!r}")
        return recipe

    def load_all(self, directory: Path) -> dict[str, RecipeT]:
        """Every recipe in `directory`, by name (sorted)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ImageBuildError(f"{self.what}s directory {directory} does not exist")
        return {p.stem: self.load(p) for p in sorted(directory.glob(f"*{RECIPE_SUFFIX}"))}

    def find(self, name: str, directory: Path) -> RecipeT:
        """The recipe called `name`; the error lists the recipes there are."""
        path = Path(directory) / f"{name}{RECIPE_SUFFIX}"
        if not path.is_file():
            available = sorted(p.stem for p in Path(directory).glob(f"*{RECIPE_SUFFIX}")) \
                if Path(directory).is_dir() else []
            raise ImageBuildError(f"no {self.what} {name!r} in {directory}; available: {', '.join(available) or 'none'}")
        return self.load(path)


FIRMWARE_RECIPES = RecipeFiles(Recipe, "recipe")
#: The firmware recipes: one file, every file of a folder by name, one by name (the error lists the others).
load_recipe = FIRMWARE_RECIPES.load
load_recipes = FIRMWARE_RECIPES.load_all
find_recipe = FIRMWARE_RECIPES.find
