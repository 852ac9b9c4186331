"""End to end: decode + segment + score + store, old engine vs new vs the naive script.

Renders spheroids (``nvir_agent.synth.render.render_spheroid``) and writes
them as 1024² 8-bit PNG and 2048² 16-bit TIFF (a few distinct renders, copied
round-robin: decoding costs what it costs, rendering does not dominate), then
measures, in turns within each round so that a changing machine load hits all
of them alike:

- ``naive``: the reference script — OpenCV decode, the model's preprocessing
  (centre square), fp32 eager torch with torch's default threads, batch 8,
  one thing after the other; no segmentation, nothing stored;
- ``old`` / ``new``: ``Engine.process_paths`` as `nvir-agent process` runs it
  (``use_all_cores``: every core, normal priority) from the checkout given by
  ``--old-tree`` (the engine before overlapping stages) and from this one.

with the paper-size network (256², ResNet18 + MLP, trained-like weights from
``scoring_fixtures``) and the bundled demo model. Each measurement runs in a
fresh process (``--child``) with that checkout first on ``PYTHONPATH``; the
model load, the fast-path choice and the worker start are warmed up on 8
images before the clock starts. ``--latency`` also starts the watching agent
(``build_engine`` + ``start``, the agent's own settings: all cores but one, low
priority, settle 2 s), lets a 384-well read of 1024² images land at
``--rate`` images per second, and reports the seconds from the last file
landing to the last result committed.

Heavy imports (torch, OpenCV, the package) happen inside functions: the
image workers are spawned processes that import this file again.

    python benchmarks/end_to_end.py --old-tree ../main --rounds 3 --latency
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
KINDS = {"png8-1024": (1024, 8, ".png"), "tif16-2048": (2048, 16, ".tif")}


# --- fixtures ------------------------------------------------------------------------------


def write_images(folder: Path, kind: str, n: int, distinct: int = 8) -> list[Path]:
    """``n`` files of ``kind`` named like an ImageXpress plate (P1_A01_s1_w1…)."""
    import cv2
    import tifffile

    from nvir_agent.synth.render import Conditions, render_spheroid

    size, bits, ext = KINDS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    renders = []
    for i in range(distinct):
        path = folder / f"render{i}{ext}"
        if not path.is_file():
            r = render_spheroid(0.2 + 0.8 * i / max(1, distinct - 1), seed=100 + i,
                                conditions=Conditions(width=size, height=size, bits=bits))
            if ext == ".png":
                cv2.imwrite(str(path), r.image)
            else:
                tifffile.imwrite(path, r.image)
        renders.append(path)
    out = []
    for i in range(n):
        well = f"{'ABCDEFGHIJKLMNOP'[i // 24 % 16]}{i % 24 + 1:02d}"
        target = folder / "plate" / f"P{i // 384 + 1}_{well}_s1_w1{ext}"
        target.parent.mkdir(exist_ok=True)
        if not target.is_file():
            shutil.copyfile(renders[i % distinct], target)
        out.append(target)
    return out


def write_models(folder: Path) -> dict[str, Path]:
    sys.path.insert(0, str(HERE))
    from scoring_fixtures import DEMO_MODEL, write_trained_like_model

    paper = folder / "paper-256.safetensors"
    if not paper.is_file():
        write_trained_like_model(paper)
    return {"paper-256": paper, "demo": DEMO_MODEL}


# --- measurements (in a child process) -------------------------------------------------------


def _config(work: Path, model: Path, folders: list[Path] | None = None):  # noqa: ANN202
    from nvir_agent.config import config_from_dict

    raw = {"storage": {"database": str(work / "agent.sqlite3")}, "model": {"path": str(model)},
           "notify": {"console": False},
           "watch": {"folders": [str(f) for f in folders or []], "rescan_interval_s": 0.0}}
    return config_from_dict(raw, source=work / "agent.toml", check_folders=False)


def measure_naive(files: list[Path], model: Path) -> dict:
    import dataclasses

    import cv2
    import numpy as np
    import torch

    from nvir_agent.model.modelfile import load_model
    from nvir_agent.model.preprocess import preprocess

    loaded = load_model(model)
    net, spec = loaded.module.eval(), dataclasses.replace(loaded.spec, crop="center-square")

    def run(paths: list[Path]) -> None:
        for i in range(0, len(paths), 8):
            x = np.stack([preprocess(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), spec)
                          for p in paths[i:i + 8]])
            with torch.no_grad():
                net(torch.from_numpy(x))

    run(files[:8])
    t = time.perf_counter()
    run(files)
    return {"seconds": time.perf_counter() - t, "n": len(files)}


def cpu_seconds() -> tuple[float, float] | None:
    """CPU time (user + system) of this process and its live descendants, and of
    this process alone, from /proc (Linux; None elsewhere): the image workers are
    still running, so ``os.times()``'s children fields would not count them."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                        fields = fh.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    except OSError:
        return None
    wanted, total = {os.getpid()}, 0
    changed = True
    while changed:  # descendants: children of anything already wanted
        changed = False
        for pid, (ppid, _) in stats.items():
            if ppid in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    for pid in wanted:
        total += stats.get(pid, (0, 0))[1]
    return total / tick, stats.get(os.getpid(), (0, 0))[1] / tick


