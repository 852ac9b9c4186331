"""The well view: the well's images over time with the spheroid outline
(toggle), the full image on click (zoom with the wheel, pan by dragging),
its time course against the vehicle band and its compound's dose-response.

How far the scores can be trusted is said where they are shown: each image's
score with its 90 % interval and its typicality (tooltip), an orange frame and
caption on images unlike the model's training images, and one line under the
header with the well's value and interval at the time point shown (or, once,
that the model gives neither).

Thumbnails, outlines and fits are made in workers; the view only draws.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import shiboken6
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QImage, QPainter, QPen, QPixmap, QPolygonF
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
from nvir_agent.report.trust import (
    UNLIKE_LABEL,
    UNLIKE_MEANING,
    calibrate_advice,
    calibrate_short,
    interval_text,
    not_available,
    score_text,
)

OUTLINE_COLOUR = QColor("#ff3b30")
UNLIKE_COLOUR = QColor("#e65100")  # frame of an image unlike the training images
UNLIKE_BACKGROUND = QColor("#ffe0b2")
UNLIKE_STYLE = "background:#fff3e0; color:#8a3b00; border:1px solid #e65100; padding:3px;"
PLAIN_STYLE = "color:palette(text); padding:3px;"
NOTE_STYLE = "color:#616161; padding:3px;"


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


def frame(image: QImage, colour: QColor) -> QImage:
    """A copy of ``image`` inside a frame of ``colour`` (an image unlike the training ones)."""
    out = image.convertToFormat(QImage.Format.Format_RGB32)
    p = QPainter(out)
    w = max(3.0, out.width() / 22)
    p.setPen(QPen(colour, w))
    p.drawRect(QRectF(w / 2, w / 2, out.width() - w, out.height() - w))
    p.end()
    return out


def tile(image: WellImage, thumb: Thumbnail) -> tuple[QImage, QImage]:
    """The thumbnail without and with the outline (QImage is safe in workers); an image
    unlike the model's training images is framed in orange in both."""
    plain = QImage(str(thumb.path)) if thumb.path else QImage()
    if plain.isNull():
        plain = QImage(128, 128, QImage.Format.Format_RGB32)
        plain.fill(QColor("#cccccc"))
        return plain, plain
    outlined = draw_outline(plain, thumb.outline, thumb.width, thumb.height)
    if image.unlike_training:
        return frame(plain, UNLIKE_COLOUR), frame(outlined, UNLIKE_COLOUR)
    return plain, outlined


