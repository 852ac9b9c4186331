"""Segmentation accuracy on rendered bright-field images with exact masks,
and on the real fluorescence set in shared/data/segmentation (inverted).

    .venv/bin/python benchmarks/segmentation_accuracy.py [--n 12] [--real DIR] [--overlays DIR]

Prints mean / worst IoU per nuisance condition, then per real image.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import tifffile

from nvir_agent.imaging.segmentation import segment
from nvir_agent.synth.render import Conditions, render_spheroid

# condition name → (viability range, fixed nuisances); the rest is drawn from
# the renderer's TRAINING ranges.
CONDITIONS: dict[str, tuple[tuple[float, float], Conditions]] = {
    "healthy": ((0.9, 1.2), Conditions(focus=0.1, well_wall=0.0, bubbles=0)),
    "dying_halo": ((0.2, 0.5), Conditions(fragmented=False)),
    "fragmented": ((0.05, 0.3), Conditions(fragmented=True)),
    "defocused": ((0.3, 1.1), Conditions(focus=1.3)),
    "off_centre": ((0.3, 1.1), Conditions(offset=(0.22, -0.18))),
    "well_wall": ((0.3, 1.1), Conditions(well_wall=0.9)),
    "uneven_light": ((0.3, 1.1), Conditions(gradient=0.2, vignetting=0.35, illumination=0.45)),
    "bubbles_debris": ((0.3, 1.1), Conditions(bubbles=3, debris=80)),
    "bits16": ((0.3, 1.1), Conditions(bits=16)),
    "small_4x": ((0.3, 1.1), Conditions(diameter_frac=0.06)),
    "large": ((0.3, 1.1), Conditions(diameter_frac=0.55)),
    "noisy": ((0.3, 1.1), Conditions(noise=0.03)),
    # seen on real ImageXpress plates (tests/data/real-brightfield)
    "real_plate": ((0.6, 1.2), Conditions(streaks=0.04, dark_body=True, satellites=4, fibres=1)),
    "satellites_loose": ((0.2, 0.6), Conditions(streaks=0.04, satellites=6, fragmented=False)),
    "several_aggregates": ((0.5, 1.1), Conditions(streaks=0.04, aggregates=2)),
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 1.0


def rendered_ious(name: str, n: int, seed0: int = 1000) -> list[float]:
    (lo, hi), cond = CONDITIONS[name]
    rng = np.random.default_rng(seed0)
    out = []
    for i in range(n):
        v = float(rng.uniform(lo, hi))
        r = render_spheroid(v, seed=seed0 + 7919 * i + zlib.crc32(name.encode()) % 1000, conditions=cond)
        seg = segment(r.image, bit_depth=r.bit_depth)
        out.append(iou(seg.mask, r.mask) if seg.found else 0.0)
    return out


def real_ious(root: Path, overlays: Path | None) -> list[tuple[str, float, list[str]]]:
    from nvir_agent.imaging.reading import read_image

    rows = []
    for img_path in sorted((root / "images").glob("*.tif")):
        stem = img_path.name.split("_CH1_")[0]
        suffix = img_path.stem.split("_8bit_")[1].replace("(2)", "")
        mask_path = root / "masks" / f"{stem}_mcBW_{suffix}.tif"
        data = read_image(img_path)
        inverted = 255 - data.pixels
        # raw stored values, as the data README describes them: True = background
        truth = _reference_mask(~tifffile.imread(mask_path).astype(bool))
        seg = segment(inverted, bit_depth=8)
        rows.append((img_path.name, iou(seg.mask, truth) if seg.found else 0.0, seg.qc))
        if overlays is not None:
            overlays.mkdir(parents=True, exist_ok=True)
            _overlay(inverted, seg.mask, truth, overlays / f"{img_path.stem}.png")
    return rows


def _reference_mask(spheroid_and_cells: np.ndarray) -> np.ndarray:
    """Largest connected component of the authors' mask after a 15-px opening."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    opened = cv2.morphologyEx(spheroid_and_cells.astype(np.uint8), cv2.MORPH_OPEN, k)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if count <= 1:
        return opened > 0
    main = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == main


def _overlay(img: np.ndarray, mask: np.ndarray, truth: np.ndarray | None, path: Path) -> None:
    rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if truth is not None:
        cs, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, cs, -1, (255, 160, 0), 3)
    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, cs, -1, (0, 0, 255), 3)
    scale = 640 / max(rgb.shape[:2])
    rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), rgb)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=12, help="images per condition")
    ap.add_argument("--only", nargs="*", help="conditions to run")
    ap.add_argument("--seed", type=int, default=1000, help="first seed (another set of images)")
    ap.add_argument("--real", type=Path, help="invasion-fluorescence folder")
    ap.add_argument("--overlays", type=Path, help="write real-image overlays here")
    args = ap.parse_args(argv)
    names = args.only or list(CONDITIONS)
    t0 = time.perf_counter()
    all_ious = []
    print(f"{'condition':16s} {'n':>3s} {'mean IoU':>9s} {'min IoU':>8s}")
    for name in names:
        ious = rendered_ious(name, args.n, args.seed)
        all_ious += ious
        print(f"{name:16s} {len(ious):3d} {np.mean(ious):9.3f} {np.min(ious):8.3f}")
    print(f"{'overall':16s} {len(all_ious):3d} {np.mean(all_ious):9.3f} {np.min(all_ious):8.3f}"
          f"   ({time.perf_counter() - t0:.1f} s)")
    if args.real:
        rows = real_ious(args.real, args.overlays)
        print(f"\n{'real image':36s} {'IoU':>6s}  qc")
        for name, value, qc in rows:
            print(f"{name:36s} {value:6.3f}  {','.join(qc)}")
        print(f"{'mean':36s} {np.mean([r[1] for r in rows]):6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
