"""Attached lobes of cells: dense cell masses joined to the body that the border left out.

The border classifier (:mod:`nvir_agent.imaging.boundary`) places the border of
the compact body; a lobe of loosely packed cells attached to it (lighter than
the dense core, many cells thick, joined by a wide neck) lies beyond its band
or reads like fringe there, and is cut off. By the definition the segmenter
follows, the main body is the largest dark cell mass, compact or not: such a
lobe is part of it. A halo of shed cells and the fringe of loose cells along
the border are not, and locally look the same (measured: the median
transmission of the lobe of a real lobed spheroid at one-cell smoothing,
0.59 of background, and that of a rendered dying halo within two cells of
the body, 0.67–0.78, overlap; so do their 3-cell means). What differs is
thickness: a halo or a fringe is a band a few cells deep around the whole
border, a lobe is a mass as thick as a small spheroid. And a halo is shed by
a dying body, which is light and translucent; the rendered halo of a body at
v ≤ 0.3 is as dark as the body itself (transmission 0.52–0.56 at one-cell
smoothing, against 0.21 for the dense real body whose lobe is 0.48). So:

0. Lobes are looked for only beside a dense body (core below ``DENSE_BODY``
   of background).

1. Pixels darker than halfway between the body level and background at
   one-cell smoothing, together with the body, are opened by a disc of
   ``NECK_CELLS`` cells: a neck narrower than twice that detaches.
2. What the opening leaves outside the body, touching it, is a lobe if it
   is at least ``THICK_CELLS`` cells thick (largest inscribed radius) and
   holds ``MIN_AREA`` to ``MAX_AREA`` of the body's area (a larger mass is
   another aggregate touching the body: ``multiple_objects``' business).
3. A lobe gets back its own border: the pixels within ``NECK_CELLS`` cells
   of it darker than ``REGROW_SPLIT`` of the way to background join it, and
   small holes between lobe and body are filled.

Everything is computed on the flattened working image of step 1 (at most
512 pixels a side), reduced further so a cell is 1.5–3 pixels; a body
smaller than about 15 % of the frame width has cells under 1.5 working
pixels and is left as it is.
"""

from __future__ import annotations

import cv2
import numpy as np

NECK_CELLS = 3.0  # a lobe is joined by a neck at least twice this many cells wide
THICK_CELLS = 4.0  # ... and is at least this many cells thick beyond the border
MIN_AREA = 0.02  # ... and holds at least this fraction of the body's area
MAX_AREA = 0.2  # a larger mass joined to the body is another aggregate touching it
DENSE_BODY = 0.4  # lobes are looked for only beside a body darker than this (of background)
SPLIT = 0.5  # dark: below this fraction of the way from the body level to background
REGROW_SPLIT = 0.6  # a lobe's own border: below this fraction of the way
SEARCH_CELLS = 30.0  # lobes are looked for up to this many cells from the border
CELLS_PER_RADIUS = 25.0  # a liver cell is about 1/25 of a spheroid radius
MIN_CELL_PX = 1.5  # below this cell size (working-image pixels) lobes are not looked for
PIXELS_PER_CELL = 1.5  # larger bodies are looked at with about this many pixels per cell
HOLE_AREA = 0.01  # holes up to this fraction of the body's area are filled


