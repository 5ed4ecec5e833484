"""`hil packages`: build, sign, inspect and verify configuration packages (what a fleet manager pushes)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hil.bench.config import BenchConfig
from hil.bench.contract import Reason
from hil.cli.common import (bench_option, file_or_recipe, hil_errors, load_bench_config, print_table, short_hex,
                            trusted_keys)
from hil.errors import ImageError


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
    with hil_errors():
        built = build_packages(cfg, list(names) or None)

    def row(name: str, path: Path) -> tuple[str, ...]:
        data = path.read_bytes()
        pkg = parse_package(data)
        return name, pkg.name, pkg.vehicle_group, pkg.hardware, str(pkg.schema), str(pkg.version), str(len(data))
    print_table(f"configuration packages in {cfg.images.build_dir / 'packages'}",
                ("recipe", "profile", "group", "hardware", "schema", "version", "bytes"),
                [row(name, path) for name, path in built.items()])


@packages.command()
@bench_option("supplies the keys directory")
@click.option("-k", "--key", "key", default=None, help="signing key name or .pem path [default: the recipe's key]")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.argument("outfile", type=click.Path(dir_okay=False, writable=True))
def sign(bench_file: str, key: str | None, recipe: str, outfile: str) -> None:
    """Build the package of profile RECIPE (a YAML file) and sign it into OUTFILE."""
    from hil.config_packages.recipes import board_key, build_from_recipe, load_package_recipe

    cfg = load_bench_config(bench_file)
    with hil_errors():
        r = load_package_recipe(Path(recipe))
        if key is not None:
            r = r.model_copy(update={"key": key})
        Path(outfile).write_bytes(build_from_recipe(r, cfg.images.keys_dir, board_key(cfg),
                                                    hardware=cfg.dut.hardware_number))
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
    rows = [(field, str(value)) for field, value in pkg.summary().items()]
    rows.append(("sha256 (computed)", pkg.digest.hex()))
    rows += [(f"trailer {tlv_name(tag)}", short_hex(value)) for tag, value in pkg.trailer.items()]
    print_table(f"{shown} ({len(data)} bytes)", ("field", "value"), rows)


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
    from hil.config_packages.package import verify_package

    cfg = load_bench_config(bench_file)
    trusted = trusted_keys(bench_file, cfg, keys)
    data, shown = _package_bytes(package, cfg)
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
