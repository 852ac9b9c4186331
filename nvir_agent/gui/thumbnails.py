"""Thumbnails and spheroid outlines for the well view (no Qt; call from a worker).

The engine writes a thumbnail per image into the user cache folder
(``imaging.thumbnails.thumbnail_for``) and stores the outline with each
measurement. For images analysed before that (or while that code has not
landed), both are made here on demand: the thumbnail into the same cache
folder — never into the acquisition folder — and the outline by segmenting
the image again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from nvir_agent import paths
from nvir_agent.errors import AgentError
from nvir_agent.imaging.reading import read_image

log = logging.getLogger(__name__)

THUMB_SIDE = 256
Outline = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Thumbnail:
    """A thumbnail file and the outline in full-image pixel coordinates."""

    path: Path | None
    outline: Outline | None
    width: int  # full image
    height: int
    error: str | None = None


def to_uint8(pixels: np.ndarray, bit_depth: int | None = None) -> np.ndarray:
    """Display 8-bit: scaled by the effective bit depth, then stretched to the
    0.5–99.5 % range so dark 12-bit data is visible."""
    img = pixels.astype(np.float32)
    if img.ndim == 3:
        img = img.mean(axis=2)
    lo, hi = np.percentile(img, (0.5, 99.5)) if img.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((img - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _cache_file(path: str, size: int) -> Path:
    try:
        st = os.stat(path)
        tag = f"{path}|{st.st_size}|{st.st_mtime_ns}|{size}"
    except OSError:
        tag = f"{path}|{size}"
    digest = hashlib.sha1(tag.encode("utf-8", "surrogateescape")).hexdigest()
    return paths.user_cache_dir() / "thumbnails" / digest[:2] / f"{digest}.png"


def simplify(contour: np.ndarray, tolerance: float = 1.5) -> Outline:
    """An outline with fewer vertices (Douglas–Peucker, ``tolerance`` pixels)."""
    if contour is None or len(contour) < 3:
        return ()
    pts = cv2.approxPolyDP(contour.reshape(-1, 1, 2).astype(np.int32), tolerance, True)
    return tuple((int(x), int(y)) for x, y in pts.reshape(-1, 2))


def outline_of(pixels: np.ndarray, bit_depth: int | None) -> Outline | None:
    """The spheroid outline by segmenting the image (None when none is found)."""
    from nvir_agent.imaging.segmentation import segment

    seg = segment(pixels, bit_depth=bit_depth)
    return simplify(seg.contour) if seg.found else None


def engine_thumbnail(path: str, size: int) -> Path | None:
    """The engine's thumbnail when ``imaging.thumbnails`` exists (it makes missing ones)."""
    try:
        from nvir_agent.imaging import thumbnails as engine_thumbs
    except ImportError:
        return None
    return Path(engine_thumbs.thumbnail_for(Path(path), size=size))


def thumbnail(path: str, *, outline: Outline | None = None, width: int | None = None,
              height: int | None = None, size: int = THUMB_SIDE) -> Thumbnail:
    """The thumbnail of an image and its outline, making whichever is missing."""
    try:
        thumb = engine_thumbnail(path, size)
    except (AgentError, OSError) as exc:
        log.debug("engine thumbnail for %s failed: %s", path, exc)
        thumb = None
    if thumb is None:
        thumb = _cache_file(path, size)
        if not thumb.is_file():
            thumb = None
    if thumb is not None and outline is not None and width and height:
        return Thumbnail(thumb, outline, int(width), int(height))
    try:
        img = read_image(path)
    except AgentError as exc:
        return Thumbnail(None, None, int(width or 0), int(height or 0), exc.message)
    h, w = img.pixels.shape[:2]
    if thumb is None:
        thumb = _cache_file(path, size)
        small = to_uint8(img.pixels, img.bit_depth)
        f = size / max(h, w)
        if f < 1:
            small = cv2.resize(small, (max(1, round(w * f)), max(1, round(h * f))),
                               interpolation=cv2.INTER_AREA)
        thumb.parent.mkdir(parents=True, exist_ok=True)
        tmp = thumb.with_suffix(".part.png")
        cv2.imwrite(str(tmp), small)
        os.replace(tmp, thumb)
    if outline is None:
        outline = outline_of(img.pixels, img.bit_depth)
    return Thumbnail(thumb, outline, w, h)
