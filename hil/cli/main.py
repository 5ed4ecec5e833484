"""The `hil` command: sim, doctor, flash, images, packages, profile, report, rack, campaign."""

from __future__ import annotations

import json
import signal
import threading
import time

import click
from rich.console import Console as RichConsole
from rich.table import Table

from hil.cli.common import bench_option, load_bench_config
from hil.errors import HilError

out = RichConsole()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bms-ota-hil")
def main() -> None:
    """Hardware-in-the-loop validation of BMS firmware updates."""


@main.command()
@bench_option("bench YAML with virtual: true")
@click.option("--power-on", is_flag=True, help="switch the emulated supply on at start (else the board stays unpowered "
                                                 "until a client switches the supply on)")
@click.option("--ready-line", is_flag=True, hidden=True, help="print a machine-readable READY line (for the plugin)")
@click.option("--lock-held", is_flag=True, hidden=True, help="the parent process holds the bench lock (Bench.open)")
def sim(bench_file: str, power_on: bool, ready_line: bool, lock_held: bool) -> None:
    """Run a virtual bench in the foreground until Ctrl-C (holding the bench lock)."""
    from hil.bench.bench import READY_MARK
    from hil.bench.lock import BenchLock
    from hil.sim.bench import VirtualBench

    cfg = load_bench_config(bench_file)
    if not cfg.virtual:
        raise click.ClickException(f"{bench_file}: virtual is false; `hil sim` runs virtual benches only")
    if cfg.can.interface == "virtual":
        raise click.ClickException(f"{bench_file}: can.interface 'virtual' only works inside one process; "
                                   "use udp_multicast for a bench in its own process")
    stop = threading.Event()
    # Ctrl-C and SIGTERM stop the bench. SIGINT explicitly too: a process started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then raises no KeyboardInterrupt - the
    # plugin's SIGINT would go unheard and its bench be killed after a timeout.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    lock = None if lock_held else BenchLock(cfg.bench)
    if lock is not None:
        try:
            lock.acquire()
        except HilError as exc:
            raise click.ClickException(str(exc)) from None
    bench = VirtualBench(cfg)
    try:
        bench.start()
    except (HilError, OSError) as exc:
        bench.stop()
        if lock is not None:
            lock.release()
        raise click.ClickException(f"virtual bench {cfg.bench} could not start: {exc}") from None
    try:
        if power_on:
            bench.supply.power_on(cfg.psu.channel, cfg.psu.nominal_voltage, cfg.psu.current_limit)
        endpoints = bench.endpoints()
        table = Table(title=f"virtual bench {cfg.bench}")
        table.add_column("endpoint")
        table.add_column("address")
        for name, addr in endpoints.items():
            table.add_row(name, addr)
        (RichConsole(stderr=True) if ready_line else out).print(table)
        if ready_line:
            print(READY_MARK + json.dumps(endpoints), flush=True)
        else:
            if power_on:
                out.print(f"supply CH{cfg.psu.channel} on at {cfg.psu.nominal_voltage:g} V: the board is booting.")
            else:
                out.print(f"[yellow]The board is unpowered[/] until the supply output is switched on: channel "
                          f"{cfg.psu.channel} at {cfg.psu.nominal_voltage:g} V over SCPI at {endpoints['psu']}, "
                          "or restart with --power-on.")
            out.print(f"Holding the bench lock of {cfg.bench}: pytest, `hil flash` and `hil doctor` on this bench "
                      "are refused until Ctrl-C.")
            out.print("Ctrl-C stops the bench.")
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        bench.stop()
        if lock is not None:
            lock.release()
        if not ready_line:
            out.print("virtual bench stopped")


@main.command()
@bench_option()
def doctor(bench_file: str) -> None:
    """Check every part of a bench; exit 0 only when it is healthy."""
    from hil.cli.doctor import run_doctor

    cfg = load_bench_config(bench_file)
    report = run_doctor(cfg)
    table = Table(title=f"bench {cfg.bench} ({'virtual' if cfg.virtual else 'real'})")
    for col in ("check", "result", "detail"):
        table.add_column(col)
    for check in report:
        table.add_row(check.name, "[green]ok[/]" if check.ok else "[red]FAIL[/]", check.detail)
    out.print(table)
    failed = [c for c in report if not c.ok]
    if failed:
        raise click.ClickException("bench is not healthy: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))
    out.print("[green]bench healthy[/]")


@main.command()
@bench_option()
@click.option("--mode", type=click.Choice(["test", "permanent", "restore"]), default="test", show_default=True,
              help="test: revertible until the image confirms itself; restore: bench level, allows older images")
@click.option("--resume", is_flag=True, help="continue an interrupted download of the same image (DID FD0A) without erasing")
@click.argument("image")
def flash(bench_file: str, mode: str, resume: bool, image: str) -> None:
    """Flash IMAGE (an image role of the bench's catalogue, a recipe name or a .bin path) and print the outcome."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from hil.bench.bench import Bench
    from hil.bench.contract import ActivationMode
    from hil.images.catalogue import resolve_image

    cfg = load_bench_config(bench_file)
    try:
        data = resolve_image(image, cfg)
    except (HilError, OSError, ValueError) as exc:
        raise click.ClickException(f"image {image!r}: {exc}") from None
    activation = {"test": ActivationMode.TEST, "permanent": ActivationMode.PERMANENT, "restore": ActivationMode.RESTORE}[mode]
    try:
        with Bench.open(cfg) as bench:
            before = bench.client.software_version()
            flasher = bench.programmer
            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), console=out) as progress:
                task = progress.add_task(f"{before} -> {image}", total=flasher.container.size(data))
                flasher.on_progress.append(lambda done, total: progress.update(task, completed=done))
                staged = flasher.stage(data, bench_level=activation is ActivationMode.RESTORE, resume=resume)
            resumed = f", resumed at byte {staged.resumed_from}" if staged.resumed_from else ""
            out.print(f"staged {staged.size} bytes in {staged.seconds:.1f} s ({staged.kib_per_s:.1f} KiB/s{resumed})")
            if not staged.accepted:
                raise click.ClickException(f"the DUT rejected the image: {staged.reason.name}")
            t0 = time.monotonic()
            flasher.activate(activation)
            outcome = flasher.wait_outcome()
            out.print(f"outcome: {outcome.state.name} (reason {outcome.reason.name}), running {outcome.version}, "
                      f"{time.monotonic() - t0:.1f} s after activation; states: {' -> '.join(outcome.states_seen)}")
            if not outcome.confirmed:
                raise click.ClickException(f"update not confirmed: {outcome.state.name} / {outcome.reason.name}")
    except HilError as exc:
        raise click.ClickException(str(exc)) from None


def _mount_groups() -> None:
    """The command groups that live in their own modules."""
    from hil.cli.campaign import campaign
    from hil.cli.images import images
    from hil.cli.packages import packages
    from hil.cli.profile import profile
    from hil.cli.rack import rack
    from hil.cli.report import report

    for group in (images, packages, profile, report, rack, campaign):
        main.add_command(group)


_mount_groups()


if __name__ == "__main__":  # pragma: no cover
    main()
