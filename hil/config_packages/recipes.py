"""Profile recipes (`firmware_images/packages/*.yaml`) and building them into signed packages.

A recipe names the profile, its target (vehicle group and hardware - by default the hardware number of
the bench's board, `dut.hardware_number`), the configuration schema it is
written for, its profile version (anti-rollback: the board accepts only newer versions) and the
values it sets. The builder does not range-check the values: the board does, against its hardware's
absolute limits, and the suite proves that it refuses a package that breaks them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from hil.bench.config import BenchConfig
from hil.errors import ImageBuildError
from hil.images.keys import resolve_key
from hil.images.recipes import NamedRecipe, RecipeFiles
from hil.config_packages.package import build_package
from hil.errors import ImageBuildError

_ASCII = r"^[\x21-\x7e]{1,16}$"


#: A recipe's `key` that means "the key the bench's board trusts" (images.signing_key), else DEFAULT_KEY.
BOARD_KEY = "board"
DEFAULT_KEY = "dev-ecdsa-p256"

class PackageRecipe(NamedRecipe):
    """One configuration profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$", description="profile name; equals the file name")
    description: str = ""
    profile: str | None = Field(None, pattern=_ASCII, description="profile name in the package [default: name]")
    vehicle_group: str = Field(pattern=_ASCII)
    hardware: str | None = Field(None, pattern=r"^[\x20-\x7e]{1,32}$",
                                 description="hardware number the package is for; None: the bench's dut.hardware_number")
    schema_version: int = Field(1, ge=1, le=255, alias="schema")
    version: int = Field(ge=1, le=0xFFFFFFFF, description="profile version; the board refuses anything not newer")
    key: str | None = Field(BOARD_KEY, description="signing key name or .pem path; `board` (default): the bench's "
                            "development signing key (images.signing_key, else dev-ecdsa-p256); null: unsigned")
    values: dict[str, int | float | str] = Field(min_length=1, description="configuration values the profile sets")

    @property
    def package_name(self) -> str:
        return self.profile or self.name


PACKAGE_RECIPES = RecipeFiles(PackageRecipe, "profile recipe")
#: The profile recipes: one file, every file of a folder by name, one by name (the error lists the others).
load_package_recipe = PACKAGE_RECIPES.load
load_package_recipes = PACKAGE_RECIPES.load_all
find_package_recipe = PACKAGE_RECIPES.find


def build_from_recipe(recipe: PackageRecipe, keys_dir: Path, board_key: Path | None = None, *,
                      hardware: str | None = None) -> bytes:
    """The signed package of `recipe` (signing is fast: no cache). `board_key`: the board's signing key;
    `hardware`: the board's hardware number, for a recipe that names none (ImageBuildError if neither does)."""
    key = recipe.key
    if key == BOARD_KEY:
        key = str(board_key) if board_key is not None else DEFAULT_KEY
    key_path = resolve_key(key, keys_dir) if key is not None else None
    target = recipe.hardware or hardware
    if target is None:
        raise ImageBuildError(f"profile recipe {recipe.name}: no hardware given and no bench to take "
                              "dut.hardware_number from; accepted: hardware: <your board's hardware number>")
    return build_package(name=recipe.package_name, vehicle_group=recipe.vehicle_group, hardware=target,
                         schema=recipe.schema_version, version=recipe.version, values=recipe.values, key_path=key_path)


def build_packages(cfg: BenchConfig, names: list[str] | None = None) -> dict[str, Path]:
    """Build `names` (or every recipe) into `<build_dir>/packages/<name>.prf`; return {name: path}."""
    directory = cfg.images.packages
    recipes = [find_package_recipe(n, directory) for n in names] if names else list(load_package_recipes(directory).values())
    out = cfg.images.build_dir / "packages"
    out.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for recipe in recipes:
        path = out / f"{recipe.name}.prf"
        tmp = path.with_suffix(".prf.tmp")
        tmp.write_bytes(build_from_recipe(recipe, cfg.images.keys_dir, board_key(cfg), hardware=cfg.dut.hardware_number))
        tmp.replace(path)
        built[recipe.name] = path
    return built


def load_package(name_or_path: str, cfg: BenchConfig) -> bytes:
    """Package bytes for a recipe name (built now with the bench's keys) or a path to a .prf file."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate.read_bytes()
    return build_from_recipe(find_package_recipe(str(name_or_path), cfg.images.packages), cfg.images.keys_dir,
                             board_key(cfg), hardware=cfg.dut.hardware_number)


def board_key(cfg: BenchConfig) -> Path | None:
    """The board's development signing key as the bench names it (None: the default development key)."""
    from hil.images.catalogue import signing_key

    return signing_key(cfg)


def describe(values: dict[str, Any]) -> str:
    """Values on one line, for reports."""
    return json.dumps(values, sort_keys=True)
