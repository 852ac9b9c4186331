"""Place the spheroid border to within a cell: a small pixel classifier over the outline's band.

The edge-traced outline (:mod:`nvir_agent.imaging.segmentation`) finds the body, but a
dying or broken spheroid is lined with shed cells as dark as its own light,
textured edge, so the strongest edge often lies a cell or two outside the body
(on the outer edge of the fringe) or cuts into it. No single local statistic
separates the two there (mean, variance, local extremes all change smoothly
across the border); a combination at a few scales does. Around the outline,
in a band of ``BAND_CELLS`` cells either side, each pixel is classified body /
not body by a two-layer perceptron over:

- its signed distance from the outline (in band widths; the prior),
- the body core level (median transmission of the inner part),
- the local mean at 0.3, 0.7, 1.5 and 3 cells,
- the local standard deviation at 0.7 and 1.5 cells,
- the local fraction of pixels darker than 0.45, 0.6, 0.8 and 0.92 of background,
- the local maximum and minimum over a disc of one cell, and the maximum over two,
- the local fraction of background-bright pixels (the gaps between loose
  cells) at 1 and 2.5 cells, the mean at 6 cells and the spread at 3,
- the share of the neighbourhood (2 and 5 cells) inside the outline: the sides
  of a crack have body on both sides, the outer border open background beyond.

Everything is computed on the image divided by its background, resampled to
about ``PIXELS_PER_CELL`` pixels per cell (a cell is 1/25 of the body radius),
so the classifier sees the same scale at every magnification. The weights
(``boundary_mlp.npz`` beside this module) were fitted on rendered images with
exact masks by ``benchmarks/segmentation_boundary_fit.py``, on seeds apart
from those of the accuracy benchmark and the tests.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from nvir_agent.errors import ModelLoadError

WEIGHTS = Path(str(resources.files(__package__).joinpath("boundary_mlp.npz")))
PIXELS_PER_CELL = 2.0  # the band is classified at about this many pixels per cell
BAND_CELLS = 4.0  # pixels up to this many cells from the outline are classified
CELLS_PER_RADIUS = 25.0  # a liver cell is about 1/25 of a spheroid radius
MIN_CELL_PX = 1.0  # below this cell size (full-resolution pixels) the outline is kept
N_FEATURES = 21


@functools.lru_cache(maxsize=1)
def _weights() -> dict[str, np.ndarray]:
    try:
        with np.load(WEIGHTS, allow_pickle=False) as data:
            weights = {k: data[k].astype(np.float32) for k in data.files}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Cannot read the segmentation boundary weights {WEIGHTS}: {exc}",
            "Reinstall nvir-agent, or refit them with benchmarks/segmentation_boundary_fit.py.",
        ) from exc
    if weights.get("mu", np.zeros(0)).shape != (N_FEATURES,):
        raise ModelLoadError(f"{WEIGHTS} does not hold {N_FEATURES}-feature boundary weights",
                             "Refit them with benchmarks/segmentation_boundary_fit.py.")
    return weights


def probability(x: np.ndarray, weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Body probability of each row of ``x`` (N × N_FEATURES float32).

    Matrix products by OpenCV (single-threaded under cv2.setNumThreads(1));
    numpy's BLAS spawns threads that cost more than the products here.
    """
    w = weights if weights is not None else _weights()
    h = np.ascontiguousarray((x - w["mu"]) * (1.0 / w["sd"]), np.float32)
    layer = 0
    while f"w{layer + 1}" in w:
        h = cv2.gemm(h, w[f"w{layer}"], 1.0, None, 0.0)
        h += w[f"b{layer}"]
        np.maximum(h, 0.0, out=h)
        layer += 1
    logit = cv2.gemm(h, w[f"w{layer}"], 1.0, None, 0.0)[:, 0] + w[f"b{layer}"][0]
    return (1.0 / (1.0 + np.exp(-np.clip(logit, -30.0, 30.0)))).astype(np.float32)


