"""Read + segment time on one core: a 2048 × 2048 16-bit TIFF (12-bit data) and a
1024 × 1024 8-bit PNG, both rendered spheroids.

    .venv/bin/python benchmarks/segmentation_speed.py [--repeat 30]

Targets: ≤ 25 ms for the TIFF and ≤ 8 ms for the PNG (one core). Prints the best and
the median of the read (decode), segment and read + segment times, and the load average
(other processes share the cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile

from nvir_agent.imaging.reading import read_image
from nvir_agent.imaging.segmentation import segment
from nvir_agent.synth.render import Conditions, render_spheroid


def _time(path: Path, repeat: int) -> tuple[list[float], list[float], list[float]]:
    read_ms, seg_ms, total_ms = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        img = read_image(path)
        t1 = time.perf_counter()
        seg = segment(img.pixels, bit_depth=img.bit_depth)
        t2 = time.perf_counter()
        assert seg.found
        read_ms.append((t1 - t0) * 1e3)
        seg_ms.append((t2 - t1) * 1e3)
        total_ms.append((t2 - t0) * 1e3)
    return read_ms, seg_ms, total_ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        big = render_spheroid(0.8, 11, Conditions(width=2048, height=2048, bits=16,
                                                  diameter_frac=0.3))
        small = render_spheroid(0.8, 12, Conditions(width=1024, height=1024, bits=8,
                                                    diameter_frac=0.3))
        tif, png = Path(tmp) / "big.tif", Path(tmp) / "small.png"
        tifffile.imwrite(tif, big.image)
        cv2.imwrite(str(png), small.image)
        for name, path, target in (("2048² 16-bit TIFF", tif, 25.0),
                                   ("1024² 8-bit PNG", png, 8.0)):
            _time(path, 3)  # warm up caches
            read_ms, seg_ms, total_ms = _time(path, args.repeat)
            print(f"{name:18s} (target ≤ {target:.0f} ms)   best / median of {args.repeat}")
            for label, values in (("read", read_ms), ("segment", seg_ms),
                                  ("read+segment", total_ms)):
                print(f"    {label:13s} {np.min(values):6.1f} / {np.median(values):6.1f} ms")
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
          + f"   CPU cores: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
