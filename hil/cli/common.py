"""What every `hil` sub-command shares: the default bench, loading it, and reading a file-or-recipe argument."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

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
