"""Start at login: install, remove and report the agent's autostart entry.

Each OS adapter (``LinuxAutostart``, ``WindowsAutostart``, ``MacAutostart``)
knows where the entry of each mode (tray or headless) lives and how to write
it; the functions here hold the logic common to all: one mode at a time (a
tray entry replaces a headless one and the other way round), nothing written
when the entry is already what it should be, and a list of changes to report.
Only autostart entries are touched: data, config and logs stay.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from nvir_agent.errors import DataError
from nvir_agent.install.entries import HEADLESS, MODES, TRAY


class Backend(Protocol):
    """What an OS adapter provides (see linux.py, windows.py, macos.py)."""

    description: str
    notes: list[str]

    def location(self, mode: str) -> str: ...
    def wanted(self, mode: str, argv: Sequence[str]) -> str: ...
    def current(self, mode: str) -> str | None: ...
    def write(self, mode: str, argv: Sequence[str]) -> None: ...
    def delete(self, mode: str) -> None: ...


@dataclass(frozen=True)
class Change:
    """One thing install or remove did (or found already done)."""

    action: str  # created, updated, unchanged, removed, absent
    mode: str
    where: str


@dataclass(frozen=True)
class EntryState:
    mode: str
    where: str
    installed: bool
    up_to_date: bool  # holds what `install` would write now


@dataclass
class Outcome:
    changes: list[Change]
    notes: list[str] = field(default_factory=list)


def install(backend: Backend, argv: Sequence[str], headless: bool) -> Outcome:
    """Make ``argv`` start at login in one mode, removing the other mode's entry."""
    mode = HEADLESS if headless else TRAY
    other = TRAY if headless else HEADLESS
    changes = []
    if backend.current(other) is not None:
        backend.delete(other)
        changes.append(Change("removed", other, backend.location(other)))
    have = backend.current(mode)
    if have == backend.wanted(mode, argv):
        changes.append(Change("unchanged", mode, backend.location(mode)))
    else:
        backend.write(mode, argv)
        changes.append(Change("created" if have is None else "updated", mode,
                              backend.location(mode)))
    return Outcome(changes, list(backend.notes))


def remove(backend: Backend) -> Outcome:
    """Remove the entries of both modes (those present)."""
    changes = []
    for mode in MODES:
        if backend.current(mode) is None:
            changes.append(Change("absent", mode, backend.location(mode)))
        else:
            backend.delete(mode)
            changes.append(Change("removed", mode, backend.location(mode)))
    return Outcome(changes, list(backend.notes))


def status(backend: Backend, argv_for: dict[str, Sequence[str]]) -> list[EntryState]:
    """Each mode's entry: present or not, and whether it matches ``argv_for[mode]``."""
    states = []
    for mode in MODES:
        have = backend.current(mode)
        states.append(EntryState(mode, backend.location(mode), have is not None,
                                 have is not None and have == backend.wanted(mode, argv_for[mode])))
    return states


def backend_for(platform: str | None = None) -> Backend:
    """The adapter for this OS (``platform`` as in ``sys.platform``)."""


    platform = platform or sys.platform
    if platform.startswith("linux"):
        from nvir_agent.install.linux import LinuxAutostart

        return LinuxAutostart()
    if platform == "win32":
        from nvir_agent.install.windows import WindowsAutostart

        return WindowsAutostart()
    if platform == "darwin":
        from nvir_agent.install.macos import MacAutostart

        return MacAutostart()
    raise DataError(f"Start at login is not supported on {platform}.",
                     "Start `nvir-agent run --headless` from your system's own service manager.")
