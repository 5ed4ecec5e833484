"""`hil packages`: build, sign, inspect and verify configuration packages (what a fleet manager pushes)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from hil.bench.config import BenchConfig
from hil.bench.contract import Reason
from hil.cli.common import bench_option, file_or_recipe, load_bench_config
from hil.errors import HilError, ImageError


def _package_bytes(package: str, cfg: BenchConfig | None) -> tuple[bytes, str]:
    """Bytes of PACKAGE, a package file or (with a bench) a package recipe name."""
    from hil.config_packages.recipes import load_package

    return file_or_recipe(package, cfg, load_package, "PACKAGE")


@click.group("packages", context_settings={"help_option_names": ["-h", "--help"]})
def packages() -> None:
    """Configuration packages: build from recipes, sign, inspect, verify."""


@packages.command()
@bench_option("bench whose package recipes (images.packages), keys and build directory are used")
@click.argument("names", nargs=-1)
def build(bench_file: str, names: tuple[str, ...]) -> None:
    """Build and sign NAMES (package recipe names; all recipes when none are given) into <build_dir>/packages/."""
    from hil.config_packages.package import parse_package
    from hil.config_packages.recipes import build_packages

    cfg = load_bench_config(bench_file)
    try:
        built = build_packages(cfg, list(names) or None)
    except HilError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title=f"configuration packages in {cfg.images.build_dir / 'packages'}")
    for col in ("recipe", "profile", "group", "hardware", "schema", "version", "bytes"):
        table.add_column(col)
    for name, path in built.items():
        data = path.read_bytes()
        pkg = parse_package(data)
        table.add_row(name, pkg.name, pkg.vehicle_group, pkg.hardware, str(pkg.schema), str(pkg.version), str(len(data)))
    Console().print(table)


@packages.command()
@bench_option("supplies the keys directory")
@click.option("-k", "--key", "key", default=None, help="signing key name or .pem path [default: the recipe's key]")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.argument("outfile", type=click.Path(dir_okay=False, writable=True))
def sign(bench_file: str, key: str | None, recipe: str, outfile: str) -> None:
    """Build the package of profile RECIPE (a YAML file) and sign it into OUTFILE."""
    from hil.config_packages.recipes import board_key, build_from_recipe, load_package_recipe

    cfg = load_bench_config(bench_file)
    try:
        r = load_package_recipe(Path(recipe))
        if key is not None:
            r = r.model_copy(update={"key": key})
        Path(outfile).write_bytes(build_from_recipe(r, cfg.images.keys_dir, board_key(cfg), cfg.dut.hardware_number))
    except HilError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"signed {outfile}")


@packages.command()
@bench_option("only needed when PACKAGE is a recipe name", required=False)
@click.argument("package")
def info(bench_file: str | None, package: str) -> None:
    """Show PACKAGE's fields and trailer as the parser reads them (no trust implied)."""
    from hil.images.mcuboot import tlv_name
    from hil.config_packages.package import parse_package

    data, shown = _package_bytes(package, load_bench_config(bench_file) if bench_file else None)
    try:
        pkg = parse_package(data)
    except ImageError as exc:
        raise click.ClickException(f"{shown}: {Reason(exc.reason).name}: {exc}") from None
    table = Table(title=f"{shown} ({len(data)} bytes)")
    table.add_column("field")
    table.add_column("value")
    for field, value in pkg.summary().items():
        table.add_row(field, str(value))
    table.add_row("sha256 (computed)", pkg.digest.hex())
    for tag, value in pkg.trailer.items():
        table.add_row(f"trailer {tlv_name(tag)}", value.hex() if len(value) <= 40 else value[:40].hex() + "...")
    Console().print(table)


@packages.command()
@bench_option("trusted keys (sim.trusted_keys) and hardware number come from here")
@click.option("-k", "--key", "keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="trusted PEM key (repeatable); replaces the bench's trusted keys")
@click.option("--vehicle-group", default=None, help="refuse a package for another vehicle group")
@click.argument("package")
def verify(bench_file: str, keys: tuple[str, ...], vehicle_group: str | None, package: str) -> None:
    """Verify PACKAGE's integrity, signature and target; exit 1 printing the Reason name if it fails.

    The range check against the hardware's absolute limits is the board's: a package can verify here
    and still be refused by the board (VALUE_OUT_OF_RANGE)."""
    from hil.images.mcuboot import load_trusted_keys
    from hil.config_packages.package import verify_package

    cfg = load_bench_config(bench_file)
    key_paths = [Path(k) for k in keys] or (list(cfg.sim.trusted_keys) if cfg.sim else [])
    if not key_paths:
        raise click.UsageError(f"{bench_file} has no sim.trusted_keys (a real bench); give the trusted keys with -k/--key")
    data, shown = _package_bytes(package, cfg)
    try:
        trusted = load_trusted_keys(key_paths)
    except HilError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        pkg = verify_package(data, trusted)
    except ImageError as exc:
        click.echo(f"REJECTED {Reason(exc.reason).name}: {exc}", err=True)
        sys.exit(1)
    if pkg.hardware != cfg.dut.hardware_number:
        click.echo(f"REJECTED {Reason.WRONG_HARDWARE.name}: package for {pkg.hardware}, bench DUT is "
                   f"{cfg.dut.hardware_number}", err=True)
        sys.exit(1)
    if vehicle_group is not None and pkg.vehicle_group != vehicle_group:
        click.echo(f"REJECTED {Reason.PROFILE_WRONG_GROUP.name}: package for group {pkg.vehicle_group}, "
                   f"expected {vehicle_group}", err=True)
        sys.exit(1)
    click.echo(f"OK {shown}: profile {pkg.name} v{pkg.version} for group {pkg.vehicle_group}, hardware {pkg.hardware}, "
               f"schema {pkg.schema}, {len(pkg.values)} values")
