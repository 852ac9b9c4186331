"""The plate view: the always-visible navigation.

A 96/384/1536 grid coloured by a metric at one read (time slider), with a
colour bar, glyphs for alert state (triangle: warning, diamond: critical;
hollow when acknowledged), a cross (+) on wells that failed QC, a light ×
on wells the plate map expects (or, without a map, that were read before)
but that have no data at this read, a small "V" on vehicle wells and grey
for wells the map excludes; wells nobody expects are left blank. Hover shows the well's content; a click selects the well.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from PySide6.QtCore import QPoint, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from nvir_agent.gui.colors import EXCLUDED, NO_DATA, ColourScale, text_colour
from nvir_agent.gui.plate_data import METRICS, PlateData

WELL_PEN = QPen(QColor("#8a8a8a"), 1)
UNREAD_PEN = QPen(QColor("#d0d0d0"), 1)  # a well nobody expects an image of: faint, no ×
SELECTED_PEN = QPen(QColor("#202020"), 3)
NO_DATA_PEN = QPen(QColor("#b0b0b0"), 1)
SCALES = ("this read", "all reads", "fixed 0–1.2", "my limits")
ROW_LETTERS = [chr(ord("A") + i) for i in range(26)] + ["AA", "AB", "AC", "AD", "AE", "AF"]


def well_name(row: int, col: int, fmt: int) -> str:
    width = 3 if fmt == 1536 else 2
    return f"{ROW_LETTERS[row]}{col + 1:0{width}d}"


def _robust_range(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    v = sorted(values)
    lo, hi = v[int(0.02 * (len(v) - 1))], v[int(0.98 * (len(v) - 1))]
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


class PlateGrid(QWidget):
    """Paints one plate; emits ``well_clicked(well)``."""

    well_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data: PlateData | None = None
        self.timepoint: int | None = None
        self.metric_key = "rel_control"
        self.scale = ColourScale(0.0, 1.2)
        self.alert_glyphs: dict[str, tuple[str, str]] = {}  # well → (severity, state)
        self.selected: set[str] = set()
        self.setMouseTracking(True)
        self.setMinimumSize(320, 220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:
        return QSize(560, 380)

    # geometry ---------------------------------------------------------------

    def _geometry(self) -> tuple[int, int, float, float, float]:
        rows, cols = self.data.shape if self.data else (8, 12)
        margin = 22.0 if cols <= 24 else 16.0
        cell = min((self.width() - margin - 4) / cols, (self.height() - margin - 4) / rows)
        return rows, cols, cell, margin, margin

    def well_at(self, pos: QPointF) -> str | None:
        if self.data is None:
            return None
        rows, cols, cell, x0, y0 = self._geometry()
        c, r = int((pos.x() - x0) // cell), int((pos.y() - y0) // cell)
        if 0 <= r < rows and 0 <= c < cols:
            return well_name(r, c, self.data.format)
        return None

    # painting ---------------------------------------------------------------

    def paintEvent(self, _event: object) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), self.palette().color(QPalette.ColorRole.Base))
        if self.data is None:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No plate loaded")
            return
        self.paint_plate(p)

    def paint_plate(self, p: QPainter) -> None:
        assert self.data is not None
        rows, cols, cell, x0, y0 = self._geometry()
        label_font = QFont(self.font())
        label_font.setPointSizeF(max(6.0, min(9.0, cell * 0.45)))
        p.setFont(label_font)
        p.setPen(self.palette().color(QPalette.ColorRole.Text))
        step = 1 if cols <= 24 else 4
        for c in range(0, cols, step):
            p.drawText(QRectF(x0 + c * cell, 0, cell * step, y0),
                       Qt.AlignmentFlag.AlignCenter, str(c + 1))
        for r in range(0, rows, 1 if rows <= 16 else 4):
            p.drawText(QRectF(0, y0 + r * cell, x0 - 2, cell),
                       Qt.AlignmentFlag.AlignCenter, ROW_LETTERS[r])
        small = cell < 12
        for r in range(rows):
            for c in range(cols):
                well = well_name(r, c, self.data.format)
                rect = QRectF(x0 + c * cell + 1, y0 + r * cell + 1, cell - 2, cell - 2)
                self._paint_well(p, well, rect, small)

    def _paint_well(self, p: QPainter, well: str, rect: QRectF, small: bool) -> None:
        data = self.data
        assert data is not None
        role = data.role(well)
        value = None if self.timepoint is None else data.value(well, self.timepoint,
                                                                self.metric_key)
        if role in ("ignore", "empty"):
            fill = EXCLUDED
        else:
            fill = self.scale.colour(value) if value is not None else NO_DATA
        expected = well in data.expected
        if well in self.selected:
            p.setPen(SELECTED_PEN)
        else:
            p.setPen(WELL_PEN if expected or value is not None else UNREAD_PEN)
        p.setBrush(fill)
        if small:
            p.drawRect(rect)
        else:
            p.drawEllipse(rect)
        ink = text_colour(fill)
        point = data.points.get((well, self.timepoint)) if self.timepoint is not None else None
        if value is None and expected and not small:
            p.setPen(NO_DATA_PEN)  # ×: a well the map expects has no data at this read
            d = rect.width() * 0.3
            p.drawLine(rect.topLeft() + QPointF(d, d), rect.bottomRight() - QPointF(d, d))
            p.drawLine(rect.topRight() + QPointF(-d, d), rect.bottomLeft() + QPointF(d, -d))
        elif point is not None and not point.passed_qc:
            p.setPen(QPen(ink, 2))  # +: failed QC
            cx, cy, d = rect.center().x(), rect.center().y(), rect.width() * 0.3
            p.drawLine(QPointF(cx - d, cy), QPointF(cx + d, cy))
            p.drawLine(QPointF(cx, cy - d), QPointF(cx, cy + d))
        if role == "vehicle" and not small:
            p.setPen(ink)
            f = QFont(p.font())
            f.setBold(True)
            p.setFont(f)
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, "V")
            f.setBold(False)
            p.setFont(f)
        glyph = self.alert_glyphs.get(well)
        if glyph is not None:
            self._paint_glyph(p, rect, *glyph)

    def _paint_glyph(self, p: QPainter, rect: QRectF, severity: str, state: str) -> None:
        s = max(rect.width() * 0.45, 5.0)
        x, y = rect.right() - s * 0.75, rect.top() - s * 0.2
        path = QPainterPath()
        if severity == "critical":  # diamond
            path.moveTo(x + s / 2, y)
            path.lineTo(x + s, y + s / 2)
            path.lineTo(x + s / 2, y + s)
            path.lineTo(x, y + s / 2)
        else:  # triangle
            path.moveTo(x + s / 2, y)
            path.lineTo(x + s, y + s)
            path.lineTo(x, y + s)
        path.closeSubpath()
        colour = QColor("#c0262d") if severity == "critical" else QColor("#e8a317")
        p.setPen(QPen(QColor("#ffffff") if state == "open" else colour, 1.2))
        p.setBrush(colour if state == "open" else Qt.BrushStyle.NoBrush)
        p.drawPath(path)

    # interaction ------------------------------------------------------------

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        well = self.well_at(event.position())
        if well is None or self.data is None:
            QToolTip.hideText()
            return
        QToolTip.showText(event.globalPosition().toPoint(), self.describe(well), self)

    def describe(self, well: str) -> str:
        assert self.data is not None
        lines = [f"{self.data.plate} {well}: {self.data.describe(well)}"]
        if self.timepoint is not None:
            label, unit = METRICS[self.metric_key]
            v = self.data.value(well, self.timepoint, self.metric_key)
            lines.append(f"{label}, read {self.timepoint}: "
                         + ("no data" if v is None else f"{v:.3g} {unit}".strip()))
            point = self.data.points.get((well, self.timepoint))
            if point is not None and point.flags:
                lines.append("Flags: " + ", ".join(point.flags))
        glyph = self.alert_glyphs.get(well)
        if glyph:
            lines.append(f"Alert: {glyph[0]} ({glyph[1]})")
        return "\n".join(lines)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        well = self.well_at(event.position())
        if well is not None:
            self.well_clicked.emit(well)


class ColourBar(QWidget):
    """A vertical cividis bar with its limits and unit."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scale = ColourScale(0.0, 1.2)
        self.unit = ""
        self.setFixedWidth(74)

    def paintEvent(self, _event: object) -> None:
        p = QPainter(self)
        top, bottom, x, w = 14.0, self.height() - 14.0, 4.0, 16.0
        n = 64
        for i in range(n):
            v = self.scale.high - (self.scale.high - self.scale.low) * i / (n - 1)
            p.fillRect(QRectF(x, top + (bottom - top) * i / n, w, (bottom - top) / n + 1),
                       self.scale.colour(v))
        p.setPen(self.palette().color(QPalette.ColorRole.Text))
        p.drawRect(QRectF(x, top, w, bottom - top))
        for frac in (0.0, 0.5, 1.0):
            v = self.scale.high - (self.scale.high - self.scale.low) * frac
            y = top + (bottom - top) * frac
            p.drawText(QRectF(x + w + 3, y - 8, 60, 16), Qt.AlignmentFlag.AlignVCenter,
                       f"{v:.3g}")
        p.drawText(QRectF(0, bottom, self.width(), 14), Qt.AlignmentFlag.AlignLeft, self.unit)


