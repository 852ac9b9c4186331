"""Spheroid morphology features and image QC flags from a segmentation mask.

Pure functions over numpy arrays. Features (all plain floats/ints/lists, so
they go to JSON and the store as they are):

- area_px, equivalent_diameter_px, perimeter_px (outline length, lightly
  smoothed so a digital circle measures 2πr), circularity (4πA/P², ≤ 1),
  solidity (area / convex-hull area), eccentricity (of the equal-moment
  ellipse), n_pieces (pieces of a broken body).
- perimeter_circumference_ratio: perimeter / circumference of the circle of
  equal area (1 for a circle; the NViR paper's baseline uses its inverse) and
  mean_boundary_curvature: the paper's classic-baseline curvature, computed as
  its reference code does, on the mask resized to 256 × 256.
- brightness_ratio: mean of the spheroid core (inner half of the radius) over
  the median of the local background (a ring 1.3–1.8 radii from the centre).
- halo_fraction: fraction of a ring one radius wide around the spheroid that is
  covered by dark specks (shed cells, debris).
- focus: sharpness of the body's rim and of the loose cells, debris and
  well-bottom texture around it (not of the dark, textureless inside): the
  ratio of fine- to coarse-scale gradient energy, about 1 when sharp and
  toward 0.25 when blurred, independent of magnification, exposure and bit
  depth.
- centroid [x, y], bbox [x, y, w, h], touches_border; area_um2 and diameter_um
  when the pixel size is known; background_level (fraction of full scale) and
  saturated_fraction describe the exposure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

# QC thresholds (documented in docs/segmentation.md)
FOCUS_MIN = 0.6  # focus below this: out_of_focus (blur of about half a cell or more)
FOCUS_DIAMETER = 256.0  # focus is measured with the spheroid resampled to this many pixels
FOCUS_RIM_CELLS = 2.0  # focus looks this many cells into the body from its outline
CELLS_PER_RADIUS = 25.0  # a liver cell is about 1/25 of a spheroid radius
UNDEREXPOSED_LEVEL = 0.15  # background median below this fraction of full scale
SATURATED_FRACTION = 0.01  # more than this fraction of pixels at full scale
TOO_SMALL_FRAC = 0.04  # equivalent diameter below this fraction of the frame width
TOO_LARGE_FRAC = 0.70  # ... above this fraction of the frame width
FRAGMENTED_SOLIDITY = 0.85  # below this solidity a body counts as fragmented (rendered intact: > 0.88)



@dataclass
class WorkImage:
    """The reduced image the spheroid was found in (``factor`` full pixels per pixel)."""

    small: np.ndarray  # image / full scale
    ratio: np.ndarray  # small / its smooth background (transmission)
    factor: int
    noise: float  # pixel noise of ``ratio``


@dataclass
class Outline:
    """The spheroid found by segmentation, with what measuring it needs."""

    mask: np.ndarray  # full-resolution bool
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 bounding the mask
    polygon: np.ndarray  # (N, 2) float32 outline vertices, full-resolution pixels
    roi: np.ndarray  # image / full scale around the spheroid, reduced by roi_factor
    roi_mask: np.ndarray  # uint8 outline filled, in roi pixels
    roi_factor: int
    broken: bool = False  # pieces or cracks were found (gaps cut out pixel by pixel)


QC_FLAGS = ("no_spheroid", "multiple_objects", "touches_border", "out_of_focus",
            "underexposed", "saturated", "too_small", "too_large", "fragmented")


def measure(gray: np.ndarray, outline: Outline | None, *, full: float,
            pixel_size_um: float | None, work: WorkImage) -> tuple[dict[str, Any], np.ndarray]:
    """Features of the spheroid in ``outline`` (None: only the exposure features).

    Returns the features and the outer outline (N × 2 int32 x, y) of the
    largest piece of the mask.
    """
    feats: dict[str, Any] = {
        "background_level": round(float(np.median(work.small[::4, ::4])), 4),
        "saturated_fraction": round(float(np.count_nonzero(work.small >= 0.995))
                                    / work.small.size, 5),
    }
    empty = np.zeros((0, 2), np.int32)
    if outline is None:
        return feats, empty
    mask = outline.mask
    h, w = mask.shape
    x0, y0, x1, y1 = outline.box
    sub = mask[y0:y1, x0:x1].astype(np.uint8)
    contours, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE,
                                   offset=(x0, y0))
    if not contours:
        return feats, empty
    area = float(np.count_nonzero(sub))
    perimeter = float(sum(_smoothed_length(c) for c in contours))
    all_pts = np.concatenate(contours)
    hull_area = float(cv2.contourArea(cv2.convexHull(all_pts)))
    m = cv2.moments(sub, binaryImage=True)
    cx, cy = m["m10"] / m["m00"] + x0, m["m01"] / m["m00"] + y0
    diameter = float(np.sqrt(4.0 * area / np.pi))
    bx, by, bw, bh = cv2.boundingRect(all_pts)
    largest = max(contours, key=cv2.contourArea)
    pieces = [c for c in contours if cv2.contourArea(c) >= 0.02 * area]
    feats.update({
        "area_px": int(area),
        "equivalent_diameter_px": round(diameter, 2),
        "perimeter_px": round(perimeter, 2),
        "circularity": round(min(1.0, 4.0 * np.pi * area / max(perimeter, 1e-6) ** 2), 4),
        "solidity": round(min(1.0, area / max(hull_area, 1.0)), 4),
        "eccentricity": round(_eccentricity(m), 4),
        "perimeter_circumference_ratio": round(perimeter / max(np.pi * diameter, 1e-6), 4),
        "mean_boundary_curvature": _paper_curvature(outline.polygon, (h, w)),
        "n_pieces": max(1, len(pieces)),
        "centroid": [round(cx, 1), round(cy, 1)],
        "bbox": [int(bx), int(by), int(bw), int(bh)],
        "touches_border": bool(bx <= 0 or by <= 0 or bx + bw >= w or by + bh >= h),
    })
    feats.update(_ring_features(outline.polygon, work, (cx, cy), diameter))
    feats["focus"] = _focus(outline, diameter)
    if pixel_size_um:
        feats["pixel_size_um"] = float(pixel_size_um)
        feats["area_um2"] = round(area * pixel_size_um**2, 1)
        feats["diameter_um"] = round(diameter * pixel_size_um, 2)
    return feats, largest.reshape(-1, 2).astype(np.int32)


def quality_flags(feats: dict[str, Any], *, found: bool, width: int,
                  n_other_objects: int) -> list[str]:
    """QC flags of one image, in the order of QC_FLAGS."""
    flags: set[str] = set()
    if feats.get("background_level", 1.0) < UNDEREXPOSED_LEVEL:
        flags.add("underexposed")
    if feats.get("saturated_fraction", 0.0) > SATURATED_FRACTION:
        flags.add("saturated")
    if not found:
        flags.add("no_spheroid")
    else:
        if n_other_objects > 0:
            flags.add("multiple_objects")
        if feats.get("touches_border"):
            flags.add("touches_border")
        if feats.get("focus", FOCUS_MIN) < FOCUS_MIN:
            flags.add("out_of_focus")
        d = feats.get("equivalent_diameter_px", 0.0) / max(width, 1)
        if d < TOO_SMALL_FRAC:
            flags.add("too_small")
        if d > TOO_LARGE_FRAC:
            flags.add("too_large")
        if feats.get("n_pieces", 1) > 1 or feats.get("solidity", 1.0) < FRAGMENTED_SOLIDITY:
            flags.add("fragmented")
    return [f for f in QC_FLAGS if f in flags]


# ------------------------------------------------------------------ helpers


def _smoothed_length(contour: np.ndarray) -> float:
    """Outline length after a 5-point moving average (removes pixel staircase)."""
    pts = contour.reshape(-1, 2).astype(np.float32)
    if len(pts) < 8:
        return float(cv2.arcLength(contour, True))
    k = 2
    padded = np.concatenate([pts[-k:], pts, pts[:k]])
    kernel = np.ones(2 * k + 1, np.float32) / (2 * k + 1)
    sm = np.stack([np.convolve(padded[:, 0], kernel, "valid"),
                   np.convolve(padded[:, 1], kernel, "valid")], 1).astype(np.float32)
    return float(cv2.arcLength(sm.reshape(-1, 1, 2), True))


def _eccentricity(m: dict[str, float]) -> float:
    if not m["m00"]:
        return 0.0
    a, b, c = m["mu20"] / m["m00"], m["mu11"] / m["m00"], m["mu02"] / m["m00"]
    common = np.sqrt(max((a - c) ** 2 + 4 * b * b, 0.0))
    major, minor = (a + c + common) / 2, (a + c - common) / 2
    if major <= 0:
        return 0.0
    return float(np.sqrt(max(0.0, 1.0 - max(minor, 0.0) / major)))


def _paper_curvature(polygon: np.ndarray, shape: tuple[int, int]) -> float | None:
    """Mean |curvature| of the outline, as the NViR paper's baseline computes it.

    The paper resizes the whole-frame mask to 256 × 256, takes the contour with
    the longest arc length (RETR_TREE, CHAIN_APPROX_NONE) and averages
    |x'y'' − y'x''| / (x'² + y'²)^1.5 with numpy gradients along the contour.
    """
    h, w = shape
    small = np.zeros((256, 256), np.uint8)
    pts = (polygon + 0.5) * np.array([256.0 / w, 256.0 / h], np.float32) - 0.5
    cv2.fillPoly(small, [np.rint(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    contours, _ = cv2.findContours(small, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    c = max(contours, key=lambda k: cv2.arcLength(k, True)).reshape(-1, 2).astype(np.float64)
    if len(c) < 3:
        return None
    x_t, y_t = np.gradient(c[:, 0]), np.gradient(c[:, 1])
    xx_t, yy_t = np.gradient(x_t), np.gradient(y_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.abs(xx_t * y_t - x_t * yy_t) / (x_t * x_t + y_t * y_t) ** 1.5
    finite = k[np.isfinite(k)]
    return round(float(finite.mean()), 5) if finite.size else None


def _ring_features(polygon: np.ndarray, work: WorkImage, centre: tuple[float, float],
                   diameter: float) -> dict[str, Any]:
    """brightness_ratio and halo_fraction, at the working resolution."""
    f = work.factor
    r = 0.5 * diameter / f
    cx, cy = (centre[0] + 0.5) / f - 0.5, (centre[1] + 0.5) / f - 0.5
    pts = (polygon + 0.5) / f - 0.5
    # crop to what is measured: the ring one radius round the outline and the
    # background 1.3–1.8 radii from the centre
    sh, sw = work.small.shape
    lo = np.minimum(pts.min(0) - r, [cx - 1.8 * r, cy - 1.8 * r]) - 3
    hi = np.maximum(pts.max(0) + r, [cx + 1.8 * r, cy + 1.8 * r]) + 4
    x0, y0 = max(0, int(lo[0])), max(0, int(lo[1]))
    x1, y1 = min(sw, int(hi[0])), min(sh, int(hi[1]))
    small, ratio = work.small[y0:y1, x0:x1], work.ratio[y0:y1, x0:x1]
    cx, cy = cx - x0, cy - y0
    pts = pts - np.array([x0, y0], np.float32)
    inside = np.zeros(small.shape, np.uint8)
    cv2.fillPoly(inside, [np.rint(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    yy, xx = np.ogrid[:small.shape[0], :small.shape[1]]
    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    core = (inside > 0) & (dist <= 0.5 * r)
    if not core.any():
        core = inside > 0
    near_bg = (dist >= 1.3 * r) & (dist <= 1.8 * r) & (inside == 0)
    out: dict[str, Any] = {"brightness_ratio": None, "halo_fraction": None}
    if core.any() and near_bg.any():
        bg = float(np.median(small[near_bg]))
        out["brightness_ratio"] = round(float(small[core].mean()) / max(bg, 1e-6), 4)
    # the ring: from just outside the body to one radius beyond it
    d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
    ring = (d_out >= 1.5) & (d_out <= max(2.5, r))
    if ring.any():
        dark = ratio < 1.0 - max(0.10, 4.0 * work.noise)
        out["halo_fraction"] = round(float(np.count_nonzero(dark & ring))
                                     / np.count_nonzero(ring), 4)
    return out


def _focus(outline: Outline, diameter: float) -> float:
    """Sharpness where focus shows: the body's rim and the loose cells, debris and
    well-bottom texture around it, not the body's inside (a dense body is dark and
    almost textureless however sharp it is).

    Over a band from FOCUS_RIM_CELLS cells inside the outline to half a radius
    outside it, the mean squared gradient at a fine scale s1 (a quarter of a
    cell, at least 0.7 px) is compared with that at 4 × s1, each scale-normalised
    (× s) and less the share of pixel noise (estimated from neighbouring-pixel
    differences in the band). A step edge blurred by σ gives
    (s1 / s2) · √((σ² + s2²) / (σ² + s1²)): 1 when sharp, 0.5 at σ ≈ 2 s1 (half
    a cell), toward 0.25 when very blurred; cell-sized texture reads higher when
    sharp. The ratio does not depend on exposure, contrast or bit depth.
    """
    img, m = outline.roi, outline.roi_mask
    d = diameter / outline.roi_factor
    if d > FOCUS_DIAMETER:
        scale = FOCUS_DIAMETER / d
        size = (max(8, round(img.shape[1] * scale)), max(8, round(img.shape[0] * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        m = cv2.resize(m, size, interpolation=cv2.INTER_NEAREST)
        d = FOCUS_DIAMETER
    cell = max(0.5 * d / CELLS_PER_RADIUS, 1.0)
    # square structuring elements: OpenCV's fast separable path
    grow, shrink = int(0.5 * d) | 1, int(2 * FOCUS_RIM_CELLS * cell) | 1
    band = (cv2.dilate(m, np.ones((grow, grow), np.uint8)) > 0) & ~(
        cv2.erode(m, np.ones((shrink, shrink), np.uint8)) > 0)
    if np.count_nonzero(band) < 50:
        return 0.0
    s1 = max(0.7, 0.25 * cell)
    # only the band and a margin for the coarse blur
    x, y, bw, bh = cv2.boundingRect(band.view(np.uint8))
    pad = int(np.ceil(12 * s1))
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(img.shape[1], x + bw + pad), min(img.shape[0], y + bh + pad)
    img, band = img[y0:y1, x0:x1], band[y0:y1, x0:x1]
    diff = np.diff(img[::4], axis=1)[band[::4, 1:]]
    noise = 1.4826 * float(np.median(np.abs(diff - np.median(diff)))) / np.sqrt(2.0)
    fine = _gradient_energy(img, band, s1, noise)
    # the coarse scale on a half-size copy (4 × fewer pixels, a 2 × smaller kernel):
    # gradients per full pixel are half, the averaged noise is half
    hh, hw = img.shape[0] // 2, img.shape[1] // 2
    if min(hh, hw) >= 8:
        half = cv2.resize(img[:2 * hh, :2 * hw], (hw, hh), interpolation=cv2.INTER_AREA)
        half_band = band[1:2 * hh:2, 1:2 * hw:2]
        coarse = 0.5 * _gradient_energy(half, half_band, 2.0 * s1, 0.5 * noise)
    else:
        coarse = _gradient_energy(img, band, 4.0 * s1, noise)
    return round(float(fine / max(coarse, 1e-12)), 3)


def _gradient_energy(img: np.ndarray, band: np.ndarray, sigma: float, noise: float) -> float:
    """Mean squared gradient over ``band`` after a Gaussian of ``sigma``, less the
    pixel noise's share, times sigma (scale-normalised)."""
    smooth = cv2.GaussianBlur(img, (0, 0), sigma)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    energy = float(cv2.mean(gx * gx + gy * gy, mask=band.view(np.uint8))[0])
    return max(energy - noise * noise * _noise_gain(round(sigma, 3)), 0.0) * sigma


@lru_cache(maxsize=64)
def _noise_gain(sigma: float) -> float:
    """Mean squared central-difference gradient of unit white noise after a Gaussian."""
    k = cv2.getGaussianKernel(2 * int(np.ceil(3 * sigma)) + 1, sigma)[:, 0]
    dk = np.convolve(k, [0.5, 0.0, -0.5])
    return 2.0 * float((dk**2).sum() * (k**2).sum())
