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
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, NullLocator

from nvir_agent.monitor.timecourse import PlateTimecourse, WellTimepoint
from nvir_agent.plate import FORMATS, parse_well, row_letters
from nvir_agent.report.dili import CompoundDayFit
from nvir_agent.report.trust import UNLIKE_LABEL, conc_key, group_interval

DPI = 90
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
            r, c = parse_well(p.well)
        except ValueError:
            continue
        rows, cols = max(rows, r), max(cols, c)
    for fmt in sorted(FORMATS):
        if rows <= FORMATS[fmt][0] and cols <= FORMATS[fmt][1]:
            return FORMATS[fmt]
    return rows, cols


def compound_codes(names: Iterable[str]) -> dict[str, str]:
    """Short, distinct codes for compound names (first letters, longer when needed)."""
    names = sorted(set(names))
    for n in range(2, 8):
        codes = {name: name[:n] for name in names}
        if len(set(codes.values())) == len(codes):
            return codes
    return {name: f"{name[:2]}{i}" for i, name in enumerate(names)}


def _well_text(a: Any, codes: Mapping[str, str]) -> str:
    if a.role == "vehicle":
        return "V"
    if a.role in ("empty", "ignore"):
        return ""
    if a.role == "untreated":
        return "U"
    code = codes.get(a.compound or "", "?")
    if a.role == "positive":
        code = "+" + code
    conc = f"\n{a.concentration_uM:g}" if a.concentration_uM is not None else ""
    return code + conc


def _crosses(ax: Any, cells: Sequence[tuple[int, int]]) -> None:
    """A ✕ (white under black, visible on any colour) on each (column, row) cell."""
    d = 0.32
    segments = [seg for c, r in cells for seg in (
        [(c - d, r - d), (c + d, r + d)], [(c - d, r + d), (c + d, r - d)])]
    for colour, lw in (("white", 3.0), ("black", 1.3)):
        ax.add_collection(LineCollection(segments, colors=colour, linewidths=lw, zorder=4))


