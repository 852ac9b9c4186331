"""Is this file an NViR Agent database, and whole? And setting a damaged one aside.

Checked when the writer opens a SQLite file, before anything is written to it:

- the first bytes are SQLite's (not garbage, not another kind of file);
- the file is as long as its header says (a copy cut short, a disk that filled
  up); skipped while a write-ahead log is beside it, which SQLite replays;
- a file that holds tables but not ours (another program's database) is never
  turned into ours: SQLite would happily add our tables beside its own;
- with ``thorough`` (the engine at start), ``PRAGMA quick_check`` reads every
  page (about 0.4 s for 100,000 images on a warm disk).

The file is read only through SQLite, never opened directly: closing any other
descriptor of it would drop this process's POSIX locks on it, under a running
writer or reader in the same process (the tray runs both).

A damaged file is never replaced silently. :class:`DamagedDatabase` names the
file and the fix; only when the user consents (``nvir-agent run
--replace-damaged-database`` or the tray's question) does :func:`set_aside`
rename it, with its ``-wal``/``-shm`` companions, to
``<name>.damaged-<YYYYmmdd-HHMMSS>`` beside it, so that a new database can be
created at the configured path. Nothing is deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from nvir_agent.errors import StoreError

log = logging.getLogger(__name__)

OUR_TABLES = ("images", "measurements", "plates", "alerts")  # present from schema version 1
REPLACE_FLAG = "--replace-damaged-database"
COMPANIONS = ("-wal", "-shm", "-journal")


class DamagedDatabase(StoreError):
    """The database file is damaged or is not an NViR Agent database; ``path`` is the
    file and ``reason`` what is wrong with it."""

    def __init__(self, message: str, hint: str | None = None, *, path: Path | None = None,
                 reason: str = "") -> None:
        super().__init__(message, hint)
        self.path = path
        self.reason = reason


def damaged(path: Path, reason: str) -> DamagedDatabase:
    """The error for a damaged or foreign file at ``path``: what, and the two ways out."""
    return DamagedDatabase(
        f"The database {path} cannot be used: {reason}. Nothing was written to it.",
        f"Restore it from a backup, or set storage.database in agent.toml to another "
        f"file; or start the agent with `nvir-agent run {REPLACE_FLAG}` (or answer yes "
        "in the tray's question) to keep this file aside, renamed with the date and "
        "time, and start a new, empty database in its place.",
        path=path, reason=reason)


def content_problem(conn: sqlite3.Connection, version: int, known: int, *,
                    thorough: bool) -> str | None:
    """What is wrong with an open file's tables, or None: another program's tables,
    ours missing, or (``thorough``) pages that do not read back."""
    tables = {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    if version == 0 and tables:
        shown = ", ".join(sorted(tables)[:5]) + (" …" if len(tables) > 5 else "")
        return f"it is not an NViR Agent database (it holds other tables: {shown})"
    missing = [t for t in OUR_TABLES if t not in tables]
    if version > 0 and missing:
        return (f"it is not an NViR Agent database (schema version {version}, but no "
                f"{', '.join(missing)} table)")
    if thorough and version <= known:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(3)").fetchall()]
        if rows != ["ok"]:
            return f"SQLite finds it damaged ({'; '.join(str(r) for r in rows)})"
    return None


def set_aside(path: Path) -> Path:
    """Rename a damaged database (and its ``-wal``/``-shm``) to
    ``<name>.damaged-<time>`` beside it; returns the new name of the file."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    try:
        os.replace(path, target)
        for suffix in COMPANIONS:
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                os.replace(companion, target.with_name(target.name + suffix))
    except OSError as exc:
        raise StoreError(
            f"Cannot rename the damaged database {path} to {target.name}: "
            f"{exc.strerror or exc}.",
            "Check that no other program has it open and that you may write to its "
            "folder; or move it away yourself.") from exc
    log.warning("The damaged database %s was kept aside as %s; a new database is created "
                "in its place", path, target)
    return target


def write_locked(path: Path, wait_s: float = 1.0) -> bool:
    """Whether another connection holds the file's write lock (for longer than
    ``wait_s``): a write transaction is begun and at once rolled back, nothing is
    written. False for a missing file or one that cannot be opened."""
    if not path.is_file():
        return False
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(path, timeout=wait_s, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.Error as exc:
        return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY,
                                                          sqlite3.SQLITE_LOCKED)
    finally:
        close_quietly(conn)


def close_quietly(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
