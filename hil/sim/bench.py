"""The virtual bench: a simulated BMS board with its supply, battery emulator, console and CAN bus.

`VirtualBench(cfg).start()` brings up every endpoint named in the bench file (SCPI over TCP,
the console as `socket://`, CAN on the configured python-can interface) and returns the
effective configuration (ports resolved where the file says 0). The framework then talks to it
exactly as to a real bench. `hil sim` runs one in the foreground.
"""

from __future__ import annotations

import contextlib
import errno
import re
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

import can

from hil.drivers.canbus import open_bus
from hil.bench.config import BenchConfig, socket_resource_address, socket_url_address
from hil.bench.dut_profile import console_line_problems
from hil.errors import BenchBroken, BenchConfigError
from hil.images.catalogue import catalogue_of, load_image, prebuild
from hil.images.keys import ensure_dev_keys
from hil.images.mcuboot import load_trusted_keys
from hil.sim.board import DEFAULT_CONFIG, Board, PackSource
from hil.sim.family import board_parts
from hil.sim.console import ConsoleServer
from hil.sim.defects import Defects
from hil.sim.flash import FlashModel
from hil.sim.lifetime import port_holder
from hil.sim.instruments import BATTERY_MODELS, SUPPLY_MODELS, BatteryEmulatorModel, SupplyModel
from hil.sim.nvstore import NvStore
from hil.sim.scpi import LineServer, ScpiServer


def _listen(server: LineServer, field: str, host: str, port: int) -> int:
    """Start a TCP endpoint; a taken port fails naming the bench file's field and the address."""
    try:
        return server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            holder = port_holder(host, port)
            who = f"held by {holder.describe()}" if holder else "held by a process this user cannot see"
            raise BenchBroken(f"{field}: port {host}:{port} is in use, {who} (another virtual bench or `hil sim` on "
                              "it? give each bench its own ports, or 0 for a free one)") from None
        raise BenchBroken(f"{field}: cannot listen on {host}:{port}: {exc}") from None


def _generated_dev_key(cfg: BenchConfig, path: Path) -> bool:
    """A missing trusted key that the bench generates itself (development keys in images.keys_dir)."""
    return path.parent.resolve() == Path(cfg.images.keys_dir).resolve()


#: GIL switch interval while a virtual board runs (Python's default is 5 ms).
SWITCH_INTERVAL_S = 0.0005


def _with_port(resource: str, port: int) -> str:
    return re.sub(r"::\d+::SOCKET$", f"::{port}::SOCKET", resource, flags=re.IGNORECASE)


