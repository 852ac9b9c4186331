"""The GUI's link to the engine: builds it, relays its callbacks as queued Qt
signals, polls its status off the UI thread, and pauses, resumes and stops it.

Engine threads never touch a widget: the notifier's tray sink and the result
listener only emit signals of :class:`EngineBridge`, an object that lives on
the UI thread, so Qt queues every delivery to the UI thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from nvir_agent.app import build_engine
from nvir_agent.config import Config
from nvir_agent.core.engine import Engine
from nvir_agent.gui import workers
from nvir_agent.gui.operator_actions import OperatorState
from nvir_agent.gui.tray_state import TraySnapshot
from nvir_agent.monitor.notify import Message
from nvir_agent.store import DamagedDatabase, StoreReader

log = logging.getLogger(__name__)

POLL_MS = 3000  # status poll; a store count and an alert query, off the UI thread


def build_gui_engine(config: Config, sinks: Sequence[Any] = (),
                     listeners: Sequence[Any] = (), **options: Any) -> Engine:
    """The engine as every front-end builds it (``app.build_engine``), with the
    tray's sink and listeners."""
    return build_engine(config, sinks=list(sinks), listeners=list(listeners), **options)


class EngineBridge(QObject):
    """Re-emits engine-thread callbacks as signals (queued to the UI thread)."""

    notified = Signal(object)  # Message
    results = Signal(object)  # list of image ids just committed


class TraySink:
    """The notifier's tray channel: hands each message to the bridge."""

    name = "tray"

    def __init__(self, bridge: EngineBridge) -> None:
        self.bridge = bridge

    def send(self, message: Message) -> None:
        self.bridge.notified.emit(message)


class ResultsRelay:
    """A result listener that tells the UI a batch was committed."""

    def __init__(self, bridge: EngineBridge) -> None:
        self.bridge = bridge

    def on_results(self, image_ids: Sequence[int]) -> None:
        self.bridge.results.emit(list(image_ids))


class EngineController(QObject):
    """Owns the engine for the tray: start, pause/resume, stop, and status polls."""

    snapshot = Signal(object)  # TraySnapshot
    stopped = Signal()
    failed = Signal(str)
    damaged = Signal(object)  # DamagedDatabase: the database needs the user's consent

    def __init__(self, config: Config, *, factory: Callable[..., Any] = build_gui_engine,
                 poll_ms: int = POLL_MS, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self.bridge = EngineBridge(self)
        self._factory = factory
        self.engine: Any = None
        self.paused = False
        self.replace_damaged = False  # the user consented to a new database
        self._done_at_start = 0
        self._polling = False
        self._stopping = False
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)
        self.bridge.results.connect(self._on_results)

    # ----------------------------------------------------------------- lifecycle

    def _new_engine(self) -> Any:
        options = {"replace_damaged_database": True} if self.replace_damaged else {}
        return self._factory(self.config, sinks=[TraySink(self.bridge)],
                             listeners=[ResultsRelay(self.bridge)], **options)

    def start(self) -> None:
        """Build and start the engine (blocking: store open, model load) in a worker."""
        self._stopping = False

        def work() -> Any:
            try:
                engine = self._new_engine()
            except DamagedDatabase as exc:  # a question for the user, not a failure yet
                return exc
            try:
                engine.start()
            except BaseException:
                engine.stop()
                raise
            return engine

        workers.submit(work, self._started, self.failed.emit, parent=self)

    def _started(self, engine: Any) -> None:
        if isinstance(engine, DamagedDatabase):
            self.damaged.emit(engine)
            return
        self.engine = engine
        self._done_at_start = engine.store.counts().done
        self._timer.start()
        self.poll()

    def pause(self) -> None:
        """Pause analysis after the batch in hand (``Engine.pause``): new images are
        still noticed and recorded as pending jobs, so nothing is lost."""
        if self.engine is None or self.paused:
            return
        self.paused = True
        self.engine.pause()
        self.poll()

    def resume(self) -> None:
        if self.engine is None or not self.paused:
            return
        self.paused = False
        self.engine.resume()
        self.poll()

    def restart(self) -> None:
        """Apply a changed config: stop this engine and start one on the new config."""
        engine, self.engine = self.engine, None
        self._timer.stop()

        def work() -> None:
            if engine is not None:
                engine.stop()

        workers.submit(work, lambda _r: self.start(), self.failed.emit, parent=self)

    def stop(self) -> None:
        """Stop the engine in a worker (the batch in hand is committed); emits stopped."""
        self._stopping = True
        self._timer.stop()
        engine, self.engine = self.engine, None
        if engine is None:
            self.stopped.emit()
            return
        workers.submit(engine.stop, lambda _r: self.stopped.emit(),
                       lambda m: (self.failed.emit(m), self.stopped.emit()), parent=self)

    # ----------------------------------------------------------------- status

    def _on_results(self, _ids: object) -> None:
        self.poll()

    def poll(self) -> None:
        """Ask for a snapshot in a worker (at most one in flight)."""
        engine = self.engine
        if engine is None or self._polling or self._stopping:
            return
        self._polling = True
        paused, done0 = self.paused, self._done_at_start

        def work() -> TraySnapshot:
            status = engine.status()
            with StoreReader(engine.database) as reader:
                alerts = tuple(reader.alerts())
                state = OperatorState(reader.shelves(active_at=time.time()))
                midnight = time.mktime(time.localtime()[:3] + (0, 0, 0, 0, 0, -1))
                today = reader.count_images(state="done", since=midnight)
            hidden = frozenset(a.id for a in alerts
                               if a.state == "open" and not state.needs_operator(a))
            return TraySnapshot(status, alerts, done0, paused, hidden=hidden,
                                images_today=today)

        def done(snap: TraySnapshot) -> None:
            self._polling = False
            self.snapshot.emit(snap)

        def failed(message: str) -> None:
            self._polling = False
            log.warning("Status poll failed: %s", message)

        workers.submit(work, done, failed, parent=self)