def heatmap_png(tc: PlateTimecourse, reads: Sequence[int]) -> str:
    """A layout panel (compound code and µM per well) and one viability panel per
    read: colour-blind-safe colours (cividis), ✕ on wells the counting rule
    excludes, hatched grey where an expected well has no value."""
    n_rows, n_cols = plate_grid(tc)
    mapped = tc.plate_map is not None
    big = n_cols > 12
    panels = len(reads) + (1 if mapped else 0)
    ncols = min(2 if not big else 1, panels)
    nrows = math.ceil(panels / ncols)
    cell = 0.36 if not big else 0.2
    w_panel, h_panel = n_cols * cell + 0.6, n_rows * cell + 0.7
    fig = Figure(figsize=(w_panel * ncols + 1.4, h_panel * nrows + 0.9))
    fig.subplots_adjust(left=0.05, right=0.86, bottom=0.10 if mapped else 0.04, top=0.96,
                        wspace=0.12, hspace=0.28)
    cmap = colormaps["cividis"].with_extremes(bad="#eeeeee")
    codes = compound_codes(a.compound for a in tc.plate_map.wells.values()
                           if a.compound) if mapped else {}
    label_size = 6.5 if not big else 4.5
    k = 0

    def axes(title: str) -> Any:
        nonlocal k
        k += 1
        ax = fig.add_subplot(nrows, ncols, k)
        ax.set_title(title, fontsize=10)
        step = 1 if not big else 2
        ax.set_xticks(range(0, n_cols, step), [str(c + 1) for c in range(0, n_cols, step)],
                      fontsize=8 if not big else 6)
        ax.set_yticks(range(n_rows), [row_letters(r + 1) for r in range(n_rows)],
                      fontsize=8 if not big else 6)
        ax.tick_params(length=0)
        ax.set_xlim(-0.5, n_cols - 0.5)
        ax.set_ylim(n_rows - 0.5, -0.5)
        return ax

    if mapped:
        ax = axes("plate layout (compound, µM)")
        ax.imshow(np.zeros((n_rows, n_cols)), cmap=colormaps["Greys"], vmin=0, vmax=1,
                  aspect="equal")
        for well, a in tc.plate_map.wells.items():  # type: ignore[union-attr]
            r, c = parse_well(well)
            if 1 <= r <= n_rows and 1 <= c <= n_cols:
                ax.text(c - 1, r - 1, _well_text(a, codes), ha="center", va="center",
                        fontsize=label_size, linespacing=0.9)
        ax.set_xticks(np.arange(-0.5, n_cols, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n_rows, 1), minor=True)
        ax.grid(which="minor", color="#bdbdbd", lw=0.5)
    expected = set(tc.plate_map.expected_wells()) if mapped else {p.well for p in tc.points}
    im = None
    any_unlike = False
    for tp in reads:
        ax = axes(f"time point {tp}")
        grid, excluded, unlike, have = read_cells(tc, tp, n_rows, n_cols, mapped)
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=VMAX,
                       aspect="equal", interpolation="nearest")
        holes = []
        for well in sorted(expected - have):
            try:
                r, c = parse_well(well)
            except ValueError:
                continue
            holes.append(Rectangle((c - 1.5, r - 1.5), 1, 1))
        if holes:
            ax.add_collection(PatchCollection(holes, facecolor="none", edgecolor="#9e9e9e",
                                              hatch="////", lw=0))
        if excluded:
            _crosses(ax, excluded)
        for c, r in unlike:  # as the review window's badge
            ax.text(c, r, "?", ha="center", va="center", fontsize=label_size + 2,
                    fontweight="bold", color="black", zorder=5,
                    path_effects=[patheffects.withStroke(linewidth=2.2, foreground="white")])
        any_unlike = any_unlike or bool(unlike)
    if im is not None:
        label = "viability / vehicle median" if mapped else "viability / own first time point"
        cax = fig.add_axes((0.89, 0.2, 0.018, 0.6))
        bar = fig.colorbar(im, cax=cax)
        bar.set_label(label, fontsize=9)
        bar.ax.tick_params(labelsize=8)
    notes = []
    if codes:
        legend = "   ".join(f"{code} = {name}" for name, code in sorted(codes.items(),
                                                                       key=lambda x: x[1]))
        notes += ["V vehicle", "+positive control", legend, "✕ excluded", "hatched: no data"]
    if any_unlike:
        notes.append(f"? images {UNLIKE_LABEL} (the score may be wrong)")
    if notes:
        fig.text(0.05, 0.015, " · ".join(notes), fontsize=8, wrap=True)
    return png_base64(fig)


def read_cells(tc: PlateTimecourse, tp: int, n_rows: int, n_cols: int, mapped: bool,
               ) -> tuple[np.ndarray, list[tuple[int, int]], list[tuple[int, int]], set[str]]:
    """One read's heatmap: the value grid (NaN: none), the (column, row) cells the
    counting rule excludes, the counted cells whose images are mostly unlike the
    model's training images, and the wells that have a point."""
    grid = np.full((n_rows, n_cols), np.nan)
    excluded: list[tuple[int, int]] = []
    unlike: list[tuple[int, int]] = []
    have: set[str] = set()
    for p in tc.points:
        if p.timepoint != tp:
            continue
        try:
            r, c = parse_well(p.well)
        except ValueError:
            continue
        if not (1 <= r <= n_rows and 1 <= c <= n_cols):
            continue
        value = p.viability_rel_control if mapped else p.viability_rel_baseline
        if not p.counted:
            excluded.append((c - 1, r - 1))
            have.add(p.well)
        elif value is not None:
            grid[r - 1, c - 1] = value
            have.add(p.well)
            if p.unlike_training:
                unlike.append((c - 1, r - 1))
    return grid, excluded, unlike, have


