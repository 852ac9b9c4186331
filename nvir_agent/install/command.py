"""The command line that starts the agent at login, and how each OS quotes it.

``agent_command`` finds what to start: the frozen executable of a PyInstaller
build, else the installed ``nvir-agent`` console script, else the running
Python with ``-m nvir_agent``. On Windows a windowless launcher is preferred
(``nvir-agentw.exe`` next to a frozen build, ``pythonw.exe`` for a pip
install), so no console window opens at logon.

The quoting functions turn an argument list into one string for each format
that needs it: a desktop entry's ``Exec`` key, a systemd ``ExecStart`` line
and a Windows command line (Run key, scheduled task arguments).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from nvir_agent.errors import DataError

SCRIPT = "nvir-agent"
WINDOWLESS_EXE = "nvir-agentw.exe"  # the windowed twin of nvir-agent.exe in a Windows build


def agent_command(headless: bool, *, config: str | os.PathLike[str] | None = None,
                  platform: str | None = None, frozen: bool | None = None,
                  executable: str | None = None, scripts_dir: str | None = None) -> list[str]:
    """The argument list that starts the agent (``run`` or ``run --headless``).

    ``config`` (an agent.toml) is passed on as an absolute ``--config``. The
    keyword arguments after it default to the running process and exist for tests.
    """
    platform = platform or sys.platform
    frozen = bool(getattr(sys, "frozen", False)) if frozen is None else frozen
    executable = executable or sys.executable
    argv = [*_launcher(platform, frozen, executable, scripts_dir), "run"]
    if headless:
        argv.append("--headless")
    if config is not None:
        argv += ["--config", str(Path(config).expanduser().absolute())]
    return argv


def _launcher(platform: str, frozen: bool, executable: str,
              scripts_dir: str | None) -> list[str]:
    windows = platform == "win32"
    exe = Path(executable)
    if frozen:
        if windows and exe.with_name(WINDOWLESS_EXE).is_file():
            return [str(exe.with_name(WINDOWLESS_EXE))]
        return [str(exe)]
    if windows and exe.with_name("pythonw.exe").is_file():
        return [str(exe.with_name("pythonw.exe")), "-m", "nvir_agent"]
    scripts = Path(scripts_dir or sysconfig.get_path("scripts"))
    script = scripts / (SCRIPT + ".exe" if windows else SCRIPT)
    if script.is_file():
        return [str(script.absolute())]
    found = shutil.which(SCRIPT)
    if found:
        return [str(Path(found).absolute())]
    return [str(exe.absolute()), "-m", "nvir_agent"]


def _check_printable(argv: Sequence[str]) -> None:
    for a in argv:
        if any(ord(c) < 0x20 or c == "\x7f" for c in a):
            raise DataError(f"The agent's command line has a control character in {a!r}.",
                             "Install the agent in a folder whose path has no line breaks "
                             "or tabs.")


# Characters that force quoting in a desktop entry Exec argument (Desktop Entry
# Specification, "The Exec key").
_DESKTOP_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def desktop_exec(argv: Sequence[str]) -> str:
    """``Exec`` value for a .desktop file, with the spec's quoting and string escapes."""
    _check_printable(argv)
    parts = []
    for a in argv:
        if a == "" or any(c in _DESKTOP_RESERVED for c in a):
            inner = "".join("\\" + c if c in '"`$\\' else c for c in a)
            a = f'"{inner}"'
        parts.append(a.replace("%", "%%"))
    # The string-type escape is applied on top of the quoting: every backslash doubles.
    return " ".join(parts).replace("\\", "\\\\")


_SYSTEMD_PLAIN = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                     "-_./+=:,@")


def systemd_exec(argv: Sequence[str]) -> str:
    """``ExecStart`` value for a systemd unit: arguments quoted where needed, ``%``
    specifiers and ``$`` variable references escaped."""
    _check_printable(argv)
    parts = []
    for a in argv:
        if a == "" or any(c not in _SYSTEMD_PLAIN for c in a):
            a = '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(a.replace("%", "%%").replace("$", "$$"))
    return " ".join(parts)


def windows_command_line(argv: Sequence[str]) -> str:
    """One Windows command line: the program always in double quotes (a path with
    spaces is never split), the arguments quoted for CommandLineToArgvW."""
    _check_printable(argv)
    program, *args = argv
    if '"' in program:
        raise DataError(f"The agent's path {program} contains a double quote.",
                         "Install the agent in a folder without quotes in its path.")
    return " ".join([f'"{program}"', *([windows_arguments(args)] if args else [])])


def windows_arguments(args: Sequence[str]) -> str:
    """The arguments alone, quoted for CommandLineToArgvW (as in a task's ``Arguments``)."""
    return subprocess.list2cmdline(list(args))
