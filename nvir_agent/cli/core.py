"""Core commands: paths (more arrive with the engine)."""

from __future__ import annotations

import argparse

from nvir_agent import paths
from nvir_agent.config import find_config_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("paths", help="print config, data, log and cache locations")
    p.set_defaults(func=cmd_paths)


def cmd_paths(args: argparse.Namespace) -> int:
    cfg = find_config_path(args.config)
    print(f"config: {cfg if cfg else str(paths.user_config_dir() / 'agent.toml') + ' (none yet: defaults apply)'}")
    print(f"data:   {paths.user_data_dir()}")
    print(f"log:    {paths.user_log_dir()}")
    print(f"cache:  {paths.user_cache_dir()}")
    return 0
