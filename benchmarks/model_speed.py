"""NViR scoring and preprocessing speed on this machine, for the README table.

    .venv/bin/python benchmarks/model_speed.py [--images 32] [--threads 0 2] [--model M]

Runs the same measurement as `nvir-agent bench` once per thread setting
(0 = all cores but one, the agent's default) and prints each table, the
1-minute load average before and after (other work on the machine slows every
number), and one JSON line per run for the record.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from nvir_agent.model.bench import run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[0])
    parser.add_argument("--model", type=Path, help="model file (default: random weights)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for threads in args.threads:
        before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        result = run_benchmark(args.model, images=args.images, threads=threads, rounds=args.rounds)
        after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"--- threads setting {threads} (load average {before:.2f} → {after:.2f})")
        print(result.table())
        print(json.dumps(result.as_dict()))


if __name__ == "__main__":
    main()
