"""The writer: the engine's connection to the store, the only shared state of the agent.

One writer connection per agent process (owned by the engine, serialised by a
lock) and any number of read-only readers (CLI, UI; see reads.py) that never
block it. All SQL is parameterised and lives in this package; it is the same
for both backends (see dialect.py):

- SQLite (``sqlite:///path`` or a plain path, the embedded default): one
  station, one file in WAL mode;
- PostgreSQL (``postgresql://…``, see postgres.py): several stations on one
  server. ``Store(url)`` gives the same API; images and measurements carry the
  station, and :meth:`Store.pending` *claims* the jobs it returns (``FOR UPDATE
  SKIP LOCKED``), so two agents never analyse the same image.

Durability rules: a job row (state ``pending``) exists before any work on an
image; results are committed in one transaction; work is keyed by
(path, size, mtime), so a changed file is queued again and an unchanged one
never twice. In a shared store the path is qualified by its scope: the
station's own folders, or a folder listed in ``[storage] shared_folders``,
which every station watching it names the same way.

Paths are kept as text, or as their exact bytes (a BLOB) when the name is not
valid UTF-8 (see ingest/pathnames.py); PostgreSQL keeps every path's exact
bytes (``bytea``). Rows read back give the path ``open`` takes
(``ImageRecord.path``) or the readable form (``export_rows``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvir_agent.errors import StoreError
from nvir_agent.ingest.pathnames import readable
from nvir_agent.paths import default_database
from nvir_agent.plate import ImageKey
from nvir_agent.store import schema
from nvir_agent.store.dialect import StoreBusy, StoreFull
from nvir_agent.store.reads import IMAGE_COLUMNS, Reads, _marks, image_record
from nvir_agent.store.rows import AWAITING_MODEL, ImageRecord, Result
from nvir_agent.store.schema import to_json
from nvir_agent.store.url import (
    Target,
    database_url,
    default_station,
    is_postgres,
    spool_path,
    sqlite_path,
    station_name,
)
from nvir_agent.store.writes import Transaction

if TYPE_CHECKING:
    from nvir_agent.config import Config

log = logging.getLogger(__name__)

CLAIM_TIMEOUT_S = 600.0  # a job claimed longer ago than this may be taken over


def database_path(config: Config) -> Path:
    """storage.database (relative to the config file) or the user data dir default.

    With a PostgreSQL ``[storage] url`` this is still the station's local SQLite
    file; open the store with :func:`~nvir_agent.store.url.database_url` instead."""
    if config.storage.url.startswith("sqlite:"):
        return config.resolve(str(sqlite_path(config.storage.url)))
    if config.storage.database:
        return config.resolve(config.storage.database)
    return default_database()


def store_options(config: Config) -> dict[str, Any]:
    """The keyword arguments of :class:`Store` that ``[storage]`` sets for the engine
    (on a PostgreSQL server: with the spool used while it is away)."""
    options: dict[str, Any] = {
        "station": station_name(config),
        "shared_folders": [str(config.resolve(f)) for f in config.storage.shared_folders],
        "claim_timeout_s": config.storage.claim_timeout_s}
    if is_postgres(database_url(config)):
        options.update(spool=spool_path(config), retry_s=config.storage.retry_s)
    return options


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
    """The writer. Open once per process that writes; thread-safe through a lock.

    ``target``: a database file, ``sqlite:///path`` or ``postgresql://…``;
    ``station``: this agent's name (default: the host name); ``shared_folders``:
    folders every station watches under the same path (their images are claimed
    by whichever station is free); ``claim_timeout_s``: after this long a claimed
    job whose station went silent may be taken over.
    """

    def __new__(cls, target: Target, **kwargs: Any) -> Store:
        if cls is Store and is_postgres(target):
            from nvir_agent.store.central import CentralStore  # psycopg only when used

            return super().__new__(CentralStore)
        return super().__new__(cls)

    def __init__(self, target: Target, *, station: str | None = None,
                 shared_folders: Sequence[str | os.PathLike[str]] = (),
                 claim_timeout_s: float = CLAIM_TIMEOUT_S, thorough: bool = False,
                 replace_damaged: bool = False) -> None:
        """``thorough``: read every page of the file before use (the engine's start);
        ``replace_damaged``: the user consents to a damaged file being kept aside and
        a new database created in its place (see integrity.py); without it a damaged
        file raises :class:`~nvir_agent.store.integrity.DamagedDatabase`."""
        self._setup(station, shared_folders, claim_timeout_s)
        self.path = sqlite_path(target)
        self._conn = schema.open_writer(self.path, thorough=thorough,
                                        replace_damaged=replace_damaged)
        try:
            with self._lock:
                if self._conn.execute(
                        "SELECT 1 FROM images WHERE station IS NULL LIMIT 1").fetchone():
                    self._conn.execute(
                        "UPDATE images SET station = ?, scope = ? WHERE station IS NULL",
                        (self.station, self.station))
        except self._sql.errors as exc:
            self._conn.close()
            raise schema.open_error(self.path, exc) from exc
        except BaseException:
            self._conn.close()
            raise

    def _setup(self, station: str | None, shared_folders: Sequence[str | os.PathLike[str]],
               claim_timeout_s: float) -> None:
        self.station = station or default_station()
        self.claim_timeout_s = float(claim_timeout_s)
        self._lock = threading.RLock()
        self._shared = [os.path.join(os.path.abspath(os.fspath(f)), "")
                        for f in shared_folders]
        self._scopes = ((self.station, *(f"shared:{f}" for f in self._shared))
                        if self._sql.scoped else None)
        self._locked_since: float | None = None

    @property
    def locked_since(self) -> float | None:
        """Since when (``time.time()``) another program has held the file's write lock
        so long that writes wait; None when writes go through."""
        return self._locked_since

    @property
    def problem(self) -> str | None:
        """The lock in words for the status snapshot, or None."""
        if self._locked_since is None:
            return None
        since = time.strftime("%H:%M:%S", time.localtime(self._locked_since))
        return (f"database {self.path} locked by another program since {since}: new images "
                "are noticed and wait (nothing is lost); close the program holding it open "
                "for writing")

    def scope_of(self, path: str) -> str:
        """The scope of an image path: ``shared:<folder>`` in a shared folder, else the
        station."""
        for folder in self._shared:
            if path.startswith(folder):
                return f"shared:{folder}"
        return self.station

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction, rolled back on error: the reads and writes of
        :class:`Transaction`, committed together."""
        errors = self._sql.errors
        with self._lock:
            try:
                self._conn.execute(self._sql.begin)
            except errors as exc:
                raise self._write_error(exc) from exc
            if self._locked_since is not None:
                log.warning("The database %s can be written again (it was locked for %.0f s); "
                            "catching up", self.path, time.time() - self._locked_since)
                self._locked_since = None
            try:
                yield Transaction(self.path, self._conn, self._lock, sql=self._sql,
                                  station=self.station, scopes=self._scopes)
            except errors as exc:
                with contextlib.suppress(*errors):
                    self._conn.execute("ROLLBACK")
                raise self._write_error(exc) from exc
            except BaseException:
                with contextlib.suppress(*errors):
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except errors as exc:
                with contextlib.suppress(*errors):
                    self._conn.execute("ROLLBACK")
                raise self._write_error(exc) from exc

    def _write_error(self, exc: BaseException) -> StoreError:
        if self._sql.is_disconnect(exc):
            return self._read_error(exc)
        if self._sql.is_busy(exc):
            if self._locked_since is None:
                self._locked_since = time.time()
                log.warning("The database %s is locked by another program (for more than "
                            "%g s): the agent keeps watching; new images wait and are "
                            "analysed once it is free. Close the program holding it (a "
                            "database browser with unsaved changes?).", self.path,
                            schema.BUSY_TIMEOUT_S)
            return StoreBusy(
                f"The database {self.path} is locked by another program.",
                "Close the program that holds it open for writing (a database browser "
                "with unsaved changes?); the agent catches up once it is free.")
        if self._sql.is_full(exc):
            return StoreFull(
                f"The database {self.path} cannot grow: the disk that holds it is full.",
                "Free some space on that disk; nothing is lost, and the agent carries on "
                "by itself once there is room.")
        return StoreError(
            f"Writing to the database {self.path} failed: {exc}.",
            "Check free disk space and that no other program holds the file locked.",
        )

    def _write(self, fn: Any) -> Any:
        with self.transaction() as tx:
            return fn(tx._conn)

    def _identity(self, path: str) -> tuple[str, list[Any]]:
        """WHERE clause and parameters that find one image by its path."""
        if self._sql.scoped:
            return "scope = ? AND path = ?", [self.scope_of(path), self._sql.path(path)]
        return "path = ?", [self._sql.path(path)]

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

        def write(conn: Any) -> list[int]:
            now = time.time()
            queued: list[int] = []
            for os_path, size, mtime, key in jobs:
                where, ident = self._identity(os_path)
                old = conn.execute(
                    f"SELECT id, size, mtime FROM images WHERE {where}", ident).fetchone()
                fields = (
                    key.vendor, key.plate, key.well, key.row, key.column, key.field,
                    key.channel, key.z, key.timepoint, key.elapsed_s,
                )
                if old is None:
                    image_id = self._sql.insert_id(
                        conn,
                        "INSERT INTO images(path, size, mtime, vendor, plate, well, row, col, "
                        "field, channel, z, timepoint, elapsed_s, state, error, attempts, "
                        "created_at, updated_at, station, scope) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'pending',NULL,0,?,?,?,?)",
                        (self._sql.path(os_path), size, mtime, *fields, now, now,
                         self.station, self.scope_of(os_path)),
                    )
                elif old["size"] == size and old["mtime"] == mtime and not force:
                    continue
                else:
                    image_id = old["id"]
                    conn.execute(
                        "UPDATE images SET size=?, mtime=?, vendor=?, plate=?, well=?, row=?, "
                        "col=?, field=?, channel=?, z=?, timepoint=?, elapsed_s=?, "
                        "state='pending', error=NULL, attempts=0, updated_at=?, station=?, "
                        "claimed_by=NULL, claimed_at=NULL WHERE id=?",
                        (size, mtime, *fields, now, self.station, image_id),
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
        """Claim the oldest pending jobs this station may analyse, and return them.

        In a shared store a job is claimed by one station at a time (rows locked
        with ``FOR UPDATE SKIP LOCKED``, then marked ``claimed_by``): another agent
        skips it, until its claim is older than ``claim_timeout_s`` (the station
        went away mid-batch). A station takes back its own claims at once (it was
        restarted)."""

        def write(conn: Any) -> list[ImageRecord]:
            now = time.time()
            sql = f"SELECT {IMAGE_COLUMNS} FROM images WHERE state = 'pending'"
            params: list[Any] = []
            if self._scopes is not None:
                sql += (f" AND scope IN ({_marks(self._scopes)}) AND (claimed_by IS NULL "
                        "OR claimed_by = ? OR claimed_at < ?)")
                params += [*self._scopes, self.station, now - self.claim_timeout_s]
            rows = conn.execute(f"{sql} ORDER BY id LIMIT ?{self._sql.skip_locked}",
                                [*params, int(limit)]).fetchall()
            if rows:
                conn.executemany(
                    "UPDATE images SET claimed_by = ?, claimed_at = ? WHERE id = ?",
                    [(self.station, now, r["id"]) for r in rows])
            return [image_record(r) for r in rows]

        return self._write(write)

    def begin_attempt(self, ids: Sequence[int], *, undo: bool = False) -> None:
        """Count one more attempt on each job before the work starts (``undo``:
        take it back, when the work stopped for a reason that is not the image's)."""
        step, now = (-1 if undo else 1), time.time()
        self._write(lambda conn: conn.executemany(
            "UPDATE images SET attempts = CASE WHEN attempts + ? > 0 THEN attempts + ? "
            "ELSE 0 END, updated_at = ?, claimed_at = ? WHERE id = ?",
            [(step, step, now, now, i) for i in ids],
        ))

    def fail_exhausted(self, max_attempts: int) -> list[str]:
        """Fail pending jobs whose analysis was interrupted ``max_attempts`` times
        (an image that crashes the agent must not stop it for ever)."""

        def write(conn: Any) -> list[str]:
            params: list[Any] = [max_attempts]
            rows = conn.execute(self._own(
                "SELECT id, path FROM images WHERE state = 'pending' AND attempts >= ?",
                params), params).fetchall()
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
        job was read: the newer job is still pending and wins. So is a result
        for a job another station has recorded meanwhile.
        """

        def write(conn: Any) -> list[int]:
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
                    "INSERT INTO measurements(image_id, found, viability, model, qc, "
                    "features, created_at, outline, station, viability_low, viability_high, "
                    "typicality, ood_distance) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(image_id) DO UPDATE SET found = excluded.found, "
                    "viability = excluded.viability, model = excluded.model, qc = excluded.qc, "
                    "features = excluded.features, created_at = excluded.created_at, "
                    "outline = excluded.outline, station = excluded.station, "
                    "viability_low = excluded.viability_low, "
                    "viability_high = excluded.viability_high, "
                    "typicality = excluded.typicality, ood_distance = excluded.ood_distance",
                    (
                        r.id, None if m.found is None else int(bool(m.found)),
                        None if m.viability is None else float(m.viability), _text(m.model),
                        to_json(list(m.qc)), to_json({**m.image_meta, **m.features}), now,
                        to_json([list(v) for v in m.outline]) if m.outline else None,
                        self.station,
                        _real(t.viability_low), _real(t.viability_high), _real(t.typicality),
                        _real(t.ood_distance),
                    ),
                )
            return written

        return self._write(write)

    def requeue_awaiting_model(self) -> int:
        """Queue again every image recorded without a score because the model file could
        not be used (QC flag ``awaiting_model``), now that it can: each becomes a pending
        job with no attempt counted, and its measurement stays until the new result
        replaces it. Returns how many were queued."""

        def write(conn: Any) -> int:
            params: list[Any] = [f'%"{AWAITING_MODEL}"%']
            rows = conn.execute(self._own(
                "SELECT id FROM images WHERE state = 'done' AND id IN (SELECT image_id FROM "
                "measurements WHERE qc LIKE ?)", params), params).fetchall()
            now = time.time()
            conn.executemany(
                "UPDATE images SET state = 'pending', error = NULL, attempts = 0, "
                "updated_at = ?, claimed_by = NULL, claimed_at = NULL "
                "WHERE id = ? AND state = 'done'", [(now, r["id"]) for r in rows])
            return len(rows)

        return self._write(write)

    def fail_jobs(self, ids: Sequence[int], error: str) -> list[int]:
        """Fail pending jobs with one error (their analysis could not be recorded);
        returns the ids failed."""

        def write(conn: Any) -> list[int]:
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

        def write(conn: Any) -> None:
            now = time.time()
            conn.execute(
                "INSERT INTO images(path, size, mtime, state, error, attempts, created_at, "
                "updated_at, station, scope) VALUES (?,?,?,'failed',?,0,?,?,?,?) "
                f"ON CONFLICT({self._sql.image_identity}) DO UPDATE SET "
                "size = excluded.size, mtime = excluded.mtime, state = 'failed', "
                "error = excluded.error, updated_at = excluded.updated_at",
                (self._sql.path(path), size, mtime, _text(error), now, now, self.station,
                 self.scope_of(path)),
            )
            where, ident = self._identity(path)
            conn.execute("DELETE FROM measurements WHERE image_id = "
                         f"(SELECT id FROM images WHERE {where})", ident)

        self._write(write)

    def write_heartbeat(
        self, snapshot: dict[str, Any], *, started_at: float, name: str | None = None,
        pid: int | None = None,
    ) -> None:
        """Record the running agent's snapshot (``name``: this store's station;
        ``pid``: this process unless given)."""
        self._write(lambda conn: conn.execute(
            "INSERT INTO agent_status(name, pid, started_at, heartbeat_at, snapshot, station, "
            "host) VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET pid = excluded.pid, "
            "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
            "snapshot = excluded.snapshot, host = excluded.host",
            (name or self.station, os.getpid() if pid is None else pid, started_at, time.time(),
             to_json(snapshot), name or self.station, socket.gethostname()),
        ))
