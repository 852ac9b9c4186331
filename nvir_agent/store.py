"""The store: one SQLite file (WAL) that is the only shared state of the agent.

One writer connection (owned by the engine, serialised by a lock) and any
number of read-only readers (CLI, UI) that never block it. The schema grows
by appending SQL scripts to ``MIGRATIONS``; ``PRAGMA user_version`` records
how many have run. All SQL is parameterised.

Durability rules: a job row (state ``pending``) exists before any work on an
image; results are committed in one transaction; work is keyed by
(path, size, mtime), so a changed file is queued again and an unchanged one
never twice.

Paths are kept as text, or as their exact bytes (a BLOB) when the name is not
valid UTF-8 (see pathnames.py); rows read back give the path ``open`` takes
(``ImageRecord.path``) or the readable form (``export_rows``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvir_agent.errors import StoreError
from nvir_agent.naming import ImageKey
from nvir_agent.pathnames import from_db, readable, to_db
from nvir_agent.paths import default_database
from nvir_agent.pipeline import Analysis, ImageRecord

if TYPE_CHECKING:
    from nvir_agent.config import Config

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

# Append-only: never edit a script that has shipped; add a new one instead.
MIGRATIONS: list[str] = [SCHEMA_V1, SCHEMA_V2]

_IMAGE_COLUMNS = (
    "id, path, size, mtime, vendor, plate, well, row, col, field, channel, z, timepoint, "
    "elapsed_s, state, error, attempts, created_at, updated_at"
)


def database_path(config: Config) -> Path:
    """storage.database (relative to the config file) or the user data dir default."""
    if config.storage.database:
        return config.resolve(config.storage.database)
    return default_database()


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


@dataclass(frozen=True)
class Counts:
    """How many images the store knows, by state."""

    seen: int = 0
    pending: int = 0
    done: int = 0
    failed: int = 0


def _text(value: str | None) -> str | None:
    """Text for a TEXT column: a message quoting an odd file name stays writable."""
    return None if value is None else readable(str(value))


def _record(row: sqlite3.Row) -> ImageRecord:
    key = ImageKey(
        vendor=row["vendor"], plate=row["plate"], well=row["well"], row=row["row"],
        column=row["col"], field=row["field"], channel=row["channel"], z=row["z"],
        timepoint=row["timepoint"], elapsed_s=row["elapsed_s"],
    )
    return ImageRecord(
        id=row["id"], path=Path(from_db(row["path"])), key=key, size=row["size"], mtime=row["mtime"]
    )


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            conn = sqlite3.connect(
                path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30,
                isolation_level=None, check_same_thread=False,
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        return conn
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(
            f"Cannot open the database {path}: {exc}.",
            "Check that the folder exists and is writable and that the file is an NViR Agent "
            "database; set storage.database in agent.toml to use another file.",
        ) from exc


class _Queries:
    """Reads shared by the writer and the read-only reader."""

    path: Path
    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            with self._lock:
                return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(
                f"Reading the database {self.path} failed: {exc}.",
                "If another program changed the file, restore it or point storage.database "
                "at a new file.",
            ) from exc

    def schema_version(self) -> int:
        return int(self._query("PRAGMA user_version")[0][0])

    def counts(self) -> Counts:
        by_state = {r["state"]: r["n"] for r in self._query(
            "SELECT state, COUNT(*) AS n FROM images GROUP BY state")}
        return Counts(
            seen=sum(by_state.values()), pending=by_state.get("pending", 0),
            done=by_state.get("done", 0), failed=by_state.get("failed", 0),
        )

    def image(self, path: str | os.PathLike[str]) -> dict[str, Any] | None:
        """One image with its measurement (as in export_rows), or None."""
        rows = list(self.export_rows(paths=[str(path)]))
        return rows[0] if rows else None

    def export_rows(self, paths: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every image (or those at ``paths``) with its key, state and measurement."""
        sql = (
            "SELECT i.*, m.found, m.viability, m.model, m.qc, m.features "
            "FROM images i LEFT JOIN measurements m ON m.image_id = i.id"
        )
        params: list[Any] = []
        if paths is not None:
            if not paths:
                return
            sql += f" WHERE i.path IN ({','.join('?' * len(paths))})"
            params = [to_db(os.fspath(p)) for p in paths]
        for row in self._query(sql + " ORDER BY i.id", params):
            yield _export_row(row)

    def heartbeat(self, name: str = "engine") -> dict[str, Any] | None:
        rows = self._query(
            "SELECT pid, started_at, heartbeat_at, snapshot FROM agent_status WHERE name = ?",
            (name,),
        )
        if not rows:
            return None
        r = rows[0]
        return {
            "pid": r["pid"], "started_at": r["started_at"], "heartbeat_at": r["heartbeat_at"],
            "snapshot": json.loads(r["snapshot"] or "{}"),
        }


