"""Images/s of scoring with trust (viability, typicality, 90 % interval) at batch 8.

    PYTHONPATH=. .venv/bin/python benchmarks/trust_speed.py [--model demo|256] [--threads 1]

``demo``: the bundled demo model; ``256``: the 256² network with random weights and
a training summary of probe images plus an interval calibration. Times
``Scorer.assess_tensors`` on 32 probe images in batches of 8 (best of 3 rounds,
after one warm-up batch) with the fast path this machine chooses. It uses only
the scorer's public calls, so it runs unchanged on versions before and after
trust-judging models moved to the fast path (point PYTHONPATH at either).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scoring_fixtures import write_trust_model

from nvir_agent.model.fastpath import probe_batch
from nvir_agent.model.locate import demo_model_path
from nvir_agent.model.modelfile import load_model
from nvir_agent.model.scorer import Scorer
from nvir_agent.model.typicality import STATISTICS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("demo", "256"), default="demo")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    path = demo_model_path() if a.model == "demo" else write_trust_model(Path(tempfile.mkdtemp()))
    load0 = os.getloadavg()[0]
    scorer = Scorer(load_model(path), threads=a.threads, use_cache=False)
    x = probe_batch(scorer.spec.size, n=a.n, seed=1).numpy()
    stats = [{k: 0.0 for k in STATISTICS} for _ in range(a.n)]
    scorer.assess_tensors(x[:8], stats[:8])
    best = 0.0
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        for i in range(0, a.n, 8):
            scorer.assess_tensors(x[i:i + 8], stats[i:i + 8])
        best = max(best, a.n / (time.perf_counter() - t0))
    print(json.dumps({"model": a.model, "fast_path": scorer.fast_path, "threads": a.threads,
                      "assess_images_per_s_batch8": round(best, 1),
                      "load": [round(load0, 2), round(os.getloadavg()[0], 2)]}))


if __name__ == "__main__":
    main()
