"""Find THE spheroid in a bright-field image: a pure function over a numpy array.

``segment(image)`` returns a :class:`Segmentation`: whether a spheroid was
found, its mask (same size as the image, holes filled, the gaps of a broken
body left out, the halo of shed cells excluded), its outline, morphology
features and QC flags (see :mod:`nvir_agent.imaging.features`).

How it works (details in docs/segmentation.md):

1. Flatten. The image is reduced by a power of two to at most ``WORK_SIDE``
   pixels a side and divided by a smooth background (normalised convolution
   over the pixels that look like background, three passes). Vignetting,
   illumination gradients and the fall-off toward the well wall go away; what
   is left is a transmission map R: background ≈ 1; spheroid, debris, wall < 1.
2. Candidates. Dark regions of R are candidates. Each is scored by darkness,
   size, compactness (solidity), distance from the frame centre and how much of
   its outline runs along the frame border (the well wall does). The best one
   is THE spheroid; other large dark compact ones mean ``multiple_objects``.
3. Outline. Around the chosen candidate the image is resampled (by an integer
   factor) so the spheroid is about ``REFINE_DIAMETER`` pixels across — full
   resolution for small spheroids — flattened, and unrolled into polar
   coordinates around the candidate's centre. The outline is the closed path
   r(θ) of strongest radial edge, found by dynamic programming with a limit on
   how fast r may change: it follows the body border through blur and halo and
   is drawn into the full-resolution mask with sub-pixel vertices.
4. Broken bodies. Body pieces left outside the outline (it followed a crack)
   make it be traced again round all of them, with edges that leave body
   beyond them worth little. Long background-bright gaps across the body are
   cracks; in a broken body everything inside the outline that is not body is
   cut out pixel by pixel, so the body shows as its pieces.
5. Border. In a band of a few cells round the outline every pixel is
   classified body / not body from multi-scale local statistics by a small
   perceptron fitted on rendered images (:mod:`nvir_agent.imaging.boundary`): the
   strongest edge of a dying body often lies on its fringe of shed cells.
6. Lobes. A dense mass of cells attached to the body by a wide neck and many
   cells thick (lighter than the core, so the border left it out) is added
   back (:mod:`nvir_agent.imaging.lobes`); the fringe and the halo, bands a
   few cells deep, are not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from nvir_agent.errors import AnalysisError
from nvir_agent.imaging import boundary, lobes
from nvir_agent.imaging.features import Outline, WorkImage, measure, quality_flags

log = logging.getLogger(__name__)

WORK_SIDE = 512  # the working image is at most this many pixels a side
REFINE_DIAMETER = 256  # about this many pixels across the spheroid when outlining it
MIN_DIAMETER_FRAC = 0.02  # candidates smaller than this fraction of the width are ignored
MIN_CONTRAST = 0.06  # a spheroid is at least this much darker than its background
DISTANCE_WEIGHT = 1.0  # candidate score × exp(-w · (distance from centre / half diagonal)²)
AGGREGATE_MASS = 0.3  # another dark mass this large against the body's: multiple_objects
OUTLINE_REACH = 1.6  # the outline is searched out to this many candidate radii
N_ANGLES = 180  # outline vertices (every 2°)
MAX_SLOPE = 0.8  # largest radius change per unit of arc length along the outline
PATH_SMOOTH = 3  # outline radii are averaged over this many neighbouring angles
INWARD_BIAS = 0.5  # edge strength is weighted by exp(-INWARD_BIAS · r / r_candidate)
CRACK_LENGTH = 1.0  # a bright gap this many radii long splits the body (fragmented)
CRACK_DEPTH = 0.35  # ... and reaches this many radii deep into it
CELLS_PER_RADIUS = 25.0  # a liver cell is about 1/25 of a spheroid radius
  # dark specks up to about this many cells in radius are closed away
COARSE_RADIUS = 40  # pieces and cracks are looked for at 1–2× this many pixels per radius
PIECE_MIN_AREA = 0.05  # a body piece outside the outline has at least this fraction of its area
PIECE_BEYOND = 0.1  # an edge with this many radii of body beyond it counts 1/e as much
PIECE_SKIP = 3.0  # cells of a border's own blur not counted as body beyond an edge
GAP_SMOOTH = 0.5  # cells: smoothing before pixels of a broken body are classified
GAP_CLOSE = 1.0  # cells: bright texture spots smaller than this stay body
GAP_OPEN = 1.5  # cells: loose cells and bridges thinner than twice this go with the gaps


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
    contour: np.ndarray  # outline in working-image pixels
    area: float  # working-image pixels
    score: float
    centre: tuple[float, float]  # working-image pixels
    mass: float = 0.0  # dark mass: area × contrast (working-image pixels)


def segment(
    image: np.ndarray, *, bit_depth: int | None = None, pixel_size_um: float | None = None,
    refine_boundary: bool = True,
) -> Segmentation:
    """Find the spheroid in a 2-D grayscale image (uint8, uint16 or float in 0–1).

    ``bit_depth`` is the effective bit depth of integer data (12 for 12-bit data
    in a 16-bit container; detected from the maximum when None).
    ``pixel_size_um`` adds area_um2 and diameter_um to the features.
    ``refine_boundary=False`` keeps the edge-traced outline (steps 5 and 6 skipped;
    the boundary classifier is fitted on such outlines).
    Raises AnalysisError only for an array that is not an image.
    """
    gray = _as_gray(image)
    full = _full_scale(gray, bit_depth)
    h, w = gray.shape
    work, background = work_image(gray, full)
    smooth = cv2.GaussianBlur(work.ratio, (0, 0), 1.0)
    factor = work.factor
    candidates = _candidates(smooth, work.noise)
    chosen = _group_pieces(candidates) if candidates else None
    outline = _outline(gray, full, work, background, chosen) if chosen else None
    if outline is not None and refine_boundary:
        outline = _refined(gray, full, outline, background, factor)
        outline = _with_lobes(work, outline)
    if outline is None:
        feats, _ = measure(gray, None, full=full, pixel_size_um=pixel_size_um, work=work)
        qc = quality_flags(feats, found=False, width=w, n_other_objects=0)
        return Segmentation(False, np.zeros((h, w), bool), np.zeros((0, 2), np.int32), feats, qc)
    others = _other_aggregates(candidates, outline.mask, factor)
    feats, contour = measure(gray, outline, full=full, pixel_size_um=pixel_size_um, work=work)
    feats["n_aggregates"] = 1 + len(others)
    feats["aggregates_area_px"] = int(feats.get("area_px", 0)
                                      + sum(c.area for c in others) * factor * factor)
    qc = quality_flags(feats, found=True, width=w, n_other_objects=len(others))
    return Segmentation(True, outline.mask, contour, feats, qc)


def work_image(gray: np.ndarray, full: float) -> tuple[WorkImage, np.ndarray]:
    """The reduced, flattened working image and its smooth background (step 1)."""
    h, w = gray.shape
    factor = 1
    while max(h, w) / factor > WORK_SIDE:
        factor *= 2
    small = _reduce(gray, factor).astype(np.float32) * np.float32(1.0 / full)
    background, weights = _background(small)
    ratio = small / background
    work = WorkImage(small=small, ratio=ratio, factor=factor, noise=_noise(ratio, weights))
    return work, background


def _refined(gray: np.ndarray, full: float, outline: Outline, background: np.ndarray,
             factor: int) -> Outline:
    """The outline with its border re-placed by the band classifier (step 5)."""
    region = boundary.refine(gray, full, outline.mask, outline.box, background, factor)
    return outline if region is None else _boxed(outline, region)


def _with_lobes(work: WorkImage, outline: Outline) -> Outline:
    """The outline with the attached lobes of cells added (step 6)."""
    region = lobes.grow(work.ratio, work.factor, outline.mask, outline.box)
    return outline if region is None else _boxed(outline, region)


def _boxed(outline: Outline, region: tuple[int, int, int, int]) -> Outline:
    """The outline with its box re-measured after ``region`` of its mask was rewritten."""
    # the region holds the whole box with a margin, so the mask lies inside it
    x0, y0, x1, y1 = region
    x, y, bw, bh = cv2.boundingRect(outline.mask[y0:y1, x0:x1].view(np.uint8))
    h, w = outline.mask.shape
    box = (max(0, x0 + x - 1), max(0, y0 + y - 1), min(w, x0 + x + bw + 1), min(h, y0 + y + bh + 1))
    return replace(outline, box=box)


# ------------------------------------------------------------------ preparation


def _as_gray(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0 or min(arr.shape) < 16:
        raise AnalysisError(
            f"Cannot segment an array of shape {arr.shape}: a 2-D grayscale image of at least "
            "16 × 16 pixels is needed.",
            "Read images with nvir_agent.imaging.reading.read_image, which converts colour to gray.",
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


def _reduce(img: np.ndarray, factor: int) -> np.ndarray:
    """Block-average by an integer factor (OpenCV's fast path); drops < factor edge pixels."""
    if factor <= 1:
        return img
    h, w = img.shape[:2]
    hh, ww = max(factor, h - h % factor), max(factor, w - w % factor)
    return cv2.resize(img[:hh, :ww], (ww // factor, hh // factor), interpolation=cv2.INTER_AREA)


def _to_full(xy: tuple[float, float], factor: int) -> tuple[float, float]:
    """Centre of a reduced pixel in full-resolution pixel coordinates."""
    return (xy[0] + 0.5) * factor - 0.5, (xy[1] + 0.5) * factor - 0.5


def _background(small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smooth background by normalised convolution over background-like pixels."""
    h, w = small.shape
    coarse = _reduce(small, max(1, max(h, w) // 64))
    sigma = max(coarse.shape) / 7.0
    est = cv2.GaussianBlur(coarse, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    weight = np.ones_like(coarse)
    for _ in range(3):
        level = float(np.median(coarse[weight > 0]))
        ratio = coarse / np.maximum(est, 1e-4)
        spread = _mad(ratio[weight > 0])
        new = ((ratio > 1.0 - max(3.0 * spread, 0.06)) & (coarse > 0.3 * level))
        if np.count_nonzero(new) < 0.05 * new.size:
            break
        weight = new.astype(np.float32)
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
    """Pixel noise of R from neighbouring-pixel differences over the background."""
    sub, wsub = ratio[::8], weights[::8]
    diff = np.diff(sub, axis=1)
    bg = wsub[:, 1:] > 0
    values = diff[bg] if np.count_nonzero(bg) >= 100 else diff.ravel()
    return max(_mad(values) / np.sqrt(2.0), 1e-3)


# ------------------------------------------------------------------ candidates


def _candidates(smooth: np.ndarray, noise: float) -> list[_Candidate]:
    """Dark regions of the flattened working image, best first."""
    h, w = smooth.shape
    level = 1.0 - max(MIN_CONTRAST, 4.0 * noise)
    dark = (smooth < level).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # RETR_CCOMP: outer boundaries at the top level, including a spheroid that lies
    # in the bright hole of a dark ring (the well wall all round the frame)
    found, hierarchy = cv2.findContours(dark, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    contours = [c for c, hrc in zip(found, hierarchy[0], strict=True) if hrc[3] < 0] if found else []
    min_area = np.pi / 4 * (MIN_DIAMETER_FRAC * w) ** 2
    centre = np.array([w / 2.0, h / 2.0])
    half_diag = float(np.hypot(w, h)) / 2.0
    out: list[_Candidate] = []
    for c in contours:
        area = float(cv2.contourArea(c))
        if area < min_area:
            continue
        x, y, bw, bh = cv2.boundingRect(c)
        filled = np.zeros((bh, bw), np.uint8)
        cv2.drawContours(filled, [c - [x, y]], -1, 1, -1)
        contrast = 1.0 - float(smooth[y:y + bh, x:x + bw][filled > 0].mean())
        if contrast < MIN_CONTRAST:
            continue
        solidity = area / max(float(cv2.contourArea(cv2.convexHull(c))), 1.0)
        pts = c.reshape(-1, 2)
        on_border = np.count_nonzero((pts[:, 0] <= 0) | (pts[:, 1] <= 0)
                                     | (pts[:, 0] >= w - 1) | (pts[:, 1] >= h - 1))
        border_frac = on_border / max(len(pts), 1)
        m = cv2.moments(c)
        cxy = (m["m10"] / m["m00"], m["m01"] / m["m00"]) if m["m00"] else tuple(centre)
        dist = float(np.hypot(cxy[0] - centre[0], cxy[1] - centre[1])) / half_diag
        diameter_frac = np.sqrt(4 * area / np.pi) / w
        # the main body is the largest dark cell mass, compact or not, central or
        # not: the score grows with the dark mass (area × contrast), solidity and
        # the distance from the centre only break near ties; the well wall runs
        # along the frame border
        mass = area * contrast
        size_term = (1.0 if diameter_frac < 0.8 else 0.3) / (w * w)
        score = (mass * np.sqrt(solidity) * size_term * np.exp(-DISTANCE_WEIGHT * dist**2)
                 * max(0.0, 1.0 - 3.0 * border_frac) ** 2)
        if score > 0:
            out.append(_Candidate(c, area, float(score), (float(cxy[0]), float(cxy[1])), mass))
    out.sort(key=lambda cand: cand.score, reverse=True)
    return out


def _group_pieces(candidates: list[_Candidate]) -> _Candidate:
    """The best candidate together with the nearby large pieces of the same broken body."""
    best = candidates[0]
    r_best = np.sqrt(best.area / np.pi)
    group = [best]
    for c in candidates[1:]:
        r_c = np.sqrt(c.area / np.pi)
        gap = np.hypot(c.centre[0] - best.centre[0], c.centre[1] - best.centre[1]) - r_best - r_c
        if c.area >= 0.05 * best.area and gap <= 0.3 * r_best:
            group.append(c)
    if len(group) == 1:
        return best
    area = sum(c.area for c in group)
    cx = sum(c.centre[0] * c.area for c in group) / area
    cy = sum(c.centre[1] * c.area for c in group) / area
    hull = cv2.convexHull(np.concatenate([c.contour for c in group]))
    return _Candidate(hull, max(area, 0.8 * float(cv2.contourArea(hull))), best.score, (cx, cy))


def _other_aggregates(candidates: list[_Candidate], mask: np.ndarray,
                      factor: int) -> list[_Candidate]:
    """Dark masses outside the body of at least AGGREGATE_MASS of its dark mass.

    The body's mass is that of the candidates whose centre lies inside its
    mask (the pieces of a broken body count together). Satellite clusters,
    loose cells and debris are smaller; several aggregates of similar size
    (or a field of organoids) are not.
    """
    inside = [_inside(mask, _to_full(c.centre, factor)) for c in candidates]
    body = sum(c.mass for c, ins in zip(candidates, inside, strict=True) if ins)
    body = max(body, candidates[0].mass)
    return [c for c, ins in zip(candidates, inside, strict=True)
            if not ins and c is not candidates[0] and c.mass >= AGGREGATE_MASS * body]


def _inside(mask: np.ndarray, xy: tuple[float, float]) -> bool:
    h, w = mask.shape
    x, y = int(round(xy[0])), int(round(xy[1]))
    return 0 <= x < w and 0 <= y < h and bool(mask[y, x])


# ------------------------------------------------------------------ outline


def _outline(gray: np.ndarray, full: float, work: WorkImage, background: np.ndarray,
             cand: _Candidate) -> Outline | None:
    """Outline the chosen candidate at up to full resolution."""
    h, w = gray.shape
    fw = work.factor
    cxf, cyf = _to_full(cand.centre, fw)
    r0 = np.sqrt(cand.area / np.pi) * fw  # full-resolution radius of the candidate
    k = int(min(fw, max(1, np.ceil(2 * r0 / REFINE_DIAMETER))))
    reach = OUTLINE_REACH * r0 + 2 * k + 4
    x0, y0 = int(max(0, np.floor(cxf - reach))), int(max(0, np.floor(cyf - reach)))
    x1, y1 = int(min(w, np.ceil(cxf + reach) + 1)), int(min(h, np.ceil(cyf + reach) + 1))
    x1, y1 = x0 + (x1 - x0) // k * k, y0 + (y1 - y0) // k * k
    if x1 - x0 < 4 * k or y1 - y0 < 4 * k:
        return None
    roi = _reduce(gray[y0:y1, x0:x1], k).astype(np.float32) * np.float32(1.0 / full)
    rh, rw = roi.shape
    # background at the ROI pixel centres, from the working-image estimate
    # (sampled at the centres of 8 × 8 blocks and interpolated: the background is smooth)
    gw, gh = max(2, -(-rw // 8)), max(2, -(-rh // 8))
    gx = (np.arange(gw, dtype=np.float32) + 0.5) * (rw / gw) - 0.5
    gy = (np.arange(gh, dtype=np.float32) + 0.5) * (rh / gh) - 0.5
    map_x, map_y = np.meshgrid((x0 + (gx + 0.5) * k) / fw - 0.5, (y0 + (gy + 0.5) * k) / fw - 0.5)
    coarse_bg = cv2.remap(background, map_x.astype(np.float32), map_y.astype(np.float32),
                          cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    bg = cv2.resize(coarse_bg, (rw, rh), interpolation=cv2.INTER_LINEAR)
    r_roi = r0 / k
    ratio = cv2.GaussianBlur(roi / bg, (0, 0), max(0.7, r_roi / 80.0))

    # polar unrolling around the candidate centre, in ROI pixels
    cx, cy = (cxf - x0 + 0.5) / k - 0.5, (cyf - y0 + 0.5) / k - 0.5
    rad, theta = _trace(ratio, cx, cy, r_roi, k)
    roi_mask = _fill_polar(cx, cy, rad, theta, (rh, rw))
    # looking for pieces and cracks needs no more than COARSE_RADIUS–2×COARSE_RADIUS px per radius
    half = 2 if r_roi >= 2 * COARSE_RADIUS and min(rh, rw) >= 32 else 1
    coarse = cv2.resize(ratio, (rw // half, rh // half), interpolation=cv2.INTER_AREA)
    coarse_mask = cv2.resize(roi_mask, (rw // half, rh // half), interpolation=cv2.INTER_NEAREST)
    pieces = _outside_pieces(coarse, coarse_mask, r_roi / half)
    if pieces is not None:
        pieces = cv2.resize(pieces, (rw, rh), interpolation=cv2.INTER_NEAREST)
        # a broken body: pieces of it lie outside the outline (it followed a
        # crack). Outline again around all of them, from their common centre,
        # with edges that leave body pieces outside made worthless.
        m = cv2.moments(pieces, binaryImage=True)
        cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
        r_roi = float(np.sqrt(m["m00"] / np.pi))
        rad, theta = _trace(ratio, cx, cy, r_roi, k, pieces=pieces)
        roi_mask = _fill_polar(cx, cy, rad, theta, (rh, rw))
    pts_roi = np.stack([cx + np.cos(theta) * rad, cy + np.sin(theta) * rad], 1)
    pts = np.stack([x0 + (pts_roi[:, 0] + 0.5) * k - 0.5,
                    y0 + (pts_roi[:, 1] + 0.5) * k - 0.5], 1).astype(np.float32)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.rint(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    bx, by, bw, bh = cv2.boundingRect(np.rint(pts).astype(np.int32))
    box = (max(0, bx - 1), max(0, by - 1), min(w, bx + bw + 1), min(h, by + bh + 1))
    if box[2] <= box[0] or box[3] <= box[1] or not mask[box[1]:box[3], box[0]:box[2]].any():
        return None
    if pieces is not None:
        coarse_mask = cv2.resize(roi_mask, (rw // half, rh // half),
                                 interpolation=cv2.INTER_NEAREST)
    cracks = _cracks(coarse, coarse_mask, r_roi / half)
    if cracks is not None or pieces is not None:
        # a broken body: everything inside the outline that is not body goes
        cracks = _gaps(ratio, roi_mask, r_roi)
    if cracks is not None:
        up = cv2.resize(cracks, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        mask[y0:y1, x0:x1][up >= 0.5] = 0
    return Outline(mask=mask.view(np.bool_), box=box, polygon=pts, roi=roi, roi_mask=roi_mask,
                   roi_factor=k, broken=cracks is not None)


def _fill_polar(cx: float, cy: float, rad: np.ndarray, theta: np.ndarray,
                shape: tuple[int, int]) -> np.ndarray:
    pts = np.stack([cx + np.cos(theta) * rad, cy + np.sin(theta) * rad], 1)
    out = np.zeros(shape, np.uint8)
    cv2.fillPoly(out, [np.rint(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return out


def _trace(ratio: np.ndarray, cx: float, cy: float, r_roi: float, k: int,
           pieces: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Outline radius per angle around (cx, cy): the closed path of strongest radial edge.

    With ``pieces`` (uint8 map of body pieces), an edge is worth less the more
    body lies beyond it along the ray, so the path takes the outer border of
    the pieces rather than the edge of a crack between them.
    """
    n_r = max(16, int(OUTLINE_REACH * r_roi))
    radii = np.linspace(0.0, OUTLINE_REACH * r_roi, n_r, dtype=np.float32)
    theta = np.linspace(0.0, 2 * np.pi, N_ANGLES, endpoint=False, dtype=np.float32)
    px = (cx + np.cos(theta)[:, None] * radii[None, :]).astype(np.float32)
    py = (cy + np.sin(theta)[:, None] * radii[None, :]).astype(np.float32)
    polar = cv2.remap(ratio, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    edge = np.abs(cv2.Sobel(polar, cv2.CV_32F, 1, 0, ksize=3))
    wrapped = np.concatenate([edge[-2:], edge, edge[:2]])
    edge = cv2.GaussianBlur(wrapped, (1, 5), 0, sigmaY=1.0)[2:-2]
    # a slight preference for the inner of two similar edges: the body border
    # rather than the outer edge of the fringe of loose cells just outside it
    edge *= np.exp(-INWARD_BIAS * radii / max(r_roi, 1.0))[None, :]
    dr = float(radii[1] - radii[0])
    if pieces is not None:
        body = cv2.remap(pieces.astype(np.float32), px, py, cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        beyond = np.cumsum(body[:, ::-1], axis=1)[:, ::-1] * dr  # body length at radii ≥ r
        skip = max(2, int(round(PIECE_SKIP * r_roi / CELLS_PER_RADIUS / dr)))  # the border's own blur
        beyond = np.concatenate([beyond[:, skip:], np.zeros((N_ANGLES, skip), np.float32)], 1)
        edge *= np.exp(-beyond / (PIECE_BEYOND * r_roi))
    edge[:, :max(2, int(0.25 * r_roi / dr))] = 0.0
    edge[:, -2:] = 0.0
    step = max(1, int(round(MAX_SLOPE * (2 * np.pi / N_ANGLES) * r_roi / dr)))
    path = _closed_path(edge, step)
    # polygon filling adds about half a full-resolution pixel all round: take it off
    rad = np.maximum(_smooth_circular(radii[path], PATH_SMOOTH) - 0.5 / k, 0.0)
    return rad, theta


def _outside_pieces(ratio: np.ndarray, inside: np.ndarray, radius: float) -> np.ndarray | None:
    """Body pieces left outside the outline ``inside``, united with it (uint8), or None.

    Dark regions of the image with the cell-scale specks of the halo closed
    away, at least as dark as (about) the body, of at least PIECE_MIN_AREA of
    the outlined area, within a radius of the outline and mostly outside it.
    """
    area = int(np.count_nonzero(inside))
    if area < 50:
        return None
    cell = max(1, int(round(1.2 * radius / CELLS_PER_RADIUS)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * cell + 1, 2 * cell + 1))
    closed = cv2.morphologyEx(ratio, cv2.MORPH_CLOSE, disc)
    # the body level: inside the outline, or around its centre when the outline
    # went round a light crossing of cracks
    m = cv2.moments(inside, binaryImage=True)
    yy, xx = np.ogrid[:ratio.shape[0], :ratio.shape[1]]
    dist2 = (xx - m["m10"] / m["m00"]) ** 2 + (yy - m["m01"] / m["m00"]) ** 2
    body_level = min(float(np.median(closed[inside > 0])),
                     float(np.median(closed[dist2 <= radius**2])))
    if body_level > 0.85:
        # the outline went round a light crossing of cracks wider than the body
        # is deep (a small broken spheroid): the pieces are the darkest part nearby
        body_level = float(np.percentile(closed[dist2 <= (1.2 * radius) ** 2], 15))
    if body_level > 0.85:
        return None
    level = body_level + 0.5 * (1.0 - body_level)
    dark = (closed < level).astype(np.uint8)
    grown = cv2.dilate(inside, disc, iterations=2)
    if np.count_nonzero(dark > grown) < PIECE_MIN_AREA * area:
        return None  # hardly anything dark outside the outline: the usual case
    # detach the fringe of loose cells and halo clumps from the pieces
    wide = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * cell + 1, 4 * cell + 1))
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, wide)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    if count <= 1:
        return None
    near = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3) <= radius
    out_counts = np.bincount(labels[(grown == 0) & near].ravel(), minlength=count)
    rh, rw = ratio.shape
    keep = []
    for i in range(1, count):
        x, y, bw, bh, n = stats[i]
        if out_counts[i] < PIECE_MIN_AREA * area or n < PIECE_MIN_AREA * area:
            continue
        if x <= 0 or y <= 0 or x + bw >= rw or y + bh >= rh:
            continue  # reaches the edge of the search area: the well wall, not a piece
        comp = labels[y:y + bh, x:x + bw] == i
        if float(np.median(closed[y:y + bh, x:x + bw][comp])) > 0.5 * (body_level + level):
            continue
        keep.append(i)
    if not keep:
        return None
    in_counts = np.bincount(labels[inside > 0].ravel(), minlength=count)
    keep += [i for i in range(1, count) if in_counts[i] >= PIECE_MIN_AREA * area and i not in keep]
    united = (np.isin(labels, keep) & near).astype(np.uint8)
    return united


def _smooth_circular(values: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return values
    padded = np.concatenate([values[-k:], values, values[:k]])
    kernel = np.ones(k, np.float32) / k
    return np.convolve(padded, kernel, "same")[k:-k].astype(np.float32)


def _closed_path(edge: np.ndarray, step: int) -> np.ndarray:
    """Radius index per angle maximising the summed edge strength.

    Neighbouring angles may differ by at most ``step`` radius samples. The path
    is made closed by running the recursion one and a half times round and
    reading the middle turn. Where that turn does not close (it ends more than
    ``step`` from where it began: two outlines compete, e.g. along a crack
    through the centre), the path is traced once round from each of its two
    radii at angle 0, held fixed at both ends, and the better one is kept.
    """
    n_a, n_r = edge.shape
    extra = n_a // 4
    rows = np.concatenate([edge[n_a - extra:], edge, edge[:extra]])
    path, _ = _best_path(rows, step)
    start, end = int(path[extra]), int(path[extra + n_a])  # angle 0 at either end of the turn
    if abs(start - end) <= step:
        return path[extra:extra + n_a]
    once_round = np.concatenate([edge, edge[:1]])
    best, best_score = path[extra:extra + n_a], -np.inf
    for fixed in (start, end):
        candidate, score = _best_path(once_round, step, fixed=fixed)
        if score > best_score:
            best, best_score = candidate[:n_a], score
    return best


def _best_path(rows: np.ndarray, step: int, fixed: int | None = None) -> tuple[np.ndarray, float]:
    """Best path down ``rows`` (one radius index per row) and its score.

    With ``fixed``, the path starts and ends at that radius index.
    """
    scores = np.empty_like(rows)
    scores[0] = rows[0]
    if fixed is not None:
        scores[0] = -1e9
        scores[0, fixed] = rows[0, fixed]
    kernel = np.ones((1, 2 * step + 1), np.uint8)
    for t in range(1, len(rows)):
        # best score reachable from the previous row: a running max over ±step
        cv2.dilate(scores[t - 1:t], kernel, dst=scores[t:t + 1],
                   borderType=cv2.BORDER_CONSTANT, borderValue=-1e9)
        scores[t] += rows[t]
    path = np.empty(len(rows), np.int64)
    p = int(np.argmax(scores[-1])) if fixed is None else fixed
    total = float(scores[-1, p])
    path[-1] = p
    for t in range(len(rows) - 1, 0, -1):
        lo = max(0, p - step)
        p = lo + int(np.argmax(scores[t - 1, lo:p + step + 1]))
        path[t - 1] = p
    return path, total


def _cracks(ratio: np.ndarray, inside: np.ndarray, radius: float) -> np.ndarray | None:
    """Background-bright gaps that cut across the body (a broken spheroid), as float 0/1.

    Inside the outline, pixels closer to the background level than to the body
    level, opened by about 0.7 cell so cell-scale texture drops out, and kept
    only where a gap is long (at least ``CRACK_LENGTH`` radii): a crack runs
    across the body, texture and lighter patches do not.
    """
    body = ratio[inside > 0]
    if body.size < 50:
        return None
    body_level = float(np.median(body))
    if body_level > 0.85:
        return None
    bright = ((ratio > 0.5 * (1.0 + body_level)) & (inside > 0)).astype(np.uint8)
    cell = max(1, int(round(radius / 35.0)))  # about 0.7 of a cell (25 cells per radius)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * cell + 1, 2 * cell + 1))
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    long = [i for i in range(1, count)
            if np.hypot(stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT])
            >= CRACK_LENGTH * radius]
    if not long:
        return None
    # a crack runs through the body; a light band along the border does not
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    deepest = np.zeros(count, np.float32)
    np.maximum.at(deepest, labels.ravel(), depth.ravel())
    keep = [i for i in long if deepest[i] >= CRACK_DEPTH * radius]
    if not keep:
        return None
    return np.isin(labels, keep).astype(np.float32)


def _disc(radius: float) -> np.ndarray:
    k = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))


def _gaps(ratio: np.ndarray, inside: np.ndarray, radius: float) -> np.ndarray:
    """Everything inside the outline of a broken body that is not body, as float 0/1."""
    cell = radius / CELLS_PER_RADIUS
    sm = cv2.GaussianBlur(ratio, (0, 0), max(0.5, GAP_SMOOTH * cell))
    values = sm[inside > 0]
    split = 0.5 * (1.0 + float(np.median(values)))
    body_level = float(np.median(values[values < split]))
    keep = ((sm < 0.5 * (1.0 + body_level)) & (inside > 0)).astype(np.uint8)
    keep = cv2.morphologyEx(keep, cv2.MORPH_CLOSE, _disc(GAP_CLOSE * cell))
    keep = cv2.morphologyEx(keep, cv2.MORPH_OPEN, _disc(GAP_OPEN * cell)) & inside
    count, labels, stats, _ = cv2.connectedComponentsWithStats(keep, connectivity=8)
    if count > 1:
        big = 0.02 * float(np.count_nonzero(inside))
        small = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] < big]
        if small:
            keep[np.isin(labels, small)] = 0
    return ((inside > 0) & (keep == 0)).astype(np.float32)
