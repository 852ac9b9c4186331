"""Draw docs/img/real_brightfield_spheroids.jpg: the five real spheroid wells side by side.

    .venv/bin/python tools/draw_real_brightfield.py [OUT]

Each tile is a square crop round the reference outline, 250 px: blue the original
reference, green the corrected one where there is one (N07), red the segmentation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from nvir_agent.imaging.reading import read_image
from nvir_agent.imaging.segmentation import segment

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "real-brightfield"
WELLS = ("B03", "B06", "E11", "G12", "N07")
TILE = 250
BLUE, GREEN, RED = (255, 0, 0), (0, 190, 0), (0, 0, 255)


def _outline(canvas: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    m = cv2.resize(mask.astype(np.uint8), canvas.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, colour, 1, cv2.LINE_AA)


def tile(well: str) -> np.ndarray:
    img = read_image(DATA / f"spheroid_{well}.tif")
    seg = segment(img.pixels, bit_depth=img.bit_depth)
    ref = cv2.imread(str(DATA / f"spheroid_{well}_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    corrected_path = DATA / f"spheroid_{well}_mask_corrected.png"
    ys, xs = np.nonzero(ref | seg.mask)
    side = int(1.25 * max(np.ptp(ys), np.ptp(xs)))
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    h, w = ref.shape
    y0 = int(np.clip(cy - side // 2, 0, h - side))
    x0 = int(np.clip(cx - side // 2, 0, w - side))
    crop = (slice(y0, y0 + side), slice(x0, x0 + side))
    pixels = img.pixels[crop].astype(np.float32)
    lo, hi = np.percentile(img.pixels, (0.5, 99.5))
    grey = np.clip((pixels - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    canvas = cv2.cvtColor(cv2.resize(grey, (TILE, TILE), interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
    _outline(canvas, ref[crop], BLUE)
    if corrected_path.exists():
        _outline(canvas, (cv2.imread(str(corrected_path), cv2.IMREAD_GRAYSCALE) > 0)[crop], GREEN)
    _outline(canvas, seg.mask[crop], RED)
    cv2.putText(canvas, well, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return canvas


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA.parents[2] / "docs" / "img" / "real_brightfield_spheroids.jpg"
    cv2.imwrite(str(out), np.hstack([tile(w) for w in WELLS]), [cv2.IMWRITE_JPEG_QUALITY, 90])


if __name__ == "__main__":
    main()
