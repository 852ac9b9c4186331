"""The monitor: the engine's result listener that turns committed scores into
alerts and notifications.

After each committed batch the engine calls :meth:`Monitor.on_results` in its
worker thread. The monitor finds the plates those images belong to, records
each plate's map in the store, recomputes the plates' time courses, evaluates
the alert rules and reconciles the alerts — all in one write transaction — and
then hands what is new (opened or escalated alerts) to the notifier, which
delivers on its own thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nvir_agent.config import Config
from nvir_agent.monitor.alerts import AlertChange, reconcile, shelved
from nvir_agent.monitor.notify import Notice, Notifier, build_notifier
from nvir_agent.monitor.platemap import PlateMapLibrary
from nvir_agent.monitor.rules import evaluate_plate
from nvir_agent.monitor.stall import stall_condition, stall_due
from nvir_agent.monitor.timecourse import (
    load_plate_timecourses,
    save_plate_map,
    settings_from_config,
)
from nvir_agent.store import Store, StoreOffline, StoreUnavailable

log = logging.getLogger(__name__)

SUBJECT_WORDS = {"plate": "plate", "well": "well", "group": "", "read": "time point"}


def describe_subject(subject: str) -> str:
    """'well:B03' → 'well B03', 'group:Tox 10 µM' → 'Tox 10 µM', 'read:3' → 'time point 3'."""
    kind, _, rest = subject.partition(":")
    word = SUBJECT_WORDS.get(kind, kind)
    return f"{word} {rest}".strip() if rest else word


def notice_for(change: AlertChange) -> Notice:
    """The operator-facing notice of an opened or escalated alert."""
    a = change.alert
    verb = ("now CRITICAL" if change.kind == "escalated"
            else f"{a.severity} again" if change.kind == "ack_expired" else a.severity)
    title = f"NViR Agent {verb}: {a.plate} {describe_subject(a.subject)}"
    body = f"{a.message} — alert #{a.id}; acknowledge with `nvir-agent ack {a.id}`."
    return Notice(title, body, a.severity, a.plate, a.id, change.kind)


@dataclass(frozen=True)
class MonitorResult:
    """What one evaluation did (for logs, tests and the UI)."""

    plates: tuple[str, ...]
    changes: tuple[AlertChange, ...]
    seconds: float


class Monitor:
    """ResultListener: plate maps → time courses → rules → alerts → notifier."""

    def __init__(self, config: Config, store: Store, notifier: Notifier | None = None, *,
                 min_eval_interval_s: float = 2.0) -> None:
        self.config = config
        self.min_eval_interval_s = min_eval_interval_s
        self.store = store
        maps = config.resolve(config.plates.maps) if config.plates.maps else None
        if maps is not None and not maps.exists():
            log.warning("plates.maps points at %s, which does not exist; plates are treated "
                        "as unmapped until it does", maps)
        self.library = PlateMapLibrary(maps, config.plates.format)
        self.notifier = notifier if notifier is not None else build_notifier(config.notify)
        self._settings = settings_from_config(config)
        self._maps_seen: tuple | None = None
        self._unmapped_logged: set[str] = set()
        self._dirty: set[str] = set()
        self._missed = False  # results came while the store could not be written
        self._wait_told = False  # that alerts wait was logged (once per wait)
        self._last_eval = -float("inf")
        self._last_idle_check = -float("inf")
        self.idle_check_s = 60.0
        # plate → when time alone next changes its conditions (None: never, until a new
        # result); plates not in it have not been evaluated since the start
        self._time_due: dict[str, float | None] = {}
        # plates with no new image for longer than this are not re-checked when idle
        self.followed_for_s = 14 * 86400.0

    # ----------------------------------------------------------------- listener

    def on_results(self, image_ids: Sequence[int]) -> None:
        """Re-evaluate the plates of these images (all plates on the first batch
        and whenever a plate-map file was added, removed or edited).

        While more images wait for analysis, plates are re-evaluated at most
        every ``min_eval_interval_s``; the batch that empties the queue always
        evaluates, so the final state never waits."""
        if not image_ids:
            return
        try:
            with self.store.transaction() as tx:
                self._dirty |= tx.plates_of_images([i for i in image_ids if i > 0])
                busy = tx.has_pending()
        except StoreUnavailable as exc:
            self._offline(exc)
            return
        if self._maps_changed() or self._resynced() or self._missed:
            self._missed = False
            self._dirty |= self.known_plates()
        if not self._dirty:
            return
        if busy and time.monotonic() - self._last_eval < self.min_eval_interval_s:
            return
        plates, self._dirty = sorted(self._dirty), set()
        self._last_eval = time.monotonic()
        try:
            self.evaluate(plates)
        except StoreUnavailable as exc:
            self._dirty |= set(plates)
            self._offline(exc)

    def on_idle(self) -> None:
        """Called by the engine while no image waits for analysis: at most every
        ``idle_check_s``, re-evaluate the plates seen recently whose alerts time alone
        can change — an acquisition that stalls or is taken as finished, an
        acknowledgement that expires — so that these rules hold even though no
        result arrives, and all of them when a plate-map file was edited. Plates
        where only a new result can change anything wait for it (after a start,
        each is evaluated once)."""
        if self._resynced() or self._missed:
            self._missed = False
            try:
                self.evaluate()
            except StoreUnavailable as exc:
                self._offline(exc)
            return
        now = time.monotonic()
        if now - self._last_idle_check < self.idle_check_s:
            return
        self._last_idle_check = now
        if not self.config.alerts.enabled:
            return
        wall = time.time()
        horizon = wall - self.followed_for_s
        try:
            expiring = {a.plate for a in self.store.alerts()
                        if a.state == "acknowledged" and a.ack_until is not None
                        and a.ack_until <= wall}
            maps_changed = self._maps_changed()  # a plate map edited while idle
            plates = [p.plate for p in self.store.plates() if (p.last_seen or 0) >= horizon
                      and (maps_changed or self._changes_with_time(p.plate, wall, expiring))]
            if plates:
                self.evaluate(plates)
        except StoreUnavailable as exc:
            self._offline(exc)

    def _changes_with_time(self, plate: str, wall: float, expiring: set[str]) -> bool:
        if plate in expiring or plate not in self._time_due:
            return True
        due = self._time_due[plate]
        return due is not None and due <= wall

    def _offline(self, exc: StoreUnavailable) -> None:
        """The store's server is away (results are spooled), another program holds
        the database locked, or its disk is full: every plate is evaluated again once
        it can be written."""
        if isinstance(exc, StoreOffline):  # the spool's sync says when it is back
            log.info("Alerts wait for the store: %s", exc.message)
            return
        if not self._wait_told:  # once per wait, not at every try
            log.info("Alerts wait for the store: %s", exc.message)
            self._wait_told = True
        self._missed = True

    def _resynced(self) -> bool:
        """True once after the store synced its spool to the server."""
        take = getattr(self.store, "take_resynced", None)
        return bool(take()) if callable(take) else False

    def _maps_changed(self) -> bool:
        current = self.library.version
        changed = current != self._maps_seen  # also true on the first batch after a start
        self._maps_seen = current
        return changed

    def known_plates(self) -> set[str]:
        return set(self.store.plate_names())

    def evaluate(self, plates: Iterable[str] | None = None) -> MonitorResult:
        """Recompute time courses and alerts of these plates (default: all)."""
        t0 = time.perf_counter()
        plate_list = sorted(self.known_plates() if plates is None else set(plates))
        changes: list[AlertChange] = []
        due: dict[str, float | None] = {}
        with self.store.transaction() as tx:
            for plate in plate_list:
                tx.lock_plate(plate)  # other stations' monitors wait for this plate
            for plate in plate_list:
                pm = self.library.for_plate(plate)
                if save_plate_map(tx, plate, pm):
                    if pm is None:
                        log.info("plate %s has no plate map", plate)
                    else:
                        log.info("plate %s uses plate map %s (%s)", plate, pm.plate, pm.source)
                if pm is None and plate not in self._unmapped_logged:
                    self._unmapped_logged.add(plate)
                    log.warning("Plate %s has no plate map: viability is relative to each "
                                "well's first time point. Add a map under [plates] maps.", plate)
            if self.config.alerts.enabled and plate_list:
                tcs = load_plate_timecourses(tx, plate_list, **self._settings)
                for plate in plate_list:
                    tc = tcs.get(plate)
                    now = time.time()
                    due[plate] = None if tc is None else stall_due(tc, self.config.alerts, now)
                    if tc is None:
                        continue
                    ev = evaluate_plate(tc, self.config.alerts)
                    stalled = stall_condition(tc, self.config.alerts, now)
                    if stalled is not None:
                        ev.conditions.append(stalled)
                    changes += reconcile(tx, [plate], ev.conditions, ev.suppressed)
            shelves = tx.shelves(active_at=time.time())
        self._time_due.update(due)  # once committed
        for c in changes:
            a = c.alert
            log.info("alert #%d %s: %s %s %s (%s)", a.id, c.kind, a.plate, a.subject, a.rule,
                     a.severity)
        notices = []
        for c in (c for c in changes if c.notify):
            shelf = shelved(shelves, c.alert)
            if shelf is None:
                notices.append(notice_for(c))
            else:
                log.info("alert #%d not notified: %s %s is shelved", c.alert.id, shelf.kind,
                         shelf.name)
        if notices:
            self.notifier.submit(notices)
        self._wait_told = False
        seconds = time.perf_counter() - t0
        log.debug("monitor evaluated %d plate(s) in %.3f s", len(plate_list), seconds)
        return MonitorResult(tuple(plate_list), tuple(changes), seconds)

    def close(self) -> None:
        """Deliver pending notifications and stop the notifier thread."""
        self.notifier.close()
