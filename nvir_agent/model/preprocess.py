"""NViR preprocessing as a declared spec: crop → 8-bit intensity → resize →
normalise. Each model file stores the spec it was trained with, and
:func:`preprocess` applies it to one decoded image.

The paper's way (the defaults) is: OpenCV's grayscale 8-bit reading (colour
becomes luma, 16-bit becomes 8-bit by dividing by 256 — a right shift), a
centre square crop of the whole frame, a resize to 256×256 with
``INTER_LINEAR_EXACT`` (OpenCV code 5) on the 8-bit image, and
``(x / 255 − 0.5) / 0.5``. Models trained here may declare a bit-depth-aware
or percentile intensity mapping, or a square crop around the segmented
spheroid.

Pure functions over numpy arrays; no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from nvir_agent.errors import AnalysisError

CROPS = ("center-square", "spheroid")
INTENSITIES = ("uint8", "bitdepth", "percentile")
INTERPOLATIONS = {
    0: "INTER_NEAREST",
    1: "INTER_LINEAR",
    2: "INTER_CUBIC",
    3: "INTER_AREA",
    4: "INTER_LANCZOS4",
    5: "INTER_LINEAR_EXACT",
    6: "INTER_NEAREST_EXACT",
}


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the network's (1, size, size) float32 input.

    crop: ``center-square`` (the paper) or ``spheroid`` (a square around the
      segmented spheroid's bounding box, widened by ``margin`` × its side on
      every side, padded with edge values where it leaves the frame).
    intensity: ``uint8`` (the paper: OpenCV's 16→8-bit conversion, i.e.
      divide by 256 whatever the real bit depth), ``bitdepth`` (full scale of
      the detected bit depth → 255, so 12-bit data is not dark) or
      ``percentile`` (the ``low``/``high`` percentiles of the crop → 0/255).
    percentile_side: 0 takes the percentiles over every pixel of the crop; N
      over a copy of the crop reduced to N × N by area averaging, so that
      pixel noise (which widens the extremes) does not lower the contrast.
    """

    crop: str = "center-square"
    margin: float = 0.25
    size: int = 256
    interpolation: int = 5  # cv2.INTER_LINEAR_EXACT
    intensity: str = "uint8"
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    percentile_side: int = 0
    mean: float = 0.5
    std: float = 0.5

    def __post_init__(self) -> None:
        problems = []
        if self.crop not in CROPS:
            problems.append(f"crop {self.crop!r} is not one of {', '.join(CROPS)}")
        if self.intensity not in INTENSITIES:
            problems.append(f"intensity {self.intensity!r} is not one of {', '.join(INTENSITIES)}")
        if not isinstance(self.size, int) or not 2 <= self.size <= 4096:
            problems.append(f"size {self.size!r} is not a whole number from 2 to 4096")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation {self.interpolation!r} is not an OpenCV code 0–6")
        if not 0 <= self.margin <= 5:
            problems.append(f"margin {self.margin!r} is outside 0–5")
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            problems.append(
                f"percentiles {self.low_percentile!r}/{self.high_percentile!r} are not "
                "0 ≤ low < high ≤ 100"
            )
        if not isinstance(self.percentile_side, int) or not (
                self.percentile_side == 0 or 2 <= self.percentile_side <= 4096):
            problems.append(f"percentile_side {self.percentile_side!r} is not 0 or a whole "
                            "number from 2 to 4096")
        if not self.std > 0:
            problems.append(f"std {self.std!r} must be > 0")
        if problems:
            raise ValueError("invalid preprocessing spec: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """Inverse of :meth:`to_dict`; ValueError naming unknown keys or bad values."""
        if not isinstance(data, dict):
            raise ValueError(
                f"invalid preprocessing spec: expected an object, got {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"invalid preprocessing spec: unknown keys {', '.join(unknown)}")
        return cls(**data)

    def describe(self) -> str:
        crop = self.crop if self.crop != "spheroid" else f"spheroid (margin {self.margin:g})"
        intensity = self.intensity
        if intensity == "percentile":
            intensity = f"percentile {self.low_percentile:g}–{self.high_percentile:g}"
            if self.percentile_side:
                intensity += f" (of the crop at {self.percentile_side}²)"
        return (
            f"{crop} crop, {intensity} intensity, {self.size}×{self.size} "
            f"{INTERPOLATIONS[self.interpolation]}, (x/255−{self.mean:g})/{self.std:g}"
        )


def preprocess(
    image: np.ndarray,
    spec: PreprocessSpec,
    *,
    bit_depth: int | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Apply ``spec`` to one decoded image → float32 array (1, size, size).

    ``image`` is 2-D (grayscale) or H×W×3/4 (RGB/RGBA, numpy channel order),
    uint8 or uint16. ``bit_depth`` is the real bit depth of uint16 data
    (e.g. 12), used by the ``bitdepth`` intensity; ``mask`` (same H×W) is
    needed for the ``spheroid`` crop. Raises AnalysisError for an image this
    spec cannot use.
    """
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise AnalysisError(
            f"Cannot score an image of pixel type {image.dtype}.",
            "NViR scores 8- or 16-bit images; export the image as 8- or 16-bit TIFF or PNG.",
        )
    if image.ndim == 3 and image.shape[2] in (3, 4):
        rgb_input = True
    elif image.ndim == 2:
        rgb_input = False
    else:
        raise AnalysisError(
            f"Cannot score an image of shape {image.shape}.",
            "NViR scores single-plane grayscale (or RGB) images.",
        )
    if min(image.shape[:2]) < 2:
        raise AnalysisError(
            f"Image of {image.shape[1]}×{image.shape[0]} pixels is too small to score."
        )
    crop = _crop(image, spec, mask)
    if rgb_input:
        crop = _luma(crop, spec.intensity)
    gray8 = _to_uint8(crop, spec, bit_depth)
    if gray8.shape != (spec.size, spec.size):
        gray8 = cv2.resize(gray8, (spec.size, spec.size), interpolation=spec.interpolation)
    out = gray8.astype(np.float32)
    scale = np.float32(1.0 / (255.0 * spec.std))
    offset = np.float32(spec.mean / spec.std)
    out *= scale
    out -= offset
    return out[None]


def center_square_bounds(width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the paper's centre square: side min(w, h), offset (w−h)//2."""
    side = min(width, height)
    x0 = (width - side) // 2
    y0 = (height - side) // 2
    return x0, y0, x0 + side, y0 + side


def spheroid_square_bounds(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the square around ``mask``'s bounding box, widened by
    ``margin`` × its side on each side; may reach outside the frame."""
    rows = np.flatnonzero(mask.any(axis=1))  # far faster than np.nonzero on big frames
    if rows.size == 0:
        raise AnalysisError(
            "No spheroid mask to crop around.",
            "This model crops around the segmented spheroid; the image had none.",
        )
    cols = np.flatnonzero(mask.any(axis=0))
    y_min, y_max, x_min, x_max = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    side = int(round(max(x_max - x_min + 1, y_max - y_min + 1) * (1 + 2 * margin)))
    cx = (x_min + x_max + 1) / 2
    cy = (y_min + y_max + 1) / 2
    x0 = int(np.floor(cx - side / 2))
    y0 = int(np.floor(cy - side / 2))
    return x0, y0, x0 + side, y0 + side


def _crop(image: np.ndarray, spec: PreprocessSpec, mask: np.ndarray | None) -> np.ndarray:
    h, w = image.shape[:2]
    if spec.crop == "center-square":
        x0, y0, x1, y1 = center_square_bounds(w, h)
        return image[y0:y1, x0:x1]
    if mask is None:
        raise AnalysisError(
            "No spheroid mask to crop around.",
            "This model crops around the segmented spheroid; run segmentation first.",
        )
    if mask.shape[:2] != (h, w):
        raise AnalysisError(
            f"Spheroid mask of shape {mask.shape[:2]} does not match the image ({h}, {w})."
        )
    x0, y0, x1, y1 = spheroid_square_bounds(mask, spec.margin)
    inner = image[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
    pads = (max(-y0, 0), max(y1 - h, 0), max(-x0, 0), max(x1 - w, 0))
    if any(pads):
        inner = cv2.copyMakeBorder(np.ascontiguousarray(inner), *pads, cv2.BORDER_REPLICATE)
    return inner


def _luma(rgb: np.ndarray, intensity: str) -> np.ndarray:
    """OpenCV's colour → gray (0.299 R + 0.587 G + 0.114 B); for the paper's
    ``uint8`` spec 16-bit colour is first reduced to 8 bits, as imread does."""
    rgb = np.ascontiguousarray(rgb[..., :3])
    if intensity == "uint8" and rgb.dtype == np.uint16:
        rgb = (rgb >> 8).astype(np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _to_uint8(gray: np.ndarray, spec: PreprocessSpec, bit_depth: int | None) -> np.ndarray:
    if spec.intensity == "uint8":
        if gray.dtype == np.uint8:
            return np.ascontiguousarray(gray)
        # OpenCV's own 16 → 8-bit reading keeps the high byte (floor of x / 256).
        return np.right_shift(gray, 8).astype(np.uint8)
    if spec.intensity == "bitdepth":
        depth = bit_depth or (8 if gray.dtype == np.uint8 else 16)
        depth = int(min(max(depth, 1), 16))
        if gray.dtype == np.uint8 and depth >= 8:
            return np.ascontiguousarray(gray)
        full = float(2**depth - 1)
        # convertScaleAbs rounds and saturates (values above full scale → 255).
        return cv2.convertScaleAbs(np.ascontiguousarray(gray), alpha=255.0 / full)
    # percentile
    sample = gray
    side = spec.percentile_side
    if side and min(gray.shape[:2]) > side:
        sample = cv2.resize(np.ascontiguousarray(gray), (side, side), interpolation=cv2.INTER_AREA)
    lo, hi = _rank_percentiles(sample, spec.low_percentile, spec.high_percentile)
    if hi <= lo:
        hi = lo + 1.0
    # one table entry per possible pixel value: the same numbers as mapping each pixel
    values = np.arange(int(gray.max()) + 1, dtype=np.float32)
    scaled = (values - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    lut = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return lut[gray]


def _rank_percentiles(gray: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Nearest-rank percentiles from a histogram (exact for integer pixels, fast):
    the smallest value whose cumulative share reaches ``p`` percent."""
    counts = np.bincount(gray.ravel(), minlength=256)
    cum = np.cumsum(counts)
    n = cum[-1]
    lo = int(np.searchsorted(cum, max(low / 100.0 * n, 1), side="left"))
    hi = int(np.searchsorted(cum, max(high / 100.0 * n, 1), side="left"))
    return float(lo), float(hi)
