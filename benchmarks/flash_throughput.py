"""TransferData throughput on the PACED virtual bus vs the ISO-TP ceiling (can-bus-limits.md).

Downloads a ~256 KiB image in blocks of the contract's maxNumberOfBlockLength (4094-byte requests, 4092 data bytes)
with the framework's own UdsClient, over udp_multicast between two processes, for classic CAN
500 kbit/s and CAN FD 500k/2M, and prints achieved KiB/s and the ratio to `isotp_ceiling_kib_s`.
The last line is one JSON object with the figures.

    python benchmarks/flash_throughput.py                 # the virtual bench (sim.yaml classic, sim-fd.yaml FD)
    python benchmarks/flash_throughput.py --target sink   # a minimal download sink in a subprocess (the peer)

Each bus is downloaded `--repeat` times (default 3) in one session and the median run is the figure: a
128 KiB download takes 0.9 s on FD, and one stall of the shared host (a 25 ms wait for a core) costs such a
run 3 %. Every run's ratio is printed too.

A target is a function `(bus) -> context manager yielding a Session` (see `sink_target`,
`bench_target`); swapping the target changes nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.bench import contract  # noqa: E402
from hil.drivers.canbus import PacedBus, frame_time_s, isotp_ceiling_kib_s, open_bus  # noqa: E402
from hil.bench.config import CanConfig, DutConfig, SecurityConfig, load_bench  # noqa: E402
from hil.errors import HilError  # noqa: E402

DBC = ROOT / "benches/dbc/bms.dbc"
IMAGE_SIZE = 256 * 1024


@dataclass(frozen=True)
class BusSpec:
    """One bus configuration to measure."""

    name: str
    fd: bool
    bitrate: int = 500_000
    data_bitrate: int | None = None


BUSES = {"classic": BusSpec("classic 500k", False), "fd": BusSpec("FD 500k/2M", True, data_bitrate=2_000_000)}


@dataclass
class Session:
    """What a target hands the measurement: a UDS client on a paced bus, ready for RequestDownload."""

    uds: object  # hil.drivers.uds.UdsClient
    address: int
    can_cfg: CanConfig
    bus: object = None  # the tester's bus (a PacedBus inside): other nodes' bus time during the download
    #: Before each download after the first (the bench erases the slot again: NOR programs only erased flash).
    prepare: Callable[[], None] = lambda: None


Target = Callable[[BusSpec], ContextManager[Session]]


# ---------------------------------------------------------------------- the download sink (server process)
def serve_sink(group: str, port: int, fd: bool, data_bitrate: int | None) -> None:
    """Run a minimal UDS download sink on the paced udp_multicast bus until stdin closes."""
    import can

    from hil.sim.uds_server import UdsServerTransport

    cfg = CanConfig(interface="udp_multicast", channel=group, fd=fd, data_bitrate=data_bitrate, pacing=True,
                    args={"port": port}, dbc=DBC)
    bus = open_bus(cfg)
    notifier = can.Notifier(bus, [], timeout=0.05)
    state = {"expected": 1, "received": 0}

    def handle(req: bytes) -> bytes | None:
        sid = req[0]
        if sid == 0x10:
            return bytes([0x50, req[1], 0, contract.P2_SERVER_MS]) + struct.pack(">H", contract.P2_STAR_SERVER_MS // 10)
        if sid == 0x34:
            state.update(expected=1, received=0)
            return b"\x74\x20" + struct.pack(">H", contract.MAX_BLOCK_LENGTH)
        if sid == 0x36:
            if req[1] != state["expected"]:
                return bytes([0x7F, 0x36, contract.Nrc.WRONG_BLOCK_SEQUENCE_COUNTER])
            state["expected"] = (state["expected"] + 1) & 0xFF
            state["received"] += len(req) - 2
            return b"\x76" + req[1:2]
        if sid == 0x37:
            return b"\x77"
        return bytes([0x7F, sid, contract.Nrc.SERVICE_NOT_SUPPORTED])

    server = UdsServerTransport(bus, notifier, fd=fd, handler=handle, bitrate_switch=data_bitrate is not None)
    server.start()
    print("READY", flush=True)
    sys.stdin.read()  # the parent closes stdin to stop us
    server.stop()
    notifier.stop()
    bus.shutdown()


@contextlib.contextmanager
def sink_target(spec: BusSpec) -> Iterator[Session]:
    """The download sink in its own process, on its own multicast group and port."""
    from hil.drivers.can import CanChannel
    from hil.drivers.uds import UdsClient

    group, port = f"239.74.{random.randint(100, 250)}.{random.randint(1, 250)}", random.randint(40000, 60000)
    proc = subprocess.Popen([sys.executable, __file__, "--serve-sink", group, str(port), str(int(spec.fd)),
                             str(spec.data_bitrate or 0)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    ready = threading.Event()
    threading.Thread(target=lambda: proc.stdout and proc.stdout.readline() == "READY\n" and ready.set(),
                     daemon=True).start()
    if not ready.wait(30.0):
        proc.kill()
        raise HilError(f"download sink did not start within 30 s (exit code {proc.poll()})")
    cfg = CanConfig(interface="udp_multicast", channel=group, fd=spec.fd, bitrate=spec.bitrate,
                    data_bitrate=spec.data_bitrate, pacing=True, args={"port": port}, dbc=DBC)
    can_channel = CanChannel(cfg)
    uds = UdsClient(can_channel, DutConfig(hardware_number="SINK", security=SecurityConfig(secret="00")))
    try:
        yield Session(uds, 0, cfg, bus=can_channel.bus)
    finally:
        uds.close()
        can_channel.close()
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()


BENCH_FILES = {False: ROOT / "benches/sim.yaml", True: ROOT / "benches/sim-fd.yaml"}


@contextlib.contextmanager
def bench_target(spec: BusSpec, bench_file: Path | None = None) -> Iterator[Session]:
    """The virtual bench (classic: benches/sim.yaml, FD: benches/sim-fd.yaml): programming session, unlock,
    erase; then the measured download into the secondary slot, with the board programming its flash."""
    from hil.bench.bench import Bench

    bench_file = bench_file or BENCH_FILES[spec.fd]
    cfg = load_bench(bench_file)
    if spec.fd != cfg.can.fd:
        raise HilError(f"{bench_file} is {'FD' if cfg.can.fd else 'classic'} CAN; cannot measure {spec.name} on it")
    with Bench.open(cfg) as bench:
        bench.power_on_and_wait()
        uds = bench.uds
        uds.session(contract.SESSION_PROGRAMMING)
        uds.unlock(bench.cfg.dut.security)
        address = struct.unpack(">III", uds.read_did(contract.Did.FLASH_LAYOUT))[0]
        uds.routine(contract.Routine.ERASE_MEMORY)
        yield Session(uds, address, bench.cfg.can, bench.can.bus,
                      prepare=lambda: uds.routine(contract.Routine.ERASE_MEMORY))


# ---------------------------------------------------------------------- measurement
def _paced(bus: object) -> PacedBus | None:
    """The PacedBus inside the tester's bus wrappers (None: not paced)."""
    while bus is not None and not isinstance(bus, PacedBus):
        bus = getattr(bus, "inner", None)
    return bus


