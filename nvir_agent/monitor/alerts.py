"""Alert lifecycle and persistence (tables ``alerts`` and ``alert_events``).

States: open → acknowledged (who, when, comment) → resolved (recovered, or
closed by the operator) or dismissed (an artifact). Exactly one open or
acknowledged alert exists per (plate, subject, rule) — the store's unique index
guarantees it. :func:`reconcile` turns the conditions the rules found into
alert rows: it opens new alerts, escalates warning → critical (the only change
that notifies again), keeps values up to date and resolves alerts whose
condition is gone. An episode the operator closed or dismissed is not reopened
unless it escalates beyond the severity it was closed at.

Reads take any store reader; writes take a store ``Transaction`` (the caller
owns it). The rows and their SQL live in ``nvir_agent.store``.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

from nvir_agent.errors import DataError, StoreError
from nvir_agent.monitor.rules import Condition
from nvir_agent.store import (
    CLOSED_STATES,
    SEVERITY_RANK,
    Alert,
    AlertEvent,
    Key,
    Reads,
    Shelf,
    Store,
    Transaction,
    redact,
    store_exists,
)
from nvir_agent.store.writes import details_json

log = logging.getLogger(__name__)

__all__ = ["Alert", "AlertChange", "AlertEvent", "acknowledge", "act_on_alert", "dismiss",
           "get_alert", "list_alerts", "alert_events", "reconcile", "resolve", "shelve",
           "shelved"]


@dataclass(frozen=True)
class AlertChange:
    """What reconcile did to one alert; ``notify`` marks the news worth telling."""

    kind: str  # opened | escalated | ack_expired | recovered | rolled_up
    alert: Alert
    notify: bool


def get_alert(reads: Reads, alert_id: int) -> Alert:
    """The alert with this ID; DataError when there is none."""
    alert = reads.alert(alert_id)
    if alert is None:
        raise DataError(f"There is no alert with ID {alert_id}.",
                        "`nvir-agent alerts --all` lists every alert with its ID.")
    return alert


def list_alerts(reads: Reads, *, include_closed: bool = False,
                plate: str | None = None) -> list[Alert]:
    """Active alerts (or all), most severe and most recent first."""
    return reads.alerts(include_closed=include_closed, plate=plate)


def alert_events(reads: Reads, alert_id: int) -> list[AlertEvent]:
    return reads.alert_events(alert_id)


# --------------------------------------------------------------------------- operator


def current_user() -> str:
    """The OS user acknowledging or closing an alert."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "unknown"


def _operator_change(tx: Transaction, alert_id: int, action: str, new_state: str,
                     comment: str | None, user: str | None, now: float | None) -> Alert:
    a = get_alert(tx, alert_id)
    if not a.active:
        raise DataError(
            f"Alert {alert_id} is already {a.state}; it cannot be {action}.",
            "`nvir-agent alerts` lists the alerts that are still open.")
    now = time.time() if now is None else now
    closed_at = now if new_state in CLOSED_STATES else None
    tx.set_alert_state(alert_id, new_state, now, closed_at)
    tx.add_alert_event(alert_id, action, now, user or current_user(), comment)
    log.info("alert %d %s by %s", alert_id, action, user or current_user())
    return get_alert(tx, alert_id)


def acknowledge(tx: Transaction, alert_id: int, *, comment: str | None = None,
                user: str | None = None, now: float | None = None,
                until: float | None = None) -> Alert:
    """open → acknowledged (acknowledging again records another comment). With
    ``until``, the acknowledgement expires then and the alert is open again (the
    monitor re-opens it and notifies) if its condition still holds."""
    now = time.time() if now is None else now
    if until is not None and until <= now:
        raise DataError("The acknowledgement would expire before it is given.",
                        "Give a time in the future, or none to acknowledge for good.")
    tx.set_ack_until(alert_id, until)
    return _operator_change(tx, alert_id, "acknowledged", "acknowledged", comment, user, now)


def dismiss(tx: Transaction, alert_id: int, *, comment: str | None = None,
            user: str | None = None, now: float | None = None) -> Alert:
    """Mark an alert as an artifact (not a real loss of viability)."""
    return _operator_change(tx, alert_id, "dismissed", "dismissed", comment, user, now)


def resolve(tx: Transaction, alert_id: int, *, comment: str | None = None,
            user: str | None = None, now: float | None = None) -> Alert:
    """Close an alert by hand (dealt with)."""
    return _operator_change(tx, alert_id, "resolved", "resolved", comment, user, now)


OPERATOR_ACTIONS = {"ack": acknowledge, "acknowledge": acknowledge, "dismiss": dismiss,
                    "resolve": resolve}


def act_on_alert(database: str | os.PathLike[str], alert_id: int, action: str, *,
                 comment: str | None = None, user: str | None = None,
                 until: float | None = None) -> Alert:
    """ack / dismiss / resolve one alert through a short-lived connection to the
    agent's database (for the CLI and the UI; a running agent is held up for
    a moment at most). ``until`` makes an acknowledgement expire."""
    path = database
    if not store_exists(path):
        raise StoreError(f"There is no database at {redact(path)} yet, so there are no alerts.",
                         "Start the agent (`nvir-agent run`) first, or check --config.")
    if action not in OPERATOR_ACTIONS:
        raise DataError(f"Unknown alert action '{action}'.",
                        f"Use one of: {', '.join(sorted(OPERATOR_ACTIONS))}.")
    extra = {"until": until} if until is not None else {}
    if extra and OPERATOR_ACTIONS[action] is not acknowledge:
        raise DataError("Only an acknowledgement can expire.",
                        "Acknowledge the alert with a time limit instead.")
    with Store(path) as store, store.transaction() as tx:
        return OPERATOR_ACTIONS[action](tx, alert_id, comment=comment, user=user, **extra)


