"""Evidence plots (matplotlib, Agg backend, PNG): SOC timing, the supply around a power cut, sweep outcomes.

Plots are written into a test's evidence directory, where the plugin attaches every file to the
report. They are drawn from the files beside them (the timing CSV, the supply samples) so a plot
never shows anything the evidence does not hold.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on a bench PC or in CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

#: Figure size (inches) and resolution of every evidence plot.
SIZE = (9.0, 4.0)
DPI = 100
#: Colours of a saved plot: line plots need few, and a palette PNG is a third of an RGBA one (the report embeds
#: every plot of every test).
PALETTE_COLOURS = 128


def write_png(fig: Any, path: Path | str) -> Path:
    """Write `fig` to `path` as a palette PNG and free it."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT).save(
            path, format="PNG", optimize=True)
    return Path(path)


def _read_timing_csv(path: Path) -> tuple[list[float], list[float], list[float], list[float]]:
    """(time_s, period_ms) of SOC frames and (time_s, exec_ms) of CycleDiag frames from a timing CSV."""
    t_p: list[float] = []
    periods: list[float] = []
    t_e: list[float] = []
    execs: list[float] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["frame"] == "soc" and row["period_ms"]:
                t_p.append(float(row["time_s"]))
                periods.append(float(row["period_ms"]))
            elif row["frame"] == "diag" and row["exec_ms"]:
                t_e.append(float(row["time_s"]))
                execs.append(float(row["exec_ms"]))
    return t_p, periods, t_e, execs


def plot_timing(csv_path: Path, out_dir: Path, budgets: Any, title: str,
                marks: Sequence[tuple[str, float]] = (), stem: str = "timing") -> list[Path]:
    """Period over time with the budget band, and the period histogram; returns the PNG paths.

    `marks` are (label, seconds since the recording start) drawn as vertical lines (phases).
    """
    out_dir = Path(out_dir)
    t, periods, _t_e, _execs = _read_timing_csv(Path(csv_path))
    nom = budgets.soc_period_ms
    tol = budgets.period_tolerance_ms
    f = budgets.marginal_fraction
    paths = []

    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    ax.axhspan(nom - tol, nom + tol, color="tab:green", alpha=0.12, label=f"budget {nom:g} ± {tol:g} ms")
    ax.axhspan(nom - f * tol, nom + f * tol, color="tab:green", alpha=0.12, label=f"inside the marginal band ({f:.0%})")
    ax.axhline(nom, color="tab:green", lw=0.8)
    if periods:
        ax.plot(t, periods, ".", ms=3, color="tab:blue", label=f"period ({len(periods)} samples)")
        outside = [(x, y) for x, y in zip(t, periods) if abs(y - nom) > tol]
        if outside:
            ax.plot([x for x, _ in outside], [y for _, y in outside], "x", color="tab:red", ms=7,
                    label=f"outside the budget ({len(outside)})")
        # Gaps of whole seconds (a reset, an install) would flatten the band: clip, and mark them at the top.
        top = nom + 4 * max(tol, 1.0)
        clipped = [(x, y) for x, y in zip(t, periods) if y > top]
        if clipped:
            ax.set_ylim(0, top * 1.05)
            ax.plot([x for x, _ in clipped], [top] * len(clipped), "^", color="tab:red", ms=8,
                    label=f"gaps above {top:g} ms ({len(clipped)}; longest {max(y for _, y in clipped):,.0f} ms)")
    for label, x in marks:
        ax.axvline(x, color="tab:gray", ls="--", lw=0.8)
        ax.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right", fontsize=7)
    ax.set_xlabel("time since the recording started (s)")
    ax.set_ylabel("SOC period (ms)")
    ax.set_title(f"{title}: SOC period over time")
    paths.append(_save(fig, ax, out_dir / f"{stem}-period.png"))

    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    if periods:
        ax.hist(periods, bins=min(100, max(10, len(periods) // 5)), color="tab:blue")
    ax.axvspan(nom - tol, nom + tol, color="tab:green", alpha=0.12, label="budget")
    ax.axvline(nom, color="tab:green", lw=0.8)
    ax.set_xlabel("SOC period (ms)")
    ax.set_ylabel("cycles")
    ax.set_title(f"{title}: period histogram")
    paths.append(_save(fig, ax, out_dir / f"{stem}-histogram.png"))
    return paths


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Legend and grid, then write the figure to `path` and free it."""
    ax.legend(loc="upper right", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return write_png(fig, path)


def plot_supply(samples_csv: Path, out_path: Path, title: str, marks: Sequence[tuple[str, float]] = (),
                window: tuple[float, float] | None = None) -> Path:
    """Measured supply voltage and current over time (a supply-samples CSV), cut instants marked.

    `window` (start, end in seconds) zooms in, e.g. around one cut.
    """
    t: list[float] = []
    volts: list[float] = []
    amps: list[float] = []
    with open(samples_csv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            t.append(float(row["time_s"]))
            volts.append(float(row["voltage_v"]))
            amps.append(float(row["current_a"]))
    fig, (av, ai) = plt.subplots(2, 1, sharex=True, figsize=(SIZE[0], SIZE[1] * 1.4), dpi=DPI)
    av.plot(t, volts, "-", drawstyle="steps-post", color="tab:orange")
    av.set_ylabel("voltage (V)")
    ai.plot(t, amps, "-", drawstyle="steps-post", color="tab:purple")
    ai.set_ylabel("current (A)")
    ai.set_xlabel("time since the recording started (s)")
    for ax in (av, ai):
        ax.grid(alpha=0.3)
        for label, x in marks:
            ax.axvline(x, color="tab:red", ls="--", lw=0.8)
    if window is not None:
        ai.set_xlim(*window)
        marks = [(label, x) for label, x in marks if window[0] <= x <= window[1]]
    for label, x in marks:
        av.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right", fontsize=7)
    av.set_title(f"{title}: measured voltage and current")
    fig.tight_layout()
    return write_png(fig, out_path)


#: Colours of sweep outcomes (anything else is drawn red: a brick or an inconsistent status).
OUTCOME_COLOURS = {"old": "tab:blue", "new": "tab:green", "new/old": "tab:cyan"}


def plot_outcome_strip(points: Sequence[tuple[int, str]], out_path: Path, title: str) -> Path:
    """One cell per flash operation index: which image the board booted after the cut(s) there.

    `points` are (operation index, outcome) pairs; several cuts at one index (between, torn) share
    its cell, which is red if any of them bricked and shows both images if both occurred.
    """
    by_index: dict[int, set[str]] = {}
    for index, outcome in points:
        by_index.setdefault(index, set()).add(outcome)
    cells = {i: ("brick" if "brick" in o else "/".join(sorted(o, reverse=True))) for i, o in by_index.items()}
    fig, ax = plt.subplots(figsize=(SIZE[0], 1.9), dpi=DPI)
    labels = sorted(set(cells.values()), key=lambda o: (o not in OUTCOME_COLOURS, o))
    for label in labels:
        xs = [i for i, o in cells.items() if o == label]
        ax.bar(xs, [1] * len(xs), width=1.0, color=OUTCOME_COLOURS.get(label, "tab:red"),
               label=f"{label} ({len(xs)} operations)")
    ax.set_xlim(min(cells, default=0) - 0.5, max(cells, default=0) + 0.5)
    ax.set_yticks([])
    ax.set_xlabel("flash operation index of the cut")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    return write_png(fig, out_path)
