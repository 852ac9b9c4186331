"""The plate view: the always-visible navigation.

A 96/384/1536 grid coloured by a metric at one read (time slider), with a
colour bar, glyphs for alert state (triangle: warning, diamond: critical;
hollow when acknowledged), a cross (+) on wells that failed QC, a light ×
on wells the plate map expects (or, without a map, that were read before)
but that have no data at this read, a small "V" on vehicle wells, an orange
"?" badge on wells whose images are unlike the model's training images, and
grey for wells the map excludes; wells nobody expects are left blank. Hover
shows the well's content and its viability's 90 % interval; a click selects
the well.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from PySide6.QtCore import QPoint, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPalette
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

from nvir_agent.gui import workers
from nvir_agent.gui.colors import ColourScale
from nvir_agent.gui.plate_data import METRICS, PlateData
from nvir_agent.gui.review.plate_paint import (
    PlateLayout,
    paint_overlay,
    paint_wells,
    render_base,
    well_at,
    well_cells,
)

SCALES = ("this time point", "all time points", "fixed 0–1.2", "my limits")


def _robust_range(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    v = sorted(values)
    lo, hi = v[int(0.02 * (len(v) - 1))], v[int(0.98 * (len(v) - 1))]
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


class PlateGrid(QWidget):
    """Paints one plate; emits ``well_clicked(well)``.

    The wells are painted into an image in a worker (:mod:`plate_paint`) whenever
    the plate, read, metric, colour scale or size change; until it arrives the
    previous image stays. Selection rings and alert glyphs are painted on top
    here, so a click shows at once."""

    well_clicked = Signal(str)
    drawn = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data: PlateData | None = None
        self.timepoint: int | None = None
        self.metric_key = "rel_control"
        self.scale = ColourScale(0.0, 1.2)
        self.alert_glyphs: dict[str, tuple[str, str]] = {}  # well → (severity, state)
        self.selected: set[str] = set()
        self._base: QImage | None = None
        self._base_key: tuple | None = None
        self._asked: tuple | None = None
        self._cells: dict[str, tuple[int, int]] = {}
        self._cells_of: tuple[int, int] | None = None
        self.setMouseTracking(True)
        self.setMinimumSize(320, 220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:
        return QSize(560, 380)

    # geometry ---------------------------------------------------------------

    def layout_now(self) -> PlateLayout:
        shape = self.data.shape if self.data else (8, 12)
        return PlateLayout.fit(shape, self.width(), self.height())

    def well_at(self, pos: QPointF) -> str | None:
        if self.data is None:
            return None
        layout = self.layout_now()
        cell = layout.cell_at(pos.x(), pos.y())
        return None if cell is None else well_at(*cell)

    # painting ---------------------------------------------------------------

    def _key(self) -> tuple:
        data = self.data
        return (id(data), data is not None and data.details is not None, self.timepoint,
                self.metric_key, self.scale.low, self.scale.high, self.width(), self.height(),
                self.devicePixelRatioF())

    @property
    def is_drawn(self) -> bool:
        """The image shows the plate as it is now (nothing being painted)."""
        return self.data is None or self._base_key == self._key()

    def _request_base(self) -> None:
        key = self._key()
        if key == self._base_key or key == self._asked or self.data is None:
            return
        self._asked = key
        args = (self.data, self.layout_now(), self.timepoint, self.metric_key, self.scale,
                (self.width(), self.height()), self.devicePixelRatioF(), QFont(self.font()),
                self.palette().color(QPalette.ColorRole.Base),
                self.palette().color(QPalette.ColorRole.Text))
        workers.submit(lambda: render_base(*args), lambda img: self._base_ready(key, img),
                       parent=self)

    def _base_ready(self, key: tuple, image: QImage) -> None:
        if key != self._asked:
            return  # a newer image is on its way
        self._base, self._base_key, self._asked = image, key, None
        self.update()
        self.drawn.emit()

    def paintEvent(self, _event: object) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().color(QPalette.ColorRole.Base))
        if self.data is None:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No plate loaded")
            return
        self._request_base()
        if self._base is None:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Drawing the plate …")
            return
        p.drawImage(0, 0, self._base)
        layout = self.layout_now()
        cells_of = (layout.rows, layout.cols)
        if cells_of != self._cells_of:
            self._cells, self._cells_of = well_cells(*cells_of), cells_of
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        paint_overlay(p, layout, self.selected, self.alert_glyphs, self._cells)

    def paint_now(self, p: QPainter) -> None:
        """The whole plate painted here and now (the PNG export)."""
        p.fillRect(self.rect(), QColor("#ffffff"))
        if self.data is None:
            return
        layout = self.layout_now()
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        paint_wells(p, self.data, layout, self.timepoint, self.metric_key, self.scale,
                    self.font(), QColor("#000000"))
        paint_overlay(p, layout, self.selected, self.alert_glyphs,
                      well_cells(layout.rows, layout.cols))

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
            lines.append(f"{label}, time point {self.timepoint}: "
                         + ("no data" if v is None else f"{v:.3g} {unit}".strip()))
            point = self.data.points.get((well, self.timepoint))
            if point is not None and point.rel_control_low is not None \
                    and point.rel_control_high is not None:
                lines.append(f"90 % interval of its viability: {point.rel_control_low:.2f}–"
                             f"{point.rel_control_high:.2f} × vehicle")
            if point is not None and point.flags:
                lines.append("Flags: " + ", ".join(point.flags))
            if point is not None and point.unlike_training:
                lines.append("? Its images are unlike the model's training images: the score "
                             "may be wrong (see the well view).")
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
        top, bottom, x, w = 14.0, self.height() - 30.0, 4.0, 16.0
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
        p.drawText(QRectF(0, bottom + 12, self.width(), 16), Qt.AlignmentFlag.AlignLeft, self.unit)


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
        self.read_label = QLabel("Time point –")
        self.export_button = QPushButton("Export PNG…")
        self.export_button.clicked.connect(self.export_png)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        # squeezed, the text is cut at the bottom rather than painted over the plate
        self.legend.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
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
            tp = self.grid.timepoint if mode == "this time point" else None
            scale = ColourScale(*_robust_range(data.values(tp, metric)))
        self.grid.scale = self.bar.scale = scale
        self.bar.unit = METRICS[metric][1]
        if data is not None and data.timepoints and self.grid.timepoint is not None:
            n = len(data.timepoints)
            self.read_label.setText(f"Time point {self.grid.timepoint} ({self.slider.value() + 1}"
                                    f" of {n})")
        self.grid.update()
        self.bar.update()

    def _legend(self) -> None:
        data = self.grid.data
        parts = ["<b>V</b> vehicle &nbsp; <b>+</b> failed QC &nbsp; <b>×</b> no data &nbsp; "
                 "▲ warning &nbsp; ◆ critical (hollow: acknowledged) &nbsp; grey: excluded"
                 " &nbsp; <span style='color:#e65100'>●</span>? unlike training images"]
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
        self.grid.paint_now(p)
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