SHELF_KINDS = ("plate", "compound")


def shelve(database: str | os.PathLike[str], kind: str, name: str, until: float, *,
           comment: str | None = None, user: str | None = None) -> Shelf:
    """Shelve a plate or a compound until ``until``: its alerts are still raised and
    listed, but not notified, until then (e.g. a plate known to be bad, a compound
    whose toxicity is expected)."""
    path = database
    if not store_exists(path):
        raise StoreError(f"There is no database at {redact(path)} yet.",
                         "Start the agent (`nvir-agent run`) first, or check --config.")
    if kind not in SHELF_KINDS:
        raise DataError(f"Cannot shelve a {kind!r}.", "Shelve a plate or a compound.")
    if not str(name).strip():
        raise DataError(f"Name the {kind} to shelve.", f"Give the {kind}'s name.")
    now = time.time()
    if until <= now:
        raise DataError("The shelf would end before it begins.", "Give a time in the future.")
    with Store(path) as store, store.transaction() as tx:
        shelf_id = tx.shelve(kind, name, until, user=user or current_user(), comment=comment,
                             now=now)
        log.info("%s %s shelved until %s by %s", kind, name,
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(until)), user or current_user())
        return next(s for s in tx.shelves() if s.id == shelf_id)


def shelved(shelves: Iterable[Shelf], alert: Alert) -> Shelf | None:
    """The shelf that covers this alert (its plate, or its compound), if any."""
    compound = alert.details.get("compound")
    for s in shelves:
        if (s.kind == "plate" and s.name == alert.plate) or (
                s.kind == "compound" and compound is not None and s.name == compound):
            return s
    return None


# --------------------------------------------------------------------------- reconcile


def _closed_episode(tx: Transaction, c: Condition) -> bool:
    """True when the operator (or a roll-up) already closed this episode at ≥ this severity."""
    for a in tx.closed_alerts(c.key):
        if (a.details.get("since") == c.since
                and SEVERITY_RANK.get(a.severity, 0) >= SEVERITY_RANK[c.severity]):
            return True
    return False


def _open(tx: Transaction, c: Condition, now: float) -> Alert:
    alert_id = tx.insert_alert(plate=c.plate, subject=c.subject, rule=c.rule,
                               severity=c.severity, message=c.message, value=c.value,
                               timepoint=c.timepoint, now=now,
                               details={**c.details, "since": c.since})
    tx.add_alert_event(alert_id, "opened", now, comment=c.message)
    return get_alert(tx, alert_id)


def _ack_expired(tx: Transaction, a: Alert, now: float) -> Alert:
    """An acknowledgement whose time is up: the alert is open again."""
    tx.set_alert_state(a.id, "open", now, None)
    tx.set_ack_until(a.id, None)
    tx.add_alert_event(a.id, "ack_expired", now,
                       comment="the acknowledgement expired; the condition still holds")
    return get_alert(tx, a.id)


def reconcile(tx: Transaction, plates: Iterable[str], conditions: Iterable[Condition],
              suppressed: dict[Key, str] | None = None, *, now: float | None = None
              ) -> list[AlertChange]:
    """Bring the stored alerts of ``plates`` in line with the conditions that hold.

    Conditions must cover every rule of those plates: an active alert of these
    plates without a condition is resolved (``recovered``, or ``rolled_up``
    when ``suppressed`` names the alert that now carries it). An acknowledgement
    whose time is up while its condition still holds is open again
    (``ack_expired``, notified)."""
    now = time.time() if now is None else now
    suppressed = suppressed or {}
    changes: list[AlertChange] = []
    active: dict[Key, Alert] = {}
    for plate in plates:
        for a in tx.alerts(plate=plate):
            active[a.key] = a
    seen: set[Key] = set()
    for c in conditions:
        if c.key in seen:
            continue
        seen.add(c.key)
        a = active.get(c.key)
        if a is None:
            if _closed_episode(tx, c):
                continue
            changes.append(AlertChange("opened", _open(tx, c, now), True))
            continue
        details = {**a.details, **c.details, "since": a.details.get("since", c.since)}
        escalate = SEVERITY_RANK[c.severity] > SEVERITY_RANK.get(a.severity, 0)
        severity = c.severity if escalate else a.severity
        state = "open" if escalate else a.state
        if (escalate or a.value != c.value or a.timepoint != c.timepoint
                or a.message != c.message or a.details != json.loads(details_json(details))):
            tx.update_alert(a.id, severity=severity, state=state, message=c.message,
                            value=c.value, timepoint=c.timepoint, now=now, details=details)
        if escalate:
            tx.add_alert_event(a.id, "escalated", now, comment=c.message)
            changes.append(AlertChange("escalated", get_alert(tx, a.id), True))
        elif state == "acknowledged" and a.ack_until is not None and a.ack_until <= now:
            changes.append(AlertChange("ack_expired", _ack_expired(tx, a, now), True))
    for key, a in active.items():
        if key in seen:
            continue
        carrier = suppressed.get(key)
        kind = "rolled_up" if carrier else "recovered"
        comment = (f"now part of the alert on {carrier}" if carrier
                   else "the condition no longer holds")
        tx.set_alert_state(a.id, "resolved", now, now)
        tx.add_alert_event(a.id, kind, now, comment=comment)
        changes.append(AlertChange(kind, get_alert(tx, a.id), False))
    return changes
