"""Alert lifecycle and persistence (tables ``alerts`` and ``alert_events``).

States: open → acknowledged (who, when, comment) → resolved (recovered, or
closed by the operator) or dismissed (an artifact). Exactly one open or
acknowledged alert exists per (plate, subject, rule) — the store's unique index
guarantees it. :func:`reconcile` turns the conditions the rules found into
alert rows: it opens new alerts, escalates warning → critical (the only change
that notifies again), keeps values up to date and resolves alerts whose
condition is gone. An episode the operator closed or dismissed is not reopened
unless it escalates beyond the severity it was closed at.

All functions take a sqlite3 connection; the caller owns the transaction.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvir_agent.errors import DataError, StoreError
from nvir_agent.monitor.rules import SEVERITY_RANK, Condition, Key
from nvir_agent.store.database import Store

log = logging.getLogger(__name__)

ACTIVE_STATES = ("open", "acknowledged")
CLOSED_STATES = ("resolved", "dismissed")
_COLUMNS = ("id, plate, subject, rule, severity, state, message, value, timepoint, opened_at, "
            "updated_at, closed_at, details")


@dataclass(frozen=True)
class Alert:
    """One alert as stored."""

    id: int
    plate: str
    subject: str
    rule: str
    severity: str
    state: str
    message: str
    value: float | None
    timepoint: int | None
    opened_at: float
    updated_at: float
    closed_at: float | None
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> Key:
        return (self.plate, self.subject, self.rule)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "plate": self.plate, "subject": self.subject, "rule": self.rule,
            "severity": self.severity, "state": self.state, "message": self.message,
            "value": self.value, "timepoint": self.timepoint, "opened_at": self.opened_at,
            "updated_at": self.updated_at, "closed_at": self.closed_at, "details": self.details,
        }


@dataclass(frozen=True)
class AlertEvent:
    """One entry of an alert's history."""

    id: int
    alert_id: int
    at: float
    action: str  # opened | escalated | acknowledged | resolved | dismissed | recovered | rolled_up
    user: str | None
    comment: str | None


@dataclass(frozen=True)
class AlertChange:
    """What reconcile did to one alert; ``notify`` marks the news worth telling."""

    kind: str  # opened | escalated | recovered | rolled_up
    alert: Alert
    notify: bool


def _alert(row: Sequence[Any]) -> Alert:
    details = {}
    if row[12]:
        try:
            details = json.loads(row[12])
        except ValueError:
            details = {"unreadable": row[12]}
    return Alert(int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6] or "", row[7],
                 row[8], row[9] or 0.0, row[10] or 0.0, row[11], details)


def _json(details: dict[str, Any]) -> str:
    return json.dumps(details, sort_keys=True, default=str)


def _event(conn: sqlite3.Connection, alert_id: int, action: str, now: float,
           user: str | None = None, comment: str | None = None) -> None:
    conn.execute("INSERT INTO alert_events(alert_id, at, action, user, comment) VALUES (?,?,?,?,?)",
                 (alert_id, now, action, user, comment))


def get_alert(conn: sqlite3.Connection, alert_id: int) -> Alert:
    """The alert with this ID; DataError when there is none."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    if row is None:
        raise DataError(f"There is no alert with ID {alert_id}.",
                        "`nvir-agent alerts --all` lists every alert with its ID.")
    return _alert(row)


def list_alerts(conn: sqlite3.Connection, *, include_closed: bool = False,
                plate: str | None = None) -> list[Alert]:
    """Active alerts (or all), most severe and most recent first."""
    sql = f"SELECT {_COLUMNS} FROM alerts WHERE 1 = 1"
    params: list[Any] = []
    if not include_closed:
        sql += " AND state IN ('open', 'acknowledged')"
    if plate is not None:
        sql += " AND plate = ?"
        params.append(plate)
    alerts = [_alert(r) for r in conn.execute(sql, params)]
    return sorted(alerts, key=lambda a: (not a.active, -SEVERITY_RANK.get(a.severity, 0),
                                         -a.updated_at, -a.id))


def alert_events(conn: sqlite3.Connection, alert_id: int) -> list[AlertEvent]:
    rows = conn.execute("SELECT id, alert_id, at, action, user, comment FROM alert_events "
                        "WHERE alert_id = ? ORDER BY id", (alert_id,))
    return [AlertEvent(*r) for r in rows]


# --------------------------------------------------------------------------- operator


def current_user() -> str:
    """The OS user acknowledging or closing an alert."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "unknown"


def _operator_change(conn: sqlite3.Connection, alert_id: int, action: str, new_state: str,
                     comment: str | None, user: str | None, now: float | None) -> Alert:
    a = get_alert(conn, alert_id)
    if not a.active:
        raise DataError(
            f"Alert {alert_id} is already {a.state}; it cannot be {action}.",
            "`nvir-agent alerts` lists the alerts that are still open.")
    now = time.time() if now is None else now
    closed_at = now if new_state in CLOSED_STATES else None
    conn.execute("UPDATE alerts SET state = ?, updated_at = ?, closed_at = ? WHERE id = ?",
                 (new_state, now, closed_at, alert_id))
    _event(conn, alert_id, action, now, user or current_user(), comment)
    log.info("alert %d %s by %s", alert_id, action, user or current_user())
    return get_alert(conn, alert_id)


def acknowledge(conn: sqlite3.Connection, alert_id: int, *, comment: str | None = None,
                user: str | None = None, now: float | None = None) -> Alert:
    """open → acknowledged (acknowledging again records another comment)."""
    return _operator_change(conn, alert_id, "acknowledged", "acknowledged", comment, user, now)


