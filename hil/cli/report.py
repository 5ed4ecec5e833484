"""`hil report ...`: report commands (merge the results of several hosts into one report)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hil.errors import HilError


@click.group("report")
def report() -> None:
    """Reports of validation runs."""


@report.command("merge")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="where the merged fault matrix, traceability, run record, evidence and allure-results go")
def merge_cmd(dirs: tuple[Path, ...], out: Path) -> None:
    """Merge the reports directories DIRS (one per host or rack; each has results.json) into one report."""
    from hil.report.merge import merge

    if out.resolve() in {d.resolve() for d in dirs}:
        raise click.ClickException(f"--out {out} is also an input; merge into a new directory")
    try:
        summary = merge(list(dirs), out, command=sys.argv)
    except (HilError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"merged {summary['tests']} test results from {', '.join(summary['inputs'])} "
               f"({summary['allure_files']} Allure files) into {out}")


def _mount_html() -> None:
    from hil.report.html import check_command, html_command

    report.add_command(html_command, "html")
    report.add_command(check_command, "check")


_mount_html()
