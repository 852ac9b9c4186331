"""The well view: the well's images over time with the spheroid outline
(toggle), the full image on click (zoom with the wheel, pan by dragging),
its time course against the vehicle band and its compound's dose-response.

Thumbnails, outlines and fits are made in workers; the view only draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import shiboken6
from PySide6.QtCore import QPointF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QImage, QPainter, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from nvir_agent.gui import workers
from nvir_agent.gui.plate_data import DoseResponse, PlateData, WellImage
from nvir_agent.gui.review.plots import DoseResponsePlot, TimecoursePlot
from nvir_agent.gui.thumbnails import Outline, Thumbnail, thumbnail, to_uint8

OUTLINE_COLOUR = QColor("#ff3b30")


def draw_outline(image: QImage, outline: Outline | None, full_w: int, full_h: int) -> QImage:
    """A copy of ``image`` with the outline (full-image pixels) drawn on it."""
    out = image.convertToFormat(QImage.Format.Format_RGB32)
    if not outline or not full_w:
        return out
    sx, sy = out.width() / full_w, out.height() / max(full_h, 1)
    poly = QPolygonF([QPointF(x * sx, y * sy) for x, y in outline])
    p = QPainter(out)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(QPen(OUTLINE_COLOUR, max(1.5, out.width() / 110)))
    p.drawPolygon(poly)
    p.end()
    return out


def tile(image: WellImage, thumb: Thumbnail) -> tuple[QImage, QImage]:
    """The thumbnail without and with the outline (QImage is safe in workers)."""
    plain = QImage(str(thumb.path)) if thumb.path else QImage()
    if plain.isNull():
        plain = QImage(128, 128, QImage.Format.Format_RGB32)
        plain.fill(QColor("#cccccc"))
        return plain, plain
    return plain, draw_outline(plain, thumb.outline, thumb.width, thumb.height)


class ImageDialog(QDialog):
    """The full image with its outline; wheel zooms, drag pans."""

    def __init__(self, title: str, image: QImage, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        scene = QGraphicsScene(self)
        scene.addPixmap(QPixmap.fromImage(image))
        self.view = QGraphicsView(scene)
        self.view.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.view.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.view.wheelEvent = self._wheel  # type: ignore[method-assign]
        layout = QVBoxLayout(self)
        layout.addWidget(self.view)
        layout.addWidget(QLabel("Wheel: zoom · drag: pan"))
        self.resize(820, 720)
        self.view.fitInView(scene.itemsBoundingRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def _wheel(self, event: object) -> None:
        f = 1.25 if event.angleDelta().y() > 0 else 0.8  # type: ignore[attr-defined]
        self.view.scale(f, f)


def full_image(path: str, outline: Outline | None) -> QImage:
    """The whole image as 8-bit with the outline (worker)."""
    from nvir_agent.imaging.reading import read_image

    img = read_image(path)
    px = to_uint8(img.pixels, img.bit_depth)
    h, w = px.shape
    q = QImage(px.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    return draw_outline(q, outline, w, h)


class WellView(QWidget):
    """Header, thumbnails strip, and the two plots."""

    dose_response_wanted = Signal(str, int)  # compound, timepoint

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = QLabel("Pick an alert or a well")
        self.header.setWordWrap(True)
        f = self.header.font()
        f.setPointSizeF(f.pointSizeF() * 1.15)
        f.setBold(True)
        self.header.setFont(f)
        self.outline_box = QCheckBox("Spheroid outline")
        self.outline_box.setChecked(True)
        self.outline_box.toggled.connect(self._toggle_outline)
        self.status = QLabel()
        self.strip = QListWidget()
        self.strip.setViewMode(QListWidget.ViewMode.IconMode)
        self.strip.setFlow(QListWidget.Flow.LeftToRight)
        self.strip.setWrapping(False)
        self.strip.setIconSize(QSize(112, 112))
        self.strip.setFixedHeight(176)
        self.strip.setMovement(QListWidget.Movement.Static)
        self.strip.itemClicked.connect(self._open_image)
        self.timecourse = TimecoursePlot()
        self.dose = DoseResponsePlot()
        self.dose.clear()
        row = QHBoxLayout()
        row.addWidget(QLabel("Images over time (click for the full image):"))
        row.addStretch(1)
        row.addWidget(self.status)
        row.addWidget(self.outline_box)
        plots = QSplitter(Qt.Orientation.Vertical)
        plots.addWidget(self.timecourse)
        plots.addWidget(self.dose)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 0, 0, 0)
        layout.addWidget(self.header)
        layout.addLayout(row)
        layout.addWidget(self.strip)
        layout.addWidget(plots, 1)
        self.data: PlateData | None = None
        self.well: str | None = None
        self.threshold = 0.7
        self._tiles: dict[int, tuple[QImage, QImage, WellImage, Thumbnail]] = {}
        self._generation = 0
        self.pending = 0

    # selection ---------------------------------------------------------------

    def show_well(self, data: PlateData, well: str, images: Sequence[WellImage] | None,
                  timepoint: int | None) -> None:
        """Draw the well: plots at once, thumbnails as workers deliver them
        (``images`` None: the plate's images are still being read; called again)."""
        same = self.data is data and self.well == well
        self.data, self.well = data, well
        self._generation += 1
        group = data.group_wells(well)
        extra = f" · replicates {', '.join(w for w in group if w != well)}" \
            if len(group) > 1 else ""
        self.header.setText(f"{data.plate} {well} — {data.describe(well)}{extra}")
        self.strip.clear()
        self._tiles.clear()
        gen = self._generation
        waiting = images is None
        if images is None:
            images = []
            self.status.setText("reading images …")
        else:
            self.status.setText(f"{len(images)} images" if images else "no images")
        self.pending = len(images)
        for im in images:
            item = QListWidgetItem(self._caption(im))
            item.setData(Qt.ItemDataRole.UserRole, im.image_id)
            item.setSizeHint(QSize(124, 150))
            self.strip.addItem(item)
            workers.submit(lambda im=im: (im, thumbnail(im.path, outline=im.outline,
                                                        width=im.width, height=im.height)),
                           lambda r, gen=gen: self._tile_ready(gen, r),
                           lambda m, gen=gen: self._tile_failed(gen, m), parent=self)
        if same and not waiting:
            return  # the images of the well shown: the plots are drawn already
        self.timecourse.show_well(data, well, self.threshold)
        a = data.plate_map.wells.get(well) if data.plate_map else None
        if a is not None and a.compound and timepoint is not None:
            self.dose.clear(f"Fitting {a.compound} at time point {timepoint} …")
            self.dose_response_wanted.emit(a.compound, timepoint)
        else:
            self.dose.clear("Dose-response: this well has no compound")

    def show_dose_response(self, dr: DoseResponse) -> None:
        self.dose.show_fit(dr, highlight=self.well)

    @staticmethod
    def _caption(im: WellImage) -> str:
        v = f"{im.viability:.2f}" if im.viability is not None else "–"
        qc = " ⚠" if im.qc else ""
        fld = f" f{im.field}" if im.field and im.field > 1 else ""
        return f"time point {im.timepoint}{fld}\nscore {v}{qc}"

    def _tile_ready(self, gen: int, result: tuple[WellImage, Thumbnail]) -> None:
        if gen != self._generation or not shiboken6.isValid(self.strip):
            return
        im, thumb = result
        plain, outlined = tile(im, thumb)
        self._tiles[im.image_id] = (plain, outlined, im, thumb)
        self.pending -= 1
        for i in range(self.strip.count()):
            item = self.strip.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == im.image_id:
                shown = outlined if self.outline_box.isChecked() else plain
                item.setIcon(QIcon(QPixmap.fromImage(shown)))
                tip = im.path + ("\nQC: " + ", ".join(im.qc) if im.qc else "")
                if thumb.error:
                    tip += "\n" + thumb.error
                item.setToolTip(tip)

    def _tile_failed(self, gen: int, message: str) -> None:
        if gen == self._generation:
            self.pending -= 1
            self.status.setText(message)

    def _toggle_outline(self, on: bool) -> None:
        for i in range(self.strip.count()):
            item = self.strip.item(i)
            t = self._tiles.get(item.data(Qt.ItemDataRole.UserRole))
            if t is not None:
                item.setIcon(QIcon(QPixmap.fromImage(t[1] if on else t[0])))

    def _open_image(self, item: QListWidgetItem) -> None:
        t = self._tiles.get(item.data(Qt.ItemDataRole.UserRole))
        if t is None:
            return
        im, thumb = t[2], t[3]
        outline = thumb.outline if self.outline_box.isChecked() else None
        title = f"{self.data.plate if self.data else ''} {self.well} time point {im.timepoint}"
        workers.submit(lambda: full_image(im.path, outline),
                       lambda img: ImageDialog(title, img, self).show(),
                       self.status.setText, parent=self)
