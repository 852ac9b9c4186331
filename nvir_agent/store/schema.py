"""The SQLite schema, its migrations and how connections are opened.

The schema grows by appending SQL scripts to ``MIGRATIONS``; ``PRAGMA
user_version`` records how many have run. Never edit a script that has shipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
from pathlib import Path
from typing import Any

from nvir_agent.errors import StoreError
from nvir_agent.store.integrity import (
    DamagedDatabase,
    close_quietly,
    content_problem,
    damaged,
    set_aside,
)

log = logging.getLogger(__name__)

SCHEMA_V1 = """
CREATE TABLE images(
    id INTEGER PRIMARY KEY, path TEXT UNIQUE, size INTEGER, mtime REAL,
    vendor TEXT, plate TEXT, well TEXT, row INTEGER, col INTEGER, field INTEGER,
    channel TEXT, z INTEGER, timepoint INTEGER, elapsed_s REAL,
    state TEXT CHECK (state IN ('pending', 'done', 'failed')), error TEXT,
    attempts INTEGER, created_at REAL, updated_at REAL);
CREATE TABLE measurements(
    image_id INTEGER PRIMARY KEY REFERENCES images(id), found INTEGER, viability REAL,
    model TEXT, qc TEXT, features TEXT, created_at REAL);
CREATE TABLE plates(
    plate TEXT PRIMARY KEY, first_seen REAL, last_seen REAL, plate_map TEXT, meta TEXT);
CREATE TABLE alerts(
    id INTEGER PRIMARY KEY, plate TEXT, subject TEXT, rule TEXT, severity TEXT,
    state TEXT CHECK (state IN ('open', 'acknowledged', 'resolved', 'dismissed')),
    message TEXT, value REAL, timepoint INTEGER, opened_at REAL, updated_at REAL,
    closed_at REAL, details TEXT);
CREATE UNIQUE INDEX alerts_one_active ON alerts(plate, subject, rule)
    WHERE state IN ('open', 'acknowledged');
CREATE TABLE alert_events(
    id INTEGER PRIMARY KEY, alert_id INTEGER REFERENCES alerts(id), at REAL, action TEXT,
    user TEXT, comment TEXT);
"""

# v2: lookups the engine and the UI make often, and the running agent's
# heartbeat (observer modes and health) so that `status` in another process
# can show them.
SCHEMA_V2 = """
CREATE INDEX images_state ON images(state, id);
CREATE INDEX images_plate_well ON images(plate, well, timepoint);
CREATE TABLE agent_status(
    name TEXT PRIMARY KEY, pid INTEGER, started_at REAL, heartbeat_at REAL, snapshot TEXT);
"""

# v3: the spheroid outline of each measurement (a simplified polygon, JSON
# [[x, y], ...] in full-image pixels) for the review window.
SCHEMA_V3 = """
ALTER TABLE measurements ADD COLUMN outline TEXT;
"""

# v4: stations (several agents on one central store; see postgres.py). Images and
# measurements carry the station; a job is claimed by the station analysing it;
# the heartbeat is kept per station (the store fills in its own name for older
# rows when it opens the file).
SCHEMA_V4 = """
ALTER TABLE images ADD COLUMN station TEXT;
ALTER TABLE images ADD COLUMN scope TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN claimed_by TEXT;
ALTER TABLE images ADD COLUMN claimed_at REAL;
CREATE INDEX images_station ON images(station);
ALTER TABLE measurements ADD COLUMN station TEXT;
ALTER TABLE agent_status ADD COLUMN station TEXT;
ALTER TABLE agent_status ADD COLUMN host TEXT;
DELETE FROM agent_status WHERE name = 'engine';
"""

# v5: the operator's time limits: an acknowledgement that expires (the alert
# returns), and plates or compounds shelved (no notifications) until a time.
SCHEMA_V5 = """
ALTER TABLE alerts ADD COLUMN ack_until REAL;
CREATE TABLE shelves(
    id INTEGER PRIMARY KEY, kind TEXT CHECK (kind IN ('plate', 'compound')), name TEXT,
    until REAL, user TEXT, comment TEXT, created_at REAL);
"""

# v6: how far each viability can be trusted: its calibrated interval, and the
# image's typicality and distance from the model's training images (NULL when
# the model cannot say; the QC flag unlike_training lives in qc).
SCHEMA_V6 = """
ALTER TABLE measurements ADD COLUMN viability_low REAL;
ALTER TABLE measurements ADD COLUMN viability_high REAL;
ALTER TABLE measurements ADD COLUMN typicality REAL;
ALTER TABLE measurements ADD COLUMN ood_distance REAL;
"""

# Append-only: never edit a script that has shipped; add a new one instead.
MIGRATIONS: list[str] = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6]

def to_json(value: Any) -> str:
    """JSON for the store: numpy scalars/arrays become plain values, NaN/inf null."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
            return clean(v.tolist())
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, (str, int, float, bool)) or v is None:
            return v
        return str(v)

    return json.dumps(clean(value), separators=(",", ":"), sort_keys=True)