def measure_engine(files: list[Path], model: Path, work: Path, workers: int = 0,
                   threads: int = 0) -> dict:
    from nvir_agent.app import build_engine
    from nvir_agent.config import use_all_cores

    config = use_all_cores(_config(work, model))
    if threads:  # scoring threads as given, whatever the workers beside them
        import nvir_agent.pipeline.scoring as scoring

        scoring.threads_beside_workers = lambda *_: threads
    if workers:
        config.imaging.workers = workers
    engine = build_engine(config)
    try:
        engine.process_paths(files[:8])  # the model, its fast path and the workers
        t, cpu = time.perf_counter(), cpu_seconds()
        rows = engine.process_paths(files, force=True)
        seconds = time.perf_counter() - t
        after = cpu_seconds()
    finally:
        engine.close()
    cpu, main_cpu = (None, None) if cpu is None or after is None else (
        after[0] - cpu[0], after[1] - cpu[1])
    return {"seconds": seconds, "n": len(files), "cpu_s": cpu, "main_cpu_s": main_cpu,
            "done": sum(r["state"] == "done" for r in rows),
            "scored": sum(r.get("viability") is not None for r in rows)}


def measure_latency(files: list[Path], model: Path, work: Path, rate: float) -> dict:
    from nvir_agent.app import build_engine

    acq = work / "acq"
    acq.mkdir()
    engine = build_engine(_config(work, model, [acq]))
    engine.start()
    try:
        for p in files[:8]:  # warm up under another plate name
            shutil.copyfile(p, acq / ("W" + p.name))
        engine.wait_idle(600)
        start = time.perf_counter()
        for i, p in enumerate(files):
            wait = start + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            tmp = acq / (p.name + ".part")  # land whole, as an imager's rename does
            shutil.copyfile(p, tmp)
            os.replace(tmp, acq / p.name)
        landed = time.perf_counter()
        total = len(files) + 8
        while engine.status().done + engine.status().failed < total:
            time.sleep(0.05)
        finished = time.perf_counter()
    finally:
        engine.stop()
    return {"latency_s": finished - landed, "landing_s": landed - start, "n": len(files),
            "seconds": finished - start}


