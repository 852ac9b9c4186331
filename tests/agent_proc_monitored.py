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

import sys

from agent_proc import LoggingStage, run_until_sigterm  # this folder: run as a script

from nvir_agent.app import build_engine
from nvir_agent.config import load_config
from nvir_agent.logsetup import setup_logging

TOX = {1: 0.9, 2: 0.75, 3: 0.5, 4: 0.3, 5: 0.2}  # row B wells, by time point


def viability(well: str, timepoint: int | None) -> float:
    return TOX.get(timepoint or 1, 0.2) if well.startswith("B") else 1.0


def main() -> int:
    config_path, log = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    setup_logging(debug=False, to_file=False, verbose=False)
    stage = LoggingStage(log, seconds, lambda record: viability(record.key.well or "",
                                                                record.key.timepoint))
    return run_until_sigterm(build_engine(load_config(config_path), stages=[stage]))


if __name__ == "__main__":
    sys.exit(main())
