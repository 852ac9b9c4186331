"""macOS: a LaunchAgent property list in ~/Library/LaunchAgents per mode.

launchd loads the file at the next login. On removal a loaded headless job is
booted out first (it would keep running otherwise); a running tray is left for
the user to quit from its menu.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nvir_agent.errors import AgentError
from nvir_agent.install.entries import HEADLESS, LAUNCHD_LABELS, launchd_plist

Launchctl = Callable[[Sequence[str]], bool]


def run_launchctl(args: Sequence[str]) -> bool:
    """Run ``launchctl ARGS`` on macOS; True on success (False elsewhere)."""
    if sys.platform != "darwin":
        return False
    try:
        done = subprocess.run(["launchctl", *args], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


class MacAutostart:
    description = "LaunchAgent (tray and headless)"

    def __init__(self, home: Path | None = None, launchctl: Launchctl = run_launchctl) -> None:
        self.home = home or Path.home()
        self.launchctl = launchctl
        self.notes: list[str] = []

    def plist_path(self, mode: str) -> Path:
        return self.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABELS[mode]}.plist"

    @property
    def log_dir(self) -> Path:
        return self.home / "Library" / "Logs" / "nvir-agent"  # as platformdirs on macOS

    def location(self, mode: str) -> str:
        return str(self.plist_path(mode))

    def wanted(self, mode: str, argv: Sequence[str]) -> str:
        return launchd_plist(argv, mode == HEADLESS, str(self.log_dir)).decode("utf-8")

    def current(self, mode: str) -> str | None:
        path = self.plist_path(mode)
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None if not path.exists() else ""

    def write(self, mode: str, argv: Sequence[str]) -> None:
        path = self.plist_path(mode)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(self.wanted(mode, argv), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            raise AgentError(f"Cannot write {path}: {exc.strerror or exc}.",
                             "Check that you own ~/Library/LaunchAgents.") from exc
        self.notes.append(f"launchd starts it at your next login; now: launchctl bootstrap "
                          f"gui/$(id -u) '{path}'")

    def delete(self, mode: str) -> None:
        path = self.plist_path(mode)
        if mode == HEADLESS:
            self.launchctl(["bootout", f"gui/{os.getuid()}/{LAUNCHD_LABELS[mode]}"])
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise AgentError(f"Cannot remove {path}: {exc.strerror or exc}.",
                             "Remove the file by hand.") from exc
