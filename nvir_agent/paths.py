"""Where the agent keeps its config, data, logs and cache (platformdirs)."""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP = "nvir-agent"


def user_config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def user_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def user_log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP, appauthor=False))


def user_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


def default_database() -> Path:
    return user_data_dir() / "nvir-agent.sqlite3"
