"""The well view's two plots, drawn with matplotlib:

- time course: the well (thick, with its 90 % interval as error bars when the
  model gives intervals, and an orange ring where its images are unlike the
  model's training images), its replicate group (thin), the vehicle band
  (median ± SD of the vehicle wells, as in the HTML report), the alert level
  and the onset of loss;
- dose-response: replicate points, the fitted curve, the IC50 with its 95 %
  confidence interval under the reporting rule, on a log concentration axis
  (drawn by the report's own :func:`~nvir_agent.report.figures.draw_dose_response`).

A matplotlib draw with its text layout takes a few hundred milliseconds on a
busy machine, too long for the UI thread (``FigureCanvasQTAgg`` draws in its
paint event: benchmarks/gui_review.py measures both). So each figure is
built and rendered with Agg in a worker (matplotlib's object API, nothing
shared between threads) and the widget only paints the finished image; a
resize renders again at the new size.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PySide6.QtCore import QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QImage, QPainter, QPalette, QResizeEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from nvir_agent.gui import workers
from nvir_agent.gui.plate_data import DoseResponse, PlateData, onset
from nvir_agent.report.figures import draw_dose_response, draw_vehicle_band

DPI = 90
WELL = "#1f4e9c"
LEVEL = "#b8860b"
ONSET = "#c0262d"
UNLIKE = "#e65100"
MARGINS_PX = {"left": 56, "right": 10, "bottom": 36, "top": 22}  # room for labels at any size

Draw = Callable[[Figure], object]  # fills a figure; returns what the view keeps (or None)


def render(draw: Draw, width: int, height: int, ratio: float = 1.0) -> tuple[QImage, object]:
    """A new figure of ``width`` × ``height`` logical pixels drawn by ``draw``, rendered
    with Agg into a QImage (worker-safe: the figure lives and dies in this call)."""
    width, height = max(width, 120), max(height, 90)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI * ratio, facecolor="white")
    m = MARGINS_PX
    fig.subplots_adjust(left=m["left"] / width, right=1 - m["right"] / width,
                        bottom=m["bottom"] / height, top=1 - m["top"] / height)
    kept = draw(fig)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    h, w = rgba.shape[:2]
    image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
    image.setDevicePixelRatio(ratio)
    return image, kept


def _axes(fig: Figure, title: str, xlabel: str) -> object:
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("viability (× vehicle)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, color="#e6e6e6", lw=0.5)
    return ax


def _series(data: PlateData, well: str) -> list[float]:
    return [np.nan if (v := data.value(well, tp, "rel_control")) is None else v
            for tp in data.timepoints]


def draw_timecourse(fig: Figure, data: PlateData, well: str, threshold: float) -> int | None:
    """The well's time course on ``fig``; returns the onset of loss (a read or None)."""
    tps = data.timepoints
    ax = _axes(fig, f"Time course of {data.plate} {well} — {data.describe(well)}"
               if tps else "Time course: no time points", "time point")
    if not tps:
        return None
    draw_vehicle_band(ax, data.vehicle_band,
                      f"vehicle ± SD ({len(data.vehicle_wells())} wells)")
    group = data.group_wells(well)
    for i, w in enumerate(x for x in group if x != well):
        ax.plot(tps, _series(data, w), color=WELL, alpha=0.45, lw=1, marker="o", ms=2.5,
                label="replicates" if i == 0 else None)
    ax.plot(tps, _series(data, well), color=WELL, lw=2.2, marker="o", ms=4.5, label=well,
            zorder=4)
    pts = [p for tp in tps if (p := data.points.get((well, tp))) is not None
           and p.viability_rel_control is not None]
    bars = [p for p in pts if p.rel_control_low is not None and p.rel_control_high is not None]
    if bars:
        v = np.array([p.viability_rel_control for p in bars], dtype=float)
        ax.errorbar([p.timepoint for p in bars], v,
                    yerr=[np.maximum(v - [p.rel_control_low for p in bars], 0),
                          np.maximum(np.array([p.rel_control_high for p in bars]) - v, 0)],
                    fmt="none", ecolor=WELL, elinewidth=1.2, capsize=3, zorder=4,
                    label="90 % interval")
    unlike = [p for p in pts if p.unlike_training]
    if unlike:
        ax.scatter([p.timepoint for p in unlike], [p.viability_rel_control for p in unlike],
                   s=110, facecolors="none", edgecolors=UNLIKE, lw=1.8, zorder=5,
                   label="unlike the training images")
    ax.axhline(threshold, color=LEVEL, lw=1.2, ls="--", label=f"alert level {threshold:g}")
    med = [statistics.median(v) if (v := [x for w in group
                                           if (x := data.value(w, tp, "rel_control"))
                                           is not None]) else None for tp in tps]
    start = onset(list(zip(tps, med, strict=True)), threshold)
    if start is not None:
        ax.axvline(start, color=ONSET, lw=1.6, ls="--", label=f"loss from time point {start}")
    ax.set_xlim(tps[0] - 0.4, tps[-1] + 0.4)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=13))
    ax.set_ylim(0, max(1.3, ax.get_ylim()[1]))
    ax.legend(fontsize=7, loc="best", framealpha=0.85, ncol=2)
    return start


