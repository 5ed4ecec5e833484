"""Evidence plots are real PNGs drawn from the evidence files (timing CSV, supply samples, sweep points)."""

from __future__ import annotations

import csv
from pathlib import Path

from hil.bench.config import TimingBudgets
from hil.report.plots import plot_outcome_strip, plot_supply, plot_timing
from hil.timing.soc_timing import CycleTimingStream

PNG = b"\x89PNG\r\n\x1a\n"


def test_timing_plots_from_the_samples_csv(tmp_path: Path) -> None:
    stream = CycleTimingStream(100.0, counter_modulo=16, start_time=0.0, csv_path=tmp_path / "timing.csv")
    for i in range(1, 40):
        t = 0.1 * i + (0.03 if i == 20 else 0.0)  # one late frame, outside the 15 ms band
        stream.on_soc(t, i % 16)
        stream.on_diag(t, 2000, 100, i)
    stream.finish(4.0)
    paths = plot_timing(tmp_path / "timing.csv", tmp_path, TimingBudgets(period_tolerance_ms=15), "unit",
                        [("erase start", 1.0)], stem="timing")
    assert [p.name for p in paths] == ["timing-period.png", "timing-histogram.png"]
    assert all(p.read_bytes().startswith(PNG) and p.stat().st_size > 5000 for p in paths)


def test_supply_plot_and_outcome_strip(tmp_path: Path) -> None:
    samples = tmp_path / "supply-samples.csv"
    with samples.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time_s", "voltage_v", "current_a"])
        for i in range(100):
            on = not 40 <= i < 60
            w.writerow([f"{i * 0.02:.3f}", 12.0 if on else 0.0, 0.15 if on else 0.0])
    png = plot_supply(samples, tmp_path / "supply-cut.png", "unit", [("output False", 0.8)], window=(0.3, 1.8))
    assert png.read_bytes().startswith(PNG)
    strip = plot_outcome_strip([(0, "old"), (1, "old"), (1, "new"), (2, "new"), (3, "brick")], tmp_path / "s.png", "unit")
    assert strip.read_bytes().startswith(PNG)