def measure(target: Target, spec: BusSpec, size: int, repeat: int = 1) -> dict[str, Any]:
    """Download `size` bytes through `target` on `spec` `repeat` times; the median run's figures, and every ratio."""
    image = random.Random(1).randbytes(size)
    runs = []
    with target(spec) as session:
        uds = session.uds
        paced = _paced(session.bus)
        for n in range(repeat):
            if n:
                session.prepare()
            block_len = uds.request_download(session.address, len(image))  # type: ignore[attr-defined]
            per_block = block_len - 2
            others = paced.foreign_busy_s if paced is not None else 0.0
            start = time.perf_counter()
            counter = 1
            for offset in range(0, len(image), per_block):
                uds.transfer_data(counter, image[offset:offset + per_block])  # type: ignore[attr-defined]
                counter = (counter + 1) & 0xFF
            elapsed = time.perf_counter() - start
            # bus time of frames from other nodes than the board's UDS server (its periodic frames), and the vehicle's
            shared = (paced.foreign_busy_s - others) if paced is not None else 0.0
            runs.append((elapsed, block_len, shared))
            uds.request_transfer_exit()  # type: ignore[attr-defined]
    elapsed, block_len, shared = sorted(runs)[len(runs) // 2]  # the median run (the upper one of an even count)
    kw = dict(fd=spec.fd, bitrate=spec.bitrate, data_bitrate=spec.data_bitrate)
    ceiling = isotp_ceiling_kib_s(block_len, stuffing="worst", **kw)  # PacedBus paces worst-case stuffing
    achieved = size / elapsed / 1024.0
    # The ceiling is an exclusive bus. Frames of other nodes (the board's periodic frames, the vehicle's) took part of
    # it: what the tester received beyond the download's own flow control and response per block (as the ceiling).
    blocks = -(-size // (block_len - 2))
    own = blocks * 2 * frame_time_s(8, stuffing="worst", **kw)
    others_share = max(0.0, shared - own) / elapsed
    return {"bus": spec.name, "block_len": block_len, "bytes": size, "seconds": round(elapsed, 3),
            "kib_s": round(achieved, 2), "ceiling_kib_s": round(ceiling, 2), "ratio": round(achieved / ceiling, 3),
            "runs": [round(size / t / 1024.0 / isotp_ceiling_kib_s(b, stuffing="worst", **kw), 3) for t, b, _ in runs],
            "others_bus_share": round(others_share, 4),
            "ratio_of_bus_left": round(achieved / ceiling / (1.0 - others_share), 3),
            "ceiling_no_stuffing_kib_s": round(isotp_ceiling_kib_s(block_len, stuffing="none", **kw), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("sink", "bench"), default="bench",
                        help="bench: the virtual BMS board programming its flash (default); sink: a bare UDS sink")
    parser.add_argument("--bus", choices=("classic", "fd", "both"), default="both")
    parser.add_argument("--size", type=int, default=None,
                        help="image bytes (default: 256 KiB for the sink, the slot's 128 KiB for the bench)")
    parser.add_argument("--repeat", type=int, default=3, help="downloads per bus; the median run is the figure (default 3)")
    parser.add_argument("--bench-file", type=Path, default=None,
                        help="bench YAML (default: benches/sim.yaml for classic, benches/sim-fd.yaml for FD)")
    parser.add_argument("--serve-sink", nargs=4, metavar=("GROUP", "PORT", "FD", "DATA_BITRATE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.serve_sink:
        group, port, fd, dbr = args.serve_sink
        serve_sink(group, int(port), fd == "1", int(dbr) or None)
        return 0
    target: Target = sink_target if args.target == "sink" else (lambda spec: bench_target(spec, args.bench_file))
    specs = [BUSES["classic"], BUSES["fd"]] if args.bus == "both" else [BUSES[args.bus]]
    results = []
    for spec in specs:
        size = args.size or (IMAGE_SIZE if args.target == "sink"
                             else load_bench(args.bench_file or BENCH_FILES[spec.fd]).flash_layout.slot_size)
        r = measure(target, spec, size, args.repeat)
        results.append(r)
        runs = ", ".join(f"{x:.3f}" for x in r["runs"])
        print(f"{r['bus']:>13}: {r['kib_s']:7.2f} KiB/s in {r['seconds']:.2f} s, ceiling {r['ceiling_kib_s']:.2f} KiB/s "
              f"(worst-case stuffing, {r['block_len']}-byte blocks) -> ratio {r['ratio']:.3f} "
              f"(median of {len(r['runs'])}: {runs}); other nodes' frames took {r['others_bus_share']:.1%} of the bus "
              f"-> {r['ratio_of_bus_left']:.3f} of what was left", flush=True)
    print(json.dumps({"target": args.target, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
