"""One agent in its own process, for the several-stations tests and the load benchmark.

``python tests/agent_proc.py agent.toml analysed.log [seconds per image]``: runs
the engine with a light stand-in stage that appends each analysed path to the
log (one line per analysis, flushed at once), until SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from nvir_agent.config import load_config
from nvir_agent.core.engine import Engine
from nvir_agent.logsetup import setup_logging


class LoggingStage:
    name = "log"

    def __init__(self, log: str, seconds: float) -> None:
        self.log = log
        self.seconds = seconds

    def run(self, batch: list) -> None:
        with open(self.log, "a", encoding="utf-8", errors="surrogateescape") as fh:
            for a in batch:
                time.sleep(self.seconds)
                a.found, a.viability = True, 1.0
                fh.write(f"{a.record.path}\n")
                fh.flush()
                os.fsync(fh.fileno())


def main() -> int:
    config_path, log = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.002
    setup_logging(debug=False, to_file=False, verbose=False)
    engine = Engine(load_config(config_path), stages=[LoggingStage(log, seconds)],
                    listeners=[])
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
