"""`hil images`: build, sign, verify and inspect firmware images."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from hil.bench.config import BenchConfig, FlashLayout
from hil.bench.contract import Reason
from hil.cli.common import bench_option, file_or_recipe, hil_errors, load_bench_config, print_table, short_hex, trusted_keys
from hil.errors import HilError, ImageError

_VERSION = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,5}$")


def _version(_ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if not _VERSION.match(value):
        raise click.BadParameter(f"{value!r} is not a version; accepted: MAJOR.MINOR.REVISION, e.g. 1.1.0", param=param)
    major, minor, rev = (int(p) for p in value.split("."))
    return (major, minor, rev)


def _image_bytes(image: str, cfg: BenchConfig | None) -> tuple[bytes, str]:
    """Bytes of IMAGE, a .bin path or (with a bench) a recipe name or an image file the bench's container reads."""
    from hil.images.build import load_image as load_mcuboot_image
    from hil.images.catalogue import load_image

    if cfg is not None and Path(image).is_file():
        try:
            return load_image(image, cfg), str(image)  # the board's container: a HEX file and its .sig, say
        except HilError:
            pass
    return file_or_recipe(image, cfg, load_image if cfg is not None else load_mcuboot_image, "IMAGE")


@click.group("images", context_settings={"help_option_names": ["-h", "--help"]})
def images() -> None:
    """Firmware images: build from recipes, sign, verify with our verifier, inspect."""


@images.command()
@bench_option("bench whose recipes, keys and build directories and flash layout are used")
@click.argument("names", nargs=-1)
def build(bench_file: str, names: tuple[str, ...]) -> None:
    """Build and sign NAMES (recipe names; all recipes when none are given) in the bench's image format."""
    from hil.images.catalogue import container_of
    from hil.images.recipes import find_recipe, load_recipes

    cfg = load_bench_config(bench_file)
    container = container_of(cfg)
    with hil_errors():
        recipes = [find_recipe(n, cfg.images.recipes) for n in names] if names else \
            list(load_recipes(cfg.images.recipes).values())
        built = {r.name: (r, container.build(r, cfg.images.keys_dir, cfg.images.build_dir, layout=cfg.flash_layout,
                                                        hardware=cfg.dut.hardware_number))
                 for r in recipes}

    def row(name: str) -> tuple[str, ...]:
        recipe, path = built[name]
        image = container.load(path)
        info = container.read(image)
        return (name, info.version_str, str(info.security_counter), recipe.key, str(container.size(image)),
                container.digest(image).hex()[:16])
    print_table(f"{container.family} images in {cfg.images.build_dir}",
                ("name", "version", "sec cnt", "key", "bytes", "digest"), [row(name) for name in built])


@images.command()
@bench_option("supplies the keys dir, slot size and default hardware number")
@click.option("-k", "--key", "key", required=True, help="key name in the bench's keys dir (dev-ecdsa-p256, ...) or a .pem path")
@click.option("-v", "--version", "version", required=True, callback=_version, help="image version MAJOR.MINOR.REVISION")
@click.option("-s", "--security-counter", type=click.IntRange(0, 0xFFFFFFFF), default=1, show_default=True)
@click.option("--hardware-id", default=None, help="hardware number TLV 0xA0 [default: the bench's dut.hardware_number]")
@click.option("--config-compat", nargs=2, type=click.IntRange(0, 255), default=(1, 1), show_default=True,
              help="lowest and highest configuration schema (TLV 0xA1)")
@click.option("--confirm", is_flag=True, help="pad to the slot with image_ok set (factory image)")
@click.argument("infile", type=click.Path(exists=True, dir_okay=False))
@click.argument("outfile", type=click.Path(dir_okay=False, writable=True))
def sign(bench_file: str, key: str, version: tuple[int, int, int], security_counter: int, hardware_id: str | None,
         config_compat: tuple[int, int], confirm: bool, infile: str, outfile: str) -> None:
    """Sign raw firmware INFILE into OUTFILE with imgtool and the bench's defaults (header 0x200, align 8)."""
    from hil.images.build import run_imgtool, sign_args
    from hil.images.keys import resolve_key

    cfg = load_bench_config(bench_file)
    if config_compat[0] > config_compat[1]:
        raise click.BadParameter(f"{list(config_compat)}: lowest must not exceed highest", param_hint="--config-compat")
    with hil_errors():
        key_path = resolve_key(key, cfg.images.keys_dir)
        layout: FlashLayout = cfg.flash_layout
        slot = layout.slot_size + layout.sector_size if confirm else layout.slot_size
        run_imgtool(sign_args(Path(infile), Path(outfile), key_path, version=".".join(map(str, version)),
                              security_counter=security_counter, slot_size=slot,
                              hardware_id=hardware_id or cfg.dut.hardware_number, config_compat=config_compat,
                              confirm=confirm))
    click.echo(f"signed {outfile}")