def grow(ratio: np.ndarray, factor: int, mask: np.ndarray,
         box: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """Add the attached lobes of cells to ``mask`` (bool, full resolution, changed in place).

    ``ratio`` is the flattened working image (the image over its background,
    reduced by ``factor``), ``box`` (x0, y0, x1, y1) bounds the mask. Returns
    the box of the rewritten region, or None when there is no lobe or the
    cells are too small to see in the working image (``mask`` untouched).
    """
    x0, y0, x1, y1 = box
    area = int(np.count_nonzero(mask[y0:y1, x0:x1]))
    cell = float(np.sqrt(area / np.pi)) / CELLS_PER_RADIUS / factor  # working-image pixels
    if cell < MIN_CELL_PX:
        return None
    # about PIXELS_PER_CELL working-image pixels per cell: q more working pixels per pixel
    q = max(1, int(cell / PIXELS_PER_CELL))
    k = factor * q
    cell /= q
    h, w = ratio.shape
    pad = int(SEARCH_CELLS * cell + 1) * q
    wx0, wy0 = max(0, x0 // factor - pad), max(0, y0 // factor - pad)
    wx1, wy1 = min(w, -(-x1 // factor) + pad), min(h, -(-y1 // factor) + pad)
    wx1, wy1 = wx0 + (wx1 - wx0) // q * q, wy0 + (wy1 - wy0) // q * q
    if wx1 - wx0 < 8 * q or wy1 - wy0 < 8 * q:
        return None
    fx0, fy0 = wx0 * factor, wy0 * factor
    fx1, fy1 = min(mask.shape[1], wx1 * factor), min(mask.shape[0], wy1 * factor)
    size = ((wx1 - wx0) // q, (wy1 - wy0) // q)
    region = ratio[wy0:wy1, wx0:wx1]
    if q > 1:
        region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
    # the mask at this resolution (0/1 after area averaging and rounding); it is
    # empty outside its box, so only the box is reduced
    bx0, by0 = (x0 - fx0) // k, (y0 - fy0) // k
    bx1, by1 = min(size[0], -(-(x1 - fx0) // k)), min(size[1], -(-(y1 - fy0) // k))
    body = np.zeros((size[1], size[0]), np.uint8)
    part = mask[fy0 + by0 * k:fy0 + by1 * k, fx0 + bx0 * k:fx0 + bx1 * k].view(np.uint8)
    if k > 1 and part.size:
        part = cv2.resize(part, (part.shape[1] // k, part.shape[0] // k),
                          interpolation=cv2.INTER_AREA)
    body[by0:by0 + part.shape[0], bx0:bx0 + part.shape[1]] = part > 0
    lobes = find(region, body, cell)
    if lobes is None:
        return None
    up = cv2.resize(lobes.astype(np.float32), (fx1 - fx0, fy1 - fy0), interpolation=cv2.INTER_LINEAR)
    mask[fy0:fy1, fx0:fx1] |= up >= 0.5
    return fx0, fy0, fx1, fy1


def find(ratio: np.ndarray, body: np.ndarray, cell: float) -> np.ndarray | None:
    """The lobes attached to ``body`` (uint8 0/1) as a uint8 0/1 map, or None.

    ``ratio`` is the image over its background, ``cell`` the cell size in its pixels.
    """
    area = int(np.count_nonzero(body))
    if area < 50:
        return None
    sm = cv2.GaussianBlur(ratio, (0, 0), cell)
    depth = cv2.distanceTransform(body, cv2.DIST_L2, 3)
    level = float(np.median(sm[depth > 0.4 * float(depth.max())]))
    if level > DENSE_BODY:
        return None  # a light, dying body: what lies dark around it is its halo
    dark = ((sm < level + SPLIT * (1.0 - level)) | (body > 0)).astype(np.uint8)
    outside = dark & (1 - body)
    if np.count_nonzero(outside) < MIN_AREA * area:
        return None  # hardly anything dark beyond the border: the usual case
    thick = cv2.morphologyEx(dark, cv2.MORPH_OPEN, _disc(NECK_CELLS * cell)) & (1 - body)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(thick, connectivity=8)
    touch = cv2.dilate(body, _disc(1.0))
    lobes = np.zeros_like(body)
    for i in range(1, count):
        x, y, w, h, n = stats[i]
        if n < MIN_AREA * area or n > MAX_AREA * area:
            continue
        comp = (labels[y:y + h, x:x + w] == i).astype(np.uint8)
        if not np.any(comp & touch[y:y + h, x:x + w]):
            continue
        inscribed = float(cv2.distanceTransform(np.pad(comp, 1), cv2.DIST_L2, 3).max())
        if inscribed < THICK_CELLS * cell:
            continue  # a band of fringe or halo, not a lobe
        lobes[y:y + h, x:x + w] |= comp
    if not lobes.any():
        return None
    # the lobe's own border, lighter than its opened core
    light = (sm < level + REGROW_SPLIT * (1.0 - level)).astype(np.uint8)
    lobes = cv2.dilate(lobes, _disc(NECK_CELLS * cell)) & light & (1 - body)
    # holes left between a lobe and the body
    holes = 1 - (lobes | body)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=4)
    rh, rw = holes.shape
    fill = [i for i in range(1, count)
            if stats[i, cv2.CC_STAT_AREA] < HOLE_AREA * area
            and stats[i, cv2.CC_STAT_LEFT] > 0 and stats[i, cv2.CC_STAT_TOP] > 0
            and stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] < rw
            and stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] < rh]
    if fill:
        lobes[np.isin(labels, fill)] = 1
    return lobes


def _disc(radius: float) -> np.ndarray:
    k = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
