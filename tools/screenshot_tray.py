"""Screenshots of the tray menu and the no-tray status window for the README.

    xvfb-run -s "-screen 0 1400x950x24" python tools/screenshot_tray.py --config agent.toml OUTDIR
Uses the store of the given config (e.g. a kept demo) for the state shown.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PySide6.QtCore import QObject, QPoint, Signal
from PySide6.QtGui import QColor, QImage, QPainter

from nvir_agent.config import load_config
from nvir_agent.core.status import read_status
from nvir_agent.gui.app import application
from nvir_agent.gui.engine_link import EngineBridge
from nvir_agent.gui.icons import STATES, icon
from nvir_agent.gui.tray import TrayAgent
from nvir_agent.gui.tray_state import TraySnapshot
from nvir_agent.store import StoreReader, database_path


class StillController(QObject):
    """Shows the store's state without running an engine."""

    snapshot = Signal(object)
    stopped = Signal()
    failed = Signal(str)

    def __init__(self, config) -> None:
        super().__init__()
        self.config, self.bridge, self.paused = config, EngineBridge(self), False

    def start(self) -> None: ...
    def poll(self) -> None: ...
    def stop(self) -> None: ...


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("out")
    args = ap.parse_args()
    out = Path(args.out)
    app = application()
    config = load_config(args.config, check_folders=False)
    agent = TrayAgent(config, controller=StillController(config), tray_available=False)
    with StoreReader(database_path(config)) as r:
        alerts = tuple(r.alerts())
    st = read_status(config)
    agent.show_snapshot(TraySnapshot(st, alerts, done_at_start=0))
    agent.window.move(40, 40)
    agent.menu.popup(QPoint(40, 260))
    for _ in range(50):
        app.processEvents()
        time.sleep(0.01)
    agent.menu.grab().save(str(out / "tray-menu.png"))
    agent.window.grab().save(str(out / "tray-status-window.png"))
    sheet = QImage(6 * 140, 110, QImage.Format.Format_ARGB32)
    sheet.fill(QColor("#f0f0f0"))
    p = QPainter(sheet)
    for i, state in enumerate(STATES):
        for j, size in enumerate((16, 32, 64)):
            p.drawPixmap(i * 140 + [8, 30, 68][j], 8 + (64 - size) // 2,
                         icon(state).pixmap(size, size))
        p.drawText(i * 140 + 8, 100, state)
    p.end()
    sheet.save(str(out / "tray-icons.png"))
    print(f"wrote tray screenshots to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
