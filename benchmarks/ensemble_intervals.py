"""How good are the 90 % intervals of MC dropout (one network) and of a deep
ensemble of 3, on small synthetic sets?

    PYTHONPATH=. .venv/bin/python benchmarks/ensemble_intervals.py WORKDIR [--epochs 15]

Renders (or reuses under WORKDIR) a labelled training set (TRAINING ranges,
256² frames, seed 11) and two test sets the networks never saw: in range (seed
12) and WIDE nuisances (seed 13). Trains an ensemble of 3 with
``train --ensemble 3`` (spheroid crop at 64 px, percentile intensity, random
initialisation, the demo model's short schedule); its first network is exactly
the one ``train`` writes for the same seed, so it is taken out as the single
network, summarised and calibrated (MC dropout) on the same validation images.
Then on each test set: coverage of the nominal 90 % interval, its mean width
and the MAE, for

- MC dropout on the single network (32 passes),
- the ensemble's members' spread alone (calibrated on the same validation
  images here),
- the ensemble's spread with each member's MC dropout (what
  ``train --ensemble`` stores).

Prints one JSON object, with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from nvir_agent.model.modelfile import load_model, save_model
from nvir_agent.model.network import members
from nvir_agent.model.scorer import Scorer
from nvir_agent.model.uncertainty import (
    ENSEMBLE,
    LEVEL,
    IntervalCalibration,
    base_spread,
    conformal_scale,
    coverage,
    intervals,
    widen,
)
from nvir_agent.synth.dataset import write_dataset
from nvir_agent.synth.render import TRAINING, WIDE
from nvir_agent.training.data import split_labels
from nvir_agent.training.ensemble import train_model
from nvir_agent.training.labels import read_labels
from nvir_agent.training.summarise import Embedded, embed, list_images, summarise_trained
from nvir_agent.training.train import TrainOptions

SETS = {"train": (11, TRAINING, 360), "in range (seed 12)": (12, TRAINING, 200),
        "WIDE (seed 13)": (13, WIDE, 200)}


def dataset(work: Path, name: str) -> Path:
    seed, ranges, n = SETS[name]
    folder = work / f"set-{seed}"
    if not (folder / "labels.csv").is_file():
        write_dataset(folder, n, seed, size=256, ranges=ranges, workers=2)
    return folder


def judged(scorer: Scorer, e: Embedded, spread: np.ndarray,
           cal: IntervalCalibration) -> dict[str, float]:
    lo, hi = intervals(e.centre, spread, cal)
    ok = np.isfinite(e.labels)
    return {"coverage_90": round(coverage(e.labels[ok], lo[ok], hi[ok]), 3),
            "mean_width": round(float(np.mean(hi - lo)), 3),
            "mae": round(float(np.mean(np.abs(e.centre[ok] - e.labels[ok]))), 4),
            "n": int(ok.sum())}


def distances(scorer: Scorer, e: Embedded) -> np.ndarray:
    return np.array([j.distance for j in scorer.model.summary.assess(e.features, e.stats)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args()
    load = [round(os.getloadavg()[0], 2)]
    work = args.work
    train_dir = dataset(work, "train")
    ens_path, single_path = work / "ensemble3.safetensors", work / "single.safetensors"
    options = TrainOptions(labels=train_dir / "labels.csv", out=ens_path, epochs=args.epochs,
                           crop="spheroid", size=64, intensity="percentile", init="none",
                           lr=3e-4, lr_patience=4, patience=100, keep="last",
                           augment="geometric", seed=42, workers=2, ensemble=3,
                           cache_dir=work / "cache")
    if not ens_path.is_file():
        train_model(options)
    if not single_path.is_file():
        ens = load_model(ens_path)
        meta = {k: v for k, v in ens.metadata.items() if k not in ("typicality", "uncertainty")}
        meta.pop("ensemble")
        save_model(single_path, members(ens.module)[0], ens.spec, meta)
        labels = read_labels(train_dir / "labels.csv")
        split = split_labels(labels, options.split, val_fraction=options.val_fraction,
                             seed=options.seed)
        summarise_trained(single_path, [labels.items[i] for i in split.train],
                          [labels.items[i] for i in split.val])
    single = Scorer(load_model(single_path), fast_path="fp32", use_cache=False)
    ensemble = Scorer(load_model(ens_path), fast_path="fp32", use_cache=False)
    # the members' spread alone, calibrated as train --ensemble calibrates, on the same images
    labels = read_labels(train_dir / "labels.csv")
    split = split_labels(labels, options.split, val_fraction=options.val_fraction,
                         seed=options.seed)
    val = [labels.items[i] for i in split.val]
    ve = embed(ensemble, [it.path for it in val], np.array([it.viability for it in val]))
    cal3 = ensemble.model.intervals
    sd_members = widen(base_spread(ve.outputs, None, ENSEMBLE), distances(ensemble, ve),
                       cal3.widen_from)
    members_only = IntervalCalibration(
        scale=conformal_scale(ve.labels, ve.centre, sd_members), widen_from=cal3.widen_from,
        passes=0, method=ENSEMBLE)
    out: dict[str, object] = {
        "calibrated_on": {"single": single.model.intervals.info.get("calibrated_on"),
                          "ensemble": cal3.info.get("calibrated_on")},
        "nominal": LEVEL, "epochs": args.epochs, "sets": {}}
    for name in ("in range (seed 12)", "WIDE (seed 13)"):
        paths, y = list_images(dataset(work, name), 1000)
        s_e = embed(single, paths, y)
        e_e = embed(ensemble, paths, y)
        cal1 = single.model.intervals
        d1, d3 = distances(single, s_e), distances(ensemble, e_e)
        out["sets"][name] = {
            "MC dropout, one network": judged(
                single, s_e, widen(s_e.spread(), d1, cal1.widen_from), cal1),
            "ensemble of 3, members' spread": judged(
                ensemble, e_e, widen(base_spread(e_e.outputs, None, ENSEMBLE), d3,
                                     members_only.widen_from), members_only),
            "ensemble of 3, members + MC dropout": judged(
                ensemble, e_e, widen(e_e.spread(), d3, cal3.widen_from), cal3),
        }
    load.append(round(os.getloadavg()[0], 2))
    out["load_average"] = load
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
