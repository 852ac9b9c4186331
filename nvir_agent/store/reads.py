"""Every read of the store, as typed rows (see rows.py).

``Reads`` is shared by the read-only :class:`StoreReader` (CLI, report, UI),
the writer ``Store`` and a write transaction, so a query is written once, for
SQLite and PostgreSQL alike (see dialect.py).

Stations: in a central store several agents write; every image and
measurement carries its ``station``. Readers see every station; the lists take
a ``station=`` filter and :meth:`Reads.stations` names them with their
heartbeats. The writer's own reads (``counts``, ``has_pending``,
``known_files``, images by path) keep to the folders its station analyses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nvir_agent.errors import StoreError
from nvir_agent.ingest.pathnames import from_db, readable
from nvir_agent.plate import ImageKey
from nvir_agent.store import schema
from nvir_agent.store.dialect import SQLITE, Dialect
from nvir_agent.store.rows import (
    SEVERITY_RANK,
    Alert,
    AlertEvent,
    Counts,
    Heartbeat,
    ImageRecord,
    ImageScore,
    ImageStateSummary,
    Key,
    MeasurementRow,
    PlateRow,
    Shelf,
    StationRow,
    Trust,
)
from nvir_agent.store.url import Target, default_station, is_postgres, redact, sqlite_path

log = logging.getLogger(__name__)

IMAGE_COLUMNS = (
    "id, path, size, mtime, vendor, plate, well, row, col, field, channel, z, timepoint, "
    "elapsed_s, state, error, attempts, created_at, updated_at, station"
)
ALERT_COLUMNS = ("id, plate, subject, rule, severity, state, message, value, timepoint, "
                 "opened_at, updated_at, closed_at, details, ack_until")


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


def _prefixed(columns: str, prefix: str) -> str:
    return ", ".join(prefix + c.strip() for c in columns.split(","))


def image_key(row: Any) -> ImageKey:
    return ImageKey(
        vendor=row["vendor"], plate=row["plate"], well=row["well"], row=row["row"],
        column=row["col"], field=row["field"], channel=row["channel"], z=row["z"],
        timepoint=row["timepoint"], elapsed_s=row["elapsed_s"],
    )


def image_record(row: Any) -> ImageRecord:
    return ImageRecord(id=row["id"], path=Path(from_db(row["path"])), key=image_key(row),
                       size=row["size"], mtime=row["mtime"])


def _json_or(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _qc_tuple(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError:
        return (str(text),)
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _outline(text: str | None) -> tuple[tuple[int, int], ...] | None:
    value = _json_or(text, None)
    if not isinstance(value, list):
        return None
    try:
        return tuple((int(x), int(y)) for x, y in value)
    except (TypeError, ValueError):
        return None


def alert_row(row: Sequence[Any]) -> Alert:
    details = {}
    if row[12]:
        try:
            details = json.loads(row[12])
        except ValueError:
            details = {"unreadable": row[12]}
    return Alert(int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6] or "", row[7],
                 row[8], row[9] or 0.0, row[10] or 0.0, row[11], details,
                 row[13] if len(row) > 13 else None)


def _measurement_row(row: Any) -> MeasurementRow:
    done = row["state"] == "done"
    return MeasurementRow(
        id=row["id"], path=readable(row["path"]), key=image_key(row), size=row["size"],
        mtime=row["mtime"], state=row["state"], error=row["error"],
        attempts=row["attempts"] or 0, updated_at=row["updated_at"],
        found=None if not done or row["found"] is None else bool(row["found"]),
        viability=row["viability"] if done else None,
        model=row["model"] if done else None,
        qc=_qc_tuple(row["qc"]) if done else (),
        features=_json_or(row["features"], {}) if done else {},
        measured_at=row["measured_at"] if done else None,
        outline=_outline(row["outline"]) if done else None,
        station=row["station"],
        trust=_trust(row) if done else Trust(),
        queued_at=row["created_at"],
    )


def _station(sql: str, params: list[Any], station: str | None, column: str = "station"
             ) -> str:
    """``sql`` narrowed to one station (nothing added for None)."""
    if station is None:
        return sql
    params.append(station)
    return f"{sql} AND {column} = ?"


def _trust(row: Any) -> Trust:
    return Trust(row["viability_low"], row["viability_high"], row["typicality"],
                 row["ood_distance"])


class Reads:
    """The typed reads; subclasses provide ``path``, ``_conn`` and ``_lock`` (and
    ``_sql``, ``station`` and ``_scopes`` where they differ from the defaults)."""

    path: Path | str
    _conn: Any
    _lock: threading.RLock
    _sql: Dialect = SQLITE
    station: str = ""
    _scopes: tuple[str, ...] | None = None  # the writer's own scopes in a shared store

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._lock:
                return self._conn.execute(sql, params).fetchall()
        except self._sql.errors as exc:
            raise self._read_error(exc) from exc

    def _read_error(self, exc: BaseException) -> StoreError:
        if self._sql.is_disconnect(exc):
            return StoreError(
                f"Lost the connection to the store {self.path}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}.",
                "Check that the PostgreSQL server runs and the network is up.")
        return StoreError(
            f"Reading the database {self.path} failed: {exc}.",
            "If another program changed the file, restore it or point storage.database "
            "at a new file; start the agent once to upgrade an older one.",
        )

    def _own(self, sql: str, params: list[Any], column: str = "scope") -> str:
        """``sql`` narrowed to the writer's own scopes (nothing added for a reader)."""
        if self._scopes is None:
            return sql
        params.extend(self._scopes)
        return f"{sql} AND {column} IN ({_marks(self._scopes)})"

    # --- the store itself ---------------------------------------------------------------

    def schema_version(self) -> int:
        try:
            with self._lock:
                return self._sql.schema_version(self._conn)
        except self._sql.errors as exc:
            raise self._read_error(exc) from exc

    def counts(self, *, station: str | None = None) -> Counts:
        params: list[Any] = []
        sql = _station(self._own("SELECT state, COUNT(*) AS n FROM images WHERE 1 = 1",
                                 params), params, station)
        by_state = {r["state"]: int(r["n"]) for r in self._query(
            sql + " GROUP BY state", params)}
        return Counts(
            seen=sum(by_state.values()), pending=by_state.get("pending", 0),
            done=by_state.get("done", 0), failed=by_state.get("failed", 0),
        )

    def heartbeat(self, name: str | None = None) -> Heartbeat | None:
        """A station's last heartbeat (default: this store's station)."""
        name = name or self.station
        rows = self._query(
            "SELECT pid, started_at, heartbeat_at, snapshot FROM agent_status WHERE name = ?",
            (name,))
        if not rows:
            return None
        r = rows[0]
        return Heartbeat(name, r["pid"], r["started_at"], r["heartbeat_at"],
                         _json_or(r["snapshot"], {}))

    def stations(self) -> list[StationRow]:
        """Every station that has written to the store: its heartbeat (None if it never
        ran an agent) and its image counts, by name."""
        beats = {r["name"]: r for r in self._query(
            "SELECT name, host, pid, started_at, heartbeat_at, snapshot FROM agent_status")}
        counts: dict[str, dict[str, int]] = {}
        for r in self._query("SELECT station, state, COUNT(*) AS n FROM images "
                             "WHERE station IS NOT NULL GROUP BY station, state"):
            counts.setdefault(r["station"], {})[r["state"]] = int(r["n"])
        out = []
        for name in sorted(set(beats) | set(counts)):
            b, c = beats.get(name), counts.get(name, {})
            beat = None if b is None else Heartbeat(
                name, b["pid"], b["started_at"], b["heartbeat_at"], _json_or(b["snapshot"], {}))
            out.append(StationRow(
                name, None if b is None else b["host"], beat,
                Counts(seen=sum(c.values()), pending=c.get("pending", 0),
                       done=c.get("done", 0), failed=c.get("failed", 0))))
        return out

    # --- images and jobs ----------------------------------------------------------------

    def known_files(self) -> dict[str, tuple[int, float]]:
        """(size, mtime) of every image path the store has seen (the writer: of its
        own folders)."""
        params: list[Any] = []
        return {from_db(r["path"]): (r["size"], r["mtime"]) for r in self._query(
            self._own("SELECT path, size, mtime FROM images WHERE 1 = 1", params), params)}

    def pending(self, limit: int) -> list[ImageRecord]:
        """The oldest pending jobs."""
        rows = self._query(
            f"SELECT {IMAGE_COLUMNS} FROM images WHERE state = 'pending' ORDER BY id LIMIT ?",
            (limit,))
        return [image_record(r) for r in rows]

    def has_pending(self) -> bool:
        params: list[Any] = []
        return bool(self._query(self._own(
            "SELECT 1 FROM images WHERE state = 'pending'", params) + " LIMIT 1", params))

    def records(self, ids: Sequence[int]) -> list[ImageRecord]:
        if not ids:
            return []
        rows = self._query(
            f"SELECT {IMAGE_COLUMNS} FROM images WHERE id IN ({_marks(ids)}) ORDER BY id",
            list(ids))
        return [image_record(r) for r in rows]

    def measurements(self, *, plate: str | None = None,
                     paths: Sequence[str | os.PathLike[str]] | None = None,
                     after_id: int = 0, limit: int | None = None,
                     station: str | None = None) -> list[MeasurementRow]:
        """Images with their state and measurement, by id, one page at a time:
        ``after_id`` is the last id of the previous page."""
        sql = (f"SELECT {_prefixed(IMAGE_COLUMNS, 'i.')}, m.found, m.viability, m.model, "
               "m.qc, m.features, m.created_at AS measured_at, m.outline, m.viability_low, "
               "m.viability_high, m.typicality, m.ood_distance "
               "FROM images i LEFT JOIN measurements m ON m.image_id = i.id WHERE i.id > ?")
        params: list[Any] = [after_id]
        sql = _station(sql, params, station, "i.station")
        if plate is not None:
            sql += " AND i.plate = ?"
            params.append(plate)
        if paths is not None:
            if not paths:
                return []
            sql += f" AND i.path IN ({_marks(paths)})"
            params += [self._sql.path(p) for p in paths]
            sql = self._own(sql, params, "i.scope")
        sql += " ORDER BY i.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_measurement_row(r) for r in self._query(sql, params)]

    def iter_measurements(self, *, plate: str | None = None, page: int = 2000,
                          station: str | None = None) -> Iterator[MeasurementRow]:
        """Every image, read ``page`` rows at a time (never all at once)."""
        after = 0
        while True:
            rows = self.measurements(plate=plate, after_id=after, limit=page,
                                     station=station)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].id

    def export_rows(self, paths: Sequence[str | os.PathLike[str]] | None = None, *,
                    station: str | None = None) -> Iterator[dict[str, Any]]:
        """Every image (or those at ``paths``) as flat `export` rows."""
        if paths is not None:
            for row in self.measurements(paths=paths, station=station):
                yield row.as_dict()
            return
        for row in self.iter_measurements(station=station):
            yield row.as_dict()

    def image(self, path: str | os.PathLike[str]) -> dict[str, Any] | None:
        """One image with its measurement (as in export_rows), or None."""
        rows = self.measurements(paths=[os.fspath(path)])
        return rows[0].as_dict() if rows else None

    def image_scores(self, plates: Iterable[str] | None = None) -> list[ImageScore]:
        """Image results of all plates or the named ones (input of the time courses)."""
        sql = ("SELECT i.id, i.plate, i.well, i.timepoint, i.elapsed_s, i.mtime, i.field, "
               "i.channel, i.z, i.state, m.found, m.viability, m.qc, m.viability_low, "
               "m.viability_high, m.typicality, m.ood_distance, m.model FROM images i"
               " LEFT JOIN measurements m ON m.image_id = i.id"
               " WHERE i.plate IS NOT NULL AND i.well IS NOT NULL")
        params: list[str] = []
        if plates is not None:
            params = list(plates)
            if not params:
                return []
            sql += f" AND i.plate IN ({_marks(params)})"
        out = []
        for row in self._query(sql, params):
            (iid, plate, well, tp, elapsed, mtime, fld, channel, z, state, found, via, qc,
             low, high, typ, dist, model) = row
            out.append(ImageScore(
                image_id=iid, plate=plate, well=well, timepoint=tp, elapsed_s=elapsed,
                mtime=mtime or 0.0, field=fld, channel=channel, z=z, state=state or "pending",
                found=None if found is None else bool(found), viability=via, qc=_qc_tuple(qc),
                trust=Trust(low, high, typ, dist), model=model,
            ))
        return out

    def image_states(self, plate: str | None = None, *, max_failures: int = 1000,
                     station: str | None = None) -> ImageStateSummary:
        """Images by state, the most recent failed ones with their errors, and the QC
        flags of the analysed ones (all plates, or one; all stations, or one)."""
        params: list[Any] = []
        where = _station("WHERE 1 = 1", params, station, "i.station")
        if plate:
            where += " AND i.plate = ?"
            params.append(plate)
        by_state = {str(s): int(n) for s, n in self._query(
            f"SELECT i.state, COUNT(*) FROM images i {where} GROUP BY i.state", params)}
        failed_where = f"{where} {'AND' if where else 'WHERE'} i.state = 'failed'"
        failures = [(readable(p), str(e or "")) for p, e in self._query(
            f"SELECT i.path, i.error FROM images i {failed_where} "
            "ORDER BY i.updated_at DESC LIMIT ?", [*params, int(max_failures)])]
        done_where = f"{where} {'AND' if where else 'WHERE'} i.state = 'done'"
        done = [(None if f is None else bool(f), _qc_tuple(q)) for f, q in self._query(
            "SELECT m.found, m.qc FROM measurements m JOIN images i ON i.id = m.image_id "
            f"{done_where}", params)]
        return ImageStateSummary(by_state, failures, done)

    # --- plates -------------------------------------------------------------------------

    def model_counts(self, plate: str | None = None) -> dict[str, int]:
        """Model name (file@hash) → images it scored (all plates, or one)."""
        where, params = (" AND i.plate = ?", [plate]) if plate else ("", [])
        return {str(m): int(n) for m, n in self._query(
            "SELECT m.model, COUNT(*) FROM measurements m JOIN images i ON i.id = m.image_id"
            f" WHERE m.model IS NOT NULL{where} GROUP BY m.model ORDER BY m.model", params)}

    def plate_names(self, *, station: str | None = None) -> list[str]:
        """Every plate that has images (of one station), sorted."""
        params: list[Any] = []
        sql = _station("SELECT DISTINCT plate FROM images WHERE plate IS NOT NULL", params,
                       station)
        return [r[0] for r in self._query(sql + " ORDER BY plate", params)]

    def plates_of_images(self, ids: Sequence[int]) -> set[str]:
        if not ids:
            return set()
        return {r[0] for r in self._query(
            f"SELECT DISTINCT plate FROM images WHERE id IN ({_marks(ids)}) "
            "AND plate IS NOT NULL", list(ids))}

    def plates(self) -> list[PlateRow]:
        """The plates table, with each plate's recorded map (as a dict), sorted by name."""
        return [PlateRow(r["plate"], r["first_seen"], r["last_seen"],
                         _json_or(r["plate_map"], None))
                for r in self._query("SELECT plate, first_seen, last_seen, plate_map "
                                     "FROM plates ORDER BY plate")]

    def plate_map_text(self, plate: str) -> str | None:
        """The plate map recorded for ``plate`` as stored (JSON text), or None."""
        rows = self._query("SELECT plate_map FROM plates WHERE plate = ?", (plate,))
        return rows[0][0] if rows and rows[0][0] else None

    # --- alerts -------------------------------------------------------------------------

    def alert(self, alert_id: int) -> Alert | None:
        rows = self._query(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,))
        return alert_row(rows[0]) if rows else None

    def alerts(self, *, include_closed: bool = False, plate: str | None = None,
               severity: str | None = None, state: str | None = None,
               station: str | None = None) -> list[Alert]:
        """Active alerts (or all), most severe and most recent first; ``station``: those
        on plates imaged by that station."""
        sql = f"SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1"
        params: list[Any] = []
        for clause, value in (("plate IN (SELECT plate FROM images WHERE station = ?)",
                               station), ("state = ?", state), ("plate = ?", plate),
                              ("severity = ?", severity)):
            if value is not None:
                sql += f" AND {clause}"
                params.append(value)
        if state is None and not include_closed:
            sql += " AND state IN ('open', 'acknowledged')"
        alerts = [alert_row(r) for r in self._query(sql, params)]
        return sorted(alerts, key=lambda a: (not a.active, -SEVERITY_RANK.get(a.severity, 0),
                                             -a.updated_at, -a.id))

    def alert_events(self, alert_id: int) -> list[AlertEvent]:
        rows = self._query("SELECT id, alert_id, at, action, \"user\", comment FROM alert_events "
                           "WHERE alert_id = ? ORDER BY id", (alert_id,))
        return [AlertEvent(*r) for r in rows]

    def shelves(self, active_at: float | None = None) -> list[Shelf]:
        """Shelved plates and compounds (those still shelved at ``active_at`` when
        given), the latest first."""
        sql = 'SELECT id, kind, name, until, "user", comment, created_at FROM shelves'
        params: list[Any] = []
        if active_at is not None:
            sql += " WHERE until > ?"
            params.append(active_at)
        return [Shelf(int(r[0]), r[1], r[2], r[3] or 0.0, r[4], r[5], r[6] or 0.0)
                for r in self._query(sql + " ORDER BY created_at DESC, id DESC", params)]

    def count_images(self, *, state: str | None = None, since: float | None = None,
                     station: str | None = None) -> int:
        """How many images (in ``state``; last changed at or after ``since``)."""
        params: list[Any] = []
        sql = "SELECT COUNT(*) FROM images WHERE 1 = 1"
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        if since is not None:
            sql += " AND updated_at >= ?"
            params.append(since)
        sql = _station(sql, params, station)
        return int(self._query(sql, params)[0][0])

    def closed_alerts(self, key: Key) -> list[Alert]:
        """Resolved or dismissed alerts of one (plate, subject, rule)."""
        rows = self._query(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE plate = ? AND "
                           "subject = ? AND rule = ? AND state IN ('resolved', 'dismissed')",
                           key)
        return [alert_row(r) for r in rows]


