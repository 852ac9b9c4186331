"""NViR scoring and preprocessing speed on this machine, for the README table.

    .venv/bin/python benchmarks/model_speed.py [--images 32] [--threads 0 2] [--model M]
        [--trust]

Runs the same measurement as `nvir-agent bench` once per thread setting
(0 = all cores but one, the agent's default) and prints each table, the
1-minute load average before and after (other work on the machine slows every
number), and one JSON line per run for the record.

``--trust`` benchmarks the 256×256 network (random weights) as a model that
judges trust: a training summary fitted on probe images and an interval
calibration are added, so the fast path runs the encoder and the heads read
the features, and the whole assessment (typicality, 32 dropout passes) is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from nvir_agent.model.bench import run_benchmark
from nvir_agent.model.fastpath import probe_batch
from nvir_agent.model.modelfile import add_trust, save_model
from nvir_agent.model.network import build_nvir
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.model.scorer import Scorer
from nvir_agent.model.typicality import fit_summary
from nvir_agent.model.uncertainty import IntervalCalibration


def trust_model(folder: Path) -> Path:
    """The 256² network with random weights, a summary of 16 probe images (8 held out)
    and an interval calibration: a model that judges trust."""
    torch.manual_seed(0)
    plain = save_model(folder / "plain.safetensors", build_nvir().eval(), PreprocessSpec(), {})
    scorer = Scorer.from_path(plain, fast_path="fp32", use_cache=False, threads=1)
    feats = scorer.features(probe_batch(256, n=24, seed=5)).double().numpy()
    rows = np.tile([10.0, 8.0, 0.65, 0.6, -1.3, 0.005], (24, 1))
    summary = fit_summary(feats[:16], rows[:16], feats[16:], rows[16:], info={"images": 16})
    return add_trust(plain, folder / "trust.safetensors", summary,
                     IntervalCalibration(scale=1.6, widen_from=2.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[0])
    parser.add_argument("--model", type=Path, help="model file (default: random weights)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trust", action="store_true",
                        help="the 256² network as a model that judges trust")
    args = parser.parse_args()
    if args.trust:
        args.model = trust_model(Path(tempfile.mkdtemp(prefix="nvir-trust-")))
    for threads in args.threads:
        before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        result = run_benchmark(args.model, images=args.images, threads=threads, rounds=args.rounds)
        after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"--- threads setting {threads} (load average {before:.2f} → {after:.2f})")
        print(result.table())
        print(json.dumps(result.as_dict()))


if __name__ == "__main__":
    main()
