"""Figures of the HTML report, each returned as base64-encoded PNG: plate
heatmaps per read, viability time courses with the vehicle band, and
dose-response curves with IC50 per day.

matplotlib's object API only (``Figure`` + Agg canvas, no pyplot state): safe
off the main thread, nothing to close, nothing leaks. Fixed margins instead of
``tight_layout`` and no minor log-tick labels keep a figure near 0.1 s.
"""

from __future__ import annotations

import base64
import io
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, NullLocator

from nvir_agent.ingest import filenames as naming
from nvir_agent.monitor.platemap import FORMATS
from nvir_agent.monitor.timecourse import PlateTimecourse, WellTimepoint
from nvir_agent.report.dili import CompoundDayFit

DPI = 80
VMAX = 1.2
# fixed margins (tight_layout is slow); legends sit right of the axes
_MARGINS = {"left": 0.11, "right": 0.64, "bottom": 0.16, "top": 0.9}
_FIGSIZE = (6.0, 3.0)


def format_number(v: float | None, digits: int = 3) -> str:
    """Short number for tables and labels: – for missing, ∞ for infinite."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if math.isinf(v):
        return "∞"
    return f"{v:.{digits}g}"


def ic50_label(ic50: float, ci: tuple[float, float], converged: bool,
               infinity: str = "∞") -> str:
    """'IC50 2.1 µM [1.6–2.8]', 'IC50 ∞ (>10× top conc.)' or 'fit failed'."""
    if not converged:
        return "fit failed"
    if math.isinf(ic50):
        return f"IC50 {infinity} (>10× top conc.)"
    return f"IC50 {format_number(ic50)} µM [{format_number(ci[0])}–{format_number(ci[1])}]"


def png_base64(fig: Figure) -> str:
    """The figure as base64 PNG text for a data: URI."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plate_grid(tc: PlateTimecourse) -> tuple[int, int]:
    """(rows, columns) of the plate: from its map, else the smallest standard
    format holding every imaged well (8×12, 16×24, 32×48)."""
    if tc.plate_map is not None and tc.plate_map.format in FORMATS:
        return FORMATS[tc.plate_map.format]
    rows = cols = 0
    for p in tc.points:
        try:
            r, c = naming.parse_well(p.well)
        except ValueError:
            continue
        rows, cols = max(rows, r), max(cols, c)
    for fmt in sorted(FORMATS):
        if rows <= FORMATS[fmt][0] and cols <= FORMATS[fmt][1]:
            return FORMATS[fmt]
    return rows, cols


def heatmap_png(tc: PlateTimecourse, reads: Sequence[int]) -> str:
    n_rows, n_cols = plate_grid(tc)
    mapped = tc.plate_map is not None
    ncols = min(3, len(reads))
    nrows = math.ceil(len(reads) / ncols)
    big = n_cols > 12
    cmap = colormaps["RdYlGn"].with_extremes(bad="#d0d0d0")
    scale = 1.6 if big else 1.0
    fig = Figure(figsize=(3.6 * ncols * scale + 1.0, 2.7 * nrows * scale))
    fig.subplots_adjust(left=0.04, right=0.86, bottom=0.06, top=0.92, wspace=0.15, hspace=0.3)
    for k, tp in enumerate(reads):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        grid = np.full((n_rows, n_cols), np.nan)
        for p in tc.points:
            if p.timepoint != tp:
                continue
            value = p.viability_rel_control if mapped else p.viability_rel_baseline
            try:
                r, c = naming.parse_well(p.well)
            except ValueError:
                continue
            if value is not None and 1 <= r <= n_rows and 1 <= c <= n_cols:
                grid[r - 1, c - 1] = value
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=VMAX,
                       aspect="equal", interpolation="nearest")
        ax.set_title(f"read {tp}", fontsize=9)
        step = 1 if n_cols <= 12 else 2
        ax.set_xticks(range(0, n_cols, step), [str(c + 1) for c in range(0, n_cols, step)],
                      fontsize=6)
        ax.set_yticks(range(n_rows), [naming.row_letters(r + 1) for r in range(n_rows)],
                      fontsize=6)
        if tc.plate_map is not None and n_cols <= 12:
            for well, a in tc.plate_map.wells.items():
                if a.role == "vehicle":
                    r, c = naming.parse_well(well)
                    ax.text(c - 1, r - 1, "V", ha="center", va="center", fontsize=6)
    label = "viability / vehicle median" if mapped else "viability / own first read"
    cax = fig.add_axes((0.89, 0.15, 0.015, 0.7))
    fig.colorbar(im, cax=cax, label=label)
    return png_base64(fig)


