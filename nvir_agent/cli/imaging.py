"""Imaging commands: `segment` (find the spheroid in images, print its morphology)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SEGMENT_KEYS = ("path", "found", "area_px", "equivalent_diameter_px", "perimeter_px",
                "circularity", "solidity", "eccentricity", "brightness_ratio", "halo_fraction",
                "focus", "centroid", "bbox", "qc", "error")
_TABLE = (("found", 5), ("area_px", 9), ("equivalent_diameter_px", 8), ("circularity", 6),
          ("solidity", 6), ("brightness_ratio", 6), ("halo_fraction", 6), ("focus", 8))
_HEADS = ("found", "area", "diam", "circ", "solid", "bright", "halo", "focus")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="find the spheroid in images and print its size, shape and QC flags",
        description="Segment the spheroid in each image (TIFF, PNG, JPEG, BMP) and print its "
        "morphology and QC flags. Unreadable files are reported and skipped.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--json", action="store_true", help="one JSON object per image and line")
    p.add_argument("--mask-out", metavar="DIR", type=Path,
                   help="write each mask as DIR/<stem>.png (0/255, same size as the image)")
    p.add_argument("--overlay-out", metavar="DIR", type=Path,
                   help="write each image with the outline drawn as DIR/<stem>.png")
    p.set_defaults(func=cmd_segment)


def cmd_segment(args: argparse.Namespace) -> int:
    import cv2  # heavy: imported here so `nvir-agent --help` stays fast

    from nvir_agent.config import load_config
    from nvir_agent.errors import AgentError, ImageError, UsageError
    from nvir_agent.imaging.analyse import analyse

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    cfg = load_config(args.config, check_folders=False)
    for folder in (args.mask_out, args.overlay_out):
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"Cannot create output folder {folder}: {exc.strerror or exc}.",
                                 "Choose a folder you may write to.") from exc
    failures = 0
    if not args.json:
        print(f"{'image':40s} " + " ".join(f"{h:>{w}s}" for h, (_, w) in zip(_HEADS, _TABLE,
                                                                          strict=True)) + "  qc")
    for name in args.images:
        path = Path(name)
        row: dict[str, Any] = {k: None for k in SEGMENT_KEYS}
        row.update(path=str(path), qc=[])
        try:
            img = analyse(path, max_side=cfg.imaging.max_pixels_side, page=cfg.imaging.page,
                          pixel_size_um=cfg.imaging.pixel_size_um or None)
            seg = img.segmentation
        except ImageError as exc:
            failures += 1
            row["error"] = exc.message
        else:
            row.update({k: v for k, v in seg.features.items() if k in SEGMENT_KEYS})
            row.update(found=seg.found, qc=list(seg.qc))
            for key in ("area_um2", "diameter_um"):
                if key in seg.features:
                    row[key] = seg.features[key]
            try:
                _write_outputs(path, img.pixels, img.bit_depth, seg, args)
            except AgentError as exc:
                failures += 1
                row["error"] = exc.message
        _print_row(row, args.json)
    return 1 if failures else 0


def _write_outputs(path: Path, pixels: Any, bit_depth: int, seg: Any,
                   args: argparse.Namespace) -> None:
    import cv2
    import numpy as np

    from nvir_agent.errors import UsageError

    def write(folder: Path, image: Any) -> None:
        target = folder / f"{path.stem}.png"
        try:
            ok = cv2.imwrite(str(target), image)
        except cv2.error as exc:
            raise UsageError(f"Cannot write {target}: {exc.err or exc}.") from exc
        if not ok:
            raise UsageError(f"Cannot write {target}.", "Check that the folder is writable.")

    if args.mask_out is not None:
        write(args.mask_out, seg.mask.astype(np.uint8) * 255)
    if args.overlay_out is not None:
        from nvir_agent.imaging.outline import display_image, draw_outline

        gray = display_image(pixels, bit_depth)
        label = "no spheroid" if not seg.found else ", ".join(seg.qc) or "ok"
        write(args.overlay_out, draw_outline(gray, seg.mask.astype(bool), label=label,
                                             thickness=max(2, round(max(gray.shape) / 400))))


def _print_row(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, ensure_ascii=False), flush=True)
        return
    name = row["path"]
    if len(name) > 40:
        name = "…" + name[-39:]
    if row["error"]:
        print(f"{name:40s} error: {row['error']}", file=sys.stdout, flush=True)
        return
    cells = []
    for key, width in _TABLE:
        value = row.get(key)
        if value is None:
            text = "-"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, float):
            text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
        else:
            text = str(value)
        cells.append(f"{text:>{width}s}")
    print(f"{name:40s} " + " ".join(cells) + "  " + (",".join(row["qc"]) or "-"), flush=True)
