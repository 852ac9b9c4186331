"""The tray agent: starts the engine, shows its state in the tray icon and
tooltip, notifies new and escalated alerts, and opens the review window.

Without a system tray (some Linux desktops) it says so once and shows a small
status window instead; everything else works the same.
"""

from __future__ import annotations

import logging
import platform
import shutil
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Protocol

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import QObject, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QLabel,
    QMenu,
    QMessageBox,
    QPushButton,
    QSystemTrayIcon,
    QVBoxLayout,
    QWidget,
)

from nvir_agent import __version__, paths
from nvir_agent.config import Config
from nvir_agent.gui.engine_link import EngineController
from nvir_agent.gui.icons import icon
from nvir_agent.gui.tray_state import TraySnapshot, tooltip, tray_state
from nvir_agent.monitor.notify import Message
from nvir_agent.store import database_url, store_exists

log = logging.getLogger(__name__)


class Notifications(Protocol):
    """Where toasts go (the tray icon, or a test double whose calls are checked)."""

    def show(self, title: str, body: str, severity: str) -> None: ...


class TrayToasts:
    def __init__(self, tray: QSystemTrayIcon | None) -> None:
        self.tray = tray

    def show(self, title: str, body: str, severity: str) -> None:
        if self.tray is not None:
            kind = (QSystemTrayIcon.MessageIcon.Critical if severity == "critical"
                    else QSystemTrayIcon.MessageIcon.Warning)
            self.tray.showMessage(title, body, kind, 15000)


class StatusWindow(QWidget):
    """The small window shown where there is no system tray."""

    def __init__(self, menu: QMenu) -> None:
        super().__init__()
        self.setWindowTitle("NViR Agent")
        self.state = QLabel("Starting …")
        self.state.setWordWrap(True)
        button = QPushButton("Menu")
        button.setMenu(menu)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("No system tray on this desktop: the agent runs from this "
                                "window. Closing it keeps the agent running; use Quit."))
        layout.addWidget(self.state)
        layout.addWidget(button)
        self.setMinimumWidth(380)

    def show_state(self, state: str, text: str) -> None:
        self.setWindowIcon(icon(state))
        self.state.setText(text)


