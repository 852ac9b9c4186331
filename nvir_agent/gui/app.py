"""Entry points of the desktop UI: `nvir-agent review` and `nvir-agent run` with a display."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QWidget

from nvir_agent.config import Config
from nvir_agent.gui import workers
from nvir_agent.gui.icons import icon

log = logging.getLogger(__name__)

SCREENSHOT_TIMEOUT_S = 60.0


def application() -> QApplication:
    """The QApplication (made once), named for the desktop and the tray."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName("NViR Agent")
        app.setOrganizationName("nvir-agent")
        app.setWindowIcon(icon("watching"))
    return app  # type: ignore[return-value]


def wait_until_drawn(window: QWidget, timeout_s: float = SCREENSHOT_TIMEOUT_S) -> bool:
    """Process events until the window has loaded its data and every worker
    has delivered (thumbnails, fits), then a little longer for the paint."""
    app = application()
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        app.processEvents()
        idle = getattr(window, "loaded", True) and workers.jobs_in_flight() == 0
        if idle:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.4:
                return True
        else:
            quiet_since = None
        time.sleep(0.01)
    return False


def grab(window: QWidget, path: str | os.PathLike[str]) -> Path:
    """A PNG of the whole window."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(out), "PNG"):
        from nvir_agent.errors import UsageError

        raise UsageError(f"Cannot write the screenshot {out}.",
                         "Choose a folder you may write to.")
    return out


def run_review(config: Config, database: Path, *, plate: str | None = None,
               alert_id: int | None = None, screenshot: str | None = None,
               station: str | None = None) -> int:
    """Open the review window on the store; with ``screenshot``, save a PNG once its
    data is drawn and return."""
    from nvir_agent.gui.review.window import ReviewWindow
    from nvir_agent.gui.settings_dialog import open_settings

    app = application()
    window = ReviewWindow(database, config, plate=plate, alert_id=alert_id, station=station)
    window.settings_requested.connect(lambda: open_settings(config, window, engine=None))
    window.show()
    if screenshot:
        ok = wait_until_drawn(window)
        if not ok:
            log.warning("The window was still loading after %.0f s; saving it as it is",
                        SCREENSHOT_TIMEOUT_S)
        path = grab(window, screenshot)
        print(f"Screenshot written to {path}")
        window.close()
        workers.wait_for_workers()
        return 0
    rc = app.exec()
    workers.wait_for_workers()
    return rc


def run_tray(config: Config, *, replace_damaged_database: bool = False) -> int:
    """The tray agent: starts the engine, shows its state, notifies, opens the review.

    ``replace_damaged_database``: the user already consented (``run
    --replace-damaged-database``); otherwise a damaged database is a question."""
    from nvir_agent.gui.tray import TrayAgent

    app = application()
    app.setQuitOnLastWindowClosed(False)
    agent = TrayAgent(config)
    agent.controller.replace_damaged = replace_damaged_database
    agent.start()
    QTimer.singleShot(0, lambda: None)
    rc = app.exec()
    workers.wait_for_workers()
    if agent.error:
        from nvir_agent.errors import AgentError

        raise AgentError(agent.error)
    return rc
