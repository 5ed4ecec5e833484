"""The `hil` command: sim, doctor, flash, images, packages, profile, report, rack, campaign."""

from __future__ import annotations

import _thread
import json
import signal
import sys
import time
from pathlib import Path

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


class _StopRequest:
    """Why `hil sim` should stop (None: it should not). Signal handlers set it, so it takes no lock: an
    Event.set() in a handler deadlocks when the signal lands while the main thread holds that Event's own
    lock inside Event.wait(). Until the bench runs, a request also interrupts the start-up."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.starting = True

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.reason is None:
            self.reason = signal.Signals(signum).name
        if self.starting:
            self.starting = False
            raise KeyboardInterrupt

    def from_thread(self, reason: str) -> None:
        """A stop asked by another thread (the parent's pipe closed): as if a SIGTERM arrived."""
        if self.reason is None:
            self.reason = reason
        if self.starting:
            _thread.interrupt_main(signal.SIGTERM)  # runs on_signal in the main thread: the start-up ends


@main.command()
@bench_option("bench YAML with virtual: true")
@click.option("--power-on", is_flag=True, help="switch the emulated supply on at start (else the board stays unpowered "
                                                 "until a client switches the supply on)")
@click.option("--ready-line", is_flag=True, hidden=True, help="print a machine-readable READY line (for the plugin)")
@click.option("--lock-held", is_flag=True, hidden=True, help="the parent process holds the bench lock (Bench.open)")
@click.option("--parent-pid", type=int, default=None, hidden=True,
              help="end when this parent ends: end-of-file on stdin (a pipe the parent holds) - SimProcess")
@click.option("--death-signal", is_flag=True, hidden=True,
              help="with --parent-pid, on Linux: also SIGTERM when the parent dies (PR_SET_PDEATHSIG)")
def sim(bench_file: str, power_on: bool, ready_line: bool, lock_held: bool, parent_pid: int | None,
        death_signal: bool) -> None:
    """Run a virtual bench in the foreground until Ctrl-C (holding the bench lock)."""
    from hil.bench.bench import READY_MARK
    from hil.bench.lock import BenchLock
    from hil.sim.bench import VirtualBench
    from hil.sim.lifetime import exit_with_parent, exit_within, stop_orphans

    # Ctrl-C and SIGTERM stop the bench in order. Both handlers are set here, whatever this process inherited:
    # a process started with SIGINT ignored (a background job of a non-interactive shell - `make test &`,
    # load_soak.sh, some CI runners) keeps ignoring it, and Python then never raises KeyboardInterrupt.
    stopping = _StopRequest()
    signal.signal(signal.SIGINT, stopping.on_signal)
    signal.signal(signal.SIGTERM, stopping.on_signal)
    if parent_pid is not None:
        exit_with_parent(parent_pid, stopping.from_thread, death_signal=death_signal)
    lock: BenchLock | None = None
    bench: VirtualBench | None = None
    ready = False
    try:
        cfg = load_bench_config(bench_file)
        if not cfg.virtual:
            raise click.ClickException(f"{bench_file}: virtual is false; `hil sim` runs virtual benches only")
        if cfg.can.interface == "virtual":
            raise click.ClickException(f"{bench_file}: can.interface 'virtual' only works inside one process; "
                                       "use udp_multicast for a bench in its own process")
        if not lock_held:
            lock = BenchLock(cfg.bench)
            try:
                lock.acquire()
            except HilError as exc:
                lock = None
                raise click.ClickException(str(exc)) from None
        # This run holds the bench lock (itself or through its parent): a `hil sim` of the same bench file whose
        # parent has gone belongs to nobody, and would hold the ports and the flash file.
        for orphan in stop_orphans(cfg.source or Path(bench_file)):
            print(f"hil sim: stopped an orphaned virtual bench of {bench_file}: {orphan.describe()} - its run had "
                  "ended and nobody held the bench lock for it", file=sys.stderr, flush=True)
        bench = VirtualBench(cfg)
        try:
            bench.start()
        except (HilError, OSError) as exc:
            raise click.ClickException(f"virtual bench {cfg.bench} could not start: {exc}") from None
        if power_on:
            bench.supply.power_on(cfg.psu.channel, cfg.psu.nominal_voltage, cfg.psu.current_limit)
        stopping.starting = False  # from here on a stop request is noticed by the loop below
        ready = True
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
        while stopping.reason is None:
            time.sleep(0.1)  # a flag, not an Event: signal handlers set it (see _StopRequest)
    except KeyboardInterrupt:
        print(f"hil sim: stopped before the bench was ready ({stopping.reason or 'interrupted'})", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        exit_within()  # the orderly stop below must not keep the process alive
        if bench is not None:
            bench.stop()
        if lock is not None:
            lock.release()
        if ready and not ready_line:
            out.print(f"virtual bench stopped ({stopping.reason})")


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