def _export_row(row: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"], "path": readable(row["path"]), "vendor": row["vendor"], "plate": row["plate"],
        "well": row["well"], "row": row["row"], "column": row["col"], "field": row["field"],
        "channel": row["channel"], "z": row["z"], "timepoint": row["timepoint"],
        "elapsed_s": row["elapsed_s"], "size": row["size"], "mtime": row["mtime"],
        "state": row["state"], "error": row["error"], "attempts": row["attempts"],
        "updated_at": row["updated_at"],
    }
    if row["state"] == "done":
        out.update(json.loads(row["features"] or "{}"))
        out["found"] = None if row["found"] is None else bool(row["found"])
        out["qc"] = json.loads(row["qc"] or "[]")
        out["viability"] = row["viability"]
        out["model"] = row["model"]
    return out


class Store(_Queries):
    """The writer. Open once per process that writes; thread-safe through a lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = _connect(self.path, readonly=False)
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"The database {self.path} has schema version {version}, newer than this "
                f"NViR Agent understands ({len(MIGRATIONS)}).",
                "Update NViR Agent, or set storage.database to a new file.",
            )
        for number in range(version + 1, len(MIGRATIONS) + 1):
            script = MIGRATIONS[number - 1]
            try:
                with self._lock:
                    self._conn.executescript(
                        f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
                    )
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise StoreError(
                    f"Upgrading the database {self.path} to schema version {number} failed: "
                    f"{exc}.",
                    "Check that the file is an NViR Agent database and that the disk is not "
                    "full; set storage.database to a new file to start afresh.",
                ) from exc
            log.info("Database %s upgraded to schema version %d", self.path, number)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT), rolled back on error."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._write_error(exc) from exc
            try:
                yield self._conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise self._write_error(exc) from exc

    def _write_error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(
            f"Writing to the database {self.path} failed: {exc}.",
            "Check free disk space and that no other program holds the file locked.",
        )

    def _write(self, fn: Any) -> Any:
        try:
            with self.transaction() as conn:
                return fn(conn)
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc

    # --- jobs -------------------------------------------------------------------------

    def known_files(self) -> dict[str, tuple[int, float]]:
        """(size, mtime) of every image path the store has seen."""
        return {from_db(r["path"]): (r["size"], r["mtime"]) for r in self._query(
            "SELECT path, size, mtime FROM images")}

    def add_jobs(
        self, jobs: Iterable[tuple[str, int, float, ImageKey]], *, force: bool = False
    ) -> list[int]:
        """Write a pending job row for each new or changed file, in one transaction.

        A path seen before with the same (size, mtime) is left alone unless
        ``force``. Returns the ids queued.
        """
        jobs = list(jobs)
        if not jobs:
            return []

        def write(conn: sqlite3.Connection) -> list[int]:
            now = time.time()
            queued: list[int] = []
            for os_path, size, mtime, key in jobs:
                path = to_db(os_path)
                old = conn.execute(
                    "SELECT id, size, mtime FROM images WHERE path = ?", (path,)
                ).fetchone()
                fields = (
                    key.vendor, key.plate, key.well, key.row, key.column, key.field,
                    key.channel, key.z, key.timepoint, key.elapsed_s,
                )
                if old is None:
                    cur = conn.execute(
                        "INSERT INTO images(path, size, mtime, vendor, plate, well, row, col, "
                        "field, channel, z, timepoint, elapsed_s, state, error, attempts, "
                        "created_at, updated_at) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'pending',NULL,0,?,?)",
                        (path, size, mtime, *fields, now, now),
                    )
                    image_id = int(cur.lastrowid)  # type: ignore[arg-type]
                elif old["size"] == size and old["mtime"] == mtime and not force:
                    continue
                else:
                    image_id = old["id"]
                    conn.execute(
                        "UPDATE images SET size=?, mtime=?, vendor=?, plate=?, well=?, row=?, "
                        "col=?, field=?, channel=?, z=?, timepoint=?, elapsed_s=?, "
                        "state='pending', error=NULL, attempts=0, updated_at=? WHERE id=?",
                        (size, mtime, *fields, now, image_id),
                    )
                    conn.execute("DELETE FROM measurements WHERE image_id = ?", (image_id,))
                queued.append(image_id)
                if key.plate:
                    conn.execute(
                        "INSERT INTO plates(plate, first_seen, last_seen) VALUES (?,?,?) "
                        "ON CONFLICT(plate) DO UPDATE SET last_seen = excluded.last_seen",
                        (key.plate, now, now),
                    )
            return queued

        return self._write(write)

    def pending(self, limit: int) -> list[ImageRecord]:
        """The oldest pending jobs."""
        rows = self._query(
            f"SELECT {_IMAGE_COLUMNS} FROM images WHERE state = 'pending' ORDER BY id LIMIT ?",
            (limit,),
        )
        return [_record(r) for r in rows]

    def records(self, ids: Sequence[int]) -> list[ImageRecord]:
        if not ids:
            return []
        rows = self._query(
            f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id IN ({','.join('?' * len(ids))}) "
            "ORDER BY id",
            list(ids),
        )
        return [_record(r) for r in rows]

    def begin_attempt(self, ids: Sequence[int], *, undo: bool = False) -> None:
        """Count one more attempt on each job before the work starts (``undo``:
        take it back, when the work stopped for a reason that is not the image's)."""
        self._write(lambda conn: conn.executemany(
            "UPDATE images SET attempts = MAX(attempts + ?, 0), updated_at = ? WHERE id = ?",
            [(-1 if undo else 1, time.time(), i) for i in ids],
        ))

    def fail_exhausted(self, max_attempts: int) -> list[str]:
        """Fail pending jobs whose analysis was interrupted ``max_attempts`` times
        (an image that crashes the agent must not stop it for ever)."""

        def write(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT id, path FROM images WHERE state = 'pending' AND attempts >= ?",
                (max_attempts,),
            ).fetchall()
            conn.executemany(
                "UPDATE images SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
                [(f"The agent stopped {max_attempts} times while analysing this image; it is "
                  "skipped. Check the file, then run `nvir-agent process --force` on it.",
                  time.time(), r["id"]) for r in rows],
            )
            return [readable(r["path"]) for r in rows]

        return self._write(write)

    def commit_results(self, batch: Sequence[Analysis]) -> list[int]:
        """Record a batch of results in one transaction; returns the ids written.

        A result is dropped when its file changed (new size/mtime) since the
        job was read: the newer job is still pending and wins.
        """

        def write(conn: sqlite3.Connection) -> list[int]:
            now = time.time()
            written: list[int] = []
            for a in batch:
                r = a.record
                if not a.failed and a.viability is not None:
                    try:
                        a.viability = float(a.viability)
                    except (TypeError, ValueError):
                        a.fail(f"The analysis gave a viability that is not a number: "
                               f"{a.viability!r}.")
                cur = conn.execute(
                    "UPDATE images SET state = ?, error = ?, updated_at = ? "
                    "WHERE id = ? AND size = ? AND mtime = ? AND state = 'pending'",
                    ("failed" if a.failed else "done", _text(a.error), now, r.id, r.size,
                     r.mtime),
                )
                if cur.rowcount != 1:
                    continue
                written.append(r.id)
                if a.failed:
                    continue
                m = a.measurement()
                conn.execute(
                    "INSERT OR REPLACE INTO measurements(image_id, found, viability, model, qc, "
                    "features, created_at) VALUES (?,?,?,?,?,?,?)",
                    (
                        r.id, None if m.found is None else int(bool(m.found)),
                        None if m.viability is None else float(m.viability), _text(m.model),
                        to_json(list(m.qc)), to_json({**m.image_meta, **m.features}), now,
                    ),
                )
            return written

        return self._write(write)

    def fail_jobs(self, ids: Sequence[int], error: str) -> list[int]:
        """Fail pending jobs with one error (their analysis could not be recorded);
        returns the ids failed."""

        def write(conn: sqlite3.Connection) -> list[int]:
            now, failed = time.time(), []
            for image_id in ids:
                cur = conn.execute(
                    "UPDATE images SET state = 'failed', error = ?, updated_at = ? "
                    "WHERE id = ? AND state = 'pending'", (_text(error), now, image_id))
                if cur.rowcount == 1:
                    failed.append(image_id)
            return failed

        return self._write(write)

    def record_failure(self, path: str, size: int | None, mtime: float | None,
                       error: str) -> None:
        """Record a file that could not be queued at all, as failed with ``error``
        (its key unknown); the file is tried again once its size or mtime changes."""

        def write(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute(
                "INSERT INTO images(path, size, mtime, state, error, attempts, created_at, "
                "updated_at) VALUES (?,?,?,'failed',?,0,?,?) ON CONFLICT(path) DO UPDATE SET "
                "size = excluded.size, mtime = excluded.mtime, state = 'failed', "
                "error = excluded.error, updated_at = excluded.updated_at",
                (to_db(path), size, mtime, _text(error), now, now),
            )
            conn.execute("DELETE FROM measurements WHERE image_id = "
                         "(SELECT id FROM images WHERE path = ?)", (to_db(path),))

        self._write(write)

    def write_heartbeat(
        self, snapshot: dict[str, Any], *, started_at: float, name: str = "engine"
    ) -> None:
        self._write(lambda conn: conn.execute(
            "INSERT INTO agent_status(name, pid, started_at, heartbeat_at, snapshot) "
            "VALUES (?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET pid = excluded.pid, "
            "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
            "snapshot = excluded.snapshot",
            (name, os.getpid(), started_at, time.time(), to_json(snapshot)),
        ))


class StoreReader(_Queries):
    """A read-only connection for the CLI and the UI; never blocks the writer."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(
                f"There is no database at {self.path} yet.",
                "Start the agent (`nvir-agent run`) or analyse files with `nvir-agent process`.",
            )
        self._lock = threading.RLock()
        self._conn = _connect(self.path, readonly=True)
        if self.schema_version() < len(MIGRATIONS):
            # Older file: tables read here may be missing until the agent upgrades it.
            log.debug("Database %s is at schema version %d", self.path, self.schema_version())

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