class TrayAgent(QObject):
    """Tray icon, menu, notifications; owns the engine controller and the windows."""

    quitting = Signal()

    def __init__(self, config: Config, *, controller: EngineController | None = None,
                 notifications: Notifications | None = None,
                 tray_available: bool | None = None) -> None:
        super().__init__()
        self.config = config
        self.database = database_url(config)  # a SQLite file or a server
        self.controller = controller or EngineController(config, parent=self)
        self.error: str | None = None
        self.state = "watching"
        self.snapshot: TraySnapshot | None = None
        self.review: Any = None
        self._last_clicked: int | None = None
        self._said_no_tray = False
        self.menu = self._menu()
        available = (QSystemTrayIcon.isSystemTrayAvailable() if tray_available is None
                     else tray_available)
        self.tray: QSystemTrayIcon | None = None
        self.window: StatusWindow | None = None
        if available:
            self.tray = QSystemTrayIcon(icon("watching"), self)
            self.tray.setContextMenu(self.menu)
            self.tray.activated.connect(self._activated)
            self.tray.messageClicked.connect(self._message_clicked)
            self.tray.setToolTip("NViR Agent — starting")
            self.tray.show()
        else:
            log.warning("No system tray on this desktop: showing a status window instead.")
            self.window = StatusWindow(self.menu)
            self.window.show()
        self.notifications: Notifications = notifications or TrayToasts(self.tray)
        self.controller.snapshot.connect(self.show_snapshot)
        self.controller.bridge.notified.connect(self.notify)
        self.controller.failed.connect(self._engine_failed)
        self.controller.damaged.connect(self._ask_to_replace_database)
        self.controller.stopped.connect(self._stopped)

    # ----------------------------------------------------------------- menu

    def _menu(self) -> QMenu:
        menu = QMenu()
        self.actions: dict[str, QAction] = {}

        def add(key: str, text: str, slot: Any) -> None:
            a = QAction(text, menu)
            a.triggered.connect(slot)
            menu.addAction(a)
            self.actions[key] = a

        add("review", "Open review window", lambda: self.open_review())
        add("pause", "Pause watching", self.toggle_pause)
        menu.addSeparator()
        add("folder", "Open acquisition folder", self.open_folder)
        add("settings", "Settings…", self.open_settings)
        add("platemap", "Load plate map…", self.load_plate_map)
        add("log", "Open log", self.open_log)
        add("about", "About NViR Agent", self.about)
        menu.addSeparator()
        add("quit", "Quit", self.quit)
        return menu

    def start(self) -> None:
        self.controller.start()

    def toggle_pause(self) -> None:
        if self.controller.paused:
            self.controller.resume()
            self.actions["pause"].setText("Pause watching")
        else:
            self.controller.pause()
            self.actions["pause"].setText("Resume watching")

    def open_review(self, alert_id: int | None = None) -> Any:
        from nvir_agent.gui.review.window import ReviewWindow

        if not store_exists(self.database):
            self._say("No data yet", "The agent has not analysed any image yet.")
            return None
        if self.review is None:
            self.review = ReviewWindow(self.database, self.config, alert_id=alert_id)
            self.review.settings_requested.connect(self.open_settings)
            self.review.alerts_changed.connect(self.controller.poll)
            self.controller.bridge.results.connect(lambda _ids: self.review and
                                                   self.review.refresh())
        elif alert_id is not None:
            self.review.show_alert(alert_id)
        self.review.show()
        self.review.raise_()
        self.review.activateWindow()
        return self.review

    def open_folder(self) -> None:
        folders = [self.config.resolve(f) for f in self.config.watch.folders]
        if not folders:
            self._say("No folder", "No acquisition folder is watched yet: see Settings….")
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folders[0])))

    def open_settings(self) -> None:
        from nvir_agent.gui.settings_dialog import open_settings

        def restart(new: Config) -> None:
            self.config = self.controller.config = new
            self.controller.restart()

        open_settings(self.config, None, restart=restart)

    def load_plate_map(self) -> None:
        """Copy a plate map into the plate-map folder (the monitor reads it on change)."""
        from nvir_agent.errors import AgentError
        from nvir_agent.monitor.platemap import read_plate_maps

        f, _ = QFileDialog.getOpenFileName(None, "Load a plate map", "",
                                           "Plate maps (*.csv *.toml)")
        if not f:
            return
        try:
            maps = read_plate_maps(f, self.config.plates.format)
        except AgentError as exc:
            self._say("Plate map not loaded", str(exc))
            return
        target = self.config.resolve(self.config.plates.maps) if self.config.plates.maps \
            else None
        if target is None or not target.is_dir():
            self._say("Plate map checked", f"{Path(f).name} is valid ({len(maps)} plate(s)). "
                      "Set a plate-map folder (plates.maps in agent.toml) so the agent "
                      "can use it.")
            return
        shutil.copy2(f, target / Path(f).name)
        self._say("Plate map loaded", f"{Path(f).name} ({len(maps)} plate(s)) copied to "
                  f"{target}; the agent re-evaluates those plates with it.")

    def open_log(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(paths.user_log_dir() /
                                                        "nvir-agent.log")))

    def about_text(self) -> str:
        def version(name: str) -> str:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                return "not installed"

        st = self.snapshot.status.model if self.snapshot else "(starting)"
        return (f"NViR Agent {__version__}\nPython {platform.python_version()}, "
                f"PySide6 {pyside_version}, torch {version('torch')}, "
                f"OpenCV {version('opencv-python-headless')}\nModel: {st}")

    def about(self) -> None:
        box = QMessageBox()
        box.setWindowTitle("About NViR Agent")
        box.setText(self.about_text())
        card = resources.files("nvir_agent") / "assets" / "models" / "README.md"
        if card.is_file():
            box.setDetailedText(card.read_text(encoding="utf-8"))
        box.exec()

    def quit(self) -> None:
        """Stop the engine cleanly (the batch in hand is committed), then exit."""
        if self.tray is not None:
            self.tray.setToolTip("NViR Agent — stopping …")
        self.quitting.emit()
        if self.review is not None:
            self.review.close()
        self.controller.stop()

    def _stopped(self) -> None:
        if self.tray is not None:
            self.tray.hide()
        if self.window is not None:
            self.window.close()
        app = QApplication.instance()
        if app is not None:
            app.quit()

    # ----------------------------------------------------------------- state

    def show_snapshot(self, snap: TraySnapshot) -> None:
        self.snapshot = snap
        self.state = tray_state(snap)
        text = tooltip(snap)
        if self.tray is not None:
            self.tray.setIcon(icon(self.state))
            self.tray.setToolTip(text)
        if self.window is not None:
            self.window.show_state(self.state, text)

    def notify(self, message: Message) -> None:
        """A coalesced message from the notifier: toast it; a critical one also opens
        the review window, which keeps it in sight until acknowledged."""
        notices = message.notices  # shelved plates and compounds are not notified at all
        ids = [n.alert_id for n in notices if n.alert_id is not None]
        self._last_clicked = ids[0] if ids else None
        self.notifications.show(message.title, message.body, message.severity)
        if message.severity == "critical":
            self.open_review(self._last_clicked)
        self.controller.poll()

    def _message_clicked(self) -> None:
        self.open_review(self._last_clicked)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.open_review()

    def _engine_failed(self, message: str) -> None:
        self.error = message
        self.state = "error"
        if self.tray is not None:
            self.tray.setIcon(icon("error"))
            self.tray.setToolTip(f"NViR Agent — problem: {message}")
        if self.window is not None:
            self.window.show_state("error", message)
        self.notifications.show("NViR Agent: problem", message, "critical")

    def _ask_to_replace_database(self, exc: Any) -> None:
        """The database file is damaged or not ours: start a new one only if the user
        says so (the old file is kept aside, renamed with the date and time)."""
        answer = QMessageBox.question(
            None, "NViR Agent: the database cannot be used",
            f"{exc.message}\n\nKeep this file aside (renamed with today's date and time; "
            "nothing is deleted) and start a new, empty database in its place?\n\n"
            "Choose No to restore the file from a backup, or to choose another file in "
            "Settings…, first.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        if answer == QMessageBox.StandardButton.Yes:
            self.controller.replace_damaged = True
            self.controller.start()
        else:
            self._engine_failed(str(exc))

    def _say(self, title: str, text: str) -> None:
        QMessageBox.information(None, title, text)
