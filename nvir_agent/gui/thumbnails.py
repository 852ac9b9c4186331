"""Thumbnails and spheroid outlines for the well view (no Qt; call from a worker).

The engine writes a thumbnail per image into the user cache folder
(``imaging.thumbnails``) and stores the outline with each measurement. For
images analysed before that, both are made here on demand: the thumbnail into
the same cache folder — never into the acquisition folder — and the outline by
segmenting the image again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nvir_agent.errors import AgentError
from nvir_agent.imaging.analyse import analyse
from nvir_agent.imaging.outline import simplify_outline
from nvir_agent.imaging.thumbnails import thumbnail_for

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


def outline_of(path: str) -> tuple[Outline | None, int, int]:
    """The spheroid outline by reading and segmenting the image again (None when no
    spheroid is found), with the image's width and height."""
    seg = analyse(path)
    h, w = seg.pixels.shape[:2]
    mask = seg.segmentation.mask
    return (simplify_outline(mask) if seg.segmentation.found else None), w, h


def thumbnail(path: str, *, outline: Outline | None = None, width: int | None = None,
              height: int | None = None, size: int = THUMB_SIDE) -> Thumbnail:
    """The thumbnail of an image and its outline, making whichever is missing (rows
    analysed before outlines were stored are segmented again)."""
    try:
        thumb = thumbnail_for(path, size=size)
    except AgentError as exc:
        return Thumbnail(None, outline, int(width or 0), int(height or 0), exc.message)
    if outline is not None and width and height:
        return Thumbnail(thumb, outline, int(width), int(height))
    try:
        outline, w, h = outline_of(path)
    except AgentError as exc:
        return Thumbnail(thumb, None, int(width or 0), int(height or 0), exc.message)
    return Thumbnail(thumb, outline, w, h)