def vehicle_band(points: Iterable[WellTimepoint]) -> dict[int, tuple[float, float]]:
    """time point → (median, standard deviation) of vehicle wells relative to control."""
    by_tp: dict[int, list[float]] = defaultdict(list)
    for p in points:
        if p.role == "vehicle" and p.counted and p.viability_rel_control is not None:
            by_tp[p.timepoint].append(p.viability_rel_control)
    return {tp: (statistics.median(v), statistics.pstdev(v)) for tp, v in sorted(by_tp.items())}


def draw_vehicle_band(ax: Any, band: Mapping[int, tuple[float, float]],
                      label: str = "vehicle ± SD") -> None:
    """The vehicle wells' median ± SD per read as a grey band (``vehicle_band``)."""
    if not band:
        return
    tps = list(band)
    med = np.array([band[t][0] for t in tps])
    sd = np.array([band[t][1] for t in tps])
    ax.fill_between(tps, med - sd, med + sd, color="#9e9e9e", alpha=0.35, lw=0, label=label)
    ax.plot(tps, med, color="#616161", lw=1)


def timecourse_png(compound: str, points: Sequence[WellTimepoint],
                   band: Mapping[int, tuple[float, float]]) -> str:
    """Median viability per concentration over the time points, with error bars for
    its 90 % interval where the model gives intervals (replicates combined as
    :mod:`nvir_agent.report.trust` says)."""
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.add_subplot(1, 1, 1)
    draw_vehicle_band(ax, band)
    by_conc: dict[float, dict[int, list[WellTimepoint]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        if p.viability_rel_control is not None and p.counted:
            by_conc[p.concentration_uM or 0.0][p.timepoint].append(p)
    concs = sorted(by_conc)
    n_tps = len({tp for series in by_conc.values() for tp in series})
    any_bar = False
    for i, c in enumerate(concs):
        series = by_conc[c]
        tps = sorted(series)
        colour = _colour(i, len(concs))
        med = [statistics.median(p.viability_rel_control for p in series[t]) for t in tps]
        ax.plot(tps, med, marker="o", ms=3, lw=1.2, color=colour, label=f"{c:g} µM")
        # side by side at each time point, so the bars of several doses stay apart
        shift = (i - (len(concs) - 1) / 2) * min(0.06, 0.5 / max(len(concs), 1)) \
            if n_tps > 1 else 0.0
        bars = [(t + shift, m, ci) for t, m in zip(tps, med, strict=True)
                if (ci := group_interval(series[t], t)) is not None]
        if bars:
            any_bar = True
            ax.errorbar([b[0] for b in bars], [b[1] for b in bars],
                        yerr=[[max(b[1] - b[2][0], 0.0) for b in bars],
                              [max(b[2][1] - b[1], 0.0) for b in bars]],
                        fmt="none", ecolor=colour, elinewidth=0.9, capsize=2, alpha=0.8)
    if any_bar:
        ax.plot([], [], color="#424242", lw=0.9, marker="|", ms=6, label="90 % interval")
    ax.set_title(compound, fontsize=10)
    ax.set_xlabel("time point", fontsize=8)
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


def dose_response_png(compound: str, fits: Sequence[CompoundDayFit],
                      intervals: Mapping[tuple[int, float], tuple[float, float]] | None = None
                      ) -> str:
    """Every counted well as a dot, median and range per concentration, the fitted
    curve over the tested range only, the IC50 with its 95 %
    CI where it is reported as a number, and (``intervals``: (time point, µM) → low,
    high) the median's 90 % interval; the legend below the axes."""
    fits = sorted(fits, key=lambda f: f.day)
    entries = len(fits) + (1 if intervals else 0)
    legend_in = 0.72 + 0.165 * entries  # room under the axes for the x label and legend
    height = 3.0 + legend_in
    fig = Figure(figsize=(6.4, height))
    ax = fig.add_subplot(1, 1, 1)
    draw_dose_response(ax, fits, intervals=intervals)
    ax.set_title(compound, fontsize=11)
    ax.set_xlabel("concentration (µM)", fontsize=9)
    ax.set_ylabel("viability / vehicle", fontsize=9)
    ax.tick_params(labelsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.55 / 2.55),
                  ncol=1, frameon=False, handlelength=1.5, labelspacing=0.25)
    fig.subplots_adjust(left=0.11, right=0.97, top=1 - 0.3 / height,
                        bottom=legend_in / height)
    return png_base64(fig)


def draw_dose_response(ax: Any, fits: Sequence[CompoundDayFit],
                       highlight: Sequence[tuple[float, float]] = (),
                       intervals: Mapping[tuple[int, float], tuple[float, float]] | None = None
                       ) -> None:
    """Onto ``ax``: every counted well as a dot, median and range per concentration,
    the fitted curve over the tested range only, the IC50 with its 95 % CI where the
    reporting rule gives it as a number (a label per day for the legend), on a log
    concentration axis. ``highlight``: (µM, viability) points ringed in red;
    ``intervals``: (time point, µM) → the 90 % interval of the median there, drawn
    as a wide pale bar behind it."""
    intervals = intervals or {}
    shown_interval = False
    lo = min(min(f.concentrations) for f in fits)
    hi = max(max(f.concentrations) for f in fits)
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every time
    n = len(fits)
    for i, f in enumerate(fits):
        colour = _colour(i, n)
        shift = 10 ** ((i - (n - 1) / 2) * 0.025)  # days side by side at each dose
        xs: list[float] = []
        ys: list[float] = []
        ranges = []
        for c, values in zip(f.concentrations, f.replicates or tuple((m,) for m in f.medians),
                             strict=True):
            xs += list(c * shift * 10 ** rng.uniform(-0.012, 0.012, len(values)))
            ys += list(values)
            if len(values) > 1:
                ranges.append([(c * shift, min(values)), (c * shift, max(values))])
        ax.scatter(xs, ys, s=9, color=colour, alpha=0.55, lw=0, zorder=3)
        if ranges:
            ax.add_collection(LineCollection(ranges, colors=[colour], linewidths=1.0, zorder=2))
        ax.scatter([c * shift for c in f.concentrations], f.medians, s=26, marker="_",
                   color="black", lw=1.4, zorder=4)
        bars = [[(c * shift, ci[0]), (c * shift, ci[1])] for c in f.concentrations
                if (ci := intervals.get((f.day, conc_key(c)))) is not None]
        if bars:
            ax.add_collection(LineCollection(bars, colors=[colour], linewidths=6.0, alpha=0.25,
                                             zorder=1, capstyle="butt"))
            shown_interval = True
        call = f.call
        label = f"time point {f.day}: {call.label}"
        if f.fit.converged:
            c_lo, c_hi = min(f.concentrations), max(f.concentrations)
            inside = np.logspace(math.log10(c_lo), math.log10(c_hi), 100)
            ax.plot(inside, f.fit.predict(inside), color=colour, lw=1.5, label=label)
            if call.is_number and call.value is not None:
                y = 0.5 * (f.fit.top + f.fit.bottom)
                if call.ci95 is not None:
                    ax.plot(list(call.ci95), [y, y], color=colour, lw=2.5, alpha=0.5,
                            solid_capstyle="butt")
                ax.scatter([call.value], [y], marker="D", s=28, color=colour,
                           edgecolor="black", lw=0.6, zorder=5)
        else:
            ax.plot([], [], color=colour, label=label)
    if shown_interval:
        ax.plot([], [], color="#9e9e9e", lw=6.0, alpha=0.5, solid_capstyle="butt",
                label="90 % interval of the median")
    if highlight:
        ax.scatter([c for c, _ in highlight], [v for _, v in highlight], s=70,
                   facecolors="none", edgecolors="#c0262d", lw=1.6, zorder=6)
    ax.set_xscale("log")
    ax.set_xlim(lo / 2.5, hi * 2.5)
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=8))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.05, max(1.35, ax.get_ylim()[1]))
    ax.axhline(0.5, color="#bdbdbd", lw=0.6)
