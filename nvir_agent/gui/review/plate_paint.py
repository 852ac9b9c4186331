"""Painting a plate: plain functions on a QPainter, so the costly part (every
well's colour and marks, up to 1536 of them) can be painted into a QImage
in a worker while the widget shows the previous image; the widget paints
only the cheap overlay (selection rings and alert glyphs) itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPainterPath, QPen

from nvir_agent.gui.colors import EXCLUDED, NO_DATA, ColourScale, text_colour
from nvir_agent.gui.plate_data import PlateData
from nvir_agent.plate import row_letters, well_name

WELL_PEN = QPen(QColor("#8a8a8a"), 1)
UNREAD_PEN = QPen(QColor("#d0d0d0"), 1)  # a well nobody expects an image of: faint, no ×
SELECTED_PEN = QPen(QColor("#202020"), 3)
NO_DATA_PEN = QPen(QColor("#b0b0b0"), 1)
CRITICAL = QColor("#c0262d")
WARNING = QColor("#e8a317")
UNLIKE = QColor("#e65100")  # a well whose images are unlike the model's training images


def well_at(row: int, col: int) -> str:
    """The well in row ``row`` and column ``col``, both counted from 0 ('A01', 'AF48')."""
    return well_name(row + 1, col + 1)


def well_cells(rows: int, cols: int) -> dict[str, tuple[int, int]]:
    """well name → (row, column), from 0."""
    return {well_at(r, c): (r, c) for r in range(rows) for c in range(cols)}


@dataclass(frozen=True)
class PlateLayout:
    """Where the wells are in a widget of a given size."""

    rows: int
    cols: int
    cell: float
    x0: float
    y0: float

    @classmethod
    def fit(cls, shape: tuple[int, int], width: int, height: int) -> PlateLayout:
        rows, cols = shape
        margin = 22.0 if cols <= 24 else 16.0
        cell = min((width - margin - 4) / cols, (height - margin - 4) / rows)
        return cls(rows, cols, max(cell, 1.0), margin, margin)

    @property
    def small(self) -> bool:
        """Squares and no letters: cells too small for circles and marks."""
        return self.cell < 12

    def rect(self, row: int, col: int) -> QRectF:
        c = self.cell
        return QRectF(self.x0 + col * c + 1, self.y0 + row * c + 1, c - 2, c - 2)

    def cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        c, r = int((x - self.x0) // self.cell), int((y - self.y0) // self.cell)
        return (r, c) if 0 <= r < self.rows and 0 <= c < self.cols else None


def render_base(data: PlateData, layout: PlateLayout, timepoint: int | None, metric: str,
                scale: ColourScale, size: tuple[int, int], ratio: float, font: QFont,
                background: QColor, ink: QColor) -> QImage:
    """The plate's labels and wells (colour, ×, +, V, ?) as an image (worker-safe)."""
    w, h = size
    image = QImage(max(1, int(w * ratio)), max(1, int(h * ratio)),
                   QImage.Format.Format_ARGB32_Premultiplied)
    image.setDevicePixelRatio(ratio)
    image.fill(background)
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    paint_wells(p, data, layout, timepoint, metric, scale, font, ink)
    p.end()
    return image


