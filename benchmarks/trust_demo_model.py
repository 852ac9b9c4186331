"""How much the out-of-distribution check and the intervals of the demo model mean.

    python benchmarks/trust_demo_model.py WORKDIR [--n 200]

Renders (or reuses under WORKDIR) synthetic labelled sets — TRAINING ranges
with a new seed (in range), WIDE ranges (nuisances outside the training
ranges), WIDE 12-bit — scores them and the real bright-field spheroids of
tests/data/real-brightfield with the bundled demo model, and prints one JSON
object: AUROC of the OOD distance for in-range vs each out-of-range set,
interval coverage and mean width per set, and the absolute error by quartile
of the distance (pooled over the synthetic sets).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nvir_agent.model.locate import demo_model_path
from nvir_agent.model.modelfile import load_model
from nvir_agent.model.scorer import Scorer
from nvir_agent.model.uncertainty import intervals, widen
from nvir_agent.synth.dataset import write_dataset
from nvir_agent.synth.render import TRAINING, WIDE
from nvir_agent.training.summarise import embed, list_images

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "real-brightfield"
SETS = {  # name: (seed, ranges, bits)
    "in-range (TRAINING, seed 8)": (8, TRAINING, 8),
    "WIDE, seed 9, 8-bit": (9, WIDE, 8),
    "WIDE, seed 10, 12-bit": (10, WIDE, 16),
}


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(distance of an out-of-range image > that of an in-range one), ties half."""
    a, b = np.asarray(inside)[:, None], np.asarray(outside)[None, :]
    return float(((b > a).sum() + 0.5 * (b == a).sum()) / (a.size * b.size))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    loaded = load_model(demo_model_path())
    scorer = Scorer(loaded, fast_path="fp32", use_cache=False)
    results: dict[str, dict] = {}
    pooled = []
    for name, (seed, ranges, bits) in SETS.items():
        folder = args.work / f"set-{seed}"
        if not (folder / "labels.csv").is_file():
            write_dataset(folder, args.n, seed, bits=bits, ranges=ranges, workers=2)
        paths, labels = list_images(folder, args.n)
        results[name] = assess(scorer, paths, labels)
        pooled.append(results[name].pop("_raw"))
    real = sorted(REAL.glob("spheroid_*.tif"))
    results["real bright-field spheroids"] = assess(scorer, real, np.full(len(real), np.nan))
    results["real bright-field spheroids"].pop("_raw")
    inside = np.array(results["in-range (TRAINING, seed 8)"]["distances"])
    for name, r in results.items():
        if name != "in-range (TRAINING, seed 8)":
            r["auroc_vs_in_range"] = round(auroc(inside, np.array(r["distances"])), 3)
    d = np.concatenate([p[0] for p in pooled])
    err = np.concatenate([p[1] for p in pooled])
    edges = np.quantile(d, [0, 0.25, 0.5, 0.75, 1])
    quart = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (d >= lo) & (d <= hi)
        quart.append({"distance": [round(float(lo), 2), round(float(hi), 2)],
                      "mae": round(float(err[m].mean()), 3), "n": int(m.sum())})
    flagged = d > loaded.summary.threshold
    error_by_flag = {"flagged_mae": round(float(err[flagged].mean()), 3) if flagged.any() else None,
                     "not_flagged_mae": round(float(err[~flagged].mean()), 3),
                     "flagged": int(flagged.sum()), "n": int(d.size)}
    for r in results.values():
        r.pop("distances")
    print(json.dumps({"model": loaded.name, "threshold": loaded.summary.threshold,
                      "sets": results, "error_by_distance_quartile": quart,
                      "error_by_flag": error_by_flag}, indent=1))


def assess(scorer: Scorer, paths, labels) -> dict:
    e = embed(scorer, paths, labels)
    judged = scorer.model.summary.assess(e.features, e.stats)
    d = np.array([j.distance for j in judged])
    cal = scorer.model.intervals
    lo, hi = intervals(e.centre, widen(e.spread(cal.method), d, cal.widen_from), cal)
    out = {"n": int(d.size), "flagged_unlike_training": round(float(np.mean(d > scorer.model.summary.threshold)), 3),
           "median_typicality": round(float(np.median([j.typicality for j in judged])), 3),
           "mean_interval_width": round(float(np.mean(hi - lo)), 3), "distances": d.tolist()}
    ok = np.isfinite(e.labels)
    err = np.abs(e.centre - e.labels)
    if ok.any():
        out["coverage_90"] = round(float(np.mean((e.labels[ok] >= lo[ok]) & (e.labels[ok] <= hi[ok]))), 3)
        out["mae"] = round(float(err[ok].mean()), 3)
    out["_raw"] = (d[ok], err[ok])
    return out


if __name__ == "__main__":
    main()
