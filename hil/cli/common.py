"""What every `hil` sub-command shares: the default bench, loading it, reading a file-or-recipe argument,
the trusted keys of a verification, turning a HilError into a clear exit, and a table of what was built."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from hil.bench.config import DEFAULT_BENCH, BenchConfig, load_bench
from hil.errors import BenchConfigError, HilError

F = TypeVar("F", bound=Callable[..., Any])


def bench_option(help: str | None = None, required: bool = True) -> Callable[[F], F]:
    """`--bench FILE` (default benches/sim.yaml; with required=False no default: only some forms need a bench)."""
    return click.option("--bench", "bench_file", default=DEFAULT_BENCH if required else None, show_default=required,
                        type=click.Path(dir_okay=False), help=help)


def load_bench_config(path: str) -> BenchConfig:
    """The bench at `path`; a bad bench YAML is a usage error naming the field and what is accepted."""
    try:
        return load_bench(path)
    except BenchConfigError as exc:
        raise click.ClickException(str(exc)) from None


def file_or_recipe(arg: str, cfg: BenchConfig | None, build: Callable[[str, BenchConfig], bytes],
                   hint: str) -> tuple[bytes, str]:
    """Bytes of ARG: a file, or (with a bench) the recipe of that name built by `build`; and how to show it."""
    path = Path(arg)
    if path.is_file():
        return path.read_bytes(), str(path)
    if cfg is None:
        raise click.BadParameter(f"{arg!r} is not a file (give --bench to build a recipe by name)", param_hint=hint)
    try:
        return build(arg, cfg), f"recipe {arg}"
    except HilError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


@contextmanager
def hil_errors() -> Iterator[None]:
    """A HilError raised inside becomes a click error that prints its message (exit 1, no traceback)."""
    try:
        yield
    except HilError as exc:
        raise click.ClickException(str(exc)) from None


def trusted_keys(bench_file: str, cfg: BenchConfig, keys: Sequence[str]) -> list[Any]:
    """The keys a verification trusts: `-k/--key` files, else the bench's `sim.trusted_keys` (a real bench has none)."""
    from hil.images.mcuboot import load_trusted_keys

    paths = [Path(k) for k in keys] or (list(cfg.sim.trusted_keys) if cfg.sim else [])
    if not paths:
        raise click.UsageError(f"{bench_file} has no sim.trusted_keys (a real bench); give the trusted keys with -k/--key")
    with hil_errors():
        return load_trusted_keys(paths)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A rich table on stdout."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def short_hex(raw: bytes, limit: int = 40) -> str:
    """Hex of `raw`, its first `limit` bytes and '...' when longer."""
    return raw.hex() if len(raw) <= limit else raw[:limit].hex() + "..."
