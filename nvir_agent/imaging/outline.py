"""The spheroid outline as the store keeps it and as people see it.

- :func:`simplify_outline` turns a segmentation's mask into a small polygon
  (full-image pixel coordinates) that the store keeps with each measurement.
- :func:`display_image` maps pixels of any bit depth to 8-bit grey for display.
- :func:`draw_outline` draws an outline (a polygon or a mask) and a label on an
  image: the same drawing for `segment --overlay-out`, thumbnails and the UI.

Pure functions over numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Outline = tuple[tuple[int, int], ...]

MAX_POINTS = 256  # vertices kept per outline (a few kB of JSON at most)
OUTLINE_BGR = (0, 0, 255)
LABEL_BGR = (0, 200, 255)


def simplify_outline(mask: np.ndarray, *, tolerance_px: float | None = None,
                     max_points: int = MAX_POINTS) -> Outline:
    """The outer outline of the largest piece of ``mask`` as at most ``max_points``
    integer vertices; () for an empty mask.

    The tolerance defaults to 0.2 % of the image's larger side (2 px at 1024²):
    invisible at display size, and a thumbnail redrawn from it matches the mask."""
    m = np.ascontiguousarray(mask).astype(np.uint8)
    if m.ndim != 2 or not m.any():
        return ()
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return ()
    contour = max(contours, key=cv2.contourArea)
    tol = tolerance_px if tolerance_px is not None else max(0.5, 0.002 * max(m.shape))
    poly = cv2.approxPolyDP(contour, tol, True)
    while len(poly) > max_points:
        tol *= 1.5
        poly = cv2.approxPolyDP(contour, tol, True)
    return tuple((int(x), int(y)) for x, y in poly.reshape(-1, 2))


def display_image(pixels: np.ndarray, bit_depth: int | None = None) -> np.ndarray:
    """8-bit grey for display: integer data scaled from its effective bit depth,
    floats from 0–1; colour images are converted to grey first."""
    img = pixels
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(np.nan_to_num(img) * 255.0, 0, 255).astype(np.uint8)
    if img.dtype == np.uint8 and (bit_depth is None or bit_depth >= 8):
        return np.ascontiguousarray(img)
    bits = bit_depth or (8 if img.dtype == np.uint8 else 16)
    full = float((1 << bits) - 1)
    return np.clip(img.astype(np.float32) * (255.0 / full), 0, 255).astype(np.uint8)


def draw_outline(gray: np.ndarray, outline: Sequence[Sequence[int]] | np.ndarray | None, *,
                 label: str | None = None, scale: float = 1.0,
                 thickness: int | None = None) -> np.ndarray:
    """A BGR copy of the 8-bit ``gray`` image with the outline drawn on it.

    ``outline`` is a polygon (vertices in full-image pixels, multiplied by
    ``scale`` for a resized image) or a bool mask of the image's size."""
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if gray.ndim == 2 else gray.copy()
    t = thickness if thickness is not None else max(1, round(max(gray.shape[:2]) / 400))
    t = max(1, t)
    if isinstance(outline, np.ndarray) and outline.ndim == 2 and outline.dtype == bool:
        contours, _ = cv2.findContours(outline.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, contours, -1, OUTLINE_BGR, t, cv2.LINE_AA)
    elif outline is not None and len(outline) >= 2:
        pts = np.round(np.asarray(outline, np.float64) * scale).astype(np.int32)
        cv2.polylines(rgb, [pts.reshape(-1, 1, 2)], True, OUTLINE_BGR, t, cv2.LINE_AA)
    if label:
        cv2.putText(rgb, label, (10, 10 + 12 * t), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * t,
                    LABEL_BGR, max(1, t // 2), cv2.LINE_AA)
    return rgb