@images.command()
@bench_option("trusted keys (sim.trusted_keys), hardware number and slot size come from here")
@click.option("-k", "--key", "keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="trusted PEM key (repeatable); replaces the bench's trusted keys")
@click.option("--current-version", callback=_version, default=None, help="refuse older images (MAJOR.MINOR.REVISION)")
@click.option("--min-security-counter", type=click.IntRange(0, 0xFFFFFFFF), default=0, show_default=True)
@click.option("--config-schema", type=click.IntRange(0, 255), default=None, help="stored configuration schema")
@click.argument("image")
def verify(bench_file: str, keys: tuple[str, ...], current_version: tuple[int, int, int] | None,
           min_security_counter: int, config_schema: int | None, image: str) -> None:
    """Verify IMAGE (a .bin or a recipe name) with our verifier; exit 1 printing the Reason name if it fails."""
    from hil.images.mcuboot import verify_image

    cfg = load_bench_config(bench_file)
    trusted = trusted_keys(bench_file, cfg, keys)
    data, shown = _image_bytes(image, cfg)
    try:
        img = verify_image(data, trusted, hardware_id=cfg.dut.hardware_number, min_security_counter=min_security_counter,
                           current_version=current_version, config_schema=config_schema,
                           slot_size=cfg.flash_layout.slot_size)
    except ImageError as exc:
        click.echo(f"REJECTED {Reason(exc.reason).name}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"OK {shown}: version {img.version_str}, security counter {img.security_counter}, "
               f"hardware {img.hardware_id}, config schema {img.config_compat}, {img.total_size} bytes")


@images.command()
@bench_option("only needed when IMAGE is a recipe name", required=False)
@click.argument("image")
def info(bench_file: str | None, image: str) -> None:
    """Show IMAGE's header and TLVs as our parser reads them, then imgtool dumpinfo."""
    from hil.images.build import dumpinfo
    from hil.images.mcuboot import parse_image, tlv_name

    cfg = load_bench_config(bench_file) if bench_file else None
    data, shown = _image_bytes(image, cfg)
    try:
        img = parse_image(data)
    except ImageError as exc:
        if cfg is not None:  # not an MCUboot image: the bench's own container describes it
            from hil.images.catalogue import container_of

            try:
                click.echo(container_of(cfg).describe(data))
                return
            except (HilError, ValueError):
                pass
        raise click.ClickException(f"{shown}: {Reason(exc.reason).name}: {exc}") from None
    h = img.header
    rows = [("magic", f"0x{h.magic:08x}"), ("load_addr", f"0x{h.load_addr:x}"), ("hdr_size", f"0x{h.hdr_size:x}"),
            ("protect_tlv_size", str(h.protect_tlv_size)), ("img_size", str(h.img_size)),
            ("flags", f"0x{h.flags:x}"), ("version", "{}.{}.{}+{}".format(*h.version)),
            ("total_size", str(img.total_size)), ("security_counter", str(img.security_counter)),
            ("hardware_id", str(img.hardware_id)), ("config_compat", str(img.config_compat))]
    rows += [(f"{area} {tlv_name(tag)}", short_hex(raw))
             for area, tlvs in (("protected", img.protected_tlvs), ("tlv", img.tlvs)) for tag, raw in tlvs.items()]
    print_table(f"{shown} (our parser)", ("field", "value"), rows)
    path = Path(image)
    if not path.is_file() and cfg is not None:
        path = cfg.images.build_dir / f"{image}.bin"
    try:
        click.echo(dumpinfo(path))
    except HilError as exc:
        click.echo(f"imgtool dumpinfo failed: {exc}", err=True)
