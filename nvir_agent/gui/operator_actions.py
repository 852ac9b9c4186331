"""What the operator does to alerts from the UI: acknowledge (with an optional
expiry), dismiss as an artifact, shelve a plate or a compound for a while.

Acknowledge and dismiss go through ``monitor.alerts.act_on_alert``. Expiry
and shelving have no store support yet: until ``act_on_alert(..., until=)``,
``Store`` shelves and the monitor's handling of both exist, this module keeps
them in a small JSON file in the user data folder (STOPGAP ADAPTER, marked
so it can be replaced): the UI and the tray honour them (an expired
acknowledgement shows as open again; a shelved plate or compound is not
notified and is greyed in the alert list), the monitor does not.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nvir_agent import paths
from nvir_agent.monitor import alerts as alert_api
from nvir_agent.store import Alert

log = logging.getLogger(__name__)

STATE_FILE = "review-state.json"


@dataclass(frozen=True)
class Shelf:
    """A plate or compound whose alerts are set aside until ``until``."""

    kind: str  # plate | compound
    name: str
    until: float
    comment: str = ""


@dataclass
class OperatorState:
    """STOPGAP: acknowledgement expiries and shelves, kept beside the database."""

    ack_until: dict[int, float] = field(default_factory=dict)
    shelves: list[Shelf] = field(default_factory=list)

    @staticmethod
    def path() -> Path:
        return paths.user_data_dir() / STATE_FILE

    @classmethod
    def load(cls) -> OperatorState:
        try:
            raw = json.loads(cls.path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        return cls({int(k): float(v) for k, v in raw.get("ack_until", {}).items()},
                   [Shelf(**s) for s in raw.get("shelves", [])])

    def save(self) -> None:
        p = self.path()
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".part")
        tmp.write_text(json.dumps({"ack_until": self.ack_until,
                                   "shelves": [asdict(s) for s in self.shelves]}, indent=1),
                       encoding="utf-8")
        os.replace(tmp, p)

    def shelf_for(self, alert: Alert, now: float | None = None) -> Shelf | None:
        now = time.time() if now is None else now
        compound = alert.details.get("compound")
        for s in self.shelves:
            if s.until > now and ((s.kind == "plate" and s.name == alert.plate)
                                  or (s.kind == "compound" and s.name == compound)):
                return s
        return None

    def ack_expired(self, alert: Alert, now: float | None = None) -> bool:
        """An acknowledged alert whose acknowledgement has run out (open again)."""
        until = self.ack_until.get(alert.id)
        return (alert.state == "acknowledged" and until is not None
                and until <= (time.time() if now is None else now))

    def needs_operator(self, alert: Alert, now: float | None = None) -> bool:
        """Open (or its acknowledgement expired) and not shelved."""
        if self.shelf_for(alert, now) is not None:
            return False
        return alert.state == "open" or self.ack_expired(alert, now)


def _supports_until() -> bool:
    return "until" in inspect.signature(alert_api.act_on_alert).parameters


def acknowledge(database: str | os.PathLike[str], alert_id: int, comment: str | None,
                until: float | None = None) -> Alert:
    """Acknowledge; with ``until`` the alert returns (is open again) after that time."""
    if until is not None and _supports_until():
        return alert_api.act_on_alert(database, alert_id, "ack", comment=comment, until=until)
    note = comment or ""
    if until is not None:
        note = (note + " " if note else "") + time.strftime(
            "(until %Y-%m-%d %H:%M)", time.localtime(until))
    alert = alert_api.act_on_alert(database, alert_id, "ack", comment=note or None)
    state = OperatorState.load()
    if until is not None:
        state.ack_until[alert_id] = until
    else:
        state.ack_until.pop(alert_id, None)
    state.save()
    return alert


def dismiss(database: str | os.PathLike[str], alert_id: int, comment: str) -> Alert:
    """Dismiss as an artifact (not a real loss of viability)."""
    return alert_api.act_on_alert(database, alert_id, "dismiss", comment=comment or None)


def shelve(kind: str, name: str, until: float, comment: str = "") -> Shelf:
    """Set a plate's or a compound's alerts aside until ``until``."""
    if kind not in ("plate", "compound"):
        raise ValueError(f"cannot shelve a {kind}")
    state = OperatorState.load()
    state.shelves = [s for s in state.shelves if not (s.kind == kind and s.name == name)
                     and s.until > time.time()]
    shelf = Shelf(kind, name, until, comment)
    state.shelves.append(shelf)
    state.save()
    log.info("%s %s shelved until %s", kind, name, time.ctime(until))
    return shelf
