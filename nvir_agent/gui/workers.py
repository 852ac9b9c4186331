"""Run blocking work off the UI thread and hand the result back as a signal.

Everything that touches a file, the database or OpenCV for more than a few
milliseconds goes through :func:`submit`: the function runs on the GUI's own
thread pool, and ``done``/``failed`` are emitted on the thread of the
receiver (queued connection). :func:`wait_for_workers` lets the app (and the
tests) finish the pool before it exits, so no thread outlives a window.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot

from nvir_agent.errors import AgentError

log = logging.getLogger(__name__)

_POOL: QThreadPool | None = None
_LIVE: set[Job] = set()  # jobs in flight (kept alive until they deliver)


def pool() -> QThreadPool:
    """The GUI's worker pool (2 threads: the UI must never wait on a long queue)."""
    global _POOL
    if _POOL is None:
        _POOL = QThreadPool()
        _POOL.setMaxThreadCount(2)
        _POOL.setExpiryTimeout(2000)
    return _POOL


def wait_for_workers(timeout_ms: int = 10000) -> bool:
    """Finish queued and running jobs; True when the pool is empty."""
    if _POOL is None:
        return True
    return _POOL.waitForDone(timeout_ms)


def jobs_in_flight() -> int:
    """Jobs submitted whose result has not reached the UI thread yet."""
    return len(_LIVE)


class Job(QObject):
    """Carries one job's outcome back to the thread that owns it (the UI thread).

    The worker emits ``_finished``; the queued connection to :meth:`_deliver`
    (a slot of this object, which lives on the UI thread) makes every callback
    run there, whatever the callback is (a lambda included)."""

    done = Signal(object)
    failed = Signal(str)
    _finished = Signal(bool, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._finished.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    @Slot(bool, object)
    def _deliver(self, ok: bool, value: object) -> None:
        try:
            if ok:
                self.done.emit(value)
            else:
                self.failed.emit(str(value))
        finally:
            _LIVE.discard(self)
            self.deleteLater()


class _Runnable(QRunnable):
    def __init__(self, fn: Callable[[], Any], job: Job) -> None:
        super().__init__()
        self.fn = fn
        self.job = job
        self.setAutoDelete(True)

    def run(self) -> None:
        try:
            result = self.fn()
        except AgentError as exc:
            self.job._finished.emit(False, str(exc))
            return
        except Exception as exc:  # a worker must report, never kill the app
            log.error("Background job failed:\n%s", traceback.format_exc())
            self.job._finished.emit(False, f"Internal error: {exc!r}")
            return
        self.job._finished.emit(True, result)


def _guarded(callback: Callable[[Any], None]) -> Callable[[Any], None]:
    """The callback, quiet when the widget it draws on was closed and deleted meanwhile.

    A method of a QObject is connected as it is (Qt disconnects it when the object
    goes); a lambda holding a widget is not disconnected, so it is wrapped."""
    if isinstance(getattr(callback, "__self__", None), QObject):
        return callback

    def call(value: Any) -> None:
        try:
            callback(value)
        except RuntimeError as exc:
            if "already deleted" not in str(exc):
                raise
            log.debug("A background result arrived after its window closed: %s", exc)

    return call


def submit(fn: Callable[[], Any], on_done: Callable[[Any], None] | None = None,
           on_failed: Callable[[str], None] | None = None, *,
           parent: QObject | None = None) -> Job:
    """Run ``fn()`` on the worker pool; ``on_done(result)`` / ``on_failed(message)``
    run on the UI thread (the thread calling submit).

    The job object has no Qt parent (``parent`` is accepted for readability and
    ignored): a window closed while its job runs must not delete the object the
    worker reports to. Callbacks bound to a deleted widget are disconnected by Qt."""
    del parent
    job = Job()
    if on_done is not None:
        job.done.connect(_guarded(on_done))
    if on_failed is not None:
        job.failed.connect(_guarded(on_failed))
    _LIVE.add(job)
    pool().start(_Runnable(fn, job))
    return job