class PlateView(QWidget):
    """Plate picker, metric, read slider, scale, the grid, colour bar and legend."""

    well_selected = Signal(str, str)  # plate, well
    plate_requested = Signal(str)  # load this plate
    timepoint_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.grid = PlateGrid()
        self.bar = ColourBar()
        self.plate_box = QComboBox()
        self.plate_box.currentTextChanged.connect(self._plate_chosen)
        self.metric_box = QComboBox()
        for key, (label, _unit) in METRICS.items():
            self.metric_box.addItem(label, key)
        self.metric_box.currentIndexChanged.connect(self.redraw)
        self.scale_box = QComboBox()
        self.scale_box.addItems(SCALES)
        self.scale_box.currentIndexChanged.connect(self.redraw)
        self.low, self.high = QDoubleSpinBox(), QDoubleSpinBox()
        for spin, v in ((self.low, 0.0), (self.high, 1.2)):
            spin.setRange(-1e6, 1e6)
            spin.setDecimals(2)
            spin.setSingleStep(0.1)
            spin.setValue(v)
            spin.valueChanged.connect(self.redraw)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setMinimum(0)
        self.slider.valueChanged.connect(self._slider_moved)
        self.read_label = QLabel("Read –")
        self.export_button = QPushButton("Export PNG…")
        self.export_button.clicked.connect(self.export_png)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.grid.well_clicked.connect(self._clicked)

        top = QHBoxLayout()
        top.addWidget(QLabel("Plate:"))
        top.addWidget(self.plate_box, 1)
        top.addWidget(QLabel("Show:"))
        top.addWidget(self.metric_box, 2)
        scale = QHBoxLayout()
        scale.addWidget(self.read_label)
        scale.addWidget(self.slider, 2)
        scale.addWidget(QLabel("Colours:"))
        scale.addWidget(self.scale_box)
        scale.addWidget(self.low)
        scale.addWidget(self.high)
        scale.addWidget(self.export_button)
        body = QHBoxLayout()
        body.addWidget(self.grid, 1)
        body.addWidget(self.bar)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addLayout(scale)
        layout.addLayout(body, 1)
        layout.addWidget(self.legend)
        self._limits_enabled()

    # data ---------------------------------------------------------------------

    def set_plates(self, plates: Iterable[str], current: str | None = None) -> None:
        plates = list(plates)
        self.plate_box.blockSignals(True)
        self.plate_box.clear()
        self.plate_box.addItems(plates)
        if current in plates:
            self.plate_box.setCurrentText(current)
        self.plate_box.blockSignals(False)

    def _plate_chosen(self, plate: str) -> None:
        if plate and (self.grid.data is None or self.grid.data.plate != plate):
            self.plate_requested.emit(plate)

    def set_data(self, data: PlateData, timepoint: int | None = None) -> None:
        self.grid.data = data
        if self.plate_box.currentText() != data.plate:
            self.plate_box.blockSignals(True)
            if self.plate_box.findText(data.plate) < 0:
                self.plate_box.addItem(data.plate)
            self.plate_box.setCurrentText(data.plate)
            self.plate_box.blockSignals(False)
        tps = data.timepoints
        self.slider.blockSignals(True)
        self.slider.setMaximum(max(len(tps) - 1, 0))
        if timepoint in tps:
            self.slider.setValue(tps.index(timepoint))
        elif tps:
            self.slider.setValue(len(tps) - 1)
        self.slider.blockSignals(False)
        self.grid.timepoint = tps[self.slider.value()] if tps else None
        self._legend()
        self.redraw()

    def set_alert_glyphs(self, glyphs: dict[str, tuple[str, str]]) -> None:
        self.grid.alert_glyphs = glyphs
        self.grid.update()

    def set_selected(self, wells: Iterable[str]) -> None:
        self.grid.selected = set(wells)
        self.grid.update()

    @property
    def timepoint(self) -> int | None:
        return self.grid.timepoint

    def set_timepoint(self, tp: int) -> None:
        data = self.grid.data
        if data is not None and tp in data.timepoints:
            self.slider.setValue(data.timepoints.index(tp))

    def _slider_moved(self, i: int) -> None:
        data = self.grid.data
        if data is None or not data.timepoints:
            return
        self.grid.timepoint = data.timepoints[min(i, len(data.timepoints) - 1)]
        self.redraw()
        self.timepoint_changed.emit(self.grid.timepoint)

    def _limits_enabled(self) -> None:
        mine = self.scale_box.currentText() == "my limits"
        self.low.setVisible(mine)
        self.high.setVisible(mine)

    def redraw(self, *_args: object) -> None:
        self._limits_enabled()
        data = self.grid.data
        metric = self.metric_box.currentData() or "rel_control"
        self.grid.metric_key = metric
        mode = self.scale_box.currentText()
        if mode == "my limits":
            scale = ColourScale(self.low.value(), self.high.value())
        elif mode == "fixed 0–1.2" and metric in ("rel_control", "rel_baseline") or data is None:
            scale = ColourScale(0.0, 1.2)
        else:
            tp = self.grid.timepoint if mode == "this read" else None
            scale = ColourScale(*_robust_range(data.values(tp, metric)))
        self.grid.scale = self.bar.scale = scale
        self.bar.unit = METRICS[metric][1]
        if data is not None and data.timepoints and self.grid.timepoint is not None:
            n = len(data.timepoints)
            self.read_label.setText(f"Read {self.grid.timepoint} ({self.slider.value() + 1}"
                                    f" of {n})")
        self.grid.update()
        self.bar.update()

    def _legend(self) -> None:
        data = self.grid.data
        parts = ["<b>V</b> vehicle &nbsp; <b>+</b> failed QC &nbsp; <b>×</b> no data &nbsp; "
                 "▲ warning &nbsp; ◆ critical (hollow: acknowledged) &nbsp; grey: excluded"]
        if data is not None and data.plate_map is not None:
            compounds: dict[str, set[float]] = {}
            for a in data.plate_map.wells.values():
                if a.compound:
                    compounds.setdefault(a.compound, set()).add(a.concentration_uM or 0.0)
            for name, concs in sorted(compounds.items()):
                cs = sorted(c for c in concs if c)
                span = f" {cs[0]:g}–{cs[-1]:g} µM" if cs else ""
                parts.append(f"{name}{span}")
        elif data is not None:
            parts.append("No plate map: values are relative to each well's first read.")
        self.legend.setText(" · ".join(parts))

    def _clicked(self, well: str) -> None:
        if self.grid.data is not None:
            self.well_selected.emit(self.grid.data.plate, well)

    # export -------------------------------------------------------------------

    def render_image(self, scale: float = 2.0) -> QImage:
        """The grid and colour bar as an image (for the PNG export)."""
        w, h = self.grid.width() + self.bar.width(), max(self.grid.height(), self.bar.height())
        img = QImage(int(w * scale), int(h * scale), QImage.Format.Format_ARGB32)
        img.fill(QColor("#ffffff"))
        p = QPainter(img)
        p.scale(scale, scale)
        self.grid.render(p, QPoint(0, 0))
        self.bar.render(p, QPoint(self.grid.width(), 0))
        p.end()
        return img

    def export_png(self, path: str | None = None) -> str | None:
        data = self.grid.data
        if data is None:
            return None
        if not path:
            default = f"{data.plate}-read{self.grid.timepoint}-{self.grid.metric_key}.png"
            path, _ = QFileDialog.getSaveFileName(self, "Export the heatmap", default,
                                                  "PNG image (*.png)")
            if not path:
                return None
        self.render_image().save(path)
        return path


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
