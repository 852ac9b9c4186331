"""Fit the segmentation boundary classifier (nvir_agent/boundary_mlp.npz) on rendered images.

    .venv/bin/python benchmarks/segmentation_boundary_fit.py [--per 16] [--hidden 32] [--out PATH]

Renders ``--per`` images per accuracy-benchmark condition (three times as
many dying and broken ones, whose border is the hard one) from seed 30000 on,
apart from the benchmark's (1000, 5000) and the tests' seeds; outlines each
with ``segment(..., refine_boundary=False)``; takes every pixel of the band
around the outline with its features (nvir_agent.imaging.boundary.band_features) and
whether it lies in the exact body mask (area fraction at the band's
resolution); and fits a 21-32-32-1 perceptron (binary cross-entropy, Adam,
12 epochs, torch seed 0). About 45 s on one core.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from nvir_agent.imaging import boundary
from nvir_agent.imaging.segmentation import _as_gray, _full_scale, segment, work_image
from nvir_agent.synth.render import render_spheroid

sys.path.insert(0, str(Path(__file__).parent))
from segmentation_accuracy import CONDITIONS  # noqa: E402

HARD = ("dying_halo", "fragmented")


def band_samples(per: int, seed0: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name, ((lo, hi), cond) in CONDITIONS.items():
        rng = np.random.default_rng(seed0)
        for i in range(per * 3 if name in HARD else per):
            v = float(rng.uniform(lo, hi))
            r = render_spheroid(v, seed=seed0 + 7919 * i + zlib.crc32(name.encode()) % 1000,
                                conditions=cond)
            seg = segment(r.image, bit_depth=r.bit_depth, refine_boundary=False)
            if not seg.found:
                continue
            gray = _as_gray(r.image)
            full = _full_scale(gray, r.bit_depth)
            work, background = work_image(gray, full)
            x, y, bw, bh = seg.features["bbox"]
            box = (x, y, x + bw, y + bh)
            prepared = boundary.prepare(gray, full, seg.mask, box, background, work.factor)
            if prepared is None:
                continue
            ratio, inside, cell, (x0, y0, x1, y1, k) = prepared
            feats, band = boundary.band_features(ratio, inside, cell)
            truth = boundary._reduce(r.mask[y0:y1, x0:x1].astype(np.float32), k)
            xs.append(feats)
            ys.append(truth[band])
    return np.concatenate(xs), np.concatenate(ys)


def fit(x: np.ndarray, y: np.ndarray, hidden: int = 24, epochs: int = 12) -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    tx, ty = torch.tensor(x), torch.tensor(y)
    mu, sd = tx.mean(0), tx.std(0) + 1e-6
    net = torch.nn.Sequential(torch.nn.Linear(tx.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for epoch in range(epochs):
        if epoch == 9:
            for group in opt.param_groups:
                group["lr"] = 1e-3
        perm = torch.randperm(len(tx))
        for j in range(0, len(tx), 2048):
            b = perm[j:j + 2048]
            logit = net((tx[b] - mu) / sd)[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, ty[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1:2d}  loss {loss.item():.4f}")
    out = {"mu": mu.numpy(), "sd": sd.numpy()}
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    for j, layer in enumerate(linears):
        out[f"w{j}"] = layer.weight.detach().numpy().T.copy()
        out[f"b{j}"] = layer.bias.detach().numpy().copy()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per", type=int, default=16, help="images per condition (×3 dying/broken)")
    ap.add_argument("--seed", type=int, default=30000, help="first seed of the fitting images")
    ap.add_argument("--out", type=Path, default=boundary.WEIGHTS)
    ap.add_argument("--hidden", type=int, default=32, help="units per hidden layer")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    x, y = band_samples(args.per, args.seed)
    print(f"{len(x)} band pixels from rendered images ({time.perf_counter() - t0:.1f} s)")
    weights = fit(x, y, hidden=args.hidden)
    np.savez(args.out, **{k: v.astype(np.float32) for k, v in weights.items()})
    print(f"wrote {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
