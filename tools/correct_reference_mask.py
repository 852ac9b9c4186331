"""Remake a real bright-field reference outline with the level taken round the body.

    .venv/bin/python tools/correct_reference_mask.py tests/data/real-brightfield/spheroid_N07.tif

The reference masks beside the images (``<stem>_mask.png``) were made by an Otsu
threshold on the percentile-stretched image (0.5–99.5 %) blurred with σ = 3 px,
the largest component not touching the frame edge, closed with a 15 px disc and
holes filled. The Otsu level there is taken over the whole frame, so what else the
frame holds moves it: on the five spheroid wells it lands at 0.65–0.72 of the local
background for B03, B06, E11 and G12 but at 0.82 for N07, where the outline then
takes in the light single cells on the border and runs over background.

This script keeps that pipeline and changes two things: the Otsu level is taken in
a window round the body (the original reference's bounding box grown by its
equivalent radius on each side), and the component is opened by a disc of one cell
(9 px, the diameter of the single cells on N07's border) before the closing, so
single cells stuck on the border stay outside. It writes
``<stem>_mask_corrected.png`` beside the image and prints the levels and the IoU
with the original reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from nvir_agent.imaging.reading import read_image

BLUR_SIGMA = 3.0
STRETCH_PERCENTILES = (0.5, 99.5)
CLOSING_PX = 15
CELL_PX = 9


def _disc(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _largest(mask: np.ndarray, seed: np.ndarray | None = None) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    ids = [i for i in range(1, n) if seed is None or np.any(seed & (labels == i))]
    if not ids:
        return np.zeros(mask.shape, bool)
    return labels == max(ids, key=lambda i: stats[i, cv2.CC_STAT_AREA])


def corrected_mask(pixels: np.ndarray, original: np.ndarray) -> tuple[np.ndarray, float]:
    """The corrected outline and its level (on the stretched, blurred 0–255 scale)."""
    lo, hi = np.percentile(pixels, STRETCH_PERCENTILES)
    stretched = np.clip((pixels.astype(np.float32) - lo) / (hi - lo), 0, 1)
    blurred = np.round(cv2.GaussianBlur(stretched, (0, 0), BLUR_SIGMA) * 255).astype(np.uint8)
    ys, xs = np.nonzero(original)
    r = int(np.sqrt(original.sum() / np.pi))
    h, w = original.shape
    window = blurred[max(0, ys.min() - r) : min(h, ys.max() + r + 1),
                     max(0, xs.min() - r) : min(w, xs.max() + r + 1)]
    level, _ = cv2.threshold(window, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    # the component under the inner part of the original body
    inner = cv2.distanceTransform(original.astype(np.uint8), cv2.DIST_L2, 5) > r / 2
    body = _largest(blurred <= level, inner)
    body = cv2.morphologyEx(body.astype(np.uint8), cv2.MORPH_OPEN, _disc(CELL_PX)) > 0
    body = _largest(body)
    body = cv2.morphologyEx(body.astype(np.uint8), cv2.MORPH_CLOSE, _disc(CLOSING_PX)) > 0
    return ndi.binary_fill_holes(body), float(level)


def _background(pixels: np.ndarray, mask: np.ndarray) -> float:
    # median of a ring 20–60 px outside the outline
    d = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    return float(np.median(pixels[(d > 20) & (d < 60)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="print only, write nothing")
    args = ap.parse_args()
    for path in args.images:
        pixels = read_image(path).pixels
        original = cv2.imread(str(path.with_name(f"{path.stem}_mask.png")), cv2.IMREAD_GRAYSCALE) > 0
        mask, level = corrected_mask(pixels, original)
        lo, hi = np.percentile(pixels, STRETCH_PERCENTILES)
        bg = _background(pixels, original)
        iou = np.count_nonzero(mask & original) / np.count_nonzero(mask | original)
        print(f"{path.stem}: level {(level / 255 * (hi - lo) + lo) / bg:.3f} of the local background, "
              f"area {np.count_nonzero(original)} -> {np.count_nonzero(mask)} px, IoU with the original {iou:.3f}")
        if not args.dry_run:
            cv2.imwrite(str(path.with_name(f"{path.stem}_mask_corrected.png")), mask.astype(np.uint8) * 255)


if __name__ == "__main__":
    main()
