"""How a bench returns its board to the baseline image: a small strategy object the plugin calls.

After labgrid's Strategy: the plugin asks for a state ("the baseline image runs, confirmed"), the
strategy knows the way there for this kind of board. The DUT profile chooses it (`restore.method`):

- `uds_restore` - the development restore over UDS: programming session, the bench security
  level, download, activation mode RESTORE (installs even an older image). Today's contract.
- `pyocd`       - program the image through a debug probe with pyOCD's Python API.
- `command`     - any command line (J-Link Commander, OpenOCD, a vendor tool), with placeholders
  {image} (path of the image file), {address} (hex flash address), {bench} (bench name).

Probe and command restores power-cycle nothing themselves; the strategy resets through the supply
afterwards and waits until the board answers UDS.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from hil.bench.contract import ActivationMode
from hil.errors import BenchBroken, BenchConfigError, HilError
from hil.bench.dut_profile import RestoreProfile

#: Lines of a failing restore command's output shown in the error.
TAIL_LINES = 20


class RestoreStrategy(Protocol):
    """Brings the DUT back to `image` (the baseline); raises BenchBroken when it cannot."""

    name: str

    def restore(self, bench: Any, image: bytes, label: str) -> None: ...


class UdsRestore:
    """The development restore over UDS (bench security level, activation mode RESTORE)."""

    name = "uds_restore"

    def restore(self, bench: Any, image: bytes, label: str) -> None:
        """Download and install `image` even if older; the outcome must be a confirmed image."""
        outcome = bench.flasher.update(image, ActivationMode.RESTORE, bench_level=True)
        if not outcome.confirmed:
            raise BenchBroken(f"restoring baseline {label} over UDS ended {outcome.state.name}/{outcome.reason.name}")


def _power_cycle_and_wait(bench: Any) -> None:
    """After a probe or tool wrote the flash: a power-on reset, then wait until the DUT answers UDS."""
    from hil.dut.checks import wait_dut_up
    from hil.dut.dut import Dut

    bench.psu.output(False)
    time.sleep(0.5)  # the supply's output capacitors discharge; no event to wait on
    bench.psu.power_on()
    wait_dut_up(Dut(bench.uds, bench.can, bench.cfg.dut), bench.cfg.dut.boot_timeout_s * 2)


class CommandRestore:
    """Any command line: the image is written to a file, placeholders are filled, the exit code decides."""

    name = "command"

    def __init__(self, cfg: RestoreProfile) -> None:
        if not cfg.command:
            raise BenchConfigError("restore.method command needs restore.command")
        self.cfg = cfg

    def argv(self, image_path: Path, bench_name: str) -> list[str]:
        """The command line for one image file (shell-split, then each word's placeholders filled)."""
        assert self.cfg.command is not None
        values = {"image": str(image_path), "address": f"0x{self.cfg.address:08X}", "bench": bench_name}
        try:
            return [word.format(**values) for word in shlex.split(self.cfg.command)]
        except (KeyError, IndexError, ValueError) as exc:
            raise BenchConfigError(f"restore.command {self.cfg.command!r}: bad placeholder {exc}; "
                                   "accepted: {image}, {address}, {bench}") from None

    def run(self, image: bytes, bench_name: str, container: Any = None) -> str:
        """Run the command on `image` (written as the board's `container` writes its files: a .bin by default);
        its output, or BenchBroken with exit code and last output."""
        with tempfile.TemporaryDirectory(prefix="hil-restore-") as tmp:
            if container is None:
                path = Path(tmp) / "baseline.bin"
                path.write_bytes(image)
            else:
                path = container.save(image, Path(tmp) / f"baseline{container.suffixes[0]}")[0]
            argv = self.argv(path, bench_name)
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=self.cfg.timeout_s)
            except FileNotFoundError:
                raise BenchBroken(f"restore command not found: {argv[0]}") from None
            except subprocess.TimeoutExpired as exc:
                out = (exc.stdout or "") if isinstance(exc.stdout, str) else ""
                raise BenchBroken(f"restore command did not finish within {self.cfg.timeout_s:g} s: {shlex.join(argv)}\n"
                                  + "\n".join(out.splitlines()[-TAIL_LINES:])) from None
        output = (done.stdout or "") + (done.stderr or "")
        if done.returncode != 0:
            tail = "\n".join(output.splitlines()[-TAIL_LINES:])
            raise BenchBroken(f"restore command exited with {done.returncode}: {shlex.join(argv)}\n{tail}")
        return output

    def restore(self, bench: Any, image: bytes, label: str) -> None:
        self.run(image, bench.cfg.bench, bench.flasher.container)
        _power_cycle_and_wait(bench)


class PyOcdRestore:
    """Program the image through a debug probe with pyOCD (an optional dependency: `pip install pyocd`)."""

    name = "pyocd"

    def __init__(self, cfg: RestoreProfile) -> None:
        self.cfg = cfg

    def restore(self, bench: Any, image: bytes, label: str) -> None:
        try:
            from pyocd.core.helpers import ConnectHelper  # type: ignore[import-not-found]  # optional dependency
            from pyocd.flash.file_programmer import FileProgrammer  # type: ignore[import-not-found]
        except ImportError:
            raise BenchBroken("restore.method pyocd needs pyOCD: pip install pyocd") from None
        with tempfile.TemporaryDirectory(prefix="hil-restore-") as tmp:
            path = Path(tmp) / "baseline.bin"
            path.write_bytes(image)
            try:
                session = ConnectHelper.session_with_chosen_probe(unique_id=self.cfg.probe, blocking=False,
                                                                  target_override=self.cfg.target)
                if session is None:
                    raise BenchBroken(f"pyOCD found no debug probe{f' {self.cfg.probe}' if self.cfg.probe else ''}")
                with session:
                    FileProgrammer(session).program(str(path), base_address=self.cfg.address, file_format="bin")
                    session.board.target.reset()
            except HilError:
                raise
            except Exception as exc:  # pyOCD raises its own exception tree; name it and stop
                raise BenchBroken(f"pyOCD could not program {label}: {type(exc).__name__}: {exc}") from exc
        _power_cycle_and_wait(bench)


def restore_strategy(cfg: RestoreProfile) -> RestoreStrategy:
    """The strategy the DUT profile names."""
    if cfg.method == "uds_restore":
        return UdsRestore()
    if cfg.method == "command":
        return CommandRestore(cfg)
    return PyOcdRestore(cfg)