def image_tooltip(im: WellImage, models: Sequence[str]) -> str:
    """What an image's tile says on hover: its file, score, interval, typicality, flags."""
    lines = [im.path]
    if im.viability is not None:
        t = im.trust
        lines.append(f"score {im.viability:.2f}" + (
            f", 90 % interval {t.viability_low:.2f}–{t.viability_high:.2f}"
            if t.viability_low is not None and t.viability_high is not None else ""))
        if t.typicality is not None:
            lines.append(f"typicality {t.typicality:.2f} (1: as typical as the model's "
                         "training images, 0: farther from them than all)")
    flags = [f for f in im.qc if f != "unlike_training"]
    if flags:
        lines.append("QC: " + ", ".join(flags))
    if im.unlike_training:
        lines.append(f"{UNLIKE_LABEL.capitalize()}. {UNLIKE_MEANING}")
        lines.append(calibrate_advice(models[0] if len(models) == 1 else None))
    return "\n".join(lines)


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
        self.trust_line = QLabel()
        self.trust_line.setWordWrap(True)
        self.trust_line.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.trust_line.hide()
        self.outline_box = QCheckBox("Spheroid outline")
        self.outline_box.setChecked(True)
        self.outline_box.toggled.connect(self._toggle_outline)
        self.status = QLabel()
        self.strip = QListWidget()
        self.strip.setViewMode(QListWidget.ViewMode.IconMode)
        self.strip.setFlow(QListWidget.Flow.LeftToRight)
        self.strip.setWrapping(False)
        self.strip.setIconSize(QSize(112, 112))
        self.strip.setFixedHeight(196)
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
        layout.addWidget(self.trust_line)
        layout.addLayout(row)
        layout.addWidget(self.strip)
        layout.addWidget(plots, 1)
        self.data: PlateData | None = None
        self.well: str | None = None
        self.threshold = 0.7
        self.timepoint: int | None = None
        self._images: Sequence[WellImage] | None = None
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
        self.timepoint = timepoint
        self._images = images
        self._show_trust(data, well, images, timepoint)
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
            item.setSizeHint(QSize(140, 170))
            item.setToolTip(image_tooltip(im, data.models))
            if im.unlike_training:
                item.setBackground(QBrush(UNLIKE_BACKGROUND))
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

    def set_timepoint(self, timepoint: int) -> None:
        """The plate view moved to another time point: the trust line follows."""
        self.timepoint = timepoint
        if self.data is not None and self.well is not None:
            self._show_trust(self.data, self.well, self._images, timepoint)

    def show_dose_response(self, dr: DoseResponse) -> None:
        self.dose.show_fit(dr, highlight=self.well)

    @staticmethod
    def _caption(im: WellImage) -> str:
        """'time point 3' / '0.62 (0.51–0.73)' (the score and its 90 % interval), a ⚠
        for QC flags, and 'unlike training' on an image unlike the training images."""
        v = score_text(im.viability, im.trust)
        qc = " ⚠" if any(f != "unlike_training" for f in im.qc) else ""
        fld = f" f{im.field}" if im.field and im.field > 1 else ""
        unlike = "\nunlike training" if im.unlike_training else ""
        return f"time point {im.timepoint}{fld}\n{v}{qc}{unlike}"

    def _show_trust(self, data: PlateData, well: str, images: Sequence[WellImage] | None,
                    timepoint: int | None) -> None:
        """The line under the header: the well's value and interval at the time point
        shown and its images' typicality; what to do when they are unlike the training
        images; once, when the model gives no interval and no typicality."""
        text, style = trust_text(data, well, images, timepoint)
        self.trust_line.setText(text)
        self.trust_line.setStyleSheet(style)
        self.trust_line.setVisible(bool(text))

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
                if thumb.error:
                    item.setToolTip(item.toolTip() + "\n" + thumb.error)

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


def trust_text(data: PlateData, well: str, images: Sequence[WellImage] | None,
               timepoint: int | None) -> tuple[str, str]:
    """(text, style) of the well view's trust line (see :meth:`WellView._show_trust`)."""
    if timepoint is None:
        return "", PLAIN_STYLE
    point = data.points.get((well, timepoint))
    at = [im for im in images or () if im.timepoint == timepoint and im.viability is not None]
    typ = [float(im.trust.typicality) for im in at if im.trust.typicality is not None]
    if not data.has_intervals and data.has_typicality is False:
        return not_available(data.models), NOTE_STYLE
    parts = []
    if point is not None and point.viability_rel_control is not None:
        v = interval_text(point.viability_rel_control, point.rel_control_low,
                          point.rel_control_high)
        what = "90 % interval" if point.rel_control_low is not None \
            else "interval not available for this model"
        parts.append(f"Time point {timepoint}: viability {v} × vehicle ({what})")
    if typ:
        parts.append(f"typicality {statistics.median(typ):.2f}"
                     + (f" (median of {len(typ)} images)" if len(typ) > 1 else ""))
    text = " · ".join(parts)
    unlike = (point is not None and point.unlike_training) or any(
        im.unlike_training for im in at)
    if unlike:
        models = data.models
        text += (f"\n⚠ Its images are {UNLIKE_LABEL}: the score may be wrong; "
                 + calibrate_short(models[0] if len(models) == 1 else None) + ".")
        return text.strip(), UNLIKE_STYLE
    return text, PLAIN_STYLE
