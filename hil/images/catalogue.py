"""The image catalogue: firmware images by *role*, as the bench YAML maps them.

A bench names, for each role a case needs (baseline, update, selftest_fail, ...), a signed .bin
file of the vendor's - or, on the virtual bench, a recipe name. Roles the catalogue leaves out are
derived where that is honest:

- `unknown_key`: the update re-signed with a key generated here (any key the board never saw);
- `older_version`, `higher_security_counter`: the update re-signed with the board's development
  signing key (`images.signing_key` file or `images.signing_key_env`; never committed) with imgtool.

Images are built, read and re-signed by the container of the board's update family
(hil/images/container.py): the same catalogue serves MCUboot .bin files and an OEM flash
bootloader's HEX/S-record files. Mutations (bit flips, truncation, no signature) need no key. A role
that is neither mapped nor derivable is *missing*: the case asking for it is skipped naming the role, and
the fault matrix reports its row NOT COVERED with that reason.
"""

from __future__ import annotations

import os
from pathlib import Path

from hil.bench.config import BenchConfig
from hil.errors import HilError, ImageBuildError
from hil.images.container import ImageContainer, container_for
from hil.images.roles import ROLES

#: The virtual bench's recipes by role (firmware_images/recipes); a virtual bench without
#: `images.catalogue` uses this one.
SIM_CATALOGUE: dict[str, str] = {
    "baseline": "1.0.0",
    "update": "1.1.0",
    "major_update": "2.0.0",
    "major_update_selftest_fail": "2.0.0-selftest-fail",
    "selftest_fail": "1.1.0-selftest-fail",
    "crash_at_boot": "1.1.0-crash-at-boot",
    "hang": "1.1.0-hang",
    "timing_overrun": "1.1.0-timing-overrun",
    "single_bank_stall": "1.1.0-single-bank-stall",
    "wrong_hardware": "1.1.0-wrong-hardware",
    "older_version": "0.9.0-downgrade",
    "higher_security_counter": "1.3.0-seccnt-2",
    "higher_security_counter_selftest_fail": "1.3.0-seccnt-2-selftest-fail",
    "incompatible_config": "3.0.0-needs-config-v3",
    "largest": "1.2.0-large",
}

#: Roles derived from `update` when the catalogue lacks them (key: True = needs the board's signing key).
DERIVED: dict[str, bool] = {"unknown_key": False, "older_version": True, "higher_security_counter": True}


class MissingImage(HilError):
    """A role the bench's catalogue neither maps nor can derive; `reason` says what is missing."""

    def __init__(self, role: str, reason: str) -> None:
        self.role = role
        self.reason = reason
        super().__init__(f"image role {role!r} not available: {reason}")


def catalogue_of(cfg: BenchConfig) -> dict[str, str]:
    """The bench's role -> recipe-or-file map (the recipe catalogue on virtual benches that give none)."""
    if cfg.images.catalogue is not None:
        return dict(cfg.images.catalogue)
    return dict(SIM_CATALOGUE) if cfg.virtual else {}


def signing_key(cfg: BenchConfig) -> Path | None:
    """The board's development signing key, from the bench file or its environment variable; None if neither."""
    images = cfg.images
    if images.signing_key is not None:
        return images.signing_key
    if images.signing_key_env:
        value = os.environ.get(images.signing_key_env, "")
        return Path(value) if value else None
    return None


def container_of(cfg: BenchConfig) -> ImageContainer:
    """The image container of the bench's board (its DUT profile's update family)."""
    return container_for(cfg.profile)


