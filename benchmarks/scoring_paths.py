"""Scoring speed and accuracy of every inference path, for the README table.

    PYTHONPATH=. .venv/bin/python benchmarks/scoring_paths.py [--images 64] [--rounds 5]

Two kinds of weights: trained-like (BatchNorm statistics measured on the
benchmark images, viabilities spread about 0.2: bf16 fails the 0.01 check)
and the demo model's weights at 256² (bf16 passes). For each, every path
`nvir-agent bench --all` knows is timed at batch 8 on the same preprocessed
images, the paths taking turns within each round so that other work on a
shared machine slows them alike; best and median images/s over the rounds,
and the largest |Δ viability| against fp32 eager on all images.

End to end (decode 1024² PNG + preprocess + score), the naive reference —
OpenCV decode, fp32 eager torch, batch 8, torch's default threads, one step
after the other — and the path `auto` chooses are timed in the same rounds.

The physical limit: the network's FLOPs per image (conv and linear layers,
counted with hooks) against the peak this CPU reaches on a large matrix
product in fp32 and in bf16 (AMX where present).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scoring_fixtures import DEMO_MODEL, trained_like_nvir, write_images  # noqa: E402

from nvir_agent.config import cpu_cores  # noqa: E402
from nvir_agent.imaging.reading import read_image  # noqa: E402
from nvir_agent.model.fastpath import build_candidates, choose_fast_path  # noqa: E402
from nvir_agent.model.modelfile import load_model  # noqa: E402
from nvir_agent.model.preprocess import PreprocessSpec, preprocess  # noqa: E402

SPEC = PreprocessSpec()  # the paper's: centre square, 256², 8-bit


def flops_per_image(module: torch.nn.Module, size: int) -> float:
    """2 × multiply-adds of every convolution and linear layer for one image."""
    total = 0

    def hook(m: torch.nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            total += 2 * out.numel() * k
        elif isinstance(m, torch.nn.Linear):
            total += 2 * m.in_features * m.out_features * out.shape[0]

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.inference_mode():
        module.eval()(torch.zeros(1, 1, size, size))
    for h in handles:
        h.remove()
    return float(total)


def peak_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def decode(paths: list[Path]) -> torch.Tensor:
    return torch.from_numpy(np.stack([preprocess(read_image(p).pixels, SPEC) for p in paths]))


def naive_end_to_end(module: torch.nn.Module, paths: list[Path]) -> float:
    """The plain script: decode with OpenCV, fp32 eager, batch 8, one after the other."""
    t0 = time.perf_counter()
    for i in range(0, len(paths), 8):
        batch = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths[i : i + 8]]
        x = torch.from_numpy(np.stack([preprocess(img, SPEC) for img in batch]))
        with torch.no_grad():
            module(x)
    return len(paths) / (time.perf_counter() - t0)


def agent_end_to_end(run, paths: list[Path]) -> float:  # noqa: ANN001
    """What `nvir-agent score` does per chunk: read_image + preprocess, then the chosen path."""
    t0 = time.perf_counter()
    for i in range(0, len(paths), 32):
        x = decode(paths[i : i + 32])
        for j in range(0, x.shape[0], 8):
            run(x[j : j + 8])
    return len(paths) / (time.perf_counter() - t0)


def throughput(run, x: torch.Tensor) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], 8):
        run(x[i : i + 8])
    return x.shape[0] / (time.perf_counter() - t0)


def bench_weights(label: str, module: torch.nn.Module, x: torch.Tensor, paths: list[Path],
                  threads: int, default_threads: int, rounds: int) -> dict:
    print(f"\n== {label}", flush=True)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    choice = choose_fast_path(module, torch.device("cpu"), threads=threads, use_cache=False)
    choose_s = time.perf_counter() - t0
    reference, options = build_candidates(
        module, torch.device("cpu"), threads=threads, include_all=True
    )
    candidates = [reference, *options]
    ref = np.concatenate([reference.run(x[i : i + 8]) for i in range(0, x.shape[0], 8)])
    rows = {}
    for cand in candidates:
        try:
            t0 = time.perf_counter()
            out = np.concatenate([cand.run(x[i : i + 8]) for i in range(0, x.shape[0], 8)])
            prep = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"  {cand.name}: failed ({exc})", flush=True)
            continue
        rows[cand.name] = {"description": cand.description, "speeds": [],
                           "max_delta": float(np.max(np.abs(out - ref))), "first_run_s": prep}
    naive, agent = [], []
    chosen = next(c for c in candidates if c.name == choice.chosen.name)
    for _ in range(rounds):
        for cand in candidates:
            if cand.name in rows:
                rows[cand.name]["speeds"].append(throughput(cand.run, x))
        torch.set_num_threads(default_threads)
        naive.append(naive_end_to_end(module, paths))
        torch.set_num_threads(threads)
        agent.append(agent_end_to_end(chosen.run, paths))
    print(f"viability on the images: mean {ref.mean():.3f}, sd {ref.std():.3f}; "
          f"auto chose {choice.chosen.name} in {choose_s:.1f} s")
    print(f"{'path':15s} {'best':>7s} {'median':>7s}  {'max |Δ|':>8s}  chosen  description")
    for name, r in rows.items():
        sp = r["speeds"]
        r["best"], r["median"] = max(sp), statistics.median(sp)
        mark = "yes" if name == choice.chosen.name else ""
        print(f"{name:15s} {r['best']:7.1f} {r['median']:7.1f}  {r['max_delta']:8.4f}  "
              f"{mark:6s}  {r['description']}")
    e2e = {"naive_best": max(naive), "naive_median": statistics.median(naive),
           "agent_best": max(agent), "agent_median": statistics.median(agent)}
    print(f"end to end ({len(paths)} × 1024² PNG): naive {e2e['naive_best']:.1f} "
          f"(median {e2e['naive_median']:.1f}) images/s; agent ({choice.chosen.name}) "
          f"{e2e['agent_best']:.1f} (median {e2e['agent_median']:.1f}) images/s; "
          f"{e2e['agent_best'] / e2e['naive_best']:.2f}× best, "
          f"{e2e['agent_median'] / e2e['naive_median']:.2f}× median", flush=True)
    return {"label": label, "chosen": choice.chosen.name, "choose_s": choose_s,
            "viability_mean": float(ref.mean()), "viability_sd": float(ref.std()),
            "paths": rows, "end_to_end": e2e}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0: all cores")
    parser.add_argument("--work", type=Path, help="folder for the rendered images")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()  # torch's own default, for the naive script
    threads = args.threads or cpu_cores()
    work = args.work or Path(tempfile.gettempdir()) / "nvir-scoring-bench"
    paths = write_images(work / "images", args.images)
    x = decode(paths)
    load_before = os.getloadavg()
    results = [
        bench_weights("trained-like weights (bf16 fails the check)",
                      trained_like_nvir(calibration=x[:32]), x, paths, threads,
                      default_threads, args.rounds),
        bench_weights("demo model weights at 256² (bf16 passes)",
                      load_model(DEMO_MODEL).module, x, paths, threads, default_threads,
                      args.rounds),
    ]
    torch.set_num_threads(threads)
    fl = flops_per_image(load_model(DEMO_MODEL).module, SPEC.size)
    peaks = {"fp32": max(peak_flops(torch.float32) for _ in range(3)),
             "bf16": max(peak_flops(torch.bfloat16) for _ in range(3))}
    load_after = os.getloadavg()
    print(f"\nFLOPs per image at {SPEC.size}²: {fl / 1e9:.2f} G")
    for k, v in peaks.items():
        print(f"peak {k} matrix product, {threads} threads: {v / 1e9:.0f} GFLOP/s → "
              f"limit {v / fl:.0f} images/s")
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}; "
          f"{os.cpu_count()} CPUs, {threads} threads, torch default {default_threads}")
    print(json.dumps({"results": results, "flops_per_image": fl, "peak_flops": peaks,
                      "load_before": load_before, "load_after": load_after,
                      "threads": threads}, default=float))


if __name__ == "__main__":
    main()
