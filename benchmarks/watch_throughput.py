"""Throughput of the watcher alone: files/s from write to committed job, with a
trivial analysis step (no image decoding), through the real observer, settle
tracker and SQLite store.

    .venv/bin/python benchmarks/watch_throughput.py [--files 2000] [--observer native]

Writes the files as one burst into a temporary folder that a running engine
watches, and reports how long until every file is committed as done.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from nvir_agent.config import config_from_dict
from nvir_agent.core.engine import Engine
from nvir_agent.pipeline.contract import Analysis


class TrivialStage:
    name = "trivial"

    def run(self, batch: list[Analysis]) -> None:
        for a in batch:
            a.image_meta["bytes"] = a.record.size


def measure(files: int, observer: str, settle_s: float, batch_size: int, mode: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        acq = root / "acq"
        acq.mkdir()
        cfg = config_from_dict({
            "watch": {"folders": [str(acq)], "observer": observer, "settle_s": settle_s,
                      "poll_interval_s": 0.5, "rescan_interval_s": 0.0},
            "storage": {"database": str(root / "bench.sqlite3")},
            "model": {"batch_size": batch_size},
        }, source=root / "agent.toml")
        engine = Engine(cfg, stages=[TrivialStage()], listeners=[])
        payload = b"II*\x00" + b"\x00" * 4092

        def write_all() -> None:
            for i in range(files):
                (acq / f"BENCH{i:05d}_{chr(65 + i % 16)}{i % 24 + 1:02d}_s1_w1.tif"
                 ).write_bytes(payload)

        if mode == "startup":  # files wait in the folder; the start-up scan finds them
            write_all()
        t0 = time.perf_counter()
        engine.start()
        try:
            if mode == "burst":  # files arrive while the engine watches
                write_all()
            t_written = time.perf_counter()
            deadline = time.monotonic() + 300
            while engine.status().done < files:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {engine.status().done} of {files} files done")
                time.sleep(0.01)
            t_done = time.perf_counter()
        finally:
            engine.stop()
    total = t_done - t0
    return {
        "files": files, "mode": mode, "observer": observer, "settle_s": settle_s, "batch_size": batch_size,
        "write_s": round(t_written - t0, 3), "total_s": round(total, 3),
        "lag_after_last_write_s": round(t_done - t_written, 3),
        "files_per_s": round(files / total, 1),
        "files_per_s_excluding_settle": round(files / max(total - settle_s, 1e-9), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--observer", choices=("native", "polling"), default="native")
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mode", choices=("burst", "startup"), default="burst",
                    help="burst: write while watching; startup: files exist before start")
    args = ap.parse_args()
    for _ in range(args.repeat):
        print(json.dumps(measure(args.files, args.observer, args.settle, args.batch_size, args.mode)))


if __name__ == "__main__":
    main()