def vehicle_band(points: Iterable[WellTimepoint]) -> dict[int, tuple[float, float]]:
    """time point → (median, standard deviation) of vehicle wells relative to control."""
    by_tp: dict[int, list[float]] = defaultdict(list)
    for p in points:
        if p.role == "vehicle" and p.counted and p.viability_rel_control is not None:
            by_tp[p.timepoint].append(p.viability_rel_control)
    return {tp: (statistics.median(v), statistics.pstdev(v)) for tp, v in sorted(by_tp.items())}


def timecourse_png(compound: str, points: Sequence[WellTimepoint],
                       band: Mapping[int, tuple[float, float]]) -> str:
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.add_subplot(1, 1, 1)
    if band:
        tps = list(band)
        med = np.array([band[t][0] for t in tps])
        sd = np.array([band[t][1] for t in tps])
        ax.fill_between(tps, med - sd, med + sd, color="#9e9e9e", alpha=0.35, lw=0,
                        label="vehicle ± SD")
        ax.plot(tps, med, color="#616161", lw=1)
    by_conc: dict[float, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        if p.viability_rel_control is not None and p.counted:
            by_conc[p.concentration_uM or 0.0][p.timepoint].append(p.viability_rel_control)
    concs = sorted(by_conc)
    for i, c in enumerate(concs):
        series = by_conc[c]
        tps = sorted(series)
        colour = _colour(i, len(concs))
        ax.plot(tps, [statistics.median(series[t]) for t in tps], marker="o", ms=3, lw=1.2,
                color=colour, label=f"{c:g} µM")
    ax.set_title(compound, fontsize=10)
    ax.set_xlabel("read / day", fontsize=8)
    ax.set_ylabel("viability / vehicle", fontsize=8)
    ax.set_ylim(0, max(1.3, ax.get_ylim()[1]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    _legend(ax)
    fig.subplots_adjust(**_MARGINS)
    return png_base64(fig)


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)


def _colour(i: int, n: int) -> Any:
    return colormaps["viridis"](0.1 + 0.8 * (i / max(1, n - 1)))


def dose_response_png(compound: str, fits: Sequence[CompoundDayFit]) -> str:
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.add_subplot(1, 1, 1)
    fits = sorted(fits, key=lambda f: f.day)
    lo = min(min(f.concentrations) for f in fits)
    hi = max(max(f.concentrations) for f in fits)
    xs = np.logspace(math.log10(lo) - 0.3, math.log10(hi) + 0.3, 120)
    for i, f in enumerate(fits):
        colour = _colour(i, len(fits))
        ax.scatter(f.concentrations, f.medians, s=14, color=colour, zorder=3)
        label = f"day {f.day}: " + ic50_label(f.fit.ic50, f.fit.ic50_ci95, f.fit.converged,
                                               infinity="inf")
        if f.fit.converged:
            ax.plot(xs, f.fit.predict(xs), color=colour, lw=1.2, label=label)
            if math.isfinite(f.fit.ic50):
                ax.axvline(f.fit.ic50, color=colour, lw=0.8, ls=":")
        else:
            ax.plot([], [], color=colour, label=label)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=8))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.05, max(1.3, ax.get_ylim()[1]))
    ax.axhline(0.5, color="#bdbdbd", lw=0.6)
    ax.set_title(compound, fontsize=10)
    ax.set_xlabel("concentration (µM)", fontsize=8)
    ax.set_ylabel("median viability / vehicle", fontsize=8)
    ax.tick_params(labelsize=7)
    _legend(ax)
    fig.subplots_adjust(**_MARGINS)
    return png_base64(fig)
