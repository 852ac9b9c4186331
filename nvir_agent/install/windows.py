"""Windows: the HKCU Run key for the tray, a scheduled task at logon for headless mode.

Both belong to the current user and need no administrator. ``winreg`` and
``schtasks`` are only used through ``WinRegistry`` and ``run_schtasks``, so
tests on any OS pass stand-ins and check exactly what would be written.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from nvir_agent.errors import AgentError
from nvir_agent.install.entries import (
    HEADLESS,
    RUN_KEY,
    RUN_VALUE,
    TASK_NAME,
    windows_run_value,
    windows_task_xml,
)

TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class Registry(Protocol):
    def get(self, name: str) -> str | None: ...
    def set(self, name: str, value: str) -> None: ...
    def delete(self, name: str) -> None: ...


class WinRegistry:
    """String values under HKEY_CURRENT_USER\\<RUN_KEY> through winreg (Windows only)."""

    def get(self, name: str) -> str | None:
        import winreg  # Windows only

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
                value, _kind = winreg.QueryValueEx(key, name)
        except FileNotFoundError:
            return None
        return str(value)

    def set(self, name: str, value: str) -> None:
        import winreg  # Windows only

        try:
            with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, RUN_KEY, 0,
                                    winreg.KEY_SET_VALUE) as key:
                winreg.SetValueEx(key, name, 0, winreg.REG_SZ, value)
        except OSError as exc:
            raise AgentError(f"Cannot write HKCU\\{RUN_KEY}\\{name}: {exc.strerror or exc}.",
                             "Check whether a policy blocks Run entries on this PC.") from exc

    def delete(self, name: str) -> None:
        import winreg  # Windows only

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0,
                                winreg.KEY_SET_VALUE) as key:
                winreg.DeleteValue(key, name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise AgentError(f"Cannot remove HKCU\\{RUN_KEY}\\{name}: {exc.strerror or exc}.",
                             "Remove the value with regedit.") from exc


def run_schtasks(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["schtasks.exe", *args], capture_output=True, text=True,
                              errors="replace", timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise AgentError(f"Cannot run schtasks.exe: {exc}.",
                         "Check that the Task Scheduler service is running.") from exc


def current_user() -> str:
    """DOMAIN\\user of the logged-in user, as a task's UserId."""
    user = os.environ.get("USERNAME", "")
    domain = os.environ.get("USERDOMAIN", "")
    return f"{domain}\\{user}" if domain else user


def task_command(xml_text: str) -> str | None:
    """The command line of a task's first Exec action, as ``windows_command_line`` gives."""
    try:
        root = ET.fromstring(_strip_declaration(xml_text))
    except ET.ParseError:
        return None
    command = root.findtext("t:Actions/t:Exec/t:Command", default=None, namespaces=TASK_NS)
    if command is None:
        return None
    arguments = root.findtext("t:Actions/t:Exec/t:Arguments", default="", namespaces=TASK_NS)
    return f'"{command.strip(chr(34))}"' + (f" {arguments}" if arguments else "")


def _strip_declaration(xml_text: str) -> str:
    # ElementTree refuses a str that declares an encoding; the text is decoded already.
    text = xml_text.lstrip("\ufeff").lstrip()
    if text.startswith("<?xml"):
        text = text[text.index("?>") + 2:]
    return text


class WindowsAutostart:
    description = "HKCU Run key (tray), scheduled task at logon (headless)"

    def __init__(self, registry: Registry | None = None, run: Runner = run_schtasks,
                 user: str | None = None) -> None:
        self.registry = registry or WinRegistry()
        self.run = run
        self.user = user or current_user()
        self.notes: list[str] = []

    def location(self, mode: str) -> str:
        if mode == HEADLESS:
            return f"scheduled task \\{TASK_NAME}"
        return f"HKEY_CURRENT_USER\\{RUN_KEY}\\{RUN_VALUE}"

    def wanted(self, mode: str, argv: Sequence[str]) -> str:
        # The task is compared by its command line: Windows rewrites the rest of
        # the XML (dates, author, defaults) when it registers a task.
        return windows_run_value(argv)

    def current(self, mode: str) -> str | None:
        if mode != HEADLESS:
            return self.registry.get(RUN_VALUE)
        done = self.run(["/Query", "/TN", TASK_NAME, "/XML", "ONE"])
        if done.returncode != 0:
            return None
        return task_command(done.stdout) or ""

    def write(self, mode: str, argv: Sequence[str]) -> None:
        if mode != HEADLESS:
            self.registry.set(RUN_VALUE, windows_run_value(argv))
            return
        with tempfile.TemporaryDirectory(prefix="nvir-agent-") as tmp:
            xml_path = Path(tmp) / "task.xml"
            xml_path.write_text(windows_task_xml(argv, self.user), encoding="utf-16",
                                newline="\r\n")
            done = self.run(["/Create", "/TN", TASK_NAME, "/XML", str(xml_path), "/F"])
        if done.returncode != 0:
            raise AgentError(f"schtasks could not create the task {TASK_NAME!r}: "
                             f"{(done.stderr or done.stdout).strip()}",
                             "Check that the Task Scheduler service runs and that you may "
                             "create tasks; or use the tray mode (Run key) instead.")
        self.notes.append(f'Start it now with: schtasks /Run /TN "{TASK_NAME}"')

    def delete(self, mode: str) -> None:
        if mode != HEADLESS:
            self.registry.delete(RUN_VALUE)
            return
        self.run(["/End", "/TN", TASK_NAME])
        done = self.run(["/Delete", "/TN", TASK_NAME, "/F"])
        if done.returncode != 0:
            raise AgentError(f"schtasks could not delete the task {TASK_NAME!r}: "
                             f"{(done.stderr or done.stdout).strip()}",
                             "Delete it in Task Scheduler (taskschd.msc).")
