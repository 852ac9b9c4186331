"""How long the monitor takes per committed batch on large plates.

Fills a fresh SQLite store read by read (all wells of a read queued at once,
one field, then committed in batches of ``--batch`` images as the engine does)
and times every ``Monitor.on_results`` call: time-course rebuild, rules and
alert reconciliation (throttled while images are still pending).

    .venv/bin/python benchmarks/monitor_evaluate.py --format 384 --reads 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from nvir_agent.config import Config
from nvir_agent.monitor.listener import Monitor
from nvir_agent.monitor.notify import Notifier
from nvir_agent.monitor.platemap import FORMATS
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.plate import ImageKey, well_name
from nvir_agent.store import Store


class Discard:
    name = "discard"

    def send(self, message: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--format", type=int, default=384, choices=sorted(FORMATS))
    ap.add_argument("--reads", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--every-batch", action="store_true",
                    help="evaluate after every batch (no throttling while images are pending)")
    args = ap.parse_args()
    rows, cols = FORMATS[args.format]
    wells = [well_name(r, c) for r in range(1, rows + 1) for c in range(1, cols + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        lines = ["plate,well,role,compound,concentration_uM"]
        for i, w in enumerate(wells):
            col = int(w[-2:])
            if col <= 2:
                lines.append(f"BIG,{w},vehicle,,")
            else:
                lines.append(f"BIG,{w},treated,C{i % 20},{10 ** ((col % 6) - 2):g}")
        (tmp_path / "map.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        cfg = Config(source=tmp_path / "agent.toml")
        cfg.plates.maps = "map.csv"
        cfg.plates.format = args.format
        store = Store(tmp_path / "db.sqlite3")
        monitor = Monitor(cfg, store, Notifier([Discard()], min_interval_s=3600),
                          min_eval_interval_s=0.0 if args.every_batch else 2.0)
        times: list[float] = []
        for tp in range(1, args.reads + 1):
            # the imager writes a whole read; the engine then drains it batch by batch
            ids = store.add_jobs([(f"/acq/t{tp}/BIG_{w}.tif", 1, float(tp),
                                   ImageKey(plate="BIG", well=w, timepoint=tp)) for w in wells])
            for i in range(0, len(ids), args.batch):
                batch = []
                for r in store.records(ids[i:i + args.batch]):
                    a = Analysis(record=r)
                    a.found = True
                    toxic = int(r.key.well[-2:]) % 6 == 5
                    a.viability = max(0.05, 1.0 - (0.2 * tp if toxic else 0.0))
                    batch.append(a)
                written = store.commit_results([a.result() for a in batch])
                t0 = time.perf_counter()
                monitor.on_results(written)
                times.append(time.perf_counter() - t0)
        monitor.close()
        stored = store.alerts(include_closed=True)
        n_alerts = len(stored)
        rules = sorted(Counter(a.rule for a in stored).items())
        store.close()
    last_read = times[-(len(wells) // args.batch):]
    print(f"{args.format}-well plate, {args.reads} reads, {len(times)} batches of {args.batch}: "
          f"per batch median {statistics.median(times) * 1000:.1f} ms, "
          f"last read median {statistics.median(last_read) * 1000:.1f} ms, "
          f"max {max(times) * 1000:.1f} ms, total {sum(times):.1f} s; {n_alerts} alerts "
          f"({', '.join(f'{r} {n}' for r, n in rules)})")


if __name__ == "__main__":
    main()
