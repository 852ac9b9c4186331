"""The writer: one SQLite file (WAL) that is the only shared state of the agent.

One writer connection (owned by the engine, serialised by a lock) and any
number of read-only readers (CLI, UI; see reads.py) that never block it. All
SQL is parameterised and lives in this package.

Durability rules: a job row (state ``pending``) exists before any work on an
image; results are committed in one transaction; work is keyed by
(path, size, mtime), so a changed file is queued again and an unchanged one
never twice.

Paths are kept as text, or as their exact bytes (a BLOB) when the name is not
valid UTF-8 (see ingest/pathnames.py); rows read back give the path ``open``
takes (``ImageRecord.path``) or the readable form (``export_rows``).
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvir_agent.errors import StoreError
from nvir_agent.ingest.pathnames import readable, to_db
from nvir_agent.paths import default_database
from nvir_agent.plate import ImageKey
from nvir_agent.store import schema
from nvir_agent.store.reads import Reads
from nvir_agent.store.rows import Result
from nvir_agent.store.schema import to_json
from nvir_agent.store.writes import Transaction

if TYPE_CHECKING:
    from nvir_agent.config import Config


def database_path(config: Config) -> Path:
    """storage.database (relative to the config file) or the user data dir default."""
    if config.storage.database:
        return config.resolve(config.storage.database)
    return default_database()



def _text(value: str | None) -> str | None:
    """Text for a TEXT column: a message quoting an odd file name stays writable."""
    return None if value is None else readable(str(value))


def _real(value: float | None) -> float | None:
    """A finite float for a REAL column, else NULL."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


class Store(Reads):
    """The writer. Open once per process that writes; thread-safe through a lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = schema.connect(self.path, readonly=False)
        try:
            with self._lock:
                schema.migrate(self._conn, self.path)
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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT), rolled back on error: the
        reads and writes of :class:`Transaction`, committed together."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._write_error(exc) from exc
            try:
                yield Transaction(self.path, self._conn, self._lock)
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise self._write_error(exc) from exc
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
        with self.transaction() as tx:
            return fn(tx._conn)

    # --- jobs -------------------------------------------------------------------------

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

    def commit_results(self, results: Sequence[Result]) -> list[int]:
        """Record a batch of results in one transaction; returns the ids written.

        A result is dropped when its file changed (new size/mtime) since the
        job was read: the newer job is still pending and wins.
        """

        def write(conn: sqlite3.Connection) -> list[int]:
            now = time.time()
            written: list[int] = []
            for res in results:
                r, m = res.record, res.measurement
                failed = res.error is not None or m is None
                cur = conn.execute(
                    "UPDATE images SET state = ?, error = ?, updated_at = ? "
                    "WHERE id = ? AND size = ? AND mtime = ? AND state = 'pending'",
                    ("failed" if failed else "done", _text(res.error), now, r.id, r.size,
                     r.mtime),
                )
                if cur.rowcount != 1:
                    continue
                written.append(r.id)
                if failed or m is None:
                    continue
                t = m.trust
                conn.execute(
                    "INSERT OR REPLACE INTO measurements(image_id, found, viability, model, qc, "
                    "features, created_at, outline, viability_low, viability_high, typicality, "
                    "ood_distance) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        r.id, None if m.found is None else int(bool(m.found)),
                        None if m.viability is None else float(m.viability), _text(m.model),
                        to_json(list(m.qc)), to_json({**m.image_meta, **m.features}), now,
                        to_json([list(v) for v in m.outline]) if m.outline else None,
                        _real(t.viability_low), _real(t.viability_high), _real(t.typicality),
                        _real(t.ood_distance),
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
        self, snapshot: dict[str, Any], *, started_at: float, name: str = "engine",
        pid: int | None = None,
    ) -> None:
        """Record the running agent's snapshot (``pid``: this process unless given)."""
        self._write(lambda conn: conn.execute(
            "INSERT INTO agent_status(name, pid, started_at, heartbeat_at, snapshot) "
            "VALUES (?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET pid = excluded.pid, "
            "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
            "snapshot = excluded.snapshot",
            (name, os.getpid() if pid is None else pid, started_at, time.time(),
             to_json(snapshot)),
        ))
