"""The engine: folder watcher → job rows → analysis stages → store → listeners.

Three threads of its own besides the watcher's:
- ``nvir-ingest`` takes candidate paths from the watcher's queue, skips files
  the store already has unchanged (and a second path to a file it already
  has: same device and inode), waits until each file has settled, parses
  its name and writes pending job rows (one transaction per tick);
- ``nvir-worker`` takes pending jobs in batches of ``model.batch_size``,
  counts an attempt on each and runs the stages that prepare them (read,
  segment, thumbnail: ``pipeline.workers`` spreads these over worker
  processes);
- ``nvir-score`` takes the prepared batches in order (a bounded queue: the
  preparing side waits when it runs ahead), runs the scoring stage and the
  ones after it (``pipeline.contract.split_stages``), commits the results in
  one transaction and tells the listeners. So the next batch is read and
  segmented while this one is scored, and the throughput approaches that of
  the slower side rather than the sum of both;
- the watcher's supervisor (see watch.py).

A job stays pending until its result is committed: an agent killed at any
moment analyses the batches in hand again at the next start (their attempts
counted), and never one that was committed.

No single path can stop a thread: an unexpected exception while handling one
is logged with the path and recorded against it as a failed image, and the
thread carries on. Only an ``AgentError`` (the database unusable, the model
cannot load) stops the engine. A store that cannot be written for a while
(``StoreUnavailable``: another program holds the SQLite file's write lock, or
``StoreFull``: the disk that holds it is full) is waited for: settled files
and analysed results are kept and written once it can be, and
``status().problems`` says so meanwhile. A file that cannot be looked at or
opened (no permission), or a queued image whose file cannot be reached when its
turn comes (its folder away), waits and is reported (see waits.py).

The engine never prints and imports no Qt, torch or OpenCV: it is given its
stages and listeners (``nvir_agent.app.build_engine`` wires the real ones).
The CLI and the UI read its ``status()`` snapshot or the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nvir_agent.config import Config
from nvir_agent.core.batches import BatchQueue, overlapped
from nvir_agent.core.status import HEARTBEAT_S, EngineStatus, read_status
from nvir_agent.core.waits import HELD_REPORT_S, DiskFullWait, HeldFiles, WaitingJobs
from nvir_agent.errors import AgentError, ConfigError, DataError, ImageError, StoreError
from nvir_agent.ingest.filenames import is_candidate, try_parse_path
from nvir_agent.ingest.pathnames import readable
from nvir_agent.ingest.watch import FolderWatcher, LinkPolicy, SettleTracker, iter_candidates
from nvir_agent.model.locate import describe_model_source
from nvir_agent.pipeline.contract import (
    Analysis,
    ImageRecord,
    ResultListener,
    Stage,
    run_stages,
    split_stages,
)
from nvir_agent.plate import ImageKey
from nvir_agent.store import (
    Counts,
    Store,
    StoreFull,
    StoreUnavailable,
    database_url,
    redact,
    store_options,
)

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineStatus", "read_status"]

MAX_ATTEMPTS = 3  # an image whose analysis was interrupted this often is failed
STORE_RETRY_S = 1.0  # pause between tries while the database cannot be written
PREPARED_BATCHES = 1  # batches prepared ahead of the one being scored


def _close_all(parts: Sequence[Any]) -> None:
    """Let listeners and stages that hold resources (the monitor's notifier thread,
    the image worker processes) finish."""
    for part in parts:
        close = getattr(part, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # closing one part must not stop the shutdown
                log.exception("Closing %r failed", part)


class Engine:
    """Coordinates watching, ingest, analysis and storage.

    ``start()`` opens the store, resumes pending jobs and starts watching;
    ``stop()`` ends all threads. ``process_paths()`` is the one-shot path
    used by `nvir-agent process` (no watching, no settle wait).

    ``stages`` run on every batch, in order; ``listeners`` are told after each
    commit; ``store`` is the open database to use (default: opened on first
    use). The engine closes the store and the listeners when it stops.
    """

    def __init__(
        self, config: Config, stages: Sequence[Stage] = (),
        listeners: Sequence[ResultListener] = (), store: Store | None = None,
    ) -> None:
        self.config = config
        self.database = database_url(config)
        self._stages = list(stages)
        self._prepare_stages, self._score_stages = split_stages(self._stages)
        self._listeners = list(listeners)
        self._store: Store | None = store
        self._watcher: FolderWatcher | None = None
        self._candidates: queue.Queue[str] = queue.Queue()
        self._tracker = SettleTracker(config.watch.settle_s)
        self._known: dict[str, tuple[int, float]] = {}
        self._inodes: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) → the path taken
        self._links = LinkPolicy([])
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._wake = threading.Event()
        self._busy = threading.Event()
        self._paused = threading.Event()
        self._threads: list[threading.Thread] = []
        self._batches: BatchQueue[list[Analysis]] = BatchQueue(PREPARED_BATCHES)
        self._in_flight: set[int] = set()  # ids begun and not yet committed and told
        self._in_flight_lock = threading.Lock()
        self._started_at: float | None = None
        self._error: AgentError | None = None
        self._settling = 0
        # settled and named, not yet queued: the store could not be written
        self._unqueued: list[tuple[str, int, float, ImageKey]] = []
        self._full = DiskFullWait(redact(self.database))  # the disk under it is full
        self._held = HeldFiles()  # files that cannot be looked at or opened
        self.held_report_s = HELD_REPORT_S
        self._waiting = WaitingJobs()  # queued images whose file cannot be reached now

    # --- lifecycle --------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.database, **store_options(self.config))
        return self._store

    @property
    def stages(self) -> list[Stage]:
        return self._stages

    @property
    def listeners(self) -> list[ResultListener]:
        return self._listeners

    @property
    def error(self) -> AgentError | None:
        """The fatal error that stopped the engine, if any."""
        return self._error

    def start(self) -> None:
        """Open the store, resume pending jobs and start watching."""
        self._refuse_second_agent()
        store = self.store
        self._started_at = time.time()
        for path in store.fail_exhausted(MAX_ATTEMPTS):
            log.error("Giving up on %s: the agent stopped %d times while analysing it.",
                      path, MAX_ATTEMPTS)
        counts = store.counts()
        if counts.pending:
            log.info("Resuming %d pending images", counts.pending)
        self._known = store.known_files()
        w = self.config.watch
        folders = [self.config.resolve(f) for f in w.folders]
        self._watcher = FolderWatcher(
            folders, self._candidates.put, patterns=w.patterns, ignore=w.ignore,
            observer=w.observer, poll_interval_s=w.poll_interval_s,
            rescan_interval_s=w.rescan_interval_s, recursive=w.recursive,
            follow_links_outside=w.follow_links_outside,
        )
        self._links = self._watcher.links
        self._threads = [
            threading.Thread(target=self._guard(self._ingest_loop), name="nvir-ingest",
                             daemon=True),
            threading.Thread(target=self._guard(self._worker_loop), name="nvir-worker",
                             daemon=True),
            threading.Thread(target=self._guard(self._score_loop), name="nvir-score",
                             daemon=True),
        ]
        for t in self._threads:
            t.start()
        self._watcher.start()
        if not folders:
            log.warning("No folders to watch: set watch.folders in agent.toml.")
        log.info("Engine started; database %s", redact(self.database))

    def _refuse_second_agent(self) -> None:
        """Two agents on one database would analyse every image twice."""
        beat = self.store.heartbeat()
        if not beat or not beat.snapshot.get("running"):
            return
        pid = beat.pid
        if pid == os.getpid() or time.time() - (beat.heartbeat_at or 0) > 3 * HEARTBEAT_S:
            return
        if os.name == "posix":
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return  # it died without stopping (killed, power loss)
            except PermissionError:
                pass  # alive, another user's process
        raise ConfigError(
            f"Another NViR Agent (process {pid}) is already running as station "
            f"{self.store.station} on the database {redact(self.database)}.",
            "Stop it first, or give this one its own storage.database (or its own "
            "storage.station on a shared server) in agent.toml.",
        )

    def request_stop(self) -> None:
        """Ask the engine to stop (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching, finish the batch in hand, and close the store."""
        self.request_stop()
        if self._watcher is not None:
            self._watcher.stop()
        for t in self._threads:
            t.join(timeout)
        self._give_back(self._batches.abandon())
        _close_all(self._stages)
        _close_all(self._listeners)
        if self._store is not None:
            if self._started_at is not None:
                try:
                    self._heartbeat(running=False)
                except StoreError as exc:
                    log.warning("%s", exc.message)
            self._store.close()
            self._store = None
        self._stopped.set()
        log.info("Engine stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop was requested (or ``timeout``); True when stopping."""
        return self._stop.wait(timeout)

    def _guard(self, loop: Any) -> Any:
        def run() -> None:
            try:
                loop()
            except AgentError as exc:
                log.error("%s", exc)
                self._error = exc
                self.request_stop()
            except Exception as exc:  # a bug must stop the agent loudly, not silently
                log.exception("Engine thread failed")
                self._error = AgentError(f"Internal error: {exc!r}.",
                                         "Run with --debug and report the log.")
                self.request_stop()

        return run

    # --- status -----------------------------------------------------------------------

    def status(self) -> EngineStatus:
        counts = self._store.counts() if self._store is not None else Counts()
        running = self._started_at is not None and not self._stop.is_set()
        return EngineStatus(
            running=running, database=redact(self.database), seen=counts.seen,
            pending=counts.pending, done=counts.done, failed=counts.failed,
            settling=self._settling,
            folders=self._watcher.status() if self._watcher else [],
            started_at=self._started_at, heartbeat_at=time.time(), pid=os.getpid(),
            error=self._error.message if self._error else None,
            model=describe_model_source(self.config), paused=self.paused,
            station=self._store.station if self._store is not None else "",
            spooling=bool(getattr(self._store, "spooling", False)),
            problems=self.problems(),
        )

    def problems(self) -> list[str]:
        """What keeps the running agent from working fully, in words: the database
        locked or its disk full, a model file that cannot be used (the parts that
        know have a ``problem``), a folder that cannot be read, images that wait."""
        found = []
        for part in (self._store, *self._stages):
            problem = getattr(part, "problem", None)
            if problem:
                found.append(str(problem))
        folders = [f"watched folder {f.folder}: {f.detail}"
                   for f in (self._watcher.status() if self._watcher else [])
                   if f.health == "unreadable"]
        return found + [p for p in (self._full.problem(), *folders, self._waiting.problem(),
                                    self._held.problem()) if p]

    # --- pause ------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def pause(self) -> None:
        """Stop analysing after the batch in hand (e.g. while the microscope needs the
        machine). New files are still noticed and recorded as pending jobs, so nothing
        is lost; :meth:`resume` analyses them."""
        if not self._paused.is_set():
            self._paused.set()
            log.info("Analysis paused by the operator; new images are recorded and wait")

    def resume(self) -> None:
        if self._paused.is_set():
            self._paused.clear()
            self._wake.set()
            log.info("Analysis resumed")

    def idle(self) -> bool:
        """Nothing queued, settling, pending or in analysis."""
        return (self._candidates.empty() and self._settling == 0 and not self._busy.is_set()
                and not self._in_flight and self.store.counts().pending == 0)

    def wait_idle(self, timeout: float, quiet_s: float = 0.3) -> bool:
        """Wait until the engine has been idle for ``quiet_s`` (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while time.monotonic() < deadline:
            if self.idle():
                since = since or time.monotonic()
                if time.monotonic() - since >= quiet_s:
                    return True
            else:
                since = None
            time.sleep(0.05)
        return False

    def _heartbeat(self, *, running: bool = True) -> None:
        snap = self.status().as_dict()
        snap["running"] = running
        try:
            self.store.write_heartbeat(snap, started_at=self._started_at or time.time())
        except StoreFull as exc:  # said in the status; the next beat tries again
            self._full.full(exc)

    # --- ingest -----------------------------------------------------------------------

    def _ingest_loop(self) -> None:
        tick = min(max(self.config.watch.settle_s / 4, 0.05), 0.5)
        next_beat = 0.0
        while not self._stop.is_set():
            try:
                first = self._candidates.get(timeout=tick)
            except queue.Empty:
                first = None
            now = time.monotonic()
            if first is not None:
                self._observe_guarded(first, now)
                for _ in range(10000):
                    try:
                        self._observe_guarded(self._candidates.get_nowait(), now)
                    except queue.Empty:
                        break
            settled = self._tracker.poll(time.monotonic())
            if settled or self._unqueued:
                self._add_jobs(settled)
            self._held.look_again(self._observe_guarded, self._tracker, self.held_report_s)
            self._settling = len(self._tracker) + len(self._unqueued) + len(self._held)
            if time.monotonic() >= next_beat:
                # a locked store said so in the log; the status shows it
                with contextlib.suppress(StoreUnavailable):
                    self._heartbeat()
                next_beat = time.monotonic() + HEARTBEAT_S

    def _observe_guarded(self, path: str, now: float) -> None:
        try:
            self._observe(path, now)
        except AgentError:
            raise
        except Exception as exc:  # one odd path must not stop the ingest
            self._record_failure(path, None, f"Internal error while looking at the file: {exc!r}")

    def _observe(self, path: str, now: float) -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._tracker.forget(path)
            self._held.unlooked.pop(path, None)
            return
        except OSError as exc:  # no permission, a share away: looked at again later
            w = self.config.watch
            self._held.cannot_look(path, exc, now, is_candidate(path, w.patterns, w.ignore))
            return
        self._held.unlooked.pop(path, None)
        if stat.S_ISDIR(st.st_mode):
            if not self._links.admits(path):
                return
            w = self.config.watch
            for p in iter_candidates(path, w.patterns, w.ignore, recursive=w.recursive,
                                     links=self._links):
                self._observe_guarded(p, now)
            return
        known = self._known.get(path) == (st.st_size, st.st_mtime)
        if not known and not self._links.admits(path):
            log.debug("Not following the link to %s (see watch.follow_links_outside)",
                      readable(path))
            return
        if not self._claim(path, st) or known:
            return
        self._tracker.observe(path, st.st_size, st.st_mtime, now)
        self._settling = len(self._tracker)

    def _claim(self, path: str, st: os.stat_result) -> bool:
        """True unless the same file (device, inode) is already taken under another
        path that still leads to it (a hard link, or a link the policy follows)."""
        if not st.st_ino:
            return True  # a file system without inode numbers
        key = (st.st_dev, st.st_ino)
        other = self._inodes.get(key)
        if other is not None and other != path:
            try:
                o = os.stat(other)
                if (o.st_dev, o.st_ino) == key:
                    log.debug("%s is the same file as %s; analysed once", readable(path),
                              readable(other))
                    return False
            except OSError:
                pass  # the other path is gone: its inode number was reused
        self._inodes[key] = path
        return True

    def _record_failure(self, path: str, st: tuple[int, float] | None, error: str) -> None:
        """Log an unexpected error with the path, and record the path as failed."""
        log.exception("Handling %s failed; the agent carries on", readable(path))
        if st is None:
            try:
                s = os.stat(path)
                st = (s.st_size, s.st_mtime)
            except (OSError, ValueError):
                st = None
        self._tracker.forget(path)
        try:
            self.store.record_failure(path, *(st or (None, None)), error)
        except StoreUnavailable as exc:
            self._full.saw(exc)
            log.warning("Could not record the failure of %s: %s", readable(path), exc.message)
            return
        except AgentError:
            raise
        except Exception:
            log.exception("Recording the failure of %s failed", readable(path))
            return
        if st is not None:
            self._known[path] = st  # not again until the file changes

    def _add_jobs(self, files: Iterable[tuple[str, int, float]]) -> list[int]:
        w = self.config.watch
        jobs, self._unqueued = self._unqueued, []
        for path, size, mtime in files:
            try:
                key = try_parse_path(path, w.naming, w.regex or None)
            except Exception as exc:
                self._record_failure(path, (size, mtime),
                                     f"Internal error while reading the file name: {exc!r}")
                continue
            if key.vendor is None:
                log.warning("%s: the file name gives no plate/well (watch.naming = %r); "
                            "analysing it anyway.", readable(path), w.naming)
            jobs.append((path, size, mtime, key))
        jobs = list({job[0]: job for job in jobs}.values())  # a path once: its newest state
        try:
            ids = self.store.add_jobs(jobs)
        except StoreUnavailable as exc:
            self._full.saw(exc)
            self._unqueued = jobs  # the database is locked or full: queued on a later tick
            return []
        except AgentError:
            raise
        except Exception:  # one job the store cannot take: queue them one by one
            log.exception("Queueing %d images failed; queueing them one by one", len(jobs))
            ids = []
            for path, size, mtime, key in jobs:
                try:
                    ids += self.store.add_jobs([(path, size, mtime, key)])
                except AgentError:
                    raise
                except Exception as exc:
                    self._record_failure(path, (size, mtime),
                                         f"Internal error while queueing the image: {exc!r}")
        if jobs:
            self._full.writable()
        for path, size, mtime, _ in jobs:
            self._known[path] = (size, mtime)
        if ids:
            log.debug("Queued %d images", len(ids))
            self._wake.set()
        return ids

    # --- analysis ---------------------------------------------------------------------

    def _worker_loop(self) -> None:
        """Take pending jobs, begin their attempt, prepare them, hand them to scoring."""
        try:
            while not self._stop.is_set():
                if self._paused.is_set():
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                self._busy.set()
                try:
                    records = self._next_pending(self._prepared_batch())
                    batch = self._begin(records) if records else []
                except StoreUnavailable as exc:  # nothing in hand yet: again in a while
                    self._full.saw(exc)
                    self._busy.clear()
                    self._stop.wait(STORE_RETRY_S)
                    continue
                if records:
                    self._prepare(batch)
                    if not self._batches.put(batch):  # the scoring thread has stopped
                        self._give_back([batch])
                    self._busy.clear()
                    continue
                self._busy.clear()
                if not self._in_flight:
                    self._tell_idle()
                self._wake.wait(0.5)
                self._wake.clear()
        finally:
            self._busy.clear()
            self._batches.close()

    def _score_loop(self) -> None:
        """Score, commit and tell each prepared batch, in order, until the
        preparing thread has stopped and nothing is left."""
        try:
            while (batch := self._batches.get()) is not None:
                self._finish_guarded(batch)
        finally:
            self._give_back(self._batches.abandon())

    def _prepared_batch(self) -> int:
        """Images prepared, scored and committed together: the model's batch size, or
        twice the image worker processes where that is more, so that a machine with
        many cores keeps every worker busy (the batch waits for its slowest image)."""
        workers = max((getattr(s, "processes", 0) for s in self._prepare_stages), default=0)
        return max(self.config.model.batch_size, 2 * workers)

    def _next_pending(self, limit: int) -> list[ImageRecord]:
        """The oldest pending jobs that are not already being analysed, nor waiting
        for their file to be reachable again."""
        with self._in_flight_lock:
            busy = set(self._in_flight)
        busy |= self._waiting.not_yet(time.monotonic())
        records = self.store.pending(limit + len(busy))
        return [r for r in records if r.id not in busy][:limit]

    def _begin(self, records: Sequence[ImageRecord]) -> list[Analysis]:
        """Count one attempt on each job before any work (a kill from now on leaves
        it pending, to be analysed again, and counts towards MAX_ATTEMPTS)."""
        ids = [r.id for r in records]
        with self._in_flight_lock:
            self._in_flight.update(ids)
        try:
            self.store.begin_attempt(ids)
        except BaseException:
            self._done_with(ids)
            raise
        return [Analysis(record=r) for r in records]

    def _done_with(self, ids: Iterable[int]) -> None:
        with self._in_flight_lock:
            self._in_flight.difference_update(ids)

    def _give_back(self, batches: Iterable[list[Analysis]]) -> None:
        """Batches begun but never finished (the engine stopped on a fatal error):
        take their attempt back; they stay pending for the next start."""
        for batch in batches:
            ids = [a.record.id for a in batch]
            try:
                self.store.begin_attempt(ids, undo=True)
            except AgentError as exc:
                log.warning("%s", exc.message)
            finally:
                self._done_with(ids)

    def _tell_idle(self) -> None:
        """Let stages and listeners with time-driven work (``on_idle``: rules that depend
        on time alone, a model file to look at again) run while nothing waits."""
        for listener in (*self._stages, *self.listeners):
            on_idle = getattr(listener, "on_idle", None)
            if not callable(on_idle):
                continue
            try:
                on_idle()
            except StoreUnavailable as exc:
                self._full.saw(exc)
                log.info("Result listener %r waits for the store: %s", listener, exc.message)
            except AgentError:
                raise
            except Exception:  # a listener must never stop the engine
                log.exception("Result listener %r failed while idle", listener)

    def _run_part(self, stages: list[Stage], batch: list[Analysis]) -> None:
        """Run some of the stages; a per-image error fails that image, a fatal one
        takes the batch's attempt back and propagates."""
        try:
            run_stages(stages, batch)
        except ImageError as exc:  # a stage that should have failed one image only
            for a in batch:
                if not a.failed:
                    a.fail(exc)
        except AgentError:  # fatal (the model cannot load …): not this batch's fault
            self._give_back([batch])
            raise
        except Exception as exc:
            log.exception("Analysis stage failed on a batch of %d images", len(batch))
            for a in batch:
                if not a.failed:
                    a.fail(f"Internal error during analysis: {exc!r}")

    def _prepare(self, batch: list[Analysis]) -> None:
        self._run_part(self._prepare_stages, batch)

    def _finish(self, batch: list[Analysis]) -> list[int]:
        """Score, commit in one transaction, log and tell the listeners."""
        self._run_part(self._score_stages, batch)
        results = [a.result() for a in batch]
        for a, res in zip(batch, results, strict=True):
            if res.error is not None and not a.failed:
                a.fail(res.error)
        if self._started_at is not None:  # a one-shot run says what happened
            away = self._watcher.away if self._watcher is not None else lambda _: False
            results = self._waiting.sort(batch, results, self.store, away)
        written = self._commit_patiently(results)
        if written is None:  # stopped while the database was locked or full
            self._give_back([batch])
            return []
        committed = {res.record.id for res in results}
        for a in batch:
            if a.record.id in committed:
                self._log_result(a)
        if written:
            for listener in self.listeners:
                try:
                    listener.on_results(written)
                except Exception:  # a listener must never stop the engine
                    log.exception("Result listener %r failed", listener)
        return written

    def _commit_patiently(self, results: list[Any]) -> list[int] | None:
        """Commit a batch's results; while another program holds the database locked,
        or its disk is full, keep them and try again (they are not analysed twice)
        until the commit goes through, or the engine stops (None: the jobs stay
        pending)."""
        full = False
        while True:
            try:
                written = self.store.commit_results(results)
            except StoreUnavailable as exc:
                if self._started_at is None:  # one-shot use: say so rather than wait
                    raise
                full = self._full.saw(exc) or full
                if self._stop.wait(STORE_RETRY_S):
                    return None
                continue
            if full:  # only a write that failed tells that there is room again
                self._full.writable()
            return written

    def _finish_guarded(self, batch: list[Analysis]) -> None:
        """``_finish``, but an unexpected error (in recording the results, say) is
        narrowed down to the image that causes it, which is failed."""
        ids = [a.record.id for a in batch]
        try:
            self._finish(batch)
        except AgentError:
            raise
        except Exception:
            log.exception("Recording a batch of %d images failed; analysing them one "
                          "by one", len(batch))
            for a in batch:
                self._analyse_guarded([a.record])
        finally:
            self._done_with(ids)

    def _analyse_guarded(self, records: Sequence[ImageRecord]) -> None:
        """``analyse``, but an unexpected error (in recording the results, say)
        is narrowed down to the image that causes it, which is failed."""
        try:
            self.analyse(records)
        except AgentError:
            raise
        except Exception as exc:
            if len(records) > 1:
                log.exception("Recording a batch of %d images failed; analysing them one "
                              "by one", len(records))
                for r in records:
                    self._analyse_guarded([r])
                return
            log.exception("Analysing %s failed; the agent carries on",
                          readable(str(records[0].path)))
            self.store.fail_jobs([records[0].id],
                                 f"Internal error while recording the result: {exc!r}")

    def analyse(self, records: Sequence[ImageRecord]) -> list[int]:
        """Run the stages on one batch and commit it; returns the ids committed.

        A fatal error (the model cannot load, the database fails) propagates
        and leaves the jobs pending for the next start.
        """
        batch = self._begin(records)
        try:
            self._prepare(batch)
            return self._finish(batch)
        finally:
            self._done_with(r.id for r in records)

    def _analyse_overlapped(self, chunks: Sequence[Sequence[int]]) -> None:
        """Analyse batches of job ids as the watching engine does: this thread
        prepares the next batch while a scoring thread finishes the one before.
        A fatal error on either side stops both and propagates."""
        if len(chunks) < 2 or not self._score_stages:
            for ids in chunks:
                self.analyse(self.store.records(ids))
            return

        def prepare(ids: Sequence[int]) -> list[Analysis]:
            batch = self._begin(self.store.records(ids))
            self._prepare(batch)
            return batch

        def finish(batch: list[Analysis]) -> None:
            try:
                self._finish(batch)
            finally:
                self._done_with(a.record.id for a in batch)

        overlapped(chunks, prepare, finish, self._give_back, PREPARED_BATCHES)

    @staticmethod
    def _log_result(a: Analysis) -> None:
        k = a.record.key
        where = " ".join(
            s for s in (k.plate, k.well, f"t{k.timepoint}" if k.timepoint is not None else "")
            if s
        )
        if a.failed:
            log.warning("Failed %s [%s]: %s", readable(str(a.record.path)), where or "no key",
                        readable(a.error or ""))
        else:
            extra = f" viability {a.viability:.2f}" if a.viability is not None else ""
            log.info("Done %s [%s]%s", readable(str(a.record.path)), where or "no key", extra)

    # --- one-shot ---------------------------------------------------------------------

    def process_paths(
        self, paths: Iterable[str | os.PathLike[str]], *, force: bool = False
    ) -> list[dict[str, Any]]:
        """Analyse the given files (and image files under given folders) now.

        Files already analysed with the same size and mtime are not analysed
        again unless ``force``. Returns each file's stored row (see
        Store.export_rows), in the order given.
        """
        w = self.config.watch
        files: list[str] = []
        for p in paths:
            p = Path(p)
            if p.is_dir():
                files.extend(iter_candidates(p, w.patterns, w.ignore, recursive=w.recursive))
            elif p.is_file():
                files.append(str(p))
            else:
                raise DataError(f"{p} is neither a file nor a folder.",
                                "Check the path; give image files or folders of images.")
        files = list(dict.fromkeys(os.path.abspath(f) for f in files))
        jobs = []
        for f in files:
            try:
                st = os.stat(f)
            except OSError as exc:
                raise DataError(f"Cannot read {f}: {exc.strerror or exc}.",
                                "Check that the file exists and that you may read it.") from exc
            jobs.append((f, st.st_size, st.st_mtime, try_parse_path(f, w.naming, w.regex or None)))
        ids = self.store.add_jobs(jobs, force=force)
        size = self._prepared_batch()
        self._analyse_overlapped([ids[i:i + size] for i in range(0, len(ids), size)])
        rows = {r["path"]: r for r in self.store.export_rows(files)}
        return [rows[readable(f)] for f in files if readable(f) in rows]

    def close(self) -> None:
        """Close the store after one-shot use (``stop`` does it after ``start``)."""
        _close_all(self._stages)
        _close_all(self._listeners)
        if self._store is not None:
            self._store.close()
            self._store = None
