"""The tray agent with a stand-in engine controller and a recording notifier."""

from __future__ import annotations

import subprocess
import sys
import threading

from PySide6.QtCore import QObject, Signal

from nvir_agent.core.status import EngineStatus, FolderStatus
from nvir_agent.gui.engine_link import EngineBridge, EngineController, ResultsRelay, TraySink
from nvir_agent.gui.tray import TrayAgent
from nvir_agent.gui.tray_state import TraySnapshot, tooltip, tray_state
from nvir_agent.monitor.notify import Message, Notice
from nvir_agent.store import StoreReader

MENU = ["Open review window", "Pause watching", "Open acquisition folder", "Settings…",
        "Load plate map…", "Open log", "About NViR Agent", "Quit"]


class FakeController(QObject):
    snapshot = Signal(object)
    stopped = Signal()
    failed = Signal(str)
    damaged = Signal(object)

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.bridge = EngineBridge(self)
        self.paused = False
        self.calls: list[str] = []

    def start(self):
        self.calls.append("start")

    def pause(self):
        self.paused = True
        self.calls.append("pause")

    def resume(self):
        self.paused = False
        self.calls.append("resume")

    def poll(self):
        self.calls.append("poll")

    def stop(self):
        self.calls.append("stop")


class Toasts:
    def __init__(self) -> None:
        self.shown: list[tuple[str, str, str]] = []

    def show(self, title, body, severity):
        self.shown.append((title, body, severity))


def status(**kw) -> EngineStatus:
    base = dict(running=True, database="db", done=12, folders=[
        FolderStatus("/data/scope", "native", False, "watching")],
        model="DEMO model x (synthetic training data only; not for decisions)")
    base.update(kw)
    return EngineStatus(**base)


def agent(qtbot, config, tray_available=True):
    ctl, toasts = FakeController(config), Toasts()
    a = TrayAgent(config, controller=ctl, notifications=toasts, tray_available=tray_available)
    return a, ctl, toasts


def test_tray_state_tells_watching_analysing_alert_paused_and_error_apart(gui_store):
    _config, db = gui_store
    with StoreReader(db) as r:
        alerts = tuple(r.alerts())
    assert tray_state(TraySnapshot(status())) == "watching"
    assert tray_state(TraySnapshot(status(pending=5))) == "analysing"
    assert tray_state(TraySnapshot(status(), alerts)) == "alert-critical"
    warn_only = tuple(a for a in alerts if a.severity == "warning")
    assert tray_state(TraySnapshot(status(), warn_only)) == "alert-warning"
    assert tray_state(TraySnapshot(status(), paused=True)) == "paused"
    missing = status(folders=[FolderStatus("/data/x", "native", False, "missing")])
    assert tray_state(TraySnapshot(missing)) == "error"
    text = tooltip(TraySnapshot(status(pending=3), alerts, done_at_start=2))
    assert "demo model — synthetic training only" in text
    assert "Open alerts: 2 (1 critical)" in text and "scope" in text
    assert "Images analysed since" in text and ": 10" in text


def test_menu_has_the_actions_and_pause_toggles(qtbot, gui_store):
    config, _db = gui_store
    a, ctl, _ = agent(qtbot, config)
    texts = [x.text() for x in a.menu.actions() if not x.isSeparator()]
    assert texts == MENU
    a.actions["pause"].trigger()
    assert ctl.calls[-1] == "pause" and a.actions["pause"].text() == "Resume watching"
    a.actions["pause"].trigger()
    assert ctl.calls[-1] == "resume" and a.actions["pause"].text() == "Pause watching"
    a.actions["quit"].trigger()
    assert ctl.calls[-1] == "stop"
    assert "Python" in a.about_text()
    a.tray.hide()


def test_notifications_toast_and_a_critical_one_opens_the_review_on_its_alert(
        qtbot, gui_store, no_leaked_workers):
    config, db = gui_store
    with StoreReader(db) as r:
        crit = next(x for x in r.alerts() if x.severity == "critical")
    a, _ctl, toasts = agent(qtbot, config)
    n = Notice("NViR Agent critical: P1 Tox 10 µM", "lost", "critical", "P1", crit.id)
    a.controller.bridge.notified.emit(Message(n.title, n.body, "critical", (n,)))
    assert toasts.shown == [(n.title, "lost", "critical")]
    assert a.review is not None and a.review.isVisible()
    qtbot.addWidget(a.review)
    qtbot.waitUntil(lambda: a.review.alert_list.current() is not None
                    and a.review.alert_list.current().id == crit.id, timeout=15000)
    assert a.review.banner.isVisible()  # stays in the window until acknowledged
    a.review.close()
    a.tray.hide()


def test_without_a_system_tray_a_status_window_is_shown(qtbot, gui_store):
    config, db = gui_store
    a, _ctl, _ = agent(qtbot, config, tray_available=False)
    assert a.tray is None and a.window is not None and a.window.isVisible()
    qtbot.addWidget(a.window)
    with StoreReader(db) as r:
        alerts = tuple(r.alerts())
    a.show_snapshot(TraySnapshot(status(), alerts))
    assert a.state == "alert-critical"
    assert "Open alerts: 2" in a.window.state.text()


def test_engine_callbacks_from_engine_threads_arrive_on_the_ui_thread(qtbot):
    bridge = EngineBridge()
    seen: list[tuple[str, bool]] = []
    main = threading.get_ident()
    bridge.notified.connect(lambda m: seen.append((m.title, threading.get_ident() == main)))
    bridge.results.connect(lambda ids: seen.append((str(ids), threading.get_ident() == main)))
    sink, relay = TraySink(bridge), ResultsRelay(bridge)
    t = threading.Thread(target=lambda: (sink.send(Message("t", "b", "warning")),
                                         relay.on_results([1, 2])))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: len(seen) == 2, timeout=5000)
    assert seen == [("t", True), ("[1, 2]", True)]


def test_controller_starts_polls_and_stops_an_engine(qtbot, gui_store, no_leaked_workers):
    config, db = gui_store

    class Engine:
        def __init__(self) -> None:
            self.database = db
            self.config = config
            self.calls: list[str] = []

        def start(self):
            self.calls.append("start")

        def stop(self):
            self.calls.append("stop")

        def status(self):
            return status()

        @property
        def store(self):
            class S:
                def counts(self):
                    class C:
                        done = 3
                    return C()
            return S()

    engine = Engine()
    made: list[tuple] = []

    def factory(cfg, sinks, listeners):
        made.append((sinks, listeners))
        return engine

    ctl = EngineController(config, factory=factory, poll_ms=100000)
    snaps: list[TraySnapshot] = []
    ctl.snapshot.connect(snaps.append)
    ctl.start()
    qtbot.waitUntil(lambda: bool(snaps), timeout=10000)
    assert engine.calls == ["start"] and len(snaps[0].alerts) == 2
    assert isinstance(made[0][0][0], TraySink) and isinstance(made[0][1][0], ResultsRelay)
    with qtbot.waitSignal(ctl.stopped, timeout=10000):
        ctl.stop()
    assert engine.calls == ["start", "stop"]


def test_headless_paths_import_no_qt():
    code = ("import sys, nvir_agent.cli.main, nvir_agent.core.engine, nvir_agent.cli.review;"
            "assert 'PySide6' not in sys.modules, 'Qt imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
