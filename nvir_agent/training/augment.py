"""The NViR paper's training augmentations on 8-bit grayscale crops.

Each transform is applied with probability 0.5, in this order: horizontal
flip, vertical flip, rotation by a multiple of 90°, transpose,
brightness/contrast (±0.2), gamma (80–120 %), tone curve (scale 0.1) and
CLAHE (clip limit 0.3–1, 8×8 tiles). An optional defocus blur (Gaussian,
sigma up to ``blur`` × the crop side; off in the paper's recipe) makes models
robust to focus drift, and optional Gaussian noise (std up to ``noise`` × 255)
to noisier cameras. The intensity transforms follow
albumentations' definitions (RandomBrightnessContrast, RandomGamma,
RandomToneCurve, CLAHE) and are computed as 256-entry look-up tables.
Everything is drawn from the given numpy Generator, so a seed fixes the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and ranges; the defaults are the paper's."""

    p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    gamma: tuple[float, float] = (80.0, 120.0)
    tone_scale: float = 0.1
    clahe_clip: tuple[float, float] = (0.3, 1.0)
    clahe_tiles: int = 8
    blur: float = 0.0  # max Gaussian sigma as a fraction of the crop side; 0 = off
    noise: float = 0.0  # max Gaussian noise std as a fraction of 255; 0 = off
    intensity: bool = True  # False: flips, rotations, transpose (and blur) only


PAPER = AugmentSettings()
_RAMP = np.arange(256, dtype=np.float64)


def augment(image: np.ndarray, rng: np.random.Generator,
            settings: AugmentSettings = PAPER) -> np.ndarray:
    """Return an augmented copy of a square 2-D uint8 image (same shape and dtype)."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"augment expects a 2-D uint8 image, got {image.dtype} {image.shape}")
    p = settings.p
    out = image
    if rng.random() < p:
        out = out[:, ::-1]
    if rng.random() < p:
        out = out[::-1, :]
    if rng.random() < p:
        out = np.rot90(out, int(rng.integers(0, 4)))
    if rng.random() < p:
        out = out.T
    lut = _RAMP.copy()
    if settings.intensity and rng.random() < p:
        lut = brightness_contrast_lut(
            lut,
            rng.uniform(-settings.brightness, settings.brightness),
            rng.uniform(-settings.contrast, settings.contrast),
        )
    if settings.intensity and rng.random() < p:
        lut = gamma_lut(lut, rng.uniform(*settings.gamma) / 100.0)
    if settings.intensity and rng.random() < p:
        low = float(np.clip(rng.normal(0.25, settings.tone_scale), 0.0, 1.0))
        high = float(np.clip(rng.normal(0.75, settings.tone_scale), 0.0, 1.0))
        lut = tone_curve_lut(lut, low, high)
    out = np.ascontiguousarray(out)
    if not np.array_equal(lut, _RAMP):
        out = cv2.LUT(out, np.clip(np.rint(lut), 0, 255).astype(np.uint8))
    if settings.intensity and rng.random() < p:
        clip = rng.uniform(*settings.clahe_clip)
        tiles = settings.clahe_tiles
        out = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(tiles, tiles)).apply(out)
    if settings.blur > 0 and rng.random() < p:
        sigma = rng.uniform(0.0, settings.blur) * out.shape[0]
        if sigma > 0.3:
            out = cv2.GaussianBlur(out, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    if settings.noise > 0 and rng.random() < p:
        std = rng.uniform(0.0, settings.noise) * 255.0
        noisy = out + rng.normal(0.0, std, out.shape)
        out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out


def brightness_contrast_lut(lut: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """albumentations RandomBrightnessContrast (brightness by max): v·(1+c) + b·255, clipped."""
    return np.clip(lut * (1.0 + contrast) + brightness * 255.0, 0.0, 255.0)


def gamma_lut(lut: np.ndarray, gamma: float) -> np.ndarray:
    """255·(v/255)^gamma."""
    return 255.0 * np.power(np.clip(lut, 0.0, 255.0) / 255.0, gamma)


def tone_curve_lut(lut: np.ndarray, low_y: float, high_y: float) -> np.ndarray:
    """Cubic Bézier tone curve through (0,0), (¼,low_y), (¾,high_y), (1,1), as in
    albumentations RandomToneCurve (the input level is the curve parameter)."""
    t = np.clip(lut, 0.0, 255.0) / 255.0
    y = 3 * t * (1 - t) ** 2 * low_y + 3 * t**2 * (1 - t) * high_y + t**3
    return 255.0 * y
