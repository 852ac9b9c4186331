"""The small SQL dialect layer: what differs between SQLite and PostgreSQL.

The store's statements are written once, with ``?`` placeholders, in the SQL
both engines share (``ON CONFLICT … DO UPDATE``, partial unique indexes,
``"user"`` quoted). What is left differs here:

- how a write transaction starts (``BEGIN IMMEDIATE`` takes SQLite's one write
  lock up front; PostgreSQL locks rows as it goes);
- the id of a new row (``lastrowid`` / ``RETURNING id``);
- the schema version (``PRAGMA user_version`` / a ``schema_version`` table);
- how a path is kept (text, or a BLOB for a name that is not valid UTF-8 /
  always its exact bytes in a ``bytea`` column);
- the image identity: ``path`` in a station's own SQLite file; (``scope``,
  ``path``) in a shared server, where ``scope`` is the station for its own
  folders and ``shared:<folder>`` for a folder every station sees;
- claiming jobs (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and the per-plate
  lock of the monitor (an advisory lock; SQLite's write lock already
  serialises).

The PostgreSQL half lives in postgres.py, imported only for a postgresql:// URL.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from nvir_agent.errors import StoreError
from nvir_agent.ingest.pathnames import to_db


class StoreUnavailable(StoreError):
    """The store cannot be written just now, for a reason that passes by itself: the
    engine keeps what it has in hand, says so and tries again (nothing is lost)."""


class StoreOffline(StoreUnavailable):
    """The store's server is away and the station writes to its local spool: what
    needs the server (the monitor's alert transaction) waits until it is back."""


class StoreBusy(StoreUnavailable):
    """Another program holds the SQLite file's write lock for longer than the busy
    timeout (e.g. a database browser with unsaved changes)."""


class StoreFull(StoreUnavailable):
    """The database cannot grow: the disk that holds it is full. Nothing is lost;
    the writer tries again once there is room (the engine waits for it)."""


class Dialect:
    """SQLite (the embedded default): one station per file."""

    name = "sqlite"
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    begin = "BEGIN IMMEDIATE"
    skip_locked = ""  # claims are serialised by the write lock
    image_identity = "path"  # ON CONFLICT target of images
    scoped = False  # images are unique by path alone

    def path(self, path: str | os.PathLike[str]) -> str | bytes:
        """The value a path is stored and looked up as."""
        return to_db(os.fspath(path))

    def insert_id(self, conn: Any, sql: str, params: Any) -> int:
        """Run an INSERT and return the new row's id."""
        return int(conn.execute(sql, params).lastrowid)

    def schema_version(self, conn: Any) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def lock_plate(self, conn: Any, plate: str) -> None:
        """Serialise the evaluation of one plate (held until the transaction ends)."""

    def is_disconnect(self, exc: BaseException) -> bool:
        """True when ``exc`` means the server is away (never for a local file)."""
        return False

    def is_busy(self, exc: BaseException) -> bool:
        """True when ``exc`` means another program holds the write lock."""
        return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY,
                                                          sqlite3.SQLITE_LOCKED)

    def is_full(self, exc: BaseException) -> bool:
        """True when ``exc`` means the database cannot grow (the disk is full, or
        SQLite's page limit is reached)."""
        if not isinstance(exc, sqlite3.Error):
            return False
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
        return code == sqlite3.SQLITE_FULL if code is not None else \
            "database or disk is full" in str(exc)


SQLITE = Dialect()
