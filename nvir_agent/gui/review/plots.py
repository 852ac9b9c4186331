"""The well view's two plots, drawn with pyqtgraph (chosen for its redraw
speed: see benchmarks/gui_plots.py and the README).

- time course: the well (thick), its replicate group (thin), the vehicle
  band (min–max of the vehicle wells), the alert level and the onset of loss;
- dose-response: replicate points, the fitted curve, the IC50 with its 95 %
  confidence interval, on a log concentration axis.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from nvir_agent.gui.plate_data import DoseResponse, PlateData, onset

pg.setConfigOptions(antialias=True, background="w", foreground="#222222")

WELL_PEN = pg.mkPen("#1f4e9c", width=3)
GROUP_PEN = pg.mkPen(QColor(31, 78, 156, 110), width=1.5)
BAND_BRUSH = pg.mkBrush(120, 120, 120, 60)
LEVEL_PEN = pg.mkPen("#b8860b", width=1.5, style=Qt.PenStyle.DashLine)
ONSET_PEN = pg.mkPen("#c0262d", width=2, style=Qt.PenStyle.DashLine)


def _plot(title: str, x: str, y: str) -> pg.PlotWidget:
    w = pg.PlotWidget()
    w.setTitle(title, size="10pt")
    w.setLabel("bottom", x)
    w.setLabel("left", y)
    w.showGrid(x=True, y=True, alpha=0.2)
    w.setMenuEnabled(False)
    w.setMinimumHeight(180)
    return w


class TimecoursePlot(QWidget):
    """Viability relative to vehicle over the plate's reads."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = _plot("Time course", "read", "viability (× vehicle)")
        self.legend = self.plot.addLegend(offset=(-5, 5), labelTextSize="8pt")
        layout = pg.QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        self.onset: int | None = None

    def show_well(self, data: PlateData, well: str, threshold: float = 0.7) -> None:
        p = self.plot
        p.clear()
        self.legend.clear()
        tps = data.timepoints
        if not tps:
            p.setTitle("Time course: no reads")
            return
        vehicles = data.vehicle_wells()
        lo, hi = [], []
        for tp in tps:
            vals = [v for w in vehicles if (v := data.value(w, tp, "rel_control")) is not None]
            lo.append(min(vals) if vals else np.nan)
            hi.append(max(vals) if vals else np.nan)
        if vehicles and not all(math.isnan(v) for v in lo):
            top = pg.PlotDataItem(tps, hi, pen=pg.mkPen(None))
            bottom = pg.PlotDataItem(tps, lo, pen=pg.mkPen(None))
            band = pg.FillBetweenItem(top, bottom, brush=BAND_BRUSH)
            p.addItem(band)
            sample = pg.PlotDataItem(pen=pg.mkPen((120, 120, 120, 110), width=10))
            self.legend.addItem(sample, f"vehicle range ({len(vehicles)} wells)")
        group = [w for w in data.group_wells(well) if w != well]
        for i, w in enumerate(group):
            ys = [data.value(w, tp, "rel_control") for tp in tps]
            item = p.plot(tps, [np.nan if v is None else v for v in ys], pen=GROUP_PEN,
                          symbol="o", symbolSize=4, symbolBrush=GROUP_PEN.color())
            if i == 0:
                self.legend.addItem(item, "replicates")
        ys = [data.value(well, tp, "rel_control") for tp in tps]
        item = p.plot(tps, [np.nan if v is None else v for v in ys], pen=WELL_PEN,
                      symbol="o", symbolSize=7, symbolBrush="#1f4e9c")
        self.legend.addItem(item, well)
        p.addItem(pg.InfiniteLine(threshold, angle=0, pen=LEVEL_PEN,
                                  label=f"alert level {threshold:g}",
                                  labelOpts={"position": 0.1, "color": "#7a5a00"}))
        med = [statistics.median(v) if (v := [x for w in data.group_wells(well)
                                               if (x := data.value(w, tp, "rel_control"))
                                               is not None]) else None for tp in tps]
        self.onset = onset(list(zip(tps, med, strict=True)), threshold)
        if self.onset is not None:
            p.addItem(pg.InfiniteLine(self.onset, angle=90, pen=ONSET_PEN,
                                      label=f"loss from read {self.onset}",
                                      labelOpts={"position": 0.9, "color": "#c0262d"}))
        p.setTitle(f"Time course of {data.plate} {well} — {data.describe(well)}")
        p.getAxis("bottom").setTicks([[(tp, str(tp)) for tp in tps]])
        p.setXRange(tps[0] - 0.3, tps[-1] + 0.3, padding=0)
        p.enableAutoRange(axis="y")


class DoseResponsePlot(QWidget):
    """A compound's dose-response at one read, with IC50 and its CI."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = _plot("Dose-response", "concentration (µM)", "viability (× vehicle)")
        self.plot.setLogMode(x=True, y=False)
        layout = pg.QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)

    def clear(self, message: str = "Dose-response: pick a treated well") -> None:
        self.plot.clear()
        self.plot.setTitle(message, size="10pt")

    def show_fit(self, dr: DoseResponse, highlight: str | None = None) -> None:
        p = self.plot
        p.clear()
        if not dr.points:
            p.setTitle(f"{dr.compound}: no usable wells at read {dr.timepoint}", size="10pt")
            return
        xs = np.array([c for c, _v, _w in dr.points])
        ys = np.array([v for _c, v, _w in dr.points])
        p.plot(xs, ys, pen=None, symbol="o", symbolSize=7, symbolBrush=QColor(31, 78, 156, 150),
               symbolPen=None)
        mine = [(c, v) for c, v, w in dr.points if w == highlight]
        if mine:
            p.plot([c for c, _ in mine], [v for _, v in mine], pen=None, symbol="o",
                   symbolSize=12, symbolBrush=None, symbolPen=pg.mkPen("#c0262d", width=2))
        fit = dr.fit.fit if dr.fit is not None else None
        title = f"{dr.compound}, read {dr.timepoint}: "
        if fit is not None and fit.converged:
            grid = np.logspace(math.log10(xs.min()) - 0.5, math.log10(xs.max()) + 0.5, 120)
            p.plot(grid, fit.predict(grid), pen=pg.mkPen("#222222", width=2))
            if math.isfinite(fit.ic50):
                lo, hi = fit.ic50_ci95
                if math.isfinite(lo) and math.isfinite(hi) and lo > 0:
                    region = pg.LinearRegionItem((math.log10(lo), math.log10(hi)),
                                                 movable=False,
                                                 brush=pg.mkBrush(192, 38, 45, 40),
                                                 pen=pg.mkPen(None))
                    p.addItem(region)
                    ci = f" (95 % CI {lo:.3g}–{hi:.3g})"
                else:
                    ci = " (CI not estimable)"
                p.addItem(pg.InfiniteLine(math.log10(fit.ic50), angle=90,
                                          pen=pg.mkPen("#c0262d", width=2)))
                title += f"IC50 {fit.ic50:.3g} µM{ci}"
            else:
                title += f"IC50 > {10 * xs.max():.3g} µM (no halving)"
        else:
            title += "no fit" + (f" ({fit.message})" if fit is not None else "")
        lo_dec = math.floor(math.log10(xs.min()) - 0.5)
        hi_dec = math.ceil(math.log10(xs.max()) + 0.5)
        p.getAxis("bottom").setTicks([[(d, f"{10.0 ** d:g}") for d in range(lo_dec, hi_dec + 1)],
                                      []])
        p.setTitle(title, size="10pt")
        p.setYRange(-0.05, max(1.3, float(np.nanmax(ys)) + 0.1), padding=0)
