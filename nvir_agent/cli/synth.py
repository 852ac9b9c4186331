"""`nvir-agent synth …`: synthetic bright-field spheroid images with known viability.

- ``synth render OUT.png --viability V`` one image (and its mask with --mask-out)
- ``synth dataset OUT --n N`` a labelled training set (images + labels.csv)
- ``synth plate OUT --days D`` a time-lapse acquisition of whole plates + truth.json
- ``synth platemap OUT.csv`` the 96-well demo plate map
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nvir_agent.errors import DataError, UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="render synthetic spheroid images, training sets and plates",
                       description="Synthetic bright-field spheroid images whose look follows a "
                       "latent viability (normalised ATP), with exact masks and ground truth.")
    ss = p.add_subparsers(dest="synth_command", metavar="WHAT")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    r = ss.add_parser("render", help="render one image")
    r.add_argument("out", metavar="OUT", help="image to write (.png, or .tif for 16-bit)")
    r.add_argument("--viability", type=float, required=True, help="latent viability, 0–1.2")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--size", type=int, default=1024, help="frame width and height (px)")
    r.add_argument("--bits", type=int, choices=(8, 16), default=8)
    r.add_argument("--wide", action="store_true", help="draw nuisances from the WIDE ranges")
    r.add_argument("--fragmented", action="store_true", help="break the body into pieces")
    r.add_argument("--mask-out", metavar="PNG", help="also write the exact body mask (0/255)")
    r.add_argument("--json", action="store_true", help="print the drawn parameters as JSON")
    r.set_defaults(func=cmd_render)

    d = ss.add_parser("dataset", help="write a labelled training set (images + labels.csv)")
    d.add_argument("out", metavar="OUT", help="output folder")
    d.add_argument("--n", type=int, required=True, help="number of images")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--size", type=int, default=1024, help="frame width and height (px)")
    d.add_argument("--bits", type=int, choices=(8, 16), default=8,
                   help="8 (PNG) or 16 (TIFF holding 12-bit data)")
    d.add_argument("--masks", action="store_true", help="also write exact body masks")
    d.add_argument("--wide", action="store_true",
                   help="nuisance ranges wider than the training ranges (for held-out tests)")
    d.add_argument("--sites", type=int, default=2, help="microscopes (1–3; plates alternate)")
    d.add_argument("--days", type=int, default=3, help="reads per plate")
    d.add_argument("--workers", type=int, default=1, help="render threads")
    d.set_defaults(func=cmd_dataset)

    pl = ss.add_parser("plate", help="write a time-lapse acquisition of whole plates")
    pl.add_argument("out", metavar="OUT", help="acquisition folder")
    pl.add_argument("--plate-map", metavar="CSV",
                    help="plate map (plate,well,role,compound,concentration_uM); "
                    "default: the 96-well demo plate")
    pl.add_argument("--days", type=int, default=5, help="reads, one a day (default 5)")
    pl.add_argument("--compounds", metavar="CSV",
                    help="compound truth: compound,ic50_uM,hill,onset_day (default: the "
                    "built-in fictional compounds)")
    pl.add_argument("--naming", choices=("imagexpress", "incucyte", "harmony"),
                    default="imagexpress")
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--size", type=int, default=1024, help="frame width and height (px)")
    pl.add_argument("--bits", type=int, choices=(8, 16), default=8)
    pl.add_argument("--chunk-delay", type=float, default=0.0, metavar="S",
                    help="pause between written chunks of each file, like a slow imager")
    pl.set_defaults(func=cmd_plate)

    m = ss.add_parser("platemap", help="write the 96-well demo plate map CSV")
    m.add_argument("out", metavar="OUT.csv")
    m.add_argument("--plate", default="DEMO-P1", help="plate ID (default DEMO-P1)")
    m.set_defaults(func=cmd_platemap)


def _check_size(size: int) -> None:
    if not 32 <= size <= 8192:
        raise UsageError(f"--size {size} is out of range.", "Use 32 to 8192 pixels.")


def cmd_render(args: argparse.Namespace) -> int:
    import cv2
    import tifffile

    from nvir_agent.synth.render import TRAINING, WIDE, Conditions, render_spheroid

    _check_size(args.size)
    cond = Conditions(width=args.size, height=args.size, bits=args.bits,
                      fragmented=True if args.fragmented else None)
    r = render_spheroid(args.viability, args.seed, cond, WIDE if args.wide else TRAINING)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() in (".tif", ".tiff"):
            tifffile.imwrite(out, r.image, photometric="minisblack")
        elif args.bits == 16 and out.suffix.lower() != ".png":
            raise UsageError(f"{out.name}: 16-bit images need a .tif or .png name.",
                             "Name the output OUT.tif.")
        elif not cv2.imwrite(str(out), r.image):
            raise DataError(f"OpenCV cannot write {out}.", "Use a .png or .tif name.")
        if args.mask_out:
            cv2.imwrite(str(args.mask_out), r.mask.astype("uint8") * 255)
    except OSError as exc:
        raise DataError(f"Cannot write {out}: {exc.strerror or exc}.",
                        "Choose a folder you may write to.") from exc
    if args.json:
        print(json.dumps(r.params))
    else:
        print(f"wrote {out} ({r.image.shape[1]}×{r.image.shape[0]}, {args.bits}-bit, "
              f"viability {r.viability:g}, body {int(r.mask.sum())} px)")
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    from nvir_agent.synth.dataset import write_dataset
    from nvir_agent.synth.render import TRAINING, WIDE

    _check_size(args.size)
    start = time.monotonic()
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty and (done == total or done % 10 == 0):
            print(f"\rrendered {done}/{total}", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)

    s = write_dataset(args.out, args.n, args.seed, size=args.size, bits=args.bits,
                      masks=args.masks, ranges=WIDE if args.wide else TRAINING,
                      sites=args.sites, days=args.days, workers=args.workers, progress=progress)
    print(f"wrote {s.n} images of {s.plates} plate(s) from {', '.join(s.sites)} in "
          f"{time.monotonic() - start:.1f} s; labels: {s.labels}")
    return 0


def cmd_plate(args: argparse.Namespace) -> int:
    from nvir_agent.monitor.platemap import parse_csv
    from nvir_agent.synth import plate as sp

    _check_size(args.size)
    out = Path(args.out)
    if args.plate_map:
        maps = sp.load_plate_maps(args.plate_map)
    else:
        rows = sp.demo_plate_rows()
        map_path = sp.write_plate_map(out / "platemap.csv", rows)
        maps = parse_csv(map_path.read_text(encoding="utf-8"), source=str(map_path))
        print(f"demo plate map: {map_path}")
    compounds = sp.read_compounds(args.compounds) if args.compounds else None
    sim = sp.PlateSimulation(maps, compounds, days=args.days, seed=args.seed, size=args.size,
                             bits=args.bits)
    start = time.monotonic()
    total = 0
    for day in sim.reads:
        files = sim.write_read(day, out, args.naming, chunk_delay_s=args.chunk_delay)
        total += len(files)
        print(f"read {day}: {len(files)} images")
    truth = out / "truth.json"
    try:
        truth.write_text(json.dumps(sim.truth(), indent=1), encoding="utf-8")
    except OSError as exc:
        raise DataError(f"Cannot write {truth}: {exc.strerror or exc}.",
                        "Choose a folder you may write to.") from exc
    print(f"wrote {total} images in {time.monotonic() - start:.1f} s under {out}; truth: {truth}")
    return 0


def cmd_platemap(args: argparse.Namespace) -> int:
    from nvir_agent.synth.plate import demo_plate_rows, write_plate_map

    path = write_plate_map(args.out, demo_plate_rows(args.plate))
    print(f"wrote {path}")
    return 0