def band_features(ratio: np.ndarray, inside: np.ndarray,
                  cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Features of the band's pixels (N × N_FEATURES) and the band itself (bool H × W).

    ``ratio`` is the image over its background, ``inside`` the outline's
    fraction per pixel (0–1), ``cell`` the cell size in these pixels. The
    sides of the cracks of a broken body are in the band like its outer border.
    """
    m = (inside >= 0.5).astype(np.uint8)
    ins = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    out = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
    signed = (ins - out) * np.float32(1.0 / cell)
    deep = ins > 0.4 * float(ins.max())
    core = float(np.median(ratio[deep])) if deep.any() else float(np.median(ratio[m > 0]))
    feats = [signed * np.float32(1.0 / BAND_CELLS), np.full_like(ratio, core)]
    for s in (0.3, 0.7, 1.5, 3.0):
        feats.append(cv2.GaussianBlur(ratio, (0, 0), s * cell))
    sq = ratio * ratio
    for s in (0.7, 1.5):
        mean = feats[3] if s == 0.7 else feats[4]
        feats.append(np.sqrt(np.maximum(cv2.GaussianBlur(sq, (0, 0), s * cell) - mean * mean, 0)))
    fine = feats[2]
    for level in (0.45, 0.6, 0.8, 0.92):
        feats.append(cv2.GaussianBlur((fine < level).astype(np.float32), (0, 0), 0.8 * cell))
    k = max(1, int(round(cell)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    feats.append(cv2.GaussianBlur(cv2.dilate(fine, disc), (0, 0), 0.5 * cell))
    feats.append(cv2.GaussianBlur(cv2.erode(fine, disc), (0, 0), 0.5 * cell))
    feats.append(cv2.GaussianBlur(cv2.dilate(fine, _disc(2.0 * cell)), (0, 0), cell))
    bright = (fine > 0.93).astype(np.float32)  # background showing between loose cells
    for s in (1.0, 2.5):
        feats.append(cv2.GaussianBlur(bright, (0, 0), s * cell))
    feats.append(cv2.GaussianBlur(ratio, (0, 0), 6.0 * cell))
    wide = feats[5]  # the ratio blurred at 3 cells, above
    feats.append(np.sqrt(np.maximum(cv2.GaussianBlur(sq, (0, 0), 3.0 * cell) - wide * wide, 0)))
    # how much of the neighbourhood the outline holds: the two sides of a crack
    # are both inside, a body's outer border has the open background beyond
    mf = m.astype(np.float32)
    for s in (2.0, 5.0):
        feats.append(cv2.GaussianBlur(mf, (0, 0), s * cell))
    band = np.abs(signed) < BAND_CELLS
    return np.stack([f[band] for f in feats], 1).astype(np.float32), band


def refine(gray: np.ndarray, full: float, mask: np.ndarray, box: tuple[int, int, int, int],
           background: np.ndarray, factor: int) -> tuple[int, int, int, int] | None:
    """Re-place the border of ``mask`` (bool, changed in place) by the band classifier.

    ``box`` (x0, y0, x1, y1) bounds the mask. Returns the box of the region
    that was rewritten, or None when the body is too small to refine or
    nothing would be left (``mask`` untouched).

    ``background`` is the smooth background of the working image (``factor``
    full-resolution pixels per pixel), ``full`` the full-scale value of ``gray``.
    """
    prepared = prepare(gray, full, mask, box, background, factor)
    if prepared is None:
        return None
    ratio, inside, cell, (x0, y0, x1, y1, k) = prepared
    feats, band = band_features(ratio, inside, cell)
    prob = inside.copy()
    prob[band] = probability(feats)
    prob = _tidy(_keep_pieces(prob, inside))
    if prob is None:
        return None
    up = cv2.resize(prob, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    mask[y0:y1, x0:x1] = up >= 0.5
    return x0, y0, x1, y1


def prepare(gray: np.ndarray, full: float, mask: np.ndarray, box: tuple[int, int, int, int],
            background: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray, float, tuple[int, int, int, int, int]] | None:
    """The region around ``mask`` at about PIXELS_PER_CELL pixels per cell.

    Returns (image over background, outline fraction per pixel, cell size in
    these pixels, (x0, y0, x1, y1, k) region in full-resolution pixels and the
    reduction factor), or None when the body is too small to refine.
    """
    h, w = mask.shape
    m8 = mask.view(np.uint8) if mask.dtype == np.bool_ else mask.astype(np.uint8)
    x, y = box[0], box[1]
    bw, bh = box[2] - box[0], box[3] - box[1]
    area = int(np.count_nonzero(m8[y:y + bh, x:x + bw]))
    cell_full = float(np.sqrt(area / np.pi)) / CELLS_PER_RADIUS
    if cell_full < MIN_CELL_PX:
        return None
    k = max(1, int(cell_full / PIXELS_PER_CELL))
    pad = int((BAND_CELLS + 4) * cell_full) + 2 * k
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(w, x + bw + pad), min(h, y + bh + pad)
    x1, y1 = x0 + (x1 - x0) // k * k, y0 + (y1 - y0) // k * k
    if x1 - x0 < 8 * k or y1 - y0 < 8 * k:
        return None
    roi = _reduce(gray[y0:y1, x0:x1], k).astype(np.float32) * np.float32(1.0 / full)
    rh, rw = roi.shape
    xs = ((x0 + (np.arange(rw, dtype=np.float32) + 0.5) * k) / factor - 0.5).astype(np.float32)
    ys = ((y0 + (np.arange(rh, dtype=np.float32) + 0.5) * k) / factor - 0.5).astype(np.float32)
    map_x, map_y = np.meshgrid(xs, ys)
    bg = cv2.remap(background, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ratio = roi / np.maximum(bg, 1e-4)
    # 0/1 after area averaging and rounding: the outline at this resolution
    inside = _reduce(m8[y0:y1, x0:x1], k).astype(np.float32)
    return ratio, inside, cell_full / k, (x0, y0, x1, y1, k)


def _disc(radius: float) -> np.ndarray:
    k = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))


def _reduce(img: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return img
    h, w = img.shape
    return cv2.resize(img, (w // k, h // k), interpolation=cv2.INTER_AREA)


def _keep_pieces(prob: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Body probability with every piece of the outline (≥ 2 % of it) kept at least in part.

    A narrow piece of a broken body lies wholly in the band, light edge on both
    sides; where the classifier would take most of it, the outline's own piece
    stays: the classifier places borders, it does not decide which pieces exist.
    """
    m = (inside >= 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if count <= 2:
        return prob
    total = float(stats[1:, cv2.CC_STAT_AREA].sum())
    for i in range(1, count):
        if stats[i, cv2.CC_STAT_AREA] < 0.02 * total:
            continue
        piece = labels == i
        if np.count_nonzero(prob[piece] >= 0.5) < 0.5 * stats[i, cv2.CC_STAT_AREA]:
            prob[piece] = np.maximum(prob[piece], inside[piece])
    return prob


def _tidy(prob: np.ndarray) -> np.ndarray | None:
    """Body probability with crumbs under 2 % of the area dropped and holes under 1 % filled."""
    keep = (prob >= 0.5).astype(np.uint8)
    area = float(np.count_nonzero(keep))
    if area == 0:
        return None
    count, labels, stats, _ = cv2.connectedComponentsWithStats(keep, connectivity=8)
    small = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] < 0.02 * area]
    if small:
        prob[np.isin(labels, small)] = 0.0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(1 - keep, connectivity=4)
    h, w = keep.shape
    fill = [i for i in range(1, count)
            if stats[i, cv2.CC_STAT_AREA] < 0.01 * area
            and stats[i, cv2.CC_STAT_LEFT] > 0 and stats[i, cv2.CC_STAT_TOP] > 0
            and stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] < w
            and stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] < h]
    if fill:
        prob[np.isin(labels, fill)] = 1.0
    return prob
