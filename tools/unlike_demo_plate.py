"""Make a second demo plate whose images the demo model has not seen the like of.

Copies the first reads of DEMO-P1 from a demo folder (``nvir-agent demo --keep
DIR``) as plate DEMO-P2 in 12-bit (the same pixels × 16, stored as 16-bit
TIFF) with the same plate map. The demo model was trained on 8-bit images
only, so every image of DEMO-P2 is flagged ``unlike_training`` and the plate
gets its warning: what the README's second review-window screenshot shows.

    python tools/unlike_demo_plate.py DIR [--reads 3]
    nvir-agent --config DIR/agent.toml process DIR/acquisition/DEMO-P2
    nvir-agent --config DIR/agent.toml review --plate DEMO-P2 --screenshot shot.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a folder written by `nvir-agent demo --keep`")
    p.add_argument("--reads", type=int, default=3, help="time points to copy (default 3)")
    args = p.parse_args(argv)
    src = args.folder / "acquisition" / "DEMO-P1"
    dst = args.folder / "acquisition" / "DEMO-P2"
    maps = args.folder / "platemaps"
    if not src.is_dir() or not (maps / "DEMO-P1.csv").is_file():
        print(f"{args.folder} is not a demo folder: run `nvir-agent demo --keep "
              f"{args.folder}` first.", file=sys.stderr)
        return 2
    n = 0
    for tp in range(1, args.reads + 1):
        out = dst / f"TimePoint_{tp}"
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted((src / f"TimePoint_{tp}").glob("*.TIF")):
            img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if img is None or img.dtype != np.uint8:
                print(f"{f}: not an 8-bit demo image; skipped", file=sys.stderr)
                continue
            name = f.name.replace("DEMO-P1", "DEMO-P2")
            if not cv2.imwrite(str(out / name), img.astype(np.uint16) * 16):
                print(f"Cannot write {out / name}.", file=sys.stderr)
                return 1
            n += 1
    text = (maps / "DEMO-P1.csv").read_text(encoding="utf-8")
    (maps / "DEMO-P2.csv").write_text(text.replace("DEMO-P1", "DEMO-P2"), encoding="utf-8")
    print(f"{n} 12-bit images of DEMO-P2 in {dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
