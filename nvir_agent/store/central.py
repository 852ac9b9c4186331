"""The central store: one station's writer on a PostgreSQL server, with a spool.

``Store("postgresql://…")`` gives a :class:`CentralStore`: the same API as the
SQLite writer, on a server connection (see postgres.py for the schema and the
dialect).

The server away: given a ``spool`` file, a lost connection does not stop the
agent. The writer switches to a local SQLite store (the spool) and says so
(``spooling``, a warning in the log, the heartbeat snapshot the status and the
tray show); ingest and analysis carry on into it. Every ``retry_s`` the next
call tries the server again; once it answers, the spool is copied over
(:meth:`CentralStore.sync`) and emptied, and the writer is back on the server.

- Nothing lost: a batch whose commit failed on the way is written to the
  spool instead (a transaction the server did not commit left no trace there).
- Nothing twice: an image is identified by (scope, path, size, mtime); a
  spooled result for an image the server already has as done or failed (the
  commit did reach it, or another station analysed it meanwhile) is dropped,
  and a sync interrupted halfway is simply run again.
- Ids: the spool's jobs are handed out with negative ids, so a batch claimed
  before the outage and one queued during it never mix.
- Alerts: the monitor's transaction is refused while spooling
  (:class:`StoreOffline`); after a sync :meth:`take_resynced` tells it to
  evaluate its plates again on the server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nvir_agent.errors import StoreError
from nvir_agent.plate import ImageKey
from nvir_agent.store import postgres
from nvir_agent.store.database import CLAIM_TIMEOUT_S, Store
from nvir_agent.store.dialect import StoreOffline
from nvir_agent.store.rows import Counts, Heartbeat, ImageRecord, Result
from nvir_agent.store.transfer import copy_image
from nvir_agent.store.url import redact
from nvir_agent.store.writes import Transaction

log = logging.getLogger(__name__)

SYNC_PAGE = 500


def _disconnected(exc: BaseException) -> bool:
    return isinstance(exc, StoreOffline) or postgres.POSTGRES.is_disconnect(exc) or \
        postgres.POSTGRES.is_disconnect(exc.__cause__ or exc)


def _flip(record: ImageRecord) -> ImageRecord:
    return dataclasses.replace(record, id=-record.id)


class CentralStore(Store):
    """The writer of one station on a PostgreSQL server (and its spool, if given)."""

    _sql = postgres.POSTGRES

    def __init__(self, target: str, *, station: str | None = None,
                 shared_folders: Sequence[str | os.PathLike[str]] = (),
                 claim_timeout_s: float = CLAIM_TIMEOUT_S,
                 spool: str | os.PathLike[str] | None = None, retry_s: float = 15.0) -> None:
        self._setup(station, shared_folders, claim_timeout_s)
        self.url = os.fspath(target)
        self.path = redact(self.url)
        self.retry_s = float(retry_s)
        self._spool_path = Path(spool) if spool is not None else None
        self._spool: Store | None = None
        self._next_try = 0.0
        self._resynced = False
        self._conn: Any = None
        try:
            self._connect()
        except StoreError as exc:
            if self._spool_path is None or not _disconnected(exc):
                raise
            self._go_offline(f"at start: {exc.message}")
        if self._spool is None and self._spool_path is not None and self._spool_path.is_file():
            self._try_sync()  # a spool left by an earlier run

    # --- connection ---------------------------------------------------------------------

    def _connect(self) -> None:
        conn = postgres.connect(self.url)
        try:
            postgres.migrate(conn, self.url)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @property
    def spooling(self) -> bool:
        """True while the server is away and results go to the local spool."""
        return self._spool is not None

    def _go_offline(self, why: str) -> None:
        if self._spool is None:
            assert self._spool_path is not None
            log.warning("The PostgreSQL store %s cannot be reached (%s): writing to the local "
                        "spool %s until it returns", self.path, why, self._spool_path)
            self._spool = Store(self._spool_path, station=self.station)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self._next_try = time.monotonic() + self.retry_s

    def _online(self) -> bool:
        """True when the server is in use (trying it again once ``retry_s`` has passed)."""
        if self._spool is None:
            return True
        if time.monotonic() >= self._next_try:
            with self._lock:
                if self._spool is not None and time.monotonic() >= self._next_try:
                    self._next_try = time.monotonic() + self.retry_s
                    try:
                        self._connect()
                    except StoreError:
                        return False
                    self._try_sync()
        return self._spool is None

    def _try_sync(self) -> None:
        try:
            n = self.sync()
        except StoreError as exc:
            if not _disconnected(exc):
                raise
            self._go_offline("during the sync")
            return
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        log.info("The PostgreSQL store %s is back: %d spooled images synced", self.path, n)

    def _route(self, server: Callable[[], Any], spool: Callable[[Store], Any]) -> Any:
        """Run ``server`` on the server, or ``spool`` on the spool while it is away (a
        connection lost on the way switches to the spool and runs ``spool``)."""
        if self._spool_path is None:
            return server()
        with self._lock:
            if self._online():
                try:
                    return server()
                except StoreError as exc:
                    if not _disconnected(exc):
                        raise
                    self._go_offline(str(exc.message))
            assert self._spool is not None
            return spool(self._spool)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            if self._spool is not None:
                self._spool.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._conn is None:
            raise StoreOffline(f"The PostgreSQL store {self.path} is away.",
                               "It is tried again every storage.retry_s seconds.")
        try:
            return super()._query(sql, params)
        except StoreError as exc:
            if self._spool_path is None or not _disconnected(exc):
                raise
            with self._lock:
                self._go_offline(exc.message)
            raise StoreOffline(exc.message, exc.hint) from exc

    def take_resynced(self) -> bool:
        """True once after each sync: the monitor should evaluate its plates again."""
        done, self._resynced = self._resynced, False
        return done

    # --- the writer's API, routed ------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        if self._spool_path is not None and not self._online():
            raise StoreOffline(f"The PostgreSQL store {self.path} is away; results are spooled.",
                               "Alerts are evaluated again once it returns.")
        try:
            with super().transaction() as tx:
                yield tx
        except StoreError as exc:
            if self._spool_path is None or not _disconnected(exc):
                raise
            with self._lock:
                self._go_offline(exc.message)
            raise StoreOffline(f"The PostgreSQL store {self.path} is away; results are "
                               "spooled.", "Alerts are evaluated again once it returns."
                               ) from exc

    def add_jobs(self, jobs: Iterable[tuple[str, int, float, ImageKey]], *,
                 force: bool = False) -> list[int]:
        jobs = list(jobs)
        return self._route(lambda: super(CentralStore, self).add_jobs(jobs, force=force),
                           lambda s: [-i for i in s.add_jobs(jobs, force=force)])

    def pending(self, limit: int) -> list[ImageRecord]:
        return self._route(lambda: super(CentralStore, self).pending(limit),
                           lambda s: [_flip(r) for r in s.pending(limit)])

    def records(self, ids: Sequence[int]) -> list[ImageRecord]:
        here = [i for i in ids if i > 0]
        spooled = [-i for i in ids if i < 0]
        out = self._route(lambda: super(CentralStore, self).records(here), lambda s: [])
        if spooled and self._spool is not None:
            out += [_flip(r) for r in self._spool.records(spooled)]
        return out

    def begin_attempt(self, ids: Sequence[int], *, undo: bool = False) -> None:
        here = [i for i in ids if i > 0]
        spooled = [-i for i in ids if i < 0]
        if here:  # attempts on the server are advisory: not counted while it is away
            self._route(lambda: super(CentralStore, self).begin_attempt(here, undo=undo),
                        lambda s: None)
        if spooled and self._spool is not None:
            self._spool.begin_attempt(spooled, undo=undo)

    def commit_results(self, results: Sequence[Result]) -> list[int]:
        here = [r for r in results if r.record.id > 0]
        spooled = [dataclasses.replace(r, record=_flip(r.record))
                   for r in results if r.record.id < 0]
        written: list[int] = []
        if here:
            written += self._route(
                lambda: super(CentralStore, self).commit_results(here),
                lambda s: self._spool_results(s, here))
        if spooled:
            if self._spool is not None:
                written += [-i for i in self._spool.commit_results(spooled)]
            else:  # synced meanwhile: the jobs are on the server now, under their path
                written += self.commit_results(self._to_server(spooled))
        return written

    def _spool_results(self, spool: Store, results: Sequence[Result]) -> list[int]:
        """Results of server jobs, kept in the spool (the commit did not reach the server)."""
        ids = spool.add_jobs([(os.fspath(r.record.path), r.record.size, r.record.mtime,
                               r.record.key) for r in results], force=True)
        moved = [dataclasses.replace(r, record=dataclasses.replace(r.record, id=i))
                 for r, i in zip(results, ids, strict=True)]
        return [-i for i in spool.commit_results(moved)]

    def _to_server(self, results: Sequence[Result]) -> list[Result]:
        out = []
        for r in results:
            where, ident = self._identity(os.fspath(r.record.path))
            rows = self._query(f"SELECT id FROM images WHERE {where}", ident)
            if rows:
                out.append(dataclasses.replace(
                    r, record=dataclasses.replace(r.record, id=int(rows[0]["id"]))))
        return out

    def fail_jobs(self, ids: Sequence[int], error: str) -> list[int]:
        here = [i for i in ids if i > 0]
        spooled = [-i for i in ids if i < 0]
        out = self._route(lambda: super(CentralStore, self).fail_jobs(here, error),
                          lambda s: []) if here else []
        if spooled and self._spool is not None:
            out += [-i for i in self._spool.fail_jobs(spooled, error)]
        return out

    def requeue_awaiting_model(self) -> int:
        return self._route(lambda: super(CentralStore, self).requeue_awaiting_model(),
                           lambda s: s.requeue_awaiting_model())

    def fail_exhausted(self, max_attempts: int) -> list[str]:
        return self._route(lambda: super(CentralStore, self).fail_exhausted(max_attempts),
                           lambda s: s.fail_exhausted(max_attempts))

    def record_failure(self, path: str, size: int | None, mtime: float | None,
                       error: str) -> None:
        self._route(lambda: super(CentralStore, self).record_failure(path, size, mtime, error),
                    lambda s: s.record_failure(path, size, mtime, error))

    def write_heartbeat(self, snapshot: dict[str, Any], *, started_at: float,
                        name: str | None = None, pid: int | None = None) -> None:
        snapshot = {**snapshot, "spooling": self.spooling}
        self._route(lambda: super(CentralStore, self).write_heartbeat(
            snapshot, started_at=started_at, name=name, pid=pid), lambda s: None)

    # reads the engine makes: the spool's while the server is away

    def heartbeat(self, name: str | None = None) -> Heartbeat | None:
        return self._route(lambda: super(CentralStore, self).heartbeat(name), lambda s: None)

    def counts(self, *, station: str | None = None) -> Counts:
        return self._route(lambda: super(CentralStore, self).counts(station=station),
                           lambda s: s.counts())

    def has_pending(self) -> bool:
        return self._route(lambda: super(CentralStore, self).has_pending(),
                           lambda s: s.has_pending())

    def known_files(self) -> dict[str, tuple[int, float]]:
        return self._route(lambda: super(CentralStore, self).known_files(),
                           lambda s: s.known_files())

    def export_rows(self, paths: Any = None, *, station: str | None = None
                    ) -> Iterator[dict[str, Any]]:
        return self._route(
            lambda: list(super(CentralStore, self).export_rows(paths, station=station)),
            lambda s: list(s.export_rows(paths)))

    # --- sync ---------------------------------------------------------------------------

    def sync(self) -> int:
        """Copy the spool's images and measurements to the server and empty it; returns
        how many images were written (see the module's rules)."""
        spool = self._spool or (Store(self._spool_path, station=self.station)
                                if self._spool_path is not None else None)
        if spool is None:
            return 0
        written = 0
        try:
            while True:
                rows = spool.measurements(limit=SYNC_PAGE)
                if not rows:
                    break
                paths = {r.id: os.fspath(r.path) for r in spool.records([r.id for r in rows])}
                with super().transaction() as tx:
                    for row in rows:
                        written += self._sync_row(tx._conn, row, paths[row.id])
                spool._write(lambda conn, ids=[r.id for r in rows]: (
                    conn.executemany("DELETE FROM measurements WHERE image_id = ?",
                                     [(i,) for i in ids]),
                    conn.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in ids])))
        finally:
            if spool is not self._spool:
                spool.close()
        if written:
            self._resynced = True
        return written

    def _sync_row(self, conn: Any, row: Any, path: str) -> int:
        """One spooled image (at ``path``) onto the server; 1 when it was written."""
        return copy_image(self, conn, row, path)
