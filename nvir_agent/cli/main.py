"""Entry point of `nvir-agent`: builds the parser from each area's module and
turns every AgentError into a plain message and an exit code chosen by its
class (:data:`EXIT_CODES`) — no traceback unless --debug.

An area module exposes ``register(subparsers)``; each command it adds sets
``func`` (``func(args) -> int``) with ``parser.set_defaults``. Area modules
import heavy parts (torch, OpenCV, matplotlib) inside their command functions
so that `nvir-agent --help` and light commands start fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from nvir_agent import __version__
from nvir_agent.cli import (
    autostart,
    core,
    db,
    demo,
    imaging,
    model,
    monitor,
    report,
    review,
    synth,
    training,
)
from nvir_agent.errors import (
    AgentError,
    ConfigError,
    DataError,
    ModelLoadError,
    PlateMapError,
    TrainingInterrupted,
    UsageError,
)
from nvir_agent.logsetup import setup_logging

AREAS = [core, autostart, db, demo, imaging, model, monitor, report, review, synth, training]

# Exit status by error class (the nearest class in its ancestry); any other
# AgentError exits with 1.
EXIT_CODES: dict[type[AgentError], int] = {
    UsageError: 2,
    ConfigError: 2,
    DataError: 2,
    ModelLoadError: 2,
    PlateMapError: 2,
    TrainingInterrupted: 130,
}

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvir-agent",
        description="Watch microscope folders, segment spheroids, score viability with NViR "
        "and alert when drug-exposed wells lose viability.",
    )
    parser.add_argument("--version", action="version", version=f"nvir-agent {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks and debug log lines"
    )
    parser.add_argument("--config", metavar="FILE", help="agent.toml to use")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        area.register(sub)
    for command in dict.fromkeys(sub.choices.values()):
        # Also accepted after the command name (`nvir-agent run --config F`); SUPPRESS
        # keeps a value given before the command name.
        command.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                             help="agent.toml to use")
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show full tracebacks and debug log lines")
    return parser


def exit_code(exc: AgentError) -> int:
    """The exit status of a command that failed with ``exc``."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(
        debug=args.debug,
        to_file=getattr(args, "log_to_file", False),
        verbose=getattr(args, "log_verbose", False),
    )
    try:
        return int(args.func(args) or 0)
    except AgentError as exc:
        if args.debug:
            log.exception("command failed")
        print(f"nvir-agent: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("nvir-agent: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
