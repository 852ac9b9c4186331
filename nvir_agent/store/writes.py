"""The writes other packages make inside one store transaction (plate maps and
alert rows); the engine's own job and result writes live on ``Store``.

A :class:`Transaction` is what ``Store.transaction()`` yields: every read of
:class:`~nvir_agent.store.reads.Reads` plus these writes, on the same
connection, committed together or not at all.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from nvir_agent.store.dialect import SQLITE, Dialect
from nvir_agent.store.reads import Reads


def details_json(details: dict[str, Any]) -> str:
    """How alert details are stored (sorted keys; what is not JSON becomes text)."""
    return json.dumps(details, sort_keys=True, default=str)


class Transaction(Reads):
    """Reads and writes inside one open write transaction (the caller holds it)."""

    def __init__(self, path: Path | str, conn: Any, lock: threading.RLock, *,
                 sql: Dialect = SQLITE, station: str = "",
                 scopes: tuple[str, ...] | None = None) -> None:
        self.path = path
        self._conn = conn
        self._lock = lock
        self._sql = sql
        self.station = station
        self._scopes = scopes

    def lock_plate(self, plate: str) -> None:
        """Hold the plate until this transaction ends: agents on one central store
        evaluate a plate one at a time (a no-op on SQLite, whose write lock already
        serialises). Lock plates in sorted order."""
        self._sql.lock_plate(self._conn, plate)

    # --- plates -------------------------------------------------------------------------

    def save_plate_map(self, plate: str, plate_map: dict[str, Any] | None) -> bool:
        """Record the plate's map (None clears it); True when it changed."""
        text = None if plate_map is None else json.dumps(plate_map, sort_keys=True)
        if self.plate_map_text(plate) == text and self.plate_known(plate):
            return False
        now = time.time()
        self._conn.execute(
            "INSERT INTO plates(plate, first_seen, last_seen, plate_map) VALUES (?,?,?,?) "
            "ON CONFLICT(plate) DO UPDATE SET plate_map = excluded.plate_map",
            (plate, now, now, text))
        return True

    def plate_known(self, plate: str) -> bool:
        return bool(self._query("SELECT 1 FROM plates WHERE plate = ?", (plate,)))

    # --- alerts -------------------------------------------------------------------------

    def insert_alert(self, *, plate: str, subject: str, rule: str, severity: str,
                     message: str, value: float | None, timepoint: int | None, now: float,
                     details: dict[str, Any]) -> int:
        """A new open alert; returns its id."""
        return self._sql.insert_id(
            self._conn,
            "INSERT INTO alerts(plate, subject, rule, severity, state, message, value, "
            "timepoint, opened_at, updated_at, closed_at, details) "
            "VALUES (?,?,?,?,'open',?,?,?,?,?,NULL,?)",
            (plate, subject, rule, severity, message, value, timepoint, now, now,
             details_json(details)))

    def update_alert(self, alert_id: int, *, severity: str, state: str, message: str,
                     value: float | None, timepoint: int | None, now: float,
                     details: dict[str, Any]) -> None:
        self._conn.execute(
            "UPDATE alerts SET severity = ?, state = ?, message = ?, value = ?, "
            "timepoint = ?, updated_at = ?, details = ? WHERE id = ?",
            (severity, state, message, value, timepoint, now, details_json(details), alert_id))

    def set_alert_state(self, alert_id: int, state: str, now: float,
                        closed_at: float | None) -> None:
        self._conn.execute(
            "UPDATE alerts SET state = ?, updated_at = ?, closed_at = ? WHERE id = ?",
            (state, now, closed_at, alert_id))

    def set_ack_until(self, alert_id: int, until: float | None) -> None:
        """When an acknowledgement expires (None: never)."""
        self._conn.execute("UPDATE alerts SET ack_until = ? WHERE id = ?", (until, alert_id))

    def shelve(self, kind: str, name: str, until: float, *, user: str | None = None,
               comment: str | None = None, now: float | None = None) -> int:
        """Shelve a plate or compound until ``until``; returns the shelf's id."""
        now = time.time() if now is None else now
        return self._sql.insert_id(
            self._conn,
            'INSERT INTO shelves(kind, name, until, "user", comment, created_at) '
            "VALUES (?,?,?,?,?,?)", (kind, name, until, user, comment, now))

    def unshelve(self, shelf_id: int, now: float | None = None) -> None:
        """End a shelf now."""
        now = time.time() if now is None else now
        self._conn.execute("UPDATE shelves SET until = ? WHERE id = ? AND until > ?",
                           (now, shelf_id, now))

    def add_alert_event(self, alert_id: int, action: str, now: float,
                        user: str | None = None, comment: str | None = None) -> None:
        self._conn.execute(
            "INSERT INTO alert_events(alert_id, at, action, \"user\", comment) "
            "VALUES (?,?,?,?,?)",
            (alert_id, now, action, user, comment))
