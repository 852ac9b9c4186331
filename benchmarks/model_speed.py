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
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scoring_fixtures import write_trust_model

from nvir_agent.model.bench import run_benchmark


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
        args.model = write_trust_model(Path(tempfile.mkdtemp(prefix="nvir-trust-")))
    for threads in args.threads:
        before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        result = run_benchmark(args.model, images=args.images, threads=threads, rounds=args.rounds)
        after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"--- threads setting {threads} (load average {before:.2f} → {after:.2f})")
        print(result.table())
        print(json.dumps(result.as_dict()))


if __name__ == "__main__":
    main()
