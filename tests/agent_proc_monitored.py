"""One agent in its own process with the real monitor, for the kill -9 test.

``python tests/agent_proc_monitored.py agent.toml analysed.log [seconds per image]``:
runs the engine
as ``nvir_agent.app.build_engine`` wires it (ingest, jobs, store, the monitor with
the plate maps of agent.toml and its notifier), with a light stand-in for reading
and scoring: the viability comes from the file name (row B wells lose viability
with each time point) and each analysed path is appended to the log (one line per
analysis, flushed and synced at once). Runs until SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from nvir_agent.app import build_engine
from nvir_agent.config import load_config
from nvir_agent.logsetup import setup_logging

TOX = {1: 0.9, 2: 0.75, 3: 0.5, 4: 0.3, 5: 0.2}  # row B wells, by time point


def viability(well: str, timepoint: int | None) -> float:
    return TOX.get(timepoint or 1, 0.2) if well.startswith("B") else 1.0


class ScoreFromName:
    name = "score-from-name"

    def __init__(self, log: str, seconds: float) -> None:
        self.log = log
        self.seconds = seconds

    def run(self, batch: list) -> None:
        with open(self.log, "a", encoding="utf-8", errors="surrogateescape") as fh:
            for a in batch:
                time.sleep(self.seconds)
                a.found = True
                a.viability = viability(a.record.key.well or "", a.record.key.timepoint)
                fh.write(f"{a.record.path}\n")
                fh.flush()
                os.fsync(fh.fileno())


def main() -> int:
    config_path, log = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    setup_logging(debug=False, to_file=False, verbose=False)
    engine = build_engine(load_config(config_path), stages=[ScoreFromName(log, seconds)])
    signal.signal(signal.SIGTERM, lambda *_: engine.request_stop())
    engine.start()
    try:
        while not engine.wait(0.5):
            pass
    finally:
        engine.stop()
    return 1 if engine.error else 0


if __name__ == "__main__":
    sys.exit(main())