def draw_fit(fig: Figure, dr: DoseResponse, highlight: str | None) -> None:
    """The compound's dose-response at one read on ``fig``, the highlighted well ringed."""
    title = f"{dr.compound}, time point {dr.timepoint}: "
    ax = _axes(fig, title, "concentration (µM)")
    points = [(c, v) for c, v, _w in dr.points if c and c > 0 and math.isfinite(v)]
    if not points:
        ax.set_title(f"{dr.compound}: no usable wells at time point {dr.timepoint}", fontsize=9)
        return
    if dr.fit is not None:
        draw_dose_response(ax, [dr.fit], highlight=[(c, v) for c, v, w in dr.points
                                                     if w == highlight],
                           intervals=dr.intervals)
        title += dr.fit.call.label
    else:  # too few concentrations to fit: the points alone
        ax.scatter([c for c, _ in points], [v for _, v in points], s=12, color=WELL,
                   alpha=0.6, lw=0)
        ax.set_xscale("log")
        title += "no fit"
    ax.set_title(title, fontsize=9)


class PlotView(QWidget):
    """Paints a figure rendered in a worker; renders it again after a resize.

    Until the first image arrives (and for messages such as 'pick a treated
    well') it shows a line of text, painted by Qt."""

    def __init__(self, message: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(130)
        self.image: QImage | None = None
        self.message = message
        self._draw: Draw | None = None
        self._generation = 0
        self.pending = False
        self._resized = QTimer(self)
        self._resized.setSingleShot(True)
        self._resized.setInterval(150)
        self._resized.timeout.connect(self._render)

    def sizeHint(self) -> QSize:
        return QSize(560, 260)

    def show_message(self, message: str) -> None:
        self._generation += 1
        self._draw, self.image, self.message, self.pending = None, None, message, False
        self.update()

    def show_figure(self, draw: Draw) -> None:
        """Render ``draw`` (called in a worker with a new Figure) and show it."""
        self._draw = draw
        self._render()

    def _render(self) -> None:
        if self._draw is None:
            return
        self._generation += 1
        gen, draw = self._generation, self._draw
        w, h, ratio = self.width(), self.height(), self.devicePixelRatioF()
        self.pending = True
        workers.submit(lambda: render(draw, w, h, ratio),
                       lambda result: self._rendered(gen, result),
                       lambda message: self._failed(gen, message), parent=self)

    def _rendered(self, gen: int, result: tuple[QImage, object]) -> None:
        if gen != self._generation:
            return
        self.image, kept = result
        self.pending = False
        self.figure_drawn(kept)
        self.update()

    def figure_drawn(self, kept: object) -> None:
        """What ``draw`` returned, on the UI thread (for subclasses)."""

    def _failed(self, gen: int, message: str) -> None:
        if gen == self._generation:
            self.show_message(f"Cannot draw the plot: {message}")

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._draw is not None:
            self._resized.start()

    def paintEvent(self, _event: object) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), Qt.GlobalColor.white)
        if self.image is not None:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            p.drawImage(QRectF(self.rect()), self.image)
        else:
            p.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.message)


class TimecoursePlot(PlotView):
    """Viability relative to vehicle over the plate's reads."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Time course: pick an alert or a well", parent)
        self.onset: int | None = None

    def show_well(self, data: PlateData, well: str, threshold: float = 0.7) -> None:
        self.onset = None
        self.show_figure(lambda fig: draw_timecourse(fig, data, well, threshold))

    def figure_drawn(self, kept: object) -> None:
        self.onset = kept if isinstance(kept, int) else None


class DoseResponsePlot(PlotView):
    """A compound's dose-response at one read, with IC50 and its CI."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Dose-response: pick a treated well", parent)

    def clear(self, message: str = "Dose-response: pick a treated well") -> None:
        self.show_message(message)

    def show_fit(self, dr: DoseResponse, highlight: str | None = None) -> None:
        self.show_figure(lambda fig: draw_fit(fig, dr, highlight))