BUSY_TIMEOUT_S = 30.0  # how long a statement waits for another program's write lock


def connect(path: Path, *, readonly: bool, wal: bool = True) -> sqlite3.Connection:
    """A connection to the file (created when missing, unless ``readonly``); a file that
    is not a database, or is damaged, raises :class:`DamagedDatabase`. ``wal`` False:
    the writer's settings, which write to the file, are left for :func:`writer_mode`."""
    conn: sqlite3.Connection | None = None
    timeout = BUSY_TIMEOUT_S
    try:
        if readonly:
            conn = sqlite3.connect(
                path.resolve().as_uri() + "?mode=ro", uri=True, timeout=timeout,
                isolation_level=None, check_same_thread=False,
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        conn.row_factory = sqlite3.Row
        # ``timeout`` is SQLite's busy timeout: how long a statement waits for a lock
        if not readonly and wal:
            writer_mode(conn)
        return conn
    except (sqlite3.Error, OSError) as exc:
        close_quietly(conn)  # a failed open must not keep the file locked
        raise open_error(path, exc) from exc


def writer_mode(conn: sqlite3.Connection) -> None:
    """The writer's settings: write-ahead log (readers never block it), foreign keys."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")


def open_error(path: Path, exc: BaseException) -> StoreError:
    """The user's error for a SQLite failure while opening or upgrading ``path``."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_NOTADB:
        return damaged(path, f"it is not an SQLite database (SQLite: {exc})")
    if code == sqlite3.SQLITE_CORRUPT:
        return damaged(path, f"SQLite finds it damaged ({exc})")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            f"The database {path} is locked by another program (it has held its write "
            f"lock for more than {BUSY_TIMEOUT_S:.0f} s).",
            "Close the program that has the file open for writing (a database browser "
            "with unsaved changes, a second agent), then start the agent again.")
    return StoreError(
        f"Cannot open the database {path}: {exc}.",
        "Check that the folder exists and is writable and that the file is an NViR Agent "
        "database; set storage.database in agent.toml to use another file.",
    )


def open_writer(path: Path, *, thorough: bool = False,
                replace_damaged: bool = False) -> sqlite3.Connection:
    """The writer's connection to ``path``, checked and at the newest schema.

    A damaged file, or another program's database, raises :class:`DamagedDatabase`
    and is left as it is; with ``replace_damaged`` (the user's consent) it is kept
    aside (:func:`~nvir_agent.store.integrity.set_aside`) and a new database is
    created in its place. ``thorough`` also reads every page (the engine's start)."""
    try:
        return _open_checked(path, thorough=thorough)
    except DamagedDatabase as exc:
        if not replace_damaged:
            raise
        log.error("%s", exc.message)
        set_aside(path)
    return _open_checked(path, thorough=False)


def _open_checked(path: Path, *, thorough: bool) -> sqlite3.Connection:
    conn = connect(path, readonly=False, wal=False)  # nothing written before the checks
    try:
        try:
            conn.execute("PRAGMA page_count").fetchone()  # reads the header: garbage fails
            problem = content_problem(conn, schema_version(conn), len(MIGRATIONS),
                                      thorough=thorough)
            if not problem:
                writer_mode(conn)
        except sqlite3.Error as exc:
            raise open_error(path, exc) from exc
        if problem:
            raise damaged(path, problem)
        migrate(conn, path)
    except BaseException:
        close_quietly(conn)
        raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the database at ``path`` to the newest schema (a new file is created at it)."""
    version = schema_version(conn)
    if version > len(MIGRATIONS):
        raise StoreError(
            f"The database {path} has schema version {version}, newer than this "
            f"NViR Agent understands ({len(MIGRATIONS)}).",
            "Update NViR Agent, or set storage.database to a new file.",
        )
    for number in range(version + 1, len(MIGRATIONS) + 1):
        script = MIGRATIONS[number - 1]
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if getattr(exc, "sqlite_errorcode", None) in (
                    sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_BUSY,
                    sqlite3.SQLITE_LOCKED):
                raise open_error(path, exc) from exc
            raise StoreError(
                f"Upgrading the database {path} to schema version {number} failed: {exc}.",
                "Check that the file is an NViR Agent database and that the disk is not "
                "full; set storage.database to a new file to start afresh.",
            ) from exc
    if version == 0:
        log.info("Database %s created (schema version %d)", path, len(MIGRATIONS))
    elif version < len(MIGRATIONS):
        log.info("Database %s upgraded from schema version %d to %d", path, version,
                 len(MIGRATIONS))