class StoreReader(Reads):
    """A read-only connection for the CLI, the report and the UI; never blocks the writer.

    ``target``: a database file, a ``sqlite:///`` URL or a ``postgresql://`` URL;
    ``station``: whose heartbeat :meth:`heartbeat` reads by default (this computer's).
    """

    def __init__(self, target: Target, *, station: str | None = None) -> None:
        self.station = station or default_station()
        self._lock = threading.RLock()
        if is_postgres(target):
            from nvir_agent.store import postgres  # psycopg only where a server is used

            url = os.fspath(target)
            self.path = redact(url)
            self._sql = postgres.POSTGRES
            self._conn = postgres.connect(url, readonly=True)
            return
        self.path = sqlite_path(target)
        if not self.path.is_file():
            raise StoreError(
                f"There is no database at {self.path} yet.",
                "Start the agent (`nvir-agent run`) or analyse files with `nvir-agent process`.",
            )
        self._conn = schema.connect(self.path, readonly=True)
        try:  # a file that is not a database, or cut short, says so here
            self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            self._conn.close()
            raise schema.open_error(self.path, exc) from exc
        if self.schema_version() < len(schema.MIGRATIONS):
            # Older file: tables read here may be missing until the agent upgrades it.
            log.debug("Database %s is at schema version %d", self.path, self.schema_version())

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def open_reader(source: Reads | str | os.PathLike[str]) -> Iterator[Reads]:
    """Reads from ``source``: an open store, reader or transaction as it is, else a
    short-lived read-only reader of the database at that path or URL."""
    if isinstance(source, Reads):
        yield source
        return
    with StoreReader(source) as reader:
        yield reader
