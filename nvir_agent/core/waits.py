"""What the engine waits for, and says it waits for, instead of failing or stopping.

- ``DiskFullWait``: the database cannot grow (``StoreFull``: the disk is full).
  The engine's threads keep what they hold and try their writes again (as for
  any ``StoreUnavailable``); this says so, once in the log and in the status,
  until a write that failed succeeds.
- ``WaitingJobs``: queued images whose file cannot be reached when their turn
  comes, for a reason that is not the image's own (its folder away, a share
  offline, no permission). They stay pending, their attempt taken back, and
  are tried again every ``UNREACHABLE_RETRY_S``.
- ``HeldFiles``: files found that cannot be looked at (no permission on their
  folder) are looked at again every ``LOOK_AGAIN_S``; those that cannot be
  looked at or opened for longer than a minute are reported.

Each keeps its own lock: the engine's threads and its ``status()`` read them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from nvir_agent.errors import AgentError
from nvir_agent.errors import listing as listed
from nvir_agent.ingest.pathnames import readable
from nvir_agent.ingest.watch import SettleTracker, cannot_look, open_error, unreachable
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.store import Result, Store, StoreFull

log = logging.getLogger(__name__)

UNREACHABLE_RETRY_S = 5.0  # how often a job whose file cannot be reached is tried again
HELD_REPORT_S = 60.0  # a file that cannot be opened for this long is reported
LOOK_AGAIN_S = 1.0  # how often a file that could not be looked at is looked at again


class DiskFullWait:
    """The database cannot grow: said once in the log, kept in the status, and
    cleared by the first write that succeeds after one that failed."""

    def __init__(self, database: str) -> None:
        self.database = database
        self._full: StoreFull | None = None
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        full = self._full
        return None if full is None else f"{full.message} {full.hint}"

    def saw(self, exc: BaseException) -> bool:
        """Take note of a write that failed; True when it failed for want of room."""
        if isinstance(exc, StoreFull):
            self.full(exc)
            return True
        return False

    def full(self, exc: StoreFull) -> None:
        with self._lock:
            first, self._full = self._full is None, exc
        if first:
            log.error("%s Analysis waits; images found meanwhile are kept and queued once "
                      "the database can be written. %s", exc.message, exc.hint)

    def writable(self) -> None:
        if self._full is None:
            return
        with self._lock:
            was, self._full = self._full, None
        if was is not None:
            log.warning("The database %s can be written again; carrying on.", self.database)


class WaitingJobs:
    """Queued images whose file cannot be reached now: id → (when to try again,
    path, why)."""

    def __init__(self) -> None:
        self._jobs: dict[int, tuple[float, str, str]] = {}
        self._lock = threading.Lock()

    def not_yet(self, now: float) -> set[int]:
        """The ids not to be tried again yet."""
        with self._lock:
            return {i for i, (when, _, _) in self._jobs.items() if when > now}

    def problem(self) -> str | None:
        with self._lock:
            waiting = [(path, why) for _, path, why in self._jobs.values()]
        if not waiting:
            return None
        what = listed([f"{readable(p)} ({why})" for p, why in waiting], limit=3)
        return (f"{len(waiting)} queued image(s) cannot be reached now: {what}. They are "
                "analysed once they can (a share back online, the folder back in place, "
                "the permission given).")

    def sort(self, batch: Sequence[Analysis], results: Sequence[Result], store: Store,
             away: Callable[[str], bool] = lambda path: False) -> list[Result]:
        """The results to commit. A failure whose file cannot be reached now for a
        reason that is not the image's own (or whose watched folder is ``away``) is
        not: its job stays pending, its attempt taken back, and waits
        UNREACHABLE_RETRY_S."""
        keep, wait = [], []
        for a, res in zip(batch, results, strict=True):
            why = None
            if res.error is not None:
                path = str(a.record.path)
                why = unreachable(path) or (
                    "its watched folder is away (a share offline?)" if away(path) else None)
            (wait if why else keep).append((a, res, why or ""))
        if wait:
            try:
                store.begin_attempt([a.record.id for a, _, _ in wait], undo=True)
            except AgentError as exc:
                log.warning("%s", exc.message)
        when = time.monotonic() + UNREACHABLE_RETRY_S
        with self._lock:
            new = [(a, why) for a, _, why in wait if a.record.id not in self._jobs]
            for a, _, why in wait:
                self._jobs[a.record.id] = (when, str(a.record.path), why)
            for a, _, _ in keep:
                self._jobs.pop(a.record.id, None)
        if new:
            a, why = new[0]
            log.warning("%d queued image(s) cannot be reached now, e.g. %s: %s. They wait "
                        "and are analysed once they can.", len(new),
                        readable(str(a.record.path)), why)
        return [res for _, res, _ in keep]


class HeldFiles:
    """Files found that could not be looked at (path → since when), and the files
    that have waited long, to report. Used by the ingest thread only; the report
    is read by ``status()``."""

    def __init__(self) -> None:
        self.unlooked: dict[str, float] = {}
        self._report: list[tuple[str, str]] = []
        self._told: set[str] = set()
        self._next = 0.0

    def __len__(self) -> int:
        return len(self.unlooked)

    def cannot_look(self, path: str, exc: OSError, now: float, candidate: bool) -> None:
        """``path`` could not be looked at: an image file (by its name) is looked at
        again later unless the error is the path's own (a loop of links …)."""
        if not candidate or not cannot_look(exc):
            log.warning("Cannot look at %s: %s", readable(path), exc.strerror or exc)
            return
        if path not in self.unlooked:
            log.warning("Cannot look at %s: %s; trying again.", readable(path),
                        exc.strerror or exc)
        self.unlooked.setdefault(path, now)

    def problem(self) -> str | None:
        held = list(self._report)
        if not held:
            return None
        what = listed([f"{readable(p)} ({why})" for p, why in held], limit=3)
        return (f"{len(held)} image file(s) cannot be opened: {what}. Check their "
                "permissions; they are analysed once they can be read.")

    def look_again(self, observe: Callable[[str, float], Any], tracker: SettleTracker,
                   report_after_s: float) -> None:
        """At most every LOOK_AGAIN_S: look again at the files that could not be
        looked at (``observe``), and report those waiting longer than
        ``report_after_s`` (here or in the settle tracker, not opening)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + LOOK_AGAIN_S
        for path in list(self.unlooked):
            observe(path, now)
        held: Iterable[str] = [p for p, since in self.unlooked.items()
                               if now - since > report_after_s]
        held = sorted(set(held) | set(tracker.held(now, report_after_s)))
        report = []
        for path in held:
            why = open_error(path) or "it cannot be looked at"
            report.append((path, why))
            if path not in self._told:
                self._told.add(path)
                if len(self._told) <= 20:
                    log.warning("Cannot open %s: %s. It waits until it can be read; check "
                                "its permissions.", readable(path), why)
        self._report = report
        self._told &= set(held)