class VirtualBench:
    """Everything a real bench has, simulated in this process."""

    def __init__(self, cfg: BenchConfig) -> None:
        if not cfg.virtual or cfg.sim is None:
            raise BenchConfigError(f"bench {cfg.bench!r} is not virtual (virtual: true and a sim section are needed)")
        self.cfg = cfg
        self.effective: BenchConfig | None = None
        # The emulators speak the command set the bench file's dialect names, like the real instrument would.
        self.supply: SupplyModel = SUPPLY_MODELS[cfg.psu.dialect]()
        pack = cfg.profile.soc_core
        self.battery: BatteryEmulatorModel = BATTERY_MODELS[cfg.load.dialect if cfg.load else "hil_sim"](
            pack.cells, pack.temperatures)
        self.supply.ignore_output_off = Defects(cfg.sim.defects).has("supply_ignores_output_off")
        self._servers: list[ScpiServer] = []
        self.console: ConsoleServer | None = None
        self.bus: can.BusABC | None = None
        self.notifier: can.Notifier | None = None
        self.flash: FlashModel | None = None
        self.board: Board | None = None
        self._stopped = threading.Event()
        self._switch_interval: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> BenchConfig:
        """Bring up every endpoint; return the effective bench config (real ports)."""
        cfg = self.cfg
        problems = console_line_problems(cfg.profile.console) if cfg.console is not None else []
        if problems:  # the board would print lines the profile's patterns do not find
            raise BenchConfigError(f"bench {cfg.bench}: the virtual board's console lines (profile console.lines, "
                                   "else the default board's) do not match the profile's patterns: " + "; ".join(problems))
        # The board's tasks share one interpreter. At Python's default 5 ms GIL switch interval the SOC task
        # and the CAN controller wait up to 5 ms behind the UDS and flash threads: hand the GIL over more
        # often, as an RTOS preempts for its periodic task (measured: p99 period error 2.7 -> 0.2-0.6 ms
        # under heavy host load, benchmarks/timing_fidelity.py). Restored by stop().
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL_S))
        cfg = self.cfg
        sim = cfg.sim
        assert sim is not None
        prebuild(cfg)  # a bench whose images are prebuilt .bin files: make missing ones (and their key) first
        for what, path in [("can.dbc", cfg.can.dbc or cfg.profile.can.dbc), *(("sim.trusted_keys", k) for k in sim.trusted_keys)]:
            if path is None or not Path(path).is_file() and not (what == "sim.trusted_keys" and _generated_dev_key(cfg, Path(path))):
                raise BenchConfigError(f"bench {cfg.bench}: {what} {path} does not exist")
        self.flash = self._open_flash()
        trusted = load_trusted_keys(sim.trusted_keys)

        psu_host, psu_port = socket_resource_address(cfg.psu.resource)
        psu_server = ScpiServer(self.supply, host=psu_host, port=psu_port)
        psu_port = _listen(psu_server, "psu.resource", psu_host, psu_port)
        self._servers.append(psu_server)
        endpoints = {"psu": _with_port(cfg.psu.resource, psu_port)}
        if cfg.load is not None:
            host, port = socket_resource_address(cfg.load.resource)
            load_server = ScpiServer(self.battery, host=host, port=port)
            port = _listen(load_server, "load.resource", host, port)
            self._servers.append(load_server)
            endpoints["load"] = _with_port(cfg.load.resource, port)
        if cfg.console is not None:
            host, port = socket_url_address(cfg.console.url)
            self.console = ConsoleServer(host=host, port=port)
            port = _listen(self.console, "console.url", host, port)
            endpoints["console"] = f"socket://{host}:{port}"
        self.bus = open_bus(cfg.can, sender_stamps=True)  # frames keep the board's CAN controller stamps
        self.notifier = can.Notifier(self.bus, [], timeout=0.05)
        console_write: Callable[[str], None] = (lambda line: None)
        if self.console is not None:
            console_write = self.console.write_line  # type: ignore[assignment]
        pack = PackSource(self.battery.pack_current, self.battery.temperatures, self.battery.cell_voltages)
        self.board = Board(cfg, self.flash, trusted, self.bus, self.notifier, pack, console_write)
        self.supply.set_load(cfg.psu.channel, self.board.supply_current)
        self.supply.add_listener(cfg.psu.channel, self.board.supply_changed)
        self.effective = cfg.with_endpoints(endpoints)
        return self.effective

    def stop(self) -> None:
        """Power the board down and close every endpoint."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.board is not None:
            self.board.shutdown()
        if self.notifier is not None:
            self.notifier.stop(timeout=1.0)
        if self.bus is not None:
            self.bus.shutdown()
        for server in self._servers:
            server.stop()
        if self.console is not None:
            self.console.stop()
        if self.flash is not None:
            self.flash.close()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)

    def __enter__(self) -> "VirtualBench":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def endpoints(self) -> dict[str, str]:
        """Where each endpoint listens (printed by `hil sim`)."""
        cfg = self.effective or self.cfg
        out = {"can": f"{cfg.can.interface}:{cfg.can.channel} {cfg.can.args or ''}".strip(),
               "psu": cfg.psu.resource}
        if cfg.load is not None:
            out["load"] = cfg.load.resource
        if cfg.console is not None:
            out["console"] = cfg.console.url
        assert cfg.sim is not None
        out["flash"] = str(cfg.sim.flash_file)
        return out

    # ------------------------------------------------------------------ flash
    def _open_flash(self) -> FlashModel:
        cfg = self.cfg
        sim = cfg.sim
        assert sim is not None
        path = Path(sim.flash_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists()
        timing = {} if sim.flash_timing == "fast" else {
            "erase_s": sim.erase_sector_ms / 1000.0, "program_s_per_phrase": sim.program_us_per_phrase / 1e6}
        flash = FlashModel.open_file(path, cfg.flash_layout, **timing)
        if fresh:
            self._factory_program(flash)
        return flash

    def _factory_program(self, flash: FlashModel) -> None:
        """A new board: the initial image confirmed in the primary slot, default configuration in NV."""
        cfg = self.cfg
        assert cfg.sim is not None
        ensure_dev_keys(cfg.images.keys_dir)
        # initial_image: a recipe, an image file, or an image role of the bench's catalogue ("baseline")
        image = load_image(catalogue_of(cfg).get(cfg.sim.initial_image, cfg.sim.initial_image), cfg)
        interrupter = flash.interrupter
        flash.interrupter = None  # factory programming happens at full speed, before the board exists
        try:
            board_parts(cfg.profile).bootloader.factory_program(flash, cfg.flash_layout, image, cfg.profile)
            NvStore(flash, cfg.flash_layout).update(config=DEFAULT_CONFIG[1], config_schema=1, security_counter=0,
                                                    boot_count=0, update={"state": 0, "reason": 0, "target": [0, 0, 0]})
        finally:
            flash.interrupter = interrupter


@contextlib.contextmanager
def running_bench(cfg: BenchConfig, *, power_on: bool = False) -> Iterator[tuple[VirtualBench, BenchConfig]]:
    """An in-process virtual bench for the duration of a with-block."""
    bench = VirtualBench(cfg)
    try:
        effective = bench.start()
        if power_on:
            bench.supply.power_on(cfg.psu.channel, cfg.psu.nominal_voltage, cfg.psu.current_limit)
        yield bench, effective
    finally:
        bench.stop()


