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
from collections.abc import Callable
from typing import Any

from nvir_agent.config import load_config
from nvir_agent.core.engine import Engine
from nvir_agent.logsetup import setup_logging


class LoggingStage:
    """Gives each image ``viability(record)`` (1.0 by default) and appends its path
    to the log, flushed and synced at once."""

    name = "log"

    def __init__(self, log: str, seconds: float,
                 viability: Callable[[Any], float] = lambda record: 1.0) -> None:
        self.log = log
        self.seconds = seconds
        self.viability = viability

    def run(self, batch: list) -> None:
        with open(self.log, "a", encoding="utf-8", errors="surrogateescape") as fh:
            for a in batch:
                time.sleep(self.seconds)
                a.found, a.viability = True, self.viability(a.record)
                fh.write(f"{a.record.path}\n")
                fh.flush()
                os.fsync(fh.fileno())


def run_until_sigterm(engine: Any) -> int:
    """Start ``engine``, run it until SIGTERM, stop it; 1 if it stopped on an error."""
    signal.signal(signal.SIGTERM, lambda *_: engine.request_stop())
    engine.start()
    try:
        while not engine.wait(0.5):
            pass
    finally:
        engine.stop()
    return 1 if engine.error else 0


def main() -> int:
    config_path, log = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.002
    setup_logging(debug=False, to_file=False, verbose=False)
    return run_until_sigterm(Engine(load_config(config_path),
                                    stages=[LoggingStage(log, seconds)], listeners=[]))


if __name__ == "__main__":
    sys.exit(main())
