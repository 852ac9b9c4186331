"""Linux: an XDG autostart entry for the tray, a systemd user unit for headless mode.

The unit is enabled the way ``systemctl --user enable`` does it, by a link in
``default.target.wants``, so that installing works without a running user
manager (over SSH, in a container, in tests). When a user manager is reachable
it is told to reload (and, on removal, to stop the unit first).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from nvir_agent.errors import AgentError
from nvir_agent.install.entries import (
    DESKTOP_FILE,
    HEADLESS,
    SYSTEMD_UNIT,
    desktop_entry,
    systemd_unit,
)

Systemctl = Callable[[Sequence[str]], bool]


def config_home() -> Path:
    """``$XDG_CONFIG_HOME`` when set to an absolute path, else ``~/.config``."""
    value = os.environ.get("XDG_CONFIG_HOME", "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / ".config"


def user_systemctl(args: Sequence[str]) -> bool:
    """Run ``systemctl --user ARGS`` when this user's manager is reachable; True on success."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    bus = os.environ.get("DBUS_SESSION_BUS_ADDRESS") or (
        runtime and os.path.exists(os.path.join(runtime, "bus")))
    exe = shutil.which("systemctl")
    if not (exe and bus):
        return False
    try:
        done = subprocess.run([exe, "--user", *args], capture_output=True, timeout=30,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (a reader never sees half a file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise AgentError(f"Cannot write {path}: {exc.strerror or exc}.",
                         "Check that you own this folder and that the disk is not full.") from exc


def remove_file(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise AgentError(f"Cannot remove {path}: {exc.strerror or exc}.",
                         "Check that you own this file, or remove it by hand.") from exc


class LinuxAutostart:
    description = "XDG autostart (tray), systemd user unit (headless)"

    def __init__(self, config_dir: Path | None = None,
                 systemctl: Systemctl = user_systemctl) -> None:
        self.config_dir = config_dir or config_home()
        self.systemctl = systemctl
        self.notes: list[str] = []

    @property
    def desktop_path(self) -> Path:
        return self.config_dir / "autostart" / DESKTOP_FILE

    @property
    def unit_path(self) -> Path:
        return self.config_dir / "systemd" / "user" / SYSTEMD_UNIT

    @property
    def wants_link(self) -> Path:
        return self.config_dir / "systemd" / "user" / "default.target.wants" / SYSTEMD_UNIT

    def location(self, mode: str) -> str:
        return str(self.unit_path if mode == HEADLESS else self.desktop_path)

    def wanted(self, mode: str, argv: Sequence[str]) -> str:
        return systemd_unit(argv) if mode == HEADLESS else desktop_entry(argv)

    def current(self, mode: str) -> str | None:
        path = self.unit_path if mode == HEADLESS else self.desktop_path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None if not path.exists() else ""
        if mode == HEADLESS and not self._enabled():
            return ""  # present but not enabled: `install` enables it again
        return text

    def _enabled(self) -> bool:
        return self.wants_link.is_symlink() and self.wants_link.resolve() == self.unit_path.resolve()

    def write(self, mode: str, argv: Sequence[str]) -> None:
        if mode != HEADLESS:
            write_text(self.desktop_path, desktop_entry(argv))
            return
        write_text(self.unit_path, systemd_unit(argv))
        try:
            self.wants_link.parent.mkdir(parents=True, exist_ok=True)
            if self.wants_link.is_symlink() or self.wants_link.exists():
                self.wants_link.unlink()
            self.wants_link.symlink_to(self.unit_path)
        except OSError as exc:
            raise AgentError(f"Cannot enable {self.unit_path}: {exc.strerror or exc}.",
                             "Run `systemctl --user enable nvir-agent.service`.") from exc
        if self.systemctl(["daemon-reload"]):
            self.notes.append("Start it now with: systemctl --user start nvir-agent.service")
        else:
            self.notes.append("No systemd user manager reachable now: the unit starts at "
                              "your next login.")
        self.notes.append("To keep it running after logout and start it at boot: "
                          "loginctl enable-linger $USER (once, may need an administrator).")

    def delete(self, mode: str) -> None:
        if mode != HEADLESS:
            remove_file(self.desktop_path)
            return
        self.systemctl(["stop", SYSTEMD_UNIT])
        if self.wants_link.is_symlink():
            remove_file(self.wants_link)
        remove_file(self.unit_path)
        self.systemctl(["daemon-reload"])
