"""Capture throughput: can the bench record and decode a classic 500 kbit/s bus flooded at its physical maximum?

A sender process floods the bus with 8-byte BMS_CycleDiag frames back to back at the highest frame
rate a 500 kbit/s classic CAN bus can carry (the frame length without stuff bits, from
`hil.drivers.canbus.frame_bits`: 111 bits, 4,505 frames/s; with worst-case stuffing a frame takes 135 bits,
3,704 frames/s). Each frame's CycleCounter is a sequence number. The receiving side is the bench's own
`CanChannel`, as the pytest plugin runs it: one python-can notifier, DBC decoding with cantools, and
the .blf and .asc trace loggers. The script prints frames sent, decoded, logged to each trace and
dropped (goal 0), and the receiving process's CPU share. The last line is JSON.

    .venv/bin/python benchmarks/can_capture.py                        # udp_multicast on loopback, 60 s
    .venv/bin/python benchmarks/can_capture.py --seconds 10 --interface virtual

udp_multicast puts the sender in its own process, as a real bus's traffic comes from outside; the
python-can `virtual` bus only works inside one process, so there the sender is a thread.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import can
import cantools

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.bench import contract  # noqa: E402
from hil.drivers.canbus import frame_bits, open_bus  # noqa: E402
from hil.bench.config import CanConfig  # noqa: E402
from hil.drivers.can import CanChannel  # noqa: E402

DBC = ROOT / "benches" / "dbc" / "bms.dbc"
BITRATE = 500_000


def max_frame_rate(bitrate: int = BITRATE, stuffing: str = "none") -> float:
    """Frames per second of back-to-back 8-byte classic frames (11-bit ID, intermission included)."""
    return bitrate / frame_bits(8, stuffing=stuffing)  # type: ignore[arg-type]


def _flood(cfg_json: str, rate: float, seconds: float, ready: "mp.synchronize.Event | threading.Event",
           result: "mp.Queue[tuple[int, float]] | None", out: list[tuple[int, float]] | None = None) -> None:
    """Send BMS_CycleDiag frames with CycleCounter = 0, 1, 2, ... on an absolute schedule at `rate`."""
    cfg = CanConfig.model_validate_json(cfg_json)
    bus = open_bus(cfg)
    db = cantools.database.load_file(str(DBC))
    spec = db.get_message_by_name(contract.MSG_CYCLE_DIAG)
    ready.wait(30)
    period = 1.0 / rate
    total = int(round(seconds * rate))
    start = time.perf_counter()
    n = 0
    try:
        while n < total:
            now = time.perf_counter()
            due = min(total, int((now - start) / period) + 1)  # frames whose slot has begun
            while n < due:
                data = spec.encode({"CycleCounter": n, "StartLatency": n % 65536, "ExecTime": 2000})
                bus.send(can.Message(arbitration_id=spec.frame_id, data=data, is_extended_id=False))
                n += 1
            ahead = start + n * period - time.perf_counter()
            if ahead > 0.001:
                time.sleep(ahead - 0.0005)
    finally:
        elapsed = time.perf_counter() - start
        bus.shutdown()
    if result is not None:
        result.put((n, elapsed))
    if out is not None:
        out.append((n, elapsed))


def _count_logged(path: Path) -> int:
    reader = can.BLFReader(str(path)) if path.suffix == ".blf" else can.ASCReader(str(path))
    return sum(1 for msg in reader if msg.arbitration_id == contract.CAN_ID[contract.MSG_CYCLE_DIAG])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--interface", choices=["udp_multicast", "virtual"], default="udp_multicast")
    ap.add_argument("--group", default="239.74.187.9", help="udp_multicast group (loopback)")
    ap.add_argument("--port", type=int, default=43279)
    ap.add_argument("--rate", type=float, default=None, help="frames/s (default: the physical maximum)")
    args = ap.parse_args(argv)

    rate = args.rate or max_frame_rate()
    if args.interface == "udp_multicast":
        cfg = CanConfig(interface="udp_multicast", channel=args.group, bitrate=BITRATE, dbc=DBC, args={"port": args.port})
    else:
        cfg = CanConfig(interface="virtual", channel=f"capture-{os.getpid()}", bitrate=BITRATE, dbc=DBC)
    print(f"flooding {cfg.interface}:{cfg.channel} with 8-byte frames at {rate:,.0f} frames/s for {args.seconds:g} s "
          f"(physical maximum of classic {BITRATE // 1000} kbit/s: {max_frame_rate():,.0f}/s without stuff bits, "
          f"{max_frame_rate(stuffing='worst'):,.0f}/s with worst-case stuffing)")

    work = Path(tempfile.mkdtemp(prefix="can-capture-"))
    traces = [work / "capture.blf", work / "capture.asc"]
    channel = CanChannel(cfg)
    decoded = 0
    last_seq = -1
    out_of_order = 0
    lock = threading.Lock()

    def on_frame(frame: object) -> None:
        nonlocal decoded, last_seq, out_of_order
        seq = int(frame.signals["CycleCounter"])  # type: ignore[attr-defined]
        with lock:
            decoded += 1
            if seq <= last_seq:
                out_of_order += 1
            last_seq = max(last_seq, seq)

    channel.start_trace(traces)
    cfg_json = cfg.model_dump_json()
    sent_box: list[tuple[int, float]] = []
    if cfg.interface == "udp_multicast":
        ctx = mp.get_context("spawn")
        ready_p = ctx.Event()
        result: "mp.Queue[tuple[int, float]]" = ctx.Queue()
        sender: mp.process.BaseProcess | threading.Thread = ctx.Process(
            target=_flood, args=(cfg_json, rate, args.seconds, ready_p, result), daemon=True)
        sender.start()
        time.sleep(1.0)  # the sender's bus is open before the clock starts
        ready_p.set()
    else:
        ready_t = threading.Event()
        result = None  # type: ignore[assignment]
        sender = threading.Thread(target=_flood, args=(cfg_json, rate, args.seconds, ready_t, None, sent_box), daemon=True)
        sender.start()
        ready_t.set()
    with channel.tap(contract.MSG_CYCLE_DIAG, on_frame):
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        sender.join(args.seconds + 60)
        if sender.is_alive():
            print("sender did not finish in time", file=sys.stderr)
            return 2
        sent, flood_s = result.get(timeout=10) if result is not None else sent_box[0]
        # Let the receive path drain (its CPU counts too): stop once nothing new arrived for half a second.
        seen = -1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                now_seen = decoded
            if now_seen == seen:
                break
            seen = now_seen
            time.sleep(0.5)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    channel.stop_trace()
    channel.close()
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    logged = {p.suffix.lstrip("."): _count_logged(p) for p in traces}
    achieved = sent / flood_s
    figures = {
        "interface": cfg.interface, "seconds": args.seconds, "target_fps": round(rate, 1),
        "achieved_fps": round(achieved, 1), "ratio_to_physical_max": round(achieved / max_frame_rate(), 4),
        "sent": sent, "decoded": decoded, "dropped": sent - decoded, "out_of_order": out_of_order,
        "logged_blf": logged["blf"], "logged_asc": logged["asc"],
        "dropped_blf": sent - logged["blf"], "dropped_asc": sent - logged["asc"],
        "flood_s": round(flood_s, 2), "receiver_cpu_s": round(cpu_s, 2),
        "receiver_cpu_share_of_one_core": round(cpu_s / flood_s, 3),
        # CPU per second of a bus at its physical maximum (independent of a sender that lagged behind):
        "receiver_cpu_share_at_max_rate": round(cpu_s / (sent / max_frame_rate()), 3),
        "receiver_cpu_us_per_frame": round(cpu_s / sent * 1e6, 1),
        "cpu_includes_sender": cfg.interface == "virtual",  # the virtual bus keeps the sender in this process
        "cores": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
    }
    print(f"sent {sent:,} frames ({achieved:,.0f}/s, {figures['ratio_to_physical_max']:.3f} of the physical maximum); "
          f"decoded {decoded:,}, dropped {sent - decoded:,}; logged .blf {logged['blf']:,}, .asc {logged['asc']:,}; "
          f"receiver CPU {cpu_s:.1f} s for {flood_s:.1f} s of flood = {cpu_s / flood_s:.0%} of one core, "
          f"{cpu_s / sent * 1e6:.0f} us per frame = {figures['receiver_cpu_share_at_max_rate']:.0%} of one core "
          f"at {max_frame_rate():,.0f} frames/s "
          f"(load average {figures['loadavg_1min']})")
    for p in traces:
        p.unlink(missing_ok=True)
    work.rmdir()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
