"""What the operator does to alerts from the UI: acknowledge (with an optional
expiry), dismiss as an artifact, shelve a plate or a compound for a while.

Everything goes through ``monitor.alerts`` into the store, so the monitor
honours it too: an acknowledgement that expires opens the alert again (and
notifies) while its condition holds; a shelved plate or compound keeps its
alerts but is not notified. Call these from a worker, never the UI thread.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from nvir_agent.errors import AgentError
from nvir_agent.monitor import alerts as alert_api
from nvir_agent.store import Alert, Shelf, StoreReader

log = logging.getLogger(__name__)


@dataclass
class OperatorState:
    """The shelves in force, read with the alerts (a snapshot for the views)."""

    shelves: list[Shelf] = field(default_factory=list)

    @classmethod
    def load(cls, database: str | os.PathLike[str]) -> OperatorState:
        """The shelves in force in the store at ``database`` (none while it cannot be
        read: the views then show every open alert)."""
        try:
            with StoreReader(database) as reader:
                return cls(reader.shelves(active_at=time.time()))
        except AgentError as exc:
            log.debug("shelves not readable: %s", exc)
            return cls()

    def shelf_for(self, alert: Alert, now: float | None = None) -> Shelf | None:
        now = time.time() if now is None else now
        return alert_api.shelved([s for s in self.shelves if s.until > now], alert)

    @staticmethod
    def ack_expired(alert: Alert, now: float | None = None) -> bool:
        """An acknowledged alert whose acknowledgement has run out (the monitor opens
        it again at its next evaluation)."""
        return (alert.state == "acknowledged" and alert.ack_until is not None
                and alert.ack_until <= (time.time() if now is None else now))

    def needs_operator(self, alert: Alert, now: float | None = None) -> bool:
        """Open (or its acknowledgement expired) and not shelved."""
        if self.shelf_for(alert, now) is not None:
            return False
        return alert.state == "open" or self.ack_expired(alert, now)


def acknowledge(database: str | os.PathLike[str], alert_id: int, comment: str | None,
                until: float | None = None) -> Alert:
    """Acknowledge; with ``until`` the alert returns (is open again) after that time."""
    return alert_api.act_on_alert(database, alert_id, "ack", comment=comment or None,
                                  until=until)


def dismiss(database: str | os.PathLike[str], alert_id: int, comment: str) -> Alert:
    """Dismiss as an artifact (not a real loss of viability)."""
    return alert_api.act_on_alert(database, alert_id, "dismiss", comment=comment or None)


def shelve(database: str | os.PathLike[str], kind: str, name: str, until: float,
           comment: str = "") -> Shelf:
    """Set a plate's or a compound's notifications aside until ``until``."""
    return alert_api.shelve(database, kind, name, until, comment=comment or None)
