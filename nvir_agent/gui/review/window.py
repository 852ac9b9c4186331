"""The review window: alert list and plate view on the left, the well view on
the right, the operator's actions in the tool bar, a banner that keeps
critical alerts in sight until they are acknowledged, and an orange one while
the plate shown holds the warning that its images are unlike the model's
training images.

The window coordinates: every read and write runs in a worker; the views
talk to it through signals, never to each other.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from nvir_agent.config import Config
from nvir_agent.gui import operator_actions, workers
from nvir_agent.gui.icons import icon
from nvir_agent.gui.operator_actions import OperatorState
from nvir_agent.gui.plate_data import (
    PlateData,
    PlateDetails,
    alert_wells,
    dose_response,
    load_alerts,
    load_plate,
    load_plate_details,
    plate_names,
    station_names,
    store_version,
)
from nvir_agent.gui.review.alert_list import AlertListView
from nvir_agent.gui.review.dialogs import AcknowledgeDialog, DismissDialog, ShelveDialog
from nvir_agent.gui.review.export import export_plate
from nvir_agent.gui.review.plate_view import PlateView
from nvir_agent.gui.review.station_picker import StationPicker
from nvir_agent.gui.review.well_view import WellView
from nvir_agent.monitor.timecourse import settings_from_config
from nvir_agent.report.trust import calibrate_advice
from nvir_agent.store import Alert, redact

log = logging.getLogger(__name__)

REFRESH_MS = 15000
LIVE_RELOAD_S = 10.0  # the plate shown is read again at most this often while results come


class ReviewWindow(QMainWindow):
    """Flagged wells, their images, time courses and dose-response; ack/dismiss."""

    settings_requested = Signal()
    alerts_changed = Signal()  # after an acknowledgement, dismissal or shelving

    def __init__(self, database: str | os.PathLike[str], config: Config, *,
                 plate: str | None = None, alert_id: int | None = None,
                 station: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.database = database  # a SQLite file or a server URL
        self.config = config
        self.settings = settings_from_config(config)
        self.alerts: list[Alert] = []
        self.state = OperatorState()
        self.plates: dict[str, PlateData] = {}
        self.plate: str | None = plate
        self.well: str | None = None
        self.station: str | None = station  # None: every station's plates and alerts
        self.stations: list[str] = []
        self.loaded = False
        self._want_alert = alert_id
        self._loading_plate: str | None = None
        self._reloaded_at = 0.0
        self.setWindowTitle("NViR Agent — review")
        self.setWindowIcon(icon("watching"))

        self.alert_list = AlertListView()
        self.plate_view = PlateView()
        self.well_view = WellView()
        self.well_view.threshold = config.alerts.threshold
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background:#c0262d; color:white; padding:6px; "
                                  "font-weight:bold;")
        self.banner.hide()
        self.caveat = QLabel()  # the plate's images are unlike the model's training images
        self.caveat.setWordWrap(True)
        self.caveat.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.caveat.setStyleSheet("background:#fff3e0; color:#8a3b00; border:1px solid "
                                  "#e65100; padding:6px;")
        self.caveat.hide()
        self.message = QLabel()
        self.statusBar().addWidget(self.message, 1)

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.alert_list)
        left.addWidget(self.plate_view)
        left.setSizes([260, 440])
        main = QSplitter(Qt.Orientation.Horizontal)
        main.addWidget(left)
        main.addWidget(self.well_view)
        main.setSizes([700, 600])
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.addWidget(self.banner)
        layout.addWidget(self.caveat)
        layout.addWidget(main, 1)
        self.setCentralWidget(central)
        self._actions()

        self.alert_list.alert_selected.connect(self.select_alert)
        self.plate_view.plate_requested.connect(self.load_plate)
        self.plate_view.well_selected.connect(self.select_well)
        self.plate_view.timepoint_changed.connect(self._timepoint_changed)
        self.well_view.dose_response_wanted.connect(self._fit)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.resize(1320, 860)
        self.refresh()

    # ----------------------------------------------------------------- tool bar

    def _actions(self) -> None:
        bar = self.addToolBar("Actions")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)

        def add(text: str, slot: Any, tip: str, key: str | None = None) -> QAction:
            a = QAction(text, self)
            a.setIconText(text)  # the tool button keeps the "…" (iconText drops it)
            a.setToolTip(tip)
            if key:
                a.setShortcut(QKeySequence(key))
            a.triggered.connect(slot)
            bar.addAction(a)
            return a

        self.ack_action = add("Acknowledge…", self.acknowledge,
                              "Acknowledge the selected alert (comment, optional expiry)",
                              "Ctrl+K")
        self.dismiss_action = add("Dismiss as artifact…", self.dismiss,
                                  "The selected alert is an artifact, not a loss of viability")
        self.shelve_action = add("Shelve…", self.shelve,
                                 "Set a plate's or compound's alerts aside for a while")
        bar.addSeparator()
        add("Export plate…", self.export_plate, "The plate's wells and reads as CSV or XLSX")
        add("HTML report", self.html_report, "Write the HTML report of this plate and open it")
        bar.addSeparator()
        add("Refresh", self.refresh, "Read the store again", "F5")
        add("Settings…", self.settings_requested.emit, "Watched folders, model, alert levels")
        for a in (self.ack_action, self.dismiss_action):
            a.setEnabled(False)
        # several microscopes on one store: whose plates and alerts (shown once there are two)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        bar.addWidget(spacer)
        self.station_picker = StationPicker()
        self.station_picker.station_chosen.connect(self._station_chosen)
        self.station_action = bar.addWidget(self.station_picker)
        self.station_action.setVisible(False)

    # ----------------------------------------------------------------- loading

    def refresh(self) -> None:
        """Read alerts and plates again (worker); reload the plate shown when the
        engine has analysed images since it was read (at most every LIVE_RELOAD_S)."""
        db, station = self.database, self.station

        def work() -> tuple[list[Alert], list[str], OperatorState, int, list[str], str | None]:
            return (load_alerts(db, station), plate_names(db, station), OperatorState.load(db),
                    store_version(db), station_names(db), station)

        workers.submit(work, self._alerts_loaded, self._failed, parent=self)

    def _alerts_loaded(self, result: tuple[list[Alert], list[str], OperatorState, int,
                                           list[str], str | None]) -> None:
        self.alerts, plates, self.state, version, stations, station = result
        if station != self.station:
            return  # another station was picked meanwhile: its read is on the way
        self.stations = stations
        self.station_picker.set_stations(stations, self.station)
        self.station_action.setVisible(self.station_picker.wanted_visible(stations, self.station))
        if self.station is not None and self.plate is not None and self.plate not in plates:
            self.plate = self.well = None  # the plate shown is another station's
        self._reload_stale(version)
        self.alert_list.set_alerts(self.alerts, self.state)
        self.plate_view.set_plates(plates, self.plate)
        self._banner()
        self._glyphs()
        self._caveat()
        if self.plate is None:
            active = [a for a in self.alerts if a.active]
            self.plate = active[0].plate if active else (plates[0] if plates else None)
        if self.plate is not None and self.plate not in self.plates:
            self.load_plate(self.plate)
        elif self._want_alert is not None:
            self._apply_wanted_alert()
        if not plates:
            of = f" of station {self.station}" if self.station else ""
            self.message.setText(f"No plates{of} in {redact(self.database)} yet.")
        self.loaded = True

    def _station_chosen(self, station: str | None) -> None:
        if station == self.station:
            return
        self.station = station
        self.message.setText(f"Reading the plates of {station or 'all stations'} …")
        self.refresh()

    def _reload_stale(self, version: int) -> None:
        """New results in the store: forget the plates not shown, read the shown one
        again in the background (the old one stays on screen until it is in)."""
        for name in [p for p, d in self.plates.items() if d.version != version]:
            if name != self.plate:
                del self.plates[name]
        shown = self.plates.get(self.plate or "")
        if shown is not None and shown.version != version \
                and time.monotonic() - self._reloaded_at >= LIVE_RELOAD_S:
            self._reloaded_at = time.monotonic()
            self.load_plate(shown.plate, reload=True)

    def load_plate(self, plate: str, *, reload: bool = False) -> None:
        if not reload and plate in self.plates:
            self._show_plate(self.plates[plate])
            return
        if self._loading_plate == plate:
            return
        self._loading_plate = plate
        self.message.setText(f"Loading plate {plate} …")
        db, settings = self.database, self.settings
        workers.submit(lambda: load_plate(db, plate, settings), self._plate_loaded,
                       self._failed, parent=self)

    def _plate_loaded(self, data: PlateData) -> None:
        self._loading_plate = None
        old = self.plates.get(data.plate)
        self.plates[data.plate] = data
        self.message.setText(f"Plate {data.plate}: {len(data.timepoints)} time points, "
                             f"{len({w for w, _ in data.points})} wells with data")
        if old is not None and self.plate == data.plate:  # a live reload of the plate shown
            data.details = old.details  # until the new ones are read
            tp = self.plate_view.timepoint
            latest = old.timepoints and tp == old.timepoints[-1]
            self.plate_view.set_data(data, None if latest else tp)
            if self.well is not None:
                self._show_well(data, self.well)
        else:
            self._show_plate(data)
        db, gap = self.database, self.settings.get("read_gap_s", 900.0)
        workers.submit(lambda: load_plate_details(db, data.plate, gap),
                       lambda details: self._details_loaded(data, details), self._failed,
                       parent=self)

    def _details_loaded(self, data: PlateData, details: PlateDetails) -> None:
        """Features and images arrived: redraw a feature metric, show the well waiting."""
        if self.plates.get(data.plate) is not data:
            return  # read again meanwhile (or forgotten): that read brings its own
        data.details = details
        if self.plate == data.plate:
            self.plate_view.redraw()
            if self.well is not None:
                self._show_well(data, self.well)

    def _show_plate(self, data: PlateData) -> None:
        self.plate = data.plate
        self.plate_view.set_data(data)
        self._glyphs()
        self._caveat()
        if self._want_alert is not None:
            self._apply_wanted_alert()
        elif self.well is None:
            current = self.alert_list.current()
            first = next((a for a in self.alerts if a.active and a.plate == data.plate), None)
            if current is None and first is not None:
                self.alert_list.select(first.id)
            elif current is None and data.points:
                self.select_well(data.plate, sorted({w for w, _ in data.points})[0])

    def _apply_wanted_alert(self) -> None:
        wanted, self._want_alert = self._want_alert, None
        if wanted is not None and not self.alert_list.select(wanted):
            self.message.setText(f"There is no alert #{wanted}.")

    def _failed(self, message: str) -> None:
        self._loading_plate = None
        self.message.setText(message)
        log.warning("%s", message)

    # ----------------------------------------------------------------- selection

    def show_alert(self, alert_id: int) -> None:
        """Bring the window up on this alert (from a notification)."""
        self._want_alert = alert_id
        self.refresh()

    def select_alert(self, alert: Alert) -> None:
        for a in (self.ack_action, self.dismiss_action):
            a.setEnabled(alert.active)
        if alert.plate not in self.plates:
            self._want_alert = alert.id
            self.plate = alert.plate
            self.load_plate(alert.plate)
            return
        data = self.plates[alert.plate]
        if self.plate != alert.plate:
            self._show_plate(data)
        wells = alert_wells(alert)
        self.plate_view.set_selected(wells)
        if alert.timepoint is not None:
            self.plate_view.set_timepoint(alert.timepoint)
        if wells:
            self._show_well(data, wells[0])

    def select_well(self, plate: str, well: str) -> None:
        data = self.plates.get(plate)
        if data is None:
            return
        self.plate_view.set_selected(data.group_wells(well))
        self._show_well(data, well)

    def _show_well(self, data: PlateData, well: str) -> None:
        """The plots at once; the images once the plate's details are in."""
        self.well = well
        images = data.details.images.get(well, []) if data.details is not None else None
        self.well_view.show_well(data, well, images, self.plate_view.timepoint)

    def _timepoint_changed(self, tp: int) -> None:
        self.well_view.set_timepoint(tp)
        data = self.plates.get(self.plate or "")
        a = data.plate_map.wells.get(self.well) if data and data.plate_map and self.well \
            else None
        if a is not None and a.compound:
            self._fit(a.compound, tp)

    def _fit(self, compound: str, tp: int) -> None:
        data = self.plates.get(self.plate or "")
        if data is None:
            return
        workers.submit(lambda: dose_response(data, compound, tp),
                       self.well_view.show_dose_response, self._failed, parent=self)

    # ----------------------------------------------------------------- state shown

    def _glyphs(self) -> None:
        glyphs: dict[str, tuple[str, str]] = {}
        for a in self.alerts:
            if a.plate != self.plate or not a.active:
                continue
            state = "open" if self.state.needs_operator(a) else a.state
            for w in alert_wells(a):
                old = glyphs.get(w)
                if old is None or (a.severity == "critical" and old[0] != "critical"):
                    glyphs[w] = (a.severity, state)
        self.plate_view.set_alert_glyphs(glyphs)

    def _caveat(self) -> None:
        """The plate-level warning that its images differ from the model's training
        images, above everything while it is active (it qualifies every score shown)."""
        unlike = [a for a in self.alerts
                  if a.plate == self.plate and a.active and a.rule == "unlike_training"]
        if not unlike:
            self.caveat.hide()
            return
        self.caveat.setText(" ".join(caveat_text(a) for a in unlike))
        self.caveat.setToolTip("\n".join(a.message for a in unlike))
        self.caveat.show()

    def _banner(self) -> None:
        crit = [a for a in self.alerts
                if a.severity == "critical" and a.active and self.state.needs_operator(a)]
        if not crit:
            self.banner.hide()
            return
        names = "; ".join(f"#{a.id} {a.plate} {a.subject.partition(':')[2]}" for a in crit[:4])
        more = f" and {len(crit) - 4} more" if len(crit) > 4 else ""
        self.banner.setText(f"{len(crit)} CRITICAL alert{'s' if len(crit) > 1 else ''} not "
                            f"acknowledged: {names}{more}. Select one and Acknowledge.")
        self.banner.show()

    # ----------------------------------------------------------------- actions

    def _after_change(self, alert: Any) -> None:
        self.message.setText(f"Alert #{alert.id} is now {alert.state}." if hasattr(
            alert, "state") else "Saved.")
        self.alerts_changed.emit()
        self.refresh()

    def acknowledge(self) -> None:
        alert = self.alert_list.current()
        if alert is None:
            return
        dlg = AcknowledgeDialog(alert, self)
        if dlg.exec():
            comment, until = dlg.values()
            self.acknowledge_alert(alert.id, comment, until)

    def acknowledge_alert(self, alert_id: int, comment: str, until: float | None = None) -> None:
        db = self.database
        workers.submit(lambda: operator_actions.acknowledge(db, alert_id, comment, until),
                       self._after_change, self._failed, parent=self)

    def dismiss(self) -> None:
        alert = self.alert_list.current()
        if alert is None:
            return
        dlg = DismissDialog(alert, self)
        if dlg.exec():
            self.dismiss_alert(alert.id, dlg.values())

    def dismiss_alert(self, alert_id: int, comment: str) -> None:
        db = self.database
        workers.submit(lambda: operator_actions.dismiss(db, alert_id, comment),
                       self._after_change, self._failed, parent=self)

    def shelve(self) -> None:
        alert = self.alert_list.current()
        plate = alert.plate if alert else self.plate
        if plate is None:
            return
        compound = alert.details.get("compound") if alert else None
        dlg = ShelveDialog(plate, compound, self)
        if dlg.exec():
            kind, name, until, comment = dlg.values()
            db = self.database
            workers.submit(lambda: operator_actions.shelve(db, kind, name, until, comment),
                           self._after_change, self._failed, parent=self)

    def export_plate(self, path: str | None = None) -> None:
        data = self.plates.get(self.plate or "")
        if data is None:
            return
        if not path:
            path, _ = QFileDialog.getSaveFileName(
                self, "Export the plate", f"{data.plate}.csv",
                "CSV (*.csv);;Excel workbook (*.xlsx)")
            if not path:
                return
        db, gap = self.database, self.settings.get("read_gap_s", 900.0)

        def work() -> str:
            if data.details is None:  # export as soon as asked: read the features here
                data.details = load_plate_details(db, data.plate, gap)
            return export_plate(data, path)

        workers.submit(work,
                       lambda p: self.message.setText(f"Exported {p}"), self._failed,
                       parent=self)

    def html_report(self) -> None:
        if self.plate is None:
            return
        db, plate = self.database, self.plate
        out = Path(tempfile.gettempdir()) / f"nvir-report-{plate}.html"

        def work() -> Path:
            from nvir_agent.report.html import write_report

            return write_report(db, out, plate=plate, config=self.config)

        def done(path: Path) -> None:
            self.message.setText(f"Report written to {path}")
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

        self.message.setText("Writing the report …")
        workers.submit(work, done, self._failed, parent=self)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._timer.stop()
        super().closeEvent(event)


def caveat_text(alert: Alert) -> str:
    """The plate's unlike_training warning in two short sentences (the banner)."""
    model = str(alert.details.get("model") or "") or None
    share = f"{alert.value:.0%} of the wells" if alert.value is not None else "most wells"
    at = f" at time point {alert.timepoint}" if alert.timepoint is not None else ""
    return (f"⚠ {alert.plate}: {share}{at} look unlike the images "
            f"{'model ' + model if model else 'the model'} was trained on, so its scores may "
            "be wrong. "
            + calibrate_advice(model if model and "," not in model else None))


def show_error(parent: QWidget | None, title: str, message: str) -> None:
    QMessageBox.warning(parent, title, message)
