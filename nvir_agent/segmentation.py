"""Find THE spheroid in a bright-field image: a pure function over a numpy array.

``segment(image)`` returns a :class:`Segmentation`: whether a spheroid was
found, its mask (same size as the image, holes filled, fragments of a broken
body included, the halo of shed cells excluded), its outline, morphology
features and QC flags (see :mod:`nvir_agent.features`).

How it works (details in docs/segmentation.md):

1. Flatten. The image is reduced to about ``WORK_SIDE`` pixels a side and
   divided by a smooth background (normalised convolution over the pixels that
   look like background, three passes). Vignetting, illumination gradients and
   the dark fall-off toward the well wall go away; what is left is a
   transmission map R: background ≈ 1, spheroid, debris and wall < 1.
2. Candidates. Dark regions of R are candidates. Each is scored by darkness,
   size, compactness (solidity), distance from the frame centre and how much of
   it runs along the frame border (the well wall does). The best one is THE
   spheroid; others that are dark and large count as ``multiple_objects``.
3. Refine. Around the chosen candidate the image is resampled so the spheroid
   is about ``REFINE_DIAMETER`` pixels across (full resolution for small
   spheroids), and the outline is placed at the level between body and local
   background where the edge is strongest (mean gradient along the outline is
   largest). That keeps the border of a blurred (defocused) spheroid at its
   half-way point and leaves the faint halo of shed cells outside. The level
   map is interpolated to full resolution, so the outline is sub-pixel smooth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from nvir_agent.errors import AnalysisError
from nvir_agent.features import measure, quality_flags

log = logging.getLogger(__name__)

WORK_SIDE = 384  # longer side of the reduced image used to find the spheroid
REFINE_DIAMETER = 320  # pixels across the spheroid when refining its outline
MIN_DIAMETER_FRAC = 0.02  # candidates smaller than this fraction of the width are ignored
MIN_CONTRAST = 0.06  # a spheroid is at least this much darker than its background
OUTLINE_REACH = 1.6  # the outline is searched out to this many candidate radii
N_ANGLES = 180  # outline points (every 2°)
PATH_SMOOTH = 3  # outline radii are averaged over this many neighbouring angles
CRACK_LENGTH = 0.8  # a bright gap this many radii long splits the body (fragmented)
MAX_SLOPE = 0.8  # largest radius change per unit of arc length along the outline


@dataclass
class Segmentation:
    """Result of :func:`segment`. ``mask`` is bool and the size of the image."""

    found: bool
    mask: np.ndarray
    contour: np.ndarray  # (N, 2) int32 x, y of the outer outline of the largest piece
    features: dict[str, Any] = field(default_factory=dict)
    qc: list[str] = field(default_factory=list)


@dataclass
class _Candidate:
    contour: np.ndarray  # working-resolution outline
    area: float
    score: float
    contrast: float
    solidity: float
    border_frac: float


def segment(
    image: np.ndarray, *, bit_depth: int | None = None, pixel_size_um: float | None = None
) -> Segmentation:
    """Find the spheroid in a 2-D grayscale image (uint8, uint16 or float in 0–1)."""
    gray = _as_gray(image)
    full = _full_scale(gray, bit_depth)
    h, w = gray.shape
    work_scale = min(1.0, WORK_SIDE / max(h, w))
    small = _resize(gray, work_scale).astype(np.float32) / np.float32(full)
    background, weights = _background(small)
    ratio = small / np.maximum(background, 1e-4)
    smooth = cv2.GaussianBlur(ratio, (0, 0), 1.0)
    noise = _noise(ratio, weights)
    candidates = _candidates(smooth, noise)
    work = {"small": small, "ratio": ratio, "work_scale": work_scale, "noise": noise}
    refined = _refine(gray, full, work_scale, background, candidates[0]) if candidates else None
    if refined is None:
        feats, _ = measure(gray, None, full=full, pixel_size_um=pixel_size_um, **work)
        qc = quality_flags(feats, found=False, width=w, n_other_objects=0)
        return Segmentation(False, np.zeros((h, w), bool), np.zeros((0, 2), np.int32), feats, qc)
    mask, box = refined
    best = candidates[0]
    others = [c for c in candidates[1:] if c.score >= 0.35 * best.score
              and c.area >= 0.15 * best.area and not _overlaps(c, mask, work_scale)]
    feats, contour = measure(gray, mask, full=full, pixel_size_um=pixel_size_um, box=box, **work)
    qc = quality_flags(feats, found=True, width=w, n_other_objects=len(others))
    return Segmentation(True, mask, contour, feats, qc)


# ------------------------------------------------------------------ preparation


def _as_gray(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0 or min(arr.shape) < 8:
        raise AnalysisError(
            f"Cannot segment an array of shape {arr.shape}: a 2-D grayscale image of at least "
            "8 × 8 pixels is needed.",
            "Read images with nvir_agent.imageio.read_image, which converts colour to gray.",
        )
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind == "f":
        return np.clip(np.nan_to_num(arr), 0, 1).astype(np.float32)
    if arr.dtype not in (np.uint8, np.uint16):
        return np.clip(arr, 0, 65535).astype(np.uint16)
    return arr


def _full_scale(gray: np.ndarray, bit_depth: int | None) -> float:
    if gray.dtype == np.float32:
        return 1.0
    if bit_depth is None:
        if gray.dtype == np.uint8:
            return 255.0
        top = int(gray.max())
        bit_depth = next((b for b in (8, 10, 12, 14, 16) if top < (1 << b)), 16)
    return float((1 << int(bit_depth)) - 1)


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _background(small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smooth background by normalised convolution over background-like pixels."""
    h, w = small.shape
    coarse_scale = min(1.0, 64.0 / max(h, w))
    coarse = _resize(small, coarse_scale)
    sigma = max(coarse.shape) / 7.0
    est = cv2.GaussianBlur(coarse, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    weight = np.ones_like(coarse)
    for _ in range(3):
        level = float(np.median(coarse[weight > 0])) if (weight > 0).any() else 1.0
        ratio = coarse / np.maximum(est, 1e-4)
        spread = _mad(ratio[weight > 0]) if (weight > 0).any() else 0.05
        weight = ((ratio > 1.0 - max(3.0 * spread, 0.06))
                  & (coarse > 0.3 * level)).astype(np.float32)
        if weight.sum() < 0.05 * weight.size:
            break
        num = cv2.GaussianBlur(coarse * weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        est = np.where(den > 1e-3, num / np.maximum(den, 1e-6), est).astype(np.float32)
    background = cv2.resize(est, (w, h), interpolation=cv2.INTER_LINEAR)
    weights = cv2.resize(weight, (w, h), interpolation=cv2.INTER_NEAREST)
    return np.maximum(background, 1e-4), weights


def _mad(values: np.ndarray) -> float:
    if values.size == 0:
        return 0.0
    med = np.median(values)
    return float(1.4826 * np.median(np.abs(values - med)))


def _noise(ratio: np.ndarray, weights: np.ndarray) -> float:
    bg = ratio[weights > 0]
    if bg.size < 100:
        bg = ratio.ravel()
    # noise of neighbouring-pixel differences: insensitive to smooth shading
    diff = np.diff(ratio, axis=1)[weights[:, 1:] > 0] if bg.size >= 100 else np.diff(ratio, axis=1)
    return max(_mad(diff) / np.sqrt(2.0), 1e-3)


# ------------------------------------------------------------------ candidates


def _candidates(smooth: np.ndarray, noise: float) -> list[_Candidate]:
    """Dark regions of the flattened image, best first."""
    h, w = smooth.shape
    level = 1.0 - max(MIN_CONTRAST, 4.0 * noise)
    dark = (smooth < level).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(dark, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    min_area = np.pi / 4 * (MIN_DIAMETER_FRAC * w) ** 2
    centre = np.array([w / 2.0, h / 2.0])
    half_diag = float(np.hypot(w, h)) / 2.0
    out: list[_Candidate] = []
    for c in contours:
        area = float(cv2.contourArea(c))
        if area < min_area:
            continue
        x, y, bw, bh = cv2.boundingRect(c)
        roi = np.zeros((bh, bw), np.uint8)
        cv2.drawContours(roi, [c - [x, y]], -1, 1, -1)
        inside = smooth[y:y + bh, x:x + bw][roi > 0]
        contrast = float(1.0 - np.mean(inside))
        if contrast < MIN_CONTRAST:
            continue
        hull = cv2.convexHull(c)
        solidity = area / max(float(cv2.contourArea(hull)), 1.0)
        pts = c.reshape(-1, 2)
        on_border = np.count_nonzero((pts[:, 0] <= 0) | (pts[:, 1] <= 0)
                                     | (pts[:, 0] >= w - 1) | (pts[:, 1] >= h - 1))
        border_frac = on_border / max(len(pts), 1)
        m = cv2.moments(c)
        cxy = np.array([m["m10"] / m["m00"], m["m01"] / m["m00"]]) if m["m00"] else centre
        dist = float(np.hypot(*(cxy - centre))) / half_diag
        diameter_frac = np.sqrt(4 * area / np.pi) / w
        size_term = min(1.0, diameter_frac / 0.08) * (1.0 if diameter_frac < 0.8 else 0.3)
        score = (contrast * solidity**2 * size_term * np.exp(-2.5 * dist**2)
                 * max(0.0, 1.0 - 4.0 * border_frac))
        if score > 0:
            out.append(_Candidate(c, area, float(score), contrast, solidity, border_frac))
    out.sort(key=lambda cand: cand.score, reverse=True)
    return out


def _overlaps(cand: _Candidate, mask: np.ndarray, work_scale: float) -> bool:
    m = cv2.moments(cand.contour)
    if not m["m00"]:
        return False
    x, y = m["m10"] / m["m00"] / work_scale, m["m01"] / m["m00"] / work_scale
    yi, xi = min(int(y), mask.shape[0] - 1), min(int(x), mask.shape[1] - 1)
    return bool(mask[yi, xi])


# ------------------------------------------------------------------ refinement


def _refine(gray: np.ndarray, full: float, work_scale: float, background: np.ndarray,
            cand: _Candidate) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Outline the chosen candidate at up to full resolution; full-size bool mask.

    The region around the candidate is resampled so the spheroid is about
    REFINE_DIAMETER pixels across (never coarser than the working image, never
    finer than full resolution), flattened by the background, unrolled into
    polar coordinates around the candidate's centre, and the outline is the
    closed path r(θ) of strongest radial edge found by dynamic programming.
    """
    h, w = gray.shape
    m = cv2.moments(cand.contour)
    if not m["m00"]:
        return None
    cx_w, cy_w = m["m10"] / m["m00"], m["m01"] / m["m00"]
    r0 = np.sqrt(cand.area / np.pi) / work_scale  # full-resolution radius of the candidate
    reach = OUTLINE_REACH * r0 + 4
    x0, y0 = int(max(0, cx_w / work_scale - reach)), int(max(0, cy_w / work_scale - reach))
    x1, y1 = int(min(w, cx_w / work_scale + reach + 1)), int(min(h, cy_w / work_scale + reach + 1))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    scale = min(1.0, max(work_scale, REFINE_DIAMETER / max(2 * r0, 1.0)))
    roi = _resize(gray[y0:y1, x0:x1], scale).astype(np.float32) / np.float32(full)
    rh, rw = roi.shape
    sx, sy = rw / (x1 - x0), rh / (y1 - y0)  # exact ROI scale per axis
    bg = _crop_resample(background, (x0 * work_scale, y0 * work_scale,
                                     x1 * work_scale, y1 * work_scale), (rw, rh))
    ratio = roi / np.maximum(bg, 1e-4)
    r_roi = r0 * scale
    ratio = cv2.GaussianBlur(ratio, (0, 0), max(0.7, r_roi / 80.0))
    # polar unrolling around the candidate centre (ROI pixels)
    cx, cy = (cx_w / work_scale - x0) * sx, (cy_w / work_scale - y0) * sy
    n_r = max(16, int(OUTLINE_REACH * r_roi))
    radii = np.linspace(0.0, OUTLINE_REACH * r_roi, n_r, dtype=np.float32)
    theta = np.linspace(0.0, 2 * np.pi, N_ANGLES, endpoint=False, dtype=np.float32)
    map_x = (cx + np.cos(theta)[:, None] * radii[None, :]).astype(np.float32)
    map_y = (cy + np.sin(theta)[:, None] * radii[None, :]).astype(np.float32)
    polar = cv2.remap(ratio, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    edge = np.abs(cv2.Sobel(polar, cv2.CV_32F, 1, 0, ksize=3))
    wrap = np.concatenate([edge[-2:], edge, edge[:2]])
    edge = cv2.GaussianBlur(wrap, (1, 5), 0, sigmaY=1.0)[2:-2]
    dr = radii[1] - radii[0] if n_r > 1 else 1.0
    lo = int(0.25 * r_roi / dr)
    edge[:, :max(lo, 2)] = 0.0
    edge[:, -2:] = 0.0
    step = max(1, int(round(MAX_SLOPE * (2 * np.pi / N_ANGLES) * r_roi / dr)))
    path = _closed_path(edge, step)
    # polygon filling adds about half a pixel all round: take it off the radius
    rad = np.maximum(_smooth_circular(radii[path], PATH_SMOOTH) - 0.5 * scale, 0.0)
    rad_full_x, rad_full_y = rad / sx, rad / sy
    cxf, cyf = cx / sx + x0, cy / sy + y0
    pts = np.stack([cxf + np.cos(theta) * rad_full_x, cyf + np.sin(theta) * rad_full_y], 1)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.rint(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    if not mask.any():
        return None
    bx, by, bw, bh = cv2.boundingRect(np.rint(pts).astype(np.int32))
    box = (max(0, bx), max(0, by), min(w, bx + bw + 1), min(h, by + bh + 1))
    pts_roi = np.stack([cx + np.cos(theta) * rad, cy + np.sin(theta) * rad], 1)
    cracks = _cracks(ratio, pts_roi, r_roi)
    if cracks is not None:
        up = cv2.resize(cracks, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        mask[y0:y1, x0:x1][up >= 0.5] = 0
    return mask.astype(bool), box


def _cracks(ratio: np.ndarray, outline: np.ndarray, radius: float) -> np.ndarray | None:
    """Background-bright gaps that cut across the body (a broken spheroid), as float 0/1.

    Inside the outline, pixels closer to the background level than to the body
    level, opened by about one cell so cell-scale texture drops out, and kept
    only where a gap is long (at least ``CRACK_LENGTH`` radii): a crack runs
    across the body, texture and lighter patches do not.
    """
    inside = np.zeros(ratio.shape, np.uint8)
    cv2.fillPoly(inside, [np.rint(outline * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    body = ratio[inside > 0]
    if body.size < 50:
        return None
    body_level = float(np.median(body))
    if body_level > 0.85:
        return None
    bright = ((ratio > 0.5 * (1.0 + body_level)) & (inside > 0)).astype(np.uint8)
    cell = max(1, int(round(radius / 35.0)))  # about 0.7 cell
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * cell + 1, 2 * cell + 1))
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, k)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    keep = []
    for i in range(1, count):
        x, y, bw, bh = stats[i, :4]
        if np.hypot(bw, bh) >= CRACK_LENGTH * radius:
            keep.append(i)
    if not keep:
        return None
    return np.isin(labels, keep).astype(np.float32)


def _smooth_circular(values: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return values
    padded = np.concatenate([values[-k:], values, values[:k]])
    kernel = np.ones(k, np.float32) / k
    return np.convolve(padded, kernel, "same")[k:-k].astype(np.float32)


def _closed_path(edge: np.ndarray, step: int) -> np.ndarray:
    """Radius index per angle maximising the summed edge strength.

    Neighbouring angles may differ by at most ``step`` radius samples. The path
    is made closed by running the recursion over the angles one and a half
    times round and reading the middle turn.
    """
    n_a, n_r = edge.shape
    extra = n_a // 2
    order = np.concatenate([np.arange(n_a - extra, n_a), np.arange(n_a), np.arange(extra)])
    score = edge[order[0]].astype(np.float32).copy()
    back = np.zeros((len(order), n_r), np.int16)
    shifts = np.arange(-step, step + 1)
    idx = np.arange(n_r)
    for t in range(1, len(order)):
        padded = np.pad(score, step, mode="constant", constant_values=-1e9)
        stack = np.stack([padded[step + s: step + s + n_r] for s in shifts])
        arg = np.argmax(stack, axis=0)
        score = stack[arg, idx] + edge[order[t]]
        back[t] = (idx + shifts[arg]).astype(np.int16)
    path = np.zeros(len(order), np.int64)
    path[-1] = int(np.argmax(score))
    for t in range(len(order) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    middle = path[extra:extra + n_a]
    return middle


def _crop_resample(img: np.ndarray, box: tuple[float, float, float, float],
                   size: tuple[int, int]) -> np.ndarray:
    """Bilinear resample of ``img`` over the float box (x0, y0, x1, y1) to ``size``."""
    x0, y0, x1, y1 = box
    rw, rh = size
    xs = (np.arange(rw, dtype=np.float32) + 0.5) * ((x1 - x0) / rw) + x0 - 0.5
    ys = (np.arange(rh, dtype=np.float32) + 0.5) * ((y1 - y0) / rh) + y0 - 0.5
    mx, my = np.meshgrid(xs, ys)
    return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