def paint_wells(p: QPainter, data: PlateData, layout: PlateLayout, timepoint: int | None,
                metric: str, scale: ColourScale, font: QFont, ink: QColor) -> None:
    cell, x0, y0 = layout.cell, layout.x0, layout.y0
    label_font = QFont(font)
    label_font.setPointSizeF(max(6.0, min(9.0, cell * 0.45)))
    bold = QFont(label_font)
    bold.setBold(True)
    p.setFont(label_font)
    p.setPen(ink)
    step = 1 if layout.cols <= 24 else 4
    for c in range(0, layout.cols, step):
        p.drawText(QRectF(x0 + c * cell, 0, cell * step, y0), Qt.AlignmentFlag.AlignCenter,
                   str(c + 1))
    for r in range(0, layout.rows, 1 if layout.rows <= 16 else 4):
        p.drawText(QRectF(0, y0 + r * cell, x0 - 2, cell), Qt.AlignmentFlag.AlignCenter,
                   row_letters(r + 1))
    small = layout.small
    for r in range(layout.rows):
        for c in range(layout.cols):
            well = well_at(r, c)
            rect = layout.rect(r, c)
            role = data.role(well)
            value = None if timepoint is None else data.value(well, timepoint, metric)
            if role in ("ignore", "empty"):
                fill = EXCLUDED
            else:
                fill = scale.colour(value) if value is not None else NO_DATA
            expected = well in data.expected
            p.setPen(WELL_PEN if expected or value is not None else UNREAD_PEN)
            p.setBrush(fill)
            if small:
                p.drawRect(rect)
                continue
            p.drawEllipse(rect)
            mark = text_colour(fill)
            point = data.points.get((well, timepoint)) if timepoint is not None else None
            if value is None and expected:
                p.setPen(NO_DATA_PEN)  # ×: a well the map expects has no data at this read
                d = rect.width() * 0.3
                p.drawLine(rect.topLeft() + QPointF(d, d), rect.bottomRight() - QPointF(d, d))
                p.drawLine(rect.topRight() + QPointF(-d, d),
                           rect.bottomLeft() + QPointF(d, -d))
            elif point is not None and not point.passed_qc:
                p.setPen(QPen(mark, 2))  # +: failed QC
                cx, cy, d = rect.center().x(), rect.center().y(), rect.width() * 0.3
                p.drawLine(QPointF(cx - d, cy), QPointF(cx + d, cy))
                p.drawLine(QPointF(cx, cy - d), QPointF(cx, cy + d))
            if role == "vehicle":
                p.setPen(mark)
                p.setFont(bold)
                p.drawText(rect, Qt.AlignmentFlag.AlignCenter, "V")
                p.setFont(label_font)
            if point is not None and point.unlike_training:
                paint_unlike(p, rect, bold)


def paint_unlike(p: QPainter, rect: QRectF, font: QFont) -> None:
    """?: an orange badge at the lower left of a well whose images are unlike the
    model's training images."""
    s = max(rect.width() * 0.42, 7.0)
    badge = QRectF(rect.left() - s * 0.2, rect.bottom() - s * 0.8, s, s)
    p.setPen(QPen(QColor("#ffffff"), 1.0))
    p.setBrush(UNLIKE)
    p.drawEllipse(badge)
    if s >= 10:
        f = QFont(font)
        f.setPointSizeF(max(5.0, s * 0.45))
        p.setFont(f)
        p.drawText(badge, Qt.AlignmentFlag.AlignCenter, "?")
        p.setFont(font)


def paint_overlay(p: QPainter, layout: PlateLayout, selected: Iterable[str],
                  glyphs: Mapping[str, tuple[str, str]], cells: Mapping[str, tuple[int, int]]
                  ) -> None:
    """Selection rings and alert glyphs (a few wells: cheap on the UI thread)."""
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.setPen(SELECTED_PEN)
    for well in selected:
        if well in cells:
            rect = layout.rect(*cells[well])
            p.drawRect(rect) if layout.small else p.drawEllipse(rect)
    for well, (severity, state) in glyphs.items():
        if well in cells:
            paint_glyph(p, layout.rect(*cells[well]), severity, state)


def paint_glyph(p: QPainter, rect: QRectF, severity: str, state: str) -> None:
    """▲ warning, ◆ critical; filled while open, hollow once acknowledged."""
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
    colour = CRITICAL if severity == "critical" else WARNING
    p.setPen(QPen(QColor("#ffffff") if state == "open" else colour, 1.2))
    p.setBrush(colour if state == "open" else Qt.BrushStyle.NoBrush)
    p.drawPath(path)
