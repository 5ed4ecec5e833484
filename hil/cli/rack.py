"""`hil rack ...`: check a rack file and see who holds its benches."""

from __future__ import annotations

import time

import click
from rich.console import Console as RichConsole
from rich.table import Table

from hil.errors import BenchConfigError


@click.group("rack")
def rack() -> None:
    """Racks of benches (benches/racks/*.yaml)."""


@rack.command("show")
@click.argument("rack_file", type=click.Path(dir_okay=False))
def show(rack_file: str) -> None:
    """Validate RACK_FILE and list its benches, their tags and who leases them now (file leases)."""
    from hil.rack.lease import FileLeases, _read
    from hil.rack.inventory import load_rack

    try:
        r = load_rack(rack_file)
    except BenchConfigError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title=f"rack {r.name} (lease backend {r.lease.backend})")
    for col in ("bench", "file", "variant", "can", "capabilities", "leased by"):
        table.add_column(col)
    leases = FileLeases(stale_after_s=r.lease.stale_after_s)
    now = time.time()
    for b in r.benches:
        holder = "(see labgrid-client places)" if r.lease.backend == "labgrid" else "-"
        if r.lease.backend == "file":
            data = _read(leases.path(b.name))
            if data is not None:
                stale = leases.stale_reason(data, now)
                holder = f"{data.get('owner', '?')}" + (f" [stale: {stale}]" if stale else "")
        table.add_row(b.name, str(b.cfg.source), b.tags.variant, b.tags.can, ", ".join(sorted(b.tags.capabilities)),
                      holder)
    RichConsole().print(table)
