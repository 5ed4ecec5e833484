"""`hil profile`: the DUT profile and ODX - import a vendor's diagnostic description, export a profile as PDX.

(Configuration packages, what a fleet manager pushes, are `hil packages`.)
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from hil.errors import HilError


@click.group()
def profile() -> None:
    """The DUT profile (what a board is): import it from the vendor's ODX, export it as a PDX."""


@profile.command("import")
@click.argument("source", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="the draft profile YAML to write (e.g. benches/profiles/<board>.yaml)")
@click.option("--dbc", type=click.Path(dir_okay=False), help="the board's DBC: the draft's can.dbc and message names")
@click.option("--variant", help="the ECU or base variant to read when the ODX has several")
@click.option("--map", "mappings", multiple=True, metavar="ROLE=SHORT_NAME",
              help="settle a role the names do not match: a DID or routine role and the ODX service's SHORT-NAME "
                   "(or its identifier, 0x...); repeatable")
@click.option("--extra", type=click.Path(dir_okay=False, exists=True),
              help="a partial profile YAML with what ODX cannot say (seed-to-key algorithm, attempts, CAN names, console, "
                   "restore, SOC core, records, a flash bootloader's blocks), merged over the draft: keep it beside the profile so a new ODX re-imports without losing it")
@click.option("--force", is_flag=True, help="overwrite OUTPUT if it exists")
def import_(source: str, output: str, dbc: str | None, variant: str | None, mappings: tuple[str, ...],
            extra: str | None, force: bool) -> None:
    """Make a draft DUT profile from the vendor's ODX SOURCE (a .pdx, an .odx-d with its .odx-cs beside it, or a
    folder of them) and DBC: sessions, security levels, DIDs
    and their layouts, routines, codes. Prints what was mapped, what could not be, and what is still to fill in."""
    from hil.bench.dut_profile import load_profile
    from hil.odx.importer import import_odx, render, summary

    mapping: dict[str, str] = {}
    for item in mappings:
        role, sep, name = item.partition("=")
        if not sep or not role or not name:
            raise click.BadParameter(f"got {item!r}; accepted: ROLE=SHORT_NAME, e.g. FLASH_LAYOUT=RDBI_FlashMap",
                                     param_hint="--map")
        mapping[role.strip()] = name.strip()
    extra_data = None
    if extra is not None:
        extra_data = yaml.safe_load(Path(extra).read_text())
        if not isinstance(extra_data, dict):
            raise click.BadParameter(f"{extra}: a partial profile must be a mapping of profile fields, got "
                                     f"{type(extra_data).__name__}", param_hint="--extra")
    out = Path(output)
    if out.exists() and not force:
        raise click.ClickException(f"{out} exists; give --force to overwrite it (keep what ODX cannot say in an "
                                   "--extra file, so re-importing loses nothing)")
    try:
        imported = import_odx(source, dbc=dbc, variant=variant, mapping=mapping, extra=extra_data, output=out)
    except HilError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary(imported))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(imported))
    if imported.complete():
        try:
            loaded = load_profile(out)
        except HilError as exc:
            click.echo(f"wrote {out}; it does not load yet:\n{exc}")
            raise SystemExit(1) from None
        click.echo(f"wrote {out}: profile {loaded.name} loads")
    else:
        click.echo(f"wrote {out} (a draft: it does not load until the {len(imported.todo)} item(s) to fill in are given)")


@profile.command("export")
@click.argument("profile_file", metavar="PROFILE", type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="the PDX to write [default: PROFILE with the suffix .pdx]")
def export(profile_file: str, output: str | None) -> None:
    """Write the diagnostic part of PROFILE (a DUT profile YAML) as a PDX (ODX, ISO 22901) a tester reads."""
    from hil.bench.dut_profile import load_profile
    from hil.odx.export import write_pdx

    try:
        loaded = load_profile(profile_file)
        path = write_pdx(loaded, output or Path(profile_file).with_suffix(".pdx"))
    except HilError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {path} ({path.stat().st_size} bytes): {len(loaded.dids)} DIDs, {len(loaded.routines)} routines")
