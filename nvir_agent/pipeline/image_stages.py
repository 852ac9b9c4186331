"""The stages that look at the image itself: read, segment, thumbnail.

They need OpenCV and numpy, never torch, so the image workers
(``pipeline/workers.py``) run them in processes of their own without loading
the network.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nvir_agent.config import Config
from nvir_agent.errors import AnalysisError, ImageError
from nvir_agent.imaging.analyse import analyse
from nvir_agent.imaging.outline import simplify_outline
from nvir_agent.imaging.reading import read_image
from nvir_agent.imaging.thumbnails import write_thumbnail
from nvir_agent.pipeline.contract import Analysis

log = logging.getLogger(__name__)

_META_KEYS = ("format", "n_pages", "page", "compression", "source_dtype")
# The segmenter needs at least this many pixels a side (imaging/segmentation.py)
MIN_SIDE_PX = 16


class ReadStage:
    """Reads each image (header checked first); an unreadable file fails that image only."""

    name = "read"

    def __init__(self, config: Config) -> None:
        self.max_side = config.imaging.max_pixels_side
        self.page = config.imaging.page
        self.pixel_size_um = config.imaging.pixel_size_um or None

    def run(self, batch: list[Analysis]) -> None:
        for a in batch:
            try:
                img = read_image(Path(a.record.path), max_side=self.max_side, page=self.page)
            except ImageError as exc:
                log.info("%s: %s", a.record.path, exc.message)
                a.fail(exc)
                continue
            a.pixels = img.pixels
            a.bit_depth = img.bit_depth
            meta = {k: img.meta[k] for k in _META_KEYS if k in img.meta}
            meta.update(width=int(img.pixels.shape[1]), height=int(img.pixels.shape[0]),
                        bit_depth=img.bit_depth)
            # a pixel size set in agent.toml wins over the file's (often a display dpi)
            size = self.pixel_size_um or img.meta.get("pixel_size_um")
            if size:
                meta["pixel_size_um"] = float(size)
            a.image_meta.update(meta)


class SegmentStage:
    """Finds the spheroid: fills found, mask, features and qc. No spheroid is not a failure."""

    name = "segment"

    def __init__(self, config: Config) -> None:
        self.config = config

    def run(self, batch: list[Analysis]) -> None:
        for a in batch:
            if a.pixels is None:
                a.fail(AnalysisError(f"{a.record.path}: no pixels to segment (not read)."))
                continue
            h, w = a.pixels.shape[:2]
            if min(h, w) < MIN_SIDE_PX:
                a.fail(AnalysisError(
                    f"{Path(a.record.path).name} is only {w} × {h} pixels; a spheroid image "
                    f"needs at least {MIN_SIDE_PX} × {MIN_SIDE_PX}.",
                    "Check the imager's export settings (binning, crop).",
                ))
                continue
            try:
                seg = analyse(a.pixels, bit_depth=a.bit_depth, name=a.record.path,
                              pixel_size_um=a.image_meta.get("pixel_size_um")).segmentation
            except AnalysisError as exc:
                a.fail(exc)
                continue
            a.found = seg.found
            a.mask = seg.mask if seg.found else None
            a.outline = simplify_outline(seg.mask) if seg.found else ()
            a.features = dict(seg.features)
            a.qc = list(seg.qc)
            h, w = a.pixels.shape[:2]
            a.image_meta.update(width=int(w), height=int(h), bit_depth=a.bit_depth)
            if not seg.found:
                log.info("%s: no spheroid found", a.record.path)


class ThumbnailStage:
    """Writes each image's preview into the user cache folder for the review window.
    A thumbnail that cannot be written is logged; the image itself is not failed."""

    name = "thumbnail"

    def __init__(self, config: Config, folder: Path | None = None) -> None:
        self.enabled = config.imaging.thumbnails
        self.folder = folder
        self._warned = False

    def run(self, batch: list[Analysis]) -> None:
        if not self.enabled:
            return
        for a in batch:
            if a.pixels is None:
                continue
            try:
                write_thumbnail(a.record.path, a.pixels, a.bit_depth, folder=self.folder)
            except OSError as exc:
                if not self._warned:
                    log.warning("Cannot write thumbnails (%s); the review window makes them "
                                "when it needs them", exc)
                    self._warned = True
