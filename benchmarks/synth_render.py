"""Render time of one synthetic spheroid image on one core.

    .venv/bin/python benchmarks/synth_render.py [--n 20]

Prints the median and 90th percentile per frame size and nuisance preset, over
viabilities spread from 0 to 1.2. OpenCV is limited to one thread.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from nvir_agent.synth import TRAINING, WIDE, Conditions, render_spheroid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20, help="images per configuration")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    render_spheroid(1.0, 0, Conditions(width=256, height=256))  # warm-up
    for size in (1024, 2048):
        for name, ranges in (("TRAINING", TRAINING), ("WIDE", WIDE)):
            times = []
            for i in range(args.n):
                v = 1.2 * i / max(args.n - 1, 1)
                t0 = time.perf_counter()
                render_spheroid(v, 1000 + i, Conditions(width=size, height=size), ranges)
                times.append(time.perf_counter() - t0)
            ms = np.array(times) * 1000
            print(f"{size}x{size} {name:8s} median {np.median(ms):6.1f} ms   "
                  f"p90 {np.percentile(ms, 90):6.1f} ms   (n={args.n})")


if __name__ == "__main__":
    main()
