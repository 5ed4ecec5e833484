"""Benchmark: exhaustive power-fail sweep vs. MCUboot's simulator (~960 fail points/s on 2 cores).

MCUboot reference (docs/../reference: mcuboot-and-update-semantics.md): 128 KiB slots, 4 KiB sectors,
a 127,920-byte image, swap-using-scratch permanent upgrade 578 operations -> 577 points in ~0.6 s.
Here: the same slot geometry, an image of ~124 KiB, every scenario, cuts between operations and torn.

    .venv/bin/python benchmarks/power_fail_sweep.py [--workers 2] [--image-kib 124]

Prints one line per sweep and, last, one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from hil.bench.config import FlashLayout
from hil.images.mcuboot import load_trusted_keys
from hil.sim.sweep import sweep

MCUBOOT_POINTS_PER_S = 960.0
HARDWARE_ID = "BMS-HW-A2"


def build_image(workdir: Path, key: Path, version: str, security_counter: int, payload_bytes: int) -> bytes:
    """Sign `payload_bytes` of random payload with the imgtool CLI of this environment."""
    imgtool = Path(sys.executable).with_name("imgtool")
    raw = workdir / f"fw-{version}.bin"
    raw.write_bytes(os.urandom(payload_bytes))
    out = workdir / f"{version}.img"
    subprocess.run([str(imgtool), "sign", "-k", str(key), "--pad-header", "-H", "0x200", "--align", "8",
                    "-S", str(128 * 1024), "--max-sectors", "32", "-v", version, "-s", str(security_counter),
                    "--custom-tlv", "0xa0", HARDWARE_ID, "--custom-tlv", "0xa1", "0x0102", str(raw), str(out)],
                   check=True, capture_output=True, timeout=60)
    return out.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-kib", type=float, default=124.0, help="size of the new image")
    args = parser.parse_args()
    layout = FlashLayout(sector_size=4096, slot_sectors=32, nv_sectors=2, scratch_sectors=1, write_align=8)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        key = work / "bench-key.pem"
        subprocess.run([str(Path(sys.executable).with_name("imgtool")), "keygen", "-k", str(key), "-t", "ecdsa-p256"],
                       check=True, capture_output=True, timeout=60)
        overhead = 0x200 + 400  # header and TLVs
        new = build_image(work, key, "1.1.0", 2, int(args.image_kib * 1024) - overhead)
        old = build_image(work, key, "1.0.0", 1, int((args.image_kib - 2) * 1024) - overhead)
        trusted = load_trusted_keys([key])
    print(f"layout: 2 x {layout.slot_size // 1024} KiB slots, {layout.sector_size // 1024} KiB sectors; "
          f"images {len(old)} and {len(new)} bytes; {args.workers} worker(s)")
    figures: dict[str, object] = {"workers": args.workers, "image_bytes": len(new),
                                  "mcuboot_points_per_s": MCUBOOT_POINTS_PER_S, "sweeps": {}}
    total_points, total_s, total_bricks = 0, 0.0, 0
    runs = [("permanent", False, 0), ("install", False, 0), ("revert", False, 0),
            ("permanent", True, 0), ("install", True, 0), ("revert", True, 0), ("revert", True, 5)]
    for scenario, torn, multi in runs:
        report = sweep(layout, old, new, trusted, HARDWARE_ID, scenario=scenario, torn=torn, multi=multi,
                       seed=1, workers=args.workers)
        name = f"{scenario}{'-torn' if torn else ''}{f'-multi{multi}' if multi else ''}"
        ratio = report.points_per_s / MCUBOOT_POINTS_PER_S
        print(f"{name:18s} ops {report.total_ops:4d}  points {len(report.points):5d}  bricks {report.bricks}  "
              f"{report.elapsed_s:6.2f} s  {report.points_per_s:7.0f} points/s  x{ratio:.2f} MCUboot")
        figures["sweeps"][name] = {"ops": report.total_ops, "points": len(report.points),  # type: ignore[index]
                                   "bricks": report.bricks, "elapsed_s": round(report.elapsed_s, 3),
                                   "points_per_s": round(report.points_per_s, 1), "ratio_to_mcuboot": round(ratio, 2)}
        total_points += len(report.points)
        total_s += report.elapsed_s
        total_bricks += report.bricks
    overall = total_points / total_s if total_s else 0.0
    figures.update(points=total_points, bricks=total_bricks, elapsed_s=round(total_s, 3),
                   points_per_s=round(overall, 1), ratio_to_mcuboot=round(overall / MCUBOOT_POINTS_PER_S, 2))
    print(f"overall: {total_points} points in {total_s:.2f} s = {overall:.0f} points/s, "
          f"x{overall / MCUBOOT_POINTS_PER_S:.2f} MCUboot's ~{MCUBOOT_POINTS_PER_S:.0f}/s; {total_bricks} bricks")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
