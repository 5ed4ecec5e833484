"""Loopback endpoints of its own for one virtual bench of a test (several run side by side).

Fixed ports, since a second process (`hil doctor` beside `hil sim`) must find the bench from its YAML,
and all of them below Linux's ephemeral range (32768-60999): a port there may be handed to any
client socket of this host at any moment, and a bench that cannot bind its port fails its test.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass


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


def private_ports() -> BenchPorts:
    """Random group and ports (UDP 12000-19999, TCP 20000-32002): a collision needs the same draw twice."""
    n = uuid.uuid4().int
    return BenchPorts(group=f"239.74.{n % 250 + 1}.{(n >> 8) % 250 + 1}", udp_port=12000 + (n >> 16) % 8000,
                      tcp_base=20000 + (n >> 32) % 12000)