def prebuild(cfg: BenchConfig) -> list[Path]:
    """Virtual benches with `images.prebuild`: build each missing catalogue file (of a suffix the board's container
    builds) from the recipe of the same name, signed with the prebuild key (generated on first use, never
    committed). Returns the files made."""
    spec = cfg.images.prebuild
    if spec is None:
        return []
    from hil.images.keys import ensure_key
    from hil.images.recipes import find_recipe

    container = container_of(cfg)
    key = ensure_key(spec.key, cfg.images.keys_dir, spec.key_type)
    made = []
    for role, entry in catalogue_of(cfg).items():
        path = Path(entry)
        if path.suffix not in container.suffixes:
            continue
        recipe = find_recipe(path.stem, cfg.images.recipes).model_copy(update={"key": str(key)})
        if path.is_file():
            continue
        made.append(container.build(recipe, cfg.images.keys_dir, path.parent, layout=cfg.flash_layout,
                                    suffix=path.suffix, hardware=cfg.dut.hardware_number))
    return made


def load_image(name_or_path: str | os.PathLike[str], cfg: BenchConfig) -> bytes:
    """Image bytes for a recipe name (built on demand with the bench's container, layout and keys), a path to a
    recipe .yaml of your own (built the same way), or a path to an image file the container reads."""
    container = container_of(cfg)
    candidate = Path(name_or_path)
    if candidate.is_file() and candidate.suffix in (".yaml", ".yml"):
        from hil.images.recipes import load_recipe

        return container.load(container.build(load_recipe(candidate), cfg.images.keys_dir, cfg.images.build_dir,
                                              layout=cfg.flash_layout, hardware=cfg.dut.hardware_number))
    if candidate.is_file():
        return container.load(candidate)
    name = str(name_or_path)
    if candidate.suffix in (*container.suffixes, ".bin") or os.sep in name:
        raise ImageBuildError(f"image file {candidate} not found (give a recipe name or an existing image file: "
                              f"{', '.join(container.suffixes)})")
    from hil.images.recipes import find_recipe

    recipe = find_recipe(name, cfg.images.recipes)
    return container.load(container.build(recipe, cfg.images.keys_dir, cfg.images.build_dir, layout=cfg.flash_layout,
                                          hardware=cfg.dut.hardware_number))


def derive(role: str, update: bytes, cfg: BenchConfig) -> bytes:
    """`role` derived from the update image (see DERIVED); MissingImage naming what is lacking."""
    container = container_of(cfg)
    if role == "unknown_key":
        from hil.images.keys import ensure_dev_keys

        return container.resign(update, ensure_dev_keys(cfg.images.keys_dir)["untrusted-ecdsa-p256"])
    key = signing_key(cfg)
    where = (f"images.signing_key_env={cfg.images.signing_key_env} is not set" if cfg.images.signing_key_env
             else "no images.signing_key / images.signing_key_env in the bench file")
    if key is None:
        raise MissingImage(role, f"not in images.catalogue, and it is derived by re-signing the update with the "
                                 f"board's development key: {where}")
    if not key.is_file():
        raise MissingImage(role, f"signing key {key} does not exist")
    info = container.read(update)
    try:
        if role == "higher_security_counter":
            return container.resign(update, key, security_counter=info.security_counter + 1)
        if role == "older_version":
            return container.resign(update, key, version=(0, 0, 1))
    except ImageBuildError as exc:
        raise MissingImage(role, f"re-signing the update failed: {exc}") from None
    raise MissingImage(role, f"no way to derive it; accepted roles to derive: {', '.join(DERIVED)}")


def resolve_image(name: str, cfg: BenchConfig, update: "bytes | None" = None) -> bytes:
    """Image bytes for an image role (the bench's catalogue, or derived), a recipe name or an image file path.

    MissingImage names a role the bench lacks. `update`: the update image if the caller has it already.
    """
    if name not in ROLES:
        return load_image(name, cfg)
    catalogue = catalogue_of(cfg)
    if name in catalogue:
        prebuild(cfg)
        return load_image(catalogue[name], cfg)
    if name in DERIVED:
        return derive(name, update if update is not None else resolve_image("update", cfg), cfg)
    raise MissingImage(name, f"the bench's images.catalogue has no {name!r} ({ROLES[name]})")
