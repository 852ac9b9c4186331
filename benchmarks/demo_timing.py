"""Where the demo's time goes, per image: rendering, writing the TIFF, and each
stage of the engine's analysis pipeline (reading, segmentation, scoring) with
the demo's configuration and model.

    .venv/bin/python benchmarks/demo_timing.py [--n 48] [--size 512] [--threads 0] [--model FILE]

Renders ``--n`` wells of the demo plate (read 3), writes them to a temporary
folder and runs the stages of ``analysis.build_stages`` on batches of
``model.batch_size``. Prints milliseconds per image for each step.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import tifffile

from nvir_agent.config import load_config
from nvir_agent.demo.run import NAMING, DemoOptions, prepare_workspace, simulation
from nvir_agent.ingest.filenames import parse_path
from nvir_agent.pipeline.contract import Analysis, ImageRecord
from nvir_agent.pipeline.stages import build_stages
from nvir_agent.synth.plate import image_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None, help="model.threads (default: config)")
    ap.add_argument("--model", default="", help="model file (default: the bundled demo model)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        opts = DemoOptions(size=args.size, model=str(Path(args.model).absolute()) if args.model
                           else "")
        ws = prepare_workspace(Path(tmp) / "demo", opts)
        sim = simulation(ws, opts)
        config = load_config(ws.config)
        if args.threads is not None:
            config.model = replace(config.model, threads=args.threads)
        wells = sim.wells()[: args.n]
        t = time.perf_counter()
        images = [sim.render(p, w, 3).image for p, w in wells]
        render = time.perf_counter() - t
        t = time.perf_counter()
        paths = []
        for (p, w), im in zip(wells, images, strict=True):
            path = ws.acquisition / image_name(p, w, 3, NAMING)
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(path, im, photometric="minisblack")
            paths.append(path)
        write = time.perf_counter() - t
        t = time.perf_counter()
        stages = build_stages(config)
        build = time.perf_counter() - t
        totals = {s.name: 0.0 for s in stages}
        bs = config.model.batch_size
        records = [ImageRecord(i, str(p), parse_path(str(p), NAMING), p.stat().st_size,
                               p.stat().st_mtime) for i, p in enumerate(paths)]
        for i in range(0, len(records), bs):
            batch = [Analysis(record=r) for r in records[i:i + bs]]
            for s in stages:
                alive = [a for a in batch if not a.failed]
                t = time.perf_counter()
                s.run(alive)
                totals[s.name] += time.perf_counter() - t
        n = len(wells)
        print(f"{n} images {args.size}x{args.size}, batch {bs}; building the stages "
              f"(model load) {build:.2f} s")
        print(f"  render        {render / n * 1000:7.1f} ms/image")
        print(f"  write TIFF    {write / n * 1000:7.1f} ms/image")
        for name, sec in totals.items():
            print(f"  {name:<13} {sec / n * 1000:7.1f} ms/image")
        print(f"  engine total  {sum(totals.values()) / n * 1000:7.1f} ms/image")


if __name__ == "__main__":
    main()
