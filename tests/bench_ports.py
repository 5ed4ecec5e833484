"""The framework's tests run beside any validation run: their benches are their own.

A test never uses a shipped bench (`benches/**/*.yaml`) as it is: it takes a private copy with its
own name (the bench lock), its own CAN channel or multicast group and port, its own TCP ports and
its own flash file (`private_bench_file`, `private_config`). `tests/conftest.py` holds every test to
it (`footprint_*`, `shared_with_shipped`) and gives the run its own lock directory.

Fixed ports, since a second process (`hil doctor` beside `hil sim`) must find the bench from its YAML,
and all of them below Linux's ephemeral range (32768-60999): a port there may be handed to any
client socket of this host at any moment, and a bench that cannot bind its port fails its test.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hil.bench.config import BenchConfig, _resolve_paths

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ROOT / "benches"


@dataclass(frozen=True)
class BenchPorts:
    """A multicast group and UDP port for CAN, and three TCP ports (supply, load, console)."""

    group: str
    udp_port: int
    tcp_base: int

    @property
    def psu(self) -> str:
        return f"TCPIP0::127.0.0.1::{self.tcp_base}::SOCKET"

    @property
    def load(self) -> str:
        return f"TCPIP0::127.0.0.1::{self.tcp_base + 1}::SOCKET"

    @property
    def console(self) -> str:
        return f"socket://127.0.0.1:{self.tcp_base + 2}"


# --------------------------------------------------------------------------- what a bench takes of the host
@dataclass(frozen=True)
class Footprint:
    """What of the host a bench takes: its lock name, flash file, CAN channel (multicast group:port) and TCP ports."""

    source: str
    name: str | None = None
    flash: Path | None = None
    channels: frozenset[str] = field(default_factory=frozenset)
    tcp: frozenset[int] = field(default_factory=frozenset)


_TCP_PORT = re.compile(r"(?:TCPIP\d*::[^:]+::(\d+)::SOCKET|socket://[^:/]+:(\d+))", re.IGNORECASE)


def _ports(*resources: Any) -> frozenset[int]:
    found = set()
    for resource in resources:
        m = _TCP_PORT.fullmatch(resource) if isinstance(resource, str) else None
        if m and int(m.group(1) or m.group(2)) != 0:  # 0: the OS picks a free port
            found.add(int(m.group(1) or m.group(2)))
    return frozenset(found)


def _channel(interface: Any, channel: Any, args: Any) -> frozenset[str]:
    if channel is None:
        return frozenset()
    port = args.get("port") if isinstance(args, dict) else None
    return frozenset({f"{interface}:{channel}" + (f":{port}" if port is not None else "")})


def footprint_of_data(data: Any, base: Path, source: str) -> Footprint:
    """The footprint of a bench file's raw YAML (relative paths against `base`, as load_bench resolves them)."""
    if not isinstance(data, dict):
        return Footprint(source)
    section = lambda key: data.get(key) if isinstance(data.get(key), dict) else {}  # noqa: E731
    can, sim = section("can"), section("sim")
    flash = sim.get("flash_file")
    return Footprint(source, name=data.get("bench") if isinstance(data.get("bench"), str) else None,
                     flash=(base / flash).resolve() if isinstance(flash, str) else None,
                     channels=_channel(can.get("interface"), can.get("channel"), can.get("args")),
                     tcp=_ports(section("psu").get("resource"), section("load").get("resource"),
                                section("console").get("url")))