def dismiss(conn: sqlite3.Connection, alert_id: int, *, comment: str | None = None,
            user: str | None = None, now: float | None = None) -> Alert:
    """Mark an alert as an artifact (not a real loss of viability)."""
    return _operator_change(conn, alert_id, "dismissed", "dismissed", comment, user, now)


def resolve(conn: sqlite3.Connection, alert_id: int, *, comment: str | None = None,
            user: str | None = None, now: float | None = None) -> Alert:
    """Close an alert by hand (dealt with)."""
    return _operator_change(conn, alert_id, "resolved", "resolved", comment, user, now)


OPERATOR_ACTIONS = {"ack": acknowledge, "acknowledge": acknowledge, "dismiss": dismiss,
                    "resolve": resolve}


def act_on_alert(database: str | os.PathLike[str], alert_id: int, action: str, *,
                 comment: str | None = None, user: str | None = None) -> Alert:
    """ack / dismiss / resolve one alert through a short-lived connection to the
    agent's database (for the CLI and the UI; a running agent is held up for
    a moment at most)."""
    path = Path(database)
    if not path.is_file():
        raise StoreError(f"There is no database at {path} yet, so there are no alerts.",
                         "Start the agent (`nvir-agent run`) first, or check --config.")
    if action not in OPERATOR_ACTIONS:
        raise DataError(f"Unknown alert action '{action}'.",
                        f"Use one of: {', '.join(sorted(OPERATOR_ACTIONS))}.")
    with Store(path) as store, store.transaction() as conn:
        return OPERATOR_ACTIONS[action](conn, alert_id, comment=comment, user=user)


# --------------------------------------------------------------------------- reconcile


def _closed_episode(conn: sqlite3.Connection, c: Condition) -> bool:
    """True when the operator (or a roll-up) already closed this episode at ≥ this severity."""
    rows = conn.execute(
        "SELECT severity, details FROM alerts WHERE plate = ? AND subject = ? AND rule = ? "
        "AND state IN ('resolved', 'dismissed')", c.key)
    for severity, details in rows:
        try:
            since = json.loads(details or "{}").get("since")
        except ValueError:
            continue
        if since == c.since and SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK[c.severity]:
            return True
    return False


def _open(conn: sqlite3.Connection, c: Condition, now: float) -> Alert:
    details = {**c.details, "since": c.since}
    cur = conn.execute(
        "INSERT INTO alerts(plate, subject, rule, severity, state, message, value, timepoint, "
        "opened_at, updated_at, closed_at, details) VALUES (?,?,?,?,'open',?,?,?,?,?,NULL,?)",
        (c.plate, c.subject, c.rule, c.severity, c.message, c.value, c.timepoint, now, now,
         _json(details)))
    alert_id = int(cur.lastrowid)  # type: ignore[arg-type]
    _event(conn, alert_id, "opened", now, comment=c.message)
    return get_alert(conn, alert_id)


def reconcile(conn: sqlite3.Connection, plates: Iterable[str], conditions: Iterable[Condition],
              suppressed: dict[Key, str] | None = None, *, now: float | None = None
              ) -> list[AlertChange]:
    """Bring the stored alerts of ``plates`` in line with the conditions that hold.

    Conditions must cover every rule of those plates: an active alert of these
    plates without a condition is resolved (``recovered``, or ``rolled_up``
    when ``suppressed`` names the alert that now carries it)."""
    now = time.time() if now is None else now
    suppressed = suppressed or {}
    plates = list(plates)
    changes: list[AlertChange] = []
    try:
        active: dict[Key, Alert] = {}
        for plate in plates:
            for a in list_alerts(conn, plate=plate):
                active[a.key] = a
        seen: set[Key] = set()
        for c in conditions:
            if c.key in seen:
                continue
            seen.add(c.key)
            a = active.get(c.key)
            if a is None:
                if _closed_episode(conn, c):
                    continue
                changes.append(AlertChange("opened", _open(conn, c, now), True))
                continue
            details = {**a.details, **c.details, "since": a.details.get("since", c.since)}
            escalate = SEVERITY_RANK[c.severity] > SEVERITY_RANK.get(a.severity, 0)
            severity = c.severity if escalate else a.severity
            state = "open" if escalate else a.state
            if (escalate or a.value != c.value or a.timepoint != c.timepoint
                    or a.message != c.message or a.details != json.loads(_json(details))):
                conn.execute(
                    "UPDATE alerts SET severity = ?, state = ?, message = ?, value = ?, "
                    "timepoint = ?, updated_at = ?, details = ? WHERE id = ?",
                    (severity, state, c.message, c.value, c.timepoint, now, _json(details), a.id))
            if escalate:
                _event(conn, a.id, "escalated", now, comment=c.message)
                changes.append(AlertChange("escalated", get_alert(conn, a.id), True))
        for key, a in active.items():
            if key in seen:
                continue
            carrier = suppressed.get(key)
            kind = "rolled_up" if carrier else "recovered"
            comment = (f"now part of the alert on {carrier}" if carrier
                       else "the condition no longer holds")
            conn.execute("UPDATE alerts SET state = 'resolved', updated_at = ?, closed_at = ? "
                         "WHERE id = ?", (now, now, a.id))
            _event(conn, a.id, kind, now, comment=comment)
            changes.append(AlertChange(kind, get_alert(conn, a.id), False))
    except sqlite3.Error as exc:
        raise StoreError(f"Recording alerts failed: {exc}.",
                         "Check free disk space and that the database is not damaged.") from exc
    return changes
