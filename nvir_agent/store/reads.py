"""Every read of the store, as typed rows (see rows.py).

``Reads`` is shared by the read-only :class:`StoreReader` (CLI, report, UI),
the writer ``Store`` and a write transaction, so a query is written once.
A second backend implements the same methods.
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
from nvir_agent.ingest.pathnames import from_db, readable, to_db
from nvir_agent.plate import ImageKey
from nvir_agent.store import schema
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
    Trust,
)

log = logging.getLogger(__name__)

IMAGE_COLUMNS = (
    "id, path, size, mtime, vendor, plate, well, row, col, field, channel, z, timepoint, "
    "elapsed_s, state, error, attempts, created_at, updated_at"
)
ALERT_COLUMNS = ("id, plate, subject, rule, severity, state, message, value, timepoint, "
                 "opened_at, updated_at, closed_at, details")


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


def image_key(row: sqlite3.Row) -> ImageKey:
    return ImageKey(
        vendor=row["vendor"], plate=row["plate"], well=row["well"], row=row["row"],
        column=row["col"], field=row["field"], channel=row["channel"], z=row["z"],
        timepoint=row["timepoint"], elapsed_s=row["elapsed_s"],
    )


def image_record(row: sqlite3.Row) -> ImageRecord:
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
                 row[8], row[9] or 0.0, row[10] or 0.0, row[11], details)


def _measurement_row(row: sqlite3.Row) -> MeasurementRow:
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
        trust=_trust(row) if done else Trust(),
    )


def _trust(row: sqlite3.Row) -> Trust:
    return Trust(row["viability_low"], row["viability_high"], row["typicality"],
                 row["ood_distance"])


class Reads:
    """The typed reads; subclasses provide ``path``, ``_conn`` and ``_lock``."""

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
                "at a new file; start the agent once to upgrade an older one.",
            ) from exc

    # --- the store itself ---------------------------------------------------------------

    def schema_version(self) -> int:
        return int(self._query("PRAGMA user_version")[0][0])

    def counts(self) -> Counts:
        by_state = {r["state"]: r["n"] for r in self._query(
            "SELECT state, COUNT(*) AS n FROM images GROUP BY state")}
        return Counts(
            seen=sum(by_state.values()), pending=by_state.get("pending", 0),
            done=by_state.get("done", 0), failed=by_state.get("failed", 0),
        )

    def heartbeat(self, name: str = "engine") -> Heartbeat | None:
        rows = self._query(
            "SELECT pid, started_at, heartbeat_at, snapshot FROM agent_status WHERE name = ?",
            (name,))
        if not rows:
            return None
        r = rows[0]
        return Heartbeat(name, r["pid"], r["started_at"], r["heartbeat_at"],
                         _json_or(r["snapshot"], {}))

    # --- images and jobs ----------------------------------------------------------------

    def known_files(self) -> dict[str, tuple[int, float]]:
        """(size, mtime) of every image path the store has seen."""
        return {from_db(r["path"]): (r["size"], r["mtime"]) for r in self._query(
            "SELECT path, size, mtime FROM images")}

    def pending(self, limit: int) -> list[ImageRecord]:
        """The oldest pending jobs."""
        rows = self._query(
            f"SELECT {IMAGE_COLUMNS} FROM images WHERE state = 'pending' ORDER BY id LIMIT ?",
            (limit,))
        return [image_record(r) for r in rows]

    def has_pending(self) -> bool:
        return bool(self._query("SELECT 1 FROM images WHERE state = 'pending' LIMIT 1"))

    def records(self, ids: Sequence[int]) -> list[ImageRecord]:
        if not ids:
            return []
        rows = self._query(
            f"SELECT {IMAGE_COLUMNS} FROM images WHERE id IN ({_marks(ids)}) ORDER BY id",
            list(ids))
        return [image_record(r) for r in rows]

    def measurements(self, *, plate: str | None = None,
                     paths: Sequence[str | os.PathLike[str]] | None = None,
                     after_id: int = 0, limit: int | None = None) -> list[MeasurementRow]:
        """Images with their state and measurement, by id, one page at a time:
        ``after_id`` is the last id of the previous page."""
        sql = ("SELECT i.*, m.found, m.viability, m.model, m.qc, m.features, "
               "m.created_at AS measured_at, m.outline, m.viability_low, m.viability_high, "
               "m.typicality, m.ood_distance "
               "FROM images i LEFT JOIN measurements m ON m.image_id = i.id WHERE i.id > ?")
        params: list[Any] = [after_id]
        if plate is not None:
            sql += " AND i.plate = ?"
            params.append(plate)
        if paths is not None:
            if not paths:
                return []
            sql += f" AND i.path IN ({_marks(paths)})"
            params += [to_db(os.fspath(p)) for p in paths]
        sql += " ORDER BY i.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_measurement_row(r) for r in self._query(sql, params)]

    def iter_measurements(self, *, plate: str | None = None, page: int = 2000
                          ) -> Iterator[MeasurementRow]:
        """Every image, read ``page`` rows at a time (never all at once)."""
        after = 0
        while True:
            rows = self.measurements(plate=plate, after_id=after, limit=page)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].id

    def export_rows(self, paths: Sequence[str | os.PathLike[str]] | None = None
                    ) -> Iterator[dict[str, Any]]:
        """Every image (or those at ``paths``) as flat `export` rows."""
        if paths is not None:
            for row in self.measurements(paths=paths):
                yield row.as_dict()
            return
        for row in self.iter_measurements():
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

    def image_states(self, plate: str | None = None, *, max_failures: int = 1000
                     ) -> ImageStateSummary:
        """Images by state, the most recent failed ones with their errors, and the QC
        flags of the analysed ones (all plates, or one)."""
        where, params = ("WHERE i.plate = ?", [plate]) if plate else ("", [])
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

    def plate_names(self) -> list[str]:
        """Every plate that has images, sorted."""
        return [r[0] for r in self._query(
            "SELECT DISTINCT plate FROM images WHERE plate IS NOT NULL ORDER BY plate")]

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
               severity: str | None = None, state: str | None = None) -> list[Alert]:
        """Active alerts (or all), most severe and most recent first."""
        sql = f"SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1"
        params: list[Any] = []
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        elif not include_closed:
            sql += " AND state IN ('open', 'acknowledged')"
        if plate is not None:
            sql += " AND plate = ?"
            params.append(plate)
        if severity is not None:
            sql += " AND severity = ?"
            params.append(severity)
        alerts = [alert_row(r) for r in self._query(sql, params)]
        return sorted(alerts, key=lambda a: (not a.active, -SEVERITY_RANK.get(a.severity, 0),
                                             -a.updated_at, -a.id))

    def alert_events(self, alert_id: int) -> list[AlertEvent]:
        rows = self._query("SELECT id, alert_id, at, action, user, comment FROM alert_events "
                           "WHERE alert_id = ? ORDER BY id", (alert_id,))
        return [AlertEvent(*r) for r in rows]

    def closed_alerts(self, key: Key) -> list[Alert]:
        """Resolved or dismissed alerts of one (plate, subject, rule)."""
        rows = self._query(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE plate = ? AND "
                           "subject = ? AND rule = ? AND state IN ('resolved', 'dismissed')",
                           key)
        return [alert_row(r) for r in rows]


class StoreReader(Reads):
    """A read-only connection for the CLI, the report and the UI; never blocks the writer."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(
                f"There is no database at {self.path} yet.",
                "Start the agent (`nvir-agent run`) or analyse files with `nvir-agent process`.",
            )
        self._lock = threading.RLock()
        self._conn = schema.connect(self.path, readonly=True)
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
    short-lived read-only reader of the database file at that path."""
    if isinstance(source, Reads):
        yield source
        return
    with StoreReader(source) as reader:
        yield reader