def footprint_of_file(path: Path) -> Footprint | None:
    """The footprint of a bench file (None when it is no readable YAML mapping: the run fails on it anyway)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, ValueError):
        return None
    return footprint_of_data(data, Path(path).resolve().parent, str(path)) if isinstance(data, dict) else None


def footprint_of_config(cfg: BenchConfig) -> Footprint:
    """The footprint of a loaded bench."""
    return Footprint(str(cfg.source or cfg.bench), name=cfg.bench,
                     flash=Path(cfg.sim.flash_file).resolve() if cfg.sim is not None else None,
                     channels=_channel(cfg.can.interface, cfg.can.channel, cfg.can.args),
                     tcp=_ports(cfg.psu.resource, cfg.load.resource if cfg.load else None,
                                cfg.console.url if cfg.console else None))


@functools.cache
def shipped() -> tuple[Footprint, ...]:
    """Every bench file the repository ships (benches/, its racks and examples)."""
    found = []
    for path in sorted(BENCHES.rglob("*.yaml")):
        fp = footprint_of_file(path)
        if fp is not None and fp.name is not None:
            found.append(fp)
    return tuple(found)


def shared_with_shipped(fp: Footprint) -> list[str]:
    """What `fp` shares with a shipped bench, one phrase each ([] when nothing: the bench is private)."""
    shared = []
    for s in shipped():
        where = os.path.relpath(s.source, ROOT)
        if fp.name is not None and fp.name == s.name:
            shared.append(f"bench name {fp.name!r} (the lock of {where})")
        if fp.flash is not None and fp.flash == s.flash:
            shared.append(f"flash file {fp.flash} ({where})")
        shared += [f"CAN channel {c} ({where})" for c in sorted(fp.channels & s.channels)]
        shared += [f"TCP port {p} ({where})" for p in sorted(fp.tcp & s.tcp)]
    return shared


# --------------------------------------------------------------------------- private benches
#: This process's half of the TCP range (xdist worker gwN: N % 2), read at import: tests/conftest.py keeps the
#: xdist variables from the processes the tests start.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_LANE = int(_WORKER[2:]) % 2 if _WORKER[2:].isdigit() else 0

def _free_tcp(ports: range) -> bool:
    for port in ports:
        try:
            socket.create_server(("127.0.0.1", port)).close()  # SO_REUSEADDR, as the virtual bench binds
        except OSError:
            return False
    return True


def private_ports() -> BenchPorts:
    """Random group and ports (UDP 12000-19999, TCP 20000-32002), none of a shipped bench, the TCP ones free now.

    Two processes of one `make test` (xdist workers) draw from halves of the TCP range of their own.
    """
    lane = _LANE
    taken = set().union(*(s.tcp for s in shipped()))
    taken_channels = set().union(*(s.channels for s in shipped()))
    for _ in range(100):
        n = uuid.uuid4().int
        ports = BenchPorts(group=f"239.74.{n % 250 + 1}.{(n >> 8) % 250 + 1}", udp_port=12000 + (n >> 16) % 8000,
                           tcp_base=20000 + lane * 6000 + (n >> 32) % 5997)
        tcp = range(ports.tcp_base, ports.tcp_base + 3)
        if taken.isdisjoint(tcp) and f"udp_multicast:{ports.group}:{ports.udp_port}" not in taken_channels \
                and _free_tcp(tcp):
            return ports
    raise RuntimeError("no free TCP ports found for a private bench in 100 draws")


def private_bench_data(source: Path | str, tmp_path: Path, *, prefix: str = "test") -> dict[str, Any]:
    """The YAML of a shipped bench file made a test's own, as a mapping to change further and write.

    Own name (`<prefix>-<random>`), own CAN channel (an in-process `virtual` one) or multicast group
    and port, own TCP ports (fixed ones replaced; 0 stays: the OS picks), a flash file in `tmp_path`,
    and every relative path made absolute so that the copy can live anywhere.
    """
    source = ROOT / source if not Path(source).is_absolute() else Path(source)
    data = yaml.safe_load(source.read_text())
    base = source.resolve().parent
    if "dbc" not in data.get("can", {}) and not data.get("dut", {}).get("profile"):
        data["can"]["dbc"] = str(base / "dbc/bms.dbc")  # load_bench's default next to the original
    _resolve_paths(data, base)
    tag = uuid.uuid4().hex[:8]
    data["bench"] = f"{prefix}-{tag}"
    can = data["can"]
    if can.get("interface") == "udp_multicast":
        ports = private_ports()
        can["channel"] = ports.group
        can["args"] = {**(can.get("args") or {}), "port": ports.udp_port}
        for section, key, value in (("psu", "resource", ports.psu), ("load", "resource", ports.load),
                                    ("console", "url", ports.console)):
            if isinstance(data.get(section), dict) and _ports(data[section].get(key)):
                data[section][key] = value
    else:
        can["channel"] = f"{prefix}-{tag}"
    if isinstance(data.get("sim"), dict):
        data["sim"]["flash_file"] = str(tmp_path / f"{data['bench']}.flash")
    return data


def write_bench(data: dict[str, Any], path: Path) -> Path:
    """Write a bench mapping to `path` (YAML) and return the path."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def private_bench_file(source: Path | str, tmp_path: Path, *, prefix: str = "test", name: str = "bench.yaml") -> Path:
    """A private copy of a shipped bench file in `tmp_path` (see `private_bench_data`)."""
    return write_bench(private_bench_data(source, tmp_path, prefix=prefix), tmp_path / name)


def private_config(cfg: BenchConfig, tmp_path: Path, *, prefix: str = "test", **sim: Any) -> BenchConfig:
    """A loaded bench made a test's own: name, CAN channel (or group and port), TCP ports, flash file in `tmp_path`.

    `sim`: further fields of the `sim:` section (flash_timing="fast", ...).
    """
    tag = uuid.uuid4().hex[:8]
    update: dict[str, Any] = {"bench": f"{prefix}-{tag}"}
    if cfg.can.interface == "udp_multicast":
        ports = private_ports()
        update["can"] = cfg.can.model_copy(update={"channel": ports.group, "args": {**cfg.can.args, "port": ports.udp_port}})
        if _ports(cfg.psu.resource):
            update["psu"] = cfg.psu.model_copy(update={"resource": ports.psu})
        if cfg.load is not None and _ports(cfg.load.resource):
            update["load"] = cfg.load.model_copy(update={"resource": ports.load})
        if cfg.console is not None and _ports(cfg.console.url):
            update["console"] = cfg.console.model_copy(update={"url": ports.console})
    else:
        update["can"] = cfg.can.model_copy(update={"channel": f"{prefix}-{tag}"})
    if cfg.sim is not None:
        update["sim"] = cfg.sim.model_copy(update={"flash_file": tmp_path / f"{prefix}-{tag}.flash", **sim})
    return cfg.model_copy(update=update)


def udp_bus_pair(dbc: Path, **can_fields: Any) -> tuple[Any, Any]:
    """Two buses as `open_bus` makes them for a udp_multicast bench on a private group and port; the first one
    with `can_fields` (pacing, FD), the second plain FD/classic alike. Skips where the host has no multicast."""
    import pytest

    from hil.bench.config import CanConfig
    from hil.drivers.canbus import open_bus
    from hil.errors import BenchBroken

    ports = private_ports()
    base = {"interface": "udp_multicast", "channel": ports.group, "args": {"port": ports.udp_port}, "dbc": dbc}
    fd = {k: v for k, v in can_fields.items() if k in ("fd", "data_bitrate")}
    try:
        return open_bus(CanConfig(**base, **can_fields)), open_bus(CanConfig(**base, **fd))
    except BenchBroken as exc:  # pragma: no cover - a host without multicast on loopback
        pytest.skip(str(exc))