def child(args: argparse.Namespace) -> None:
    job = json.loads(args.child)
    files = [Path(f) for f in job["files"]]
    work = Path(tempfile.mkdtemp(prefix="e2e-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # thumbnails: not in the user's cache
    try:
        if job["variant"] == "naive":
            out = measure_naive(files, Path(job["model"]))
        elif job.get("rate"):
            out = measure_latency(files, Path(job["model"]), work, job["rate"])
        else:
            out = measure_engine(files, Path(job["model"]), work, job.get("workers", 0),
                                 job.get("threads", 0))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("RESULT " + json.dumps(out))


def run_child(tree: Path, job: dict) -> dict:
    # that checkout first; whatever PYTHONPATH already held (packages installed with
    # pip --target on a bare GPU machine, say) after it
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                           json.dumps(job)], env=env, capture_output=True, text=True,
                          timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{job['variant']} failed:\n{proc.stderr[-3000:]}")


# --- the run ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--old-tree", type=Path, help="checkout of the engine to compare with")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("-n", type=int, default=48, help="images per 1024² measurement")
    ap.add_argument("--n-large", type=int, default=24, help="images per 2048² measurement")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--models", default="paper-256,demo")
    ap.add_argument("--latency", action="store_true", help="also the 384-well read latency")
    ap.add_argument("--rate", type=float, default=4.0, help="images landing per second")
    ap.add_argument("--only-latency", action="store_true")
    ap.add_argument("--workers", type=int, default=0,
                    help="image worker processes ([imaging] workers; 0: one per core)")
    ap.add_argument("--threads", type=int, default=0,
                    help="scoring threads (0: the engine's rule, a third of the cores "
                         "beside image workers)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nvir-e2e")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(TREE))  # this checkout's package, also where it is not installed
    trees = {"new": TREE}
    if args.old_tree:
        trees["old"] = args.old_tree.resolve()
    models = write_models(args.work)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    results: dict[tuple[str, str, str], list[float]] = {}
    loads = []
    for r in range(args.rounds if not args.only_latency else 0):
        for kind in args.kinds.split(","):
            n = args.n if kind == "png8-1024" else args.n_large
            files = [str(f) for f in write_images(args.work / kind, kind, n)]
            for model in args.models.split(","):
                for variant in ("naive", *trees):
                    tree = trees.get(variant, TREE)
                    out = run_child(tree, {"variant": variant, "files": files,
                                           "model": str(models[model]),
                                           "workers": args.workers,
                                           "threads": args.threads})
                    ips = out["n"] / out["seconds"]
                    results.setdefault((kind, model, variant), []).append(ips)
                    loads.append(os.getloadavg()[0])
                    extra = (f" done {out['done']} scored {out['scored']}"
                             if "done" in out else "")
                    if out.get("cpu_s") is not None:
                        extra += (f", {1e3 * out['cpu_s'] / out['n']:.0f} CPU ms per image"
                                  f" ({1e3 * out['main_cpu_s'] / out['n']:.0f} in the agent's"
                                  " process)")
                    print(f"round {r + 1} {kind} {model} {variant}: {ips:.1f} images/s{extra}"
                          f" (load {loads[-1]:.1f})", flush=True)
    if results:
        print("\n| images | model | naive | old engine | new engine |")
        print("|---|---|---|---|---|")
        for kind in args.kinds.split(","):
            for model in args.models.split(","):
                cells = []
                for variant in ("naive", "old", "new"):
                    v = results.get((kind, model, variant))
                    cells.append(f"{max(v):.1f} (median {statistics.median(v):.1f})" if v
                                 else "–")
                print(f"| {kind} | {model} | " + " | ".join(cells) + " |")
        print(f"\nload average (1 min) during the run: {min(loads):.1f}–{max(loads):.1f}")
    if args.latency or args.only_latency:
        files = [str(f) for f in write_images(args.work / "png8-1024", "png8-1024", 384)]
        for variant, tree in trees.items():
            out = run_child(tree, {"variant": variant, "files": files,
                                   "model": str(models["paper-256"]), "rate": args.rate})
            print(f"384-well read, {variant} engine: last result {out['latency_s']:.1f} s "
                  f"after the last file landed ({args.rate:g} images/s landing over "
                  f"{out['landing_s']:.0f} s; load {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
