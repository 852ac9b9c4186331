"""The alert list: open alerts first, filters by plate, severity and state,
sortable by time and severity. Selecting a row emits ``alert_selected``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from nvir_agent.gui.icons import icon
from nvir_agent.gui.operator_actions import OperatorState
from nvir_agent.gui.plate_data import alert_wells
from nvir_agent.report.trust import interval_text
from nvir_agent.store import SEVERITY_RANK, Alert

COLUMNS = ("Severity", "State", "Plate", "Wells / group", "Compound", "µM", "Rule",
           "Viability", "Since", "Acknowledged")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
ALERT_ROLE = Qt.ItemDataRole.UserRole + 2
STATE_RANK = {"open": 0, "acknowledged": 1, "resolved": 2, "dismissed": 3}
_Index = QModelIndex | QPersistentModelIndex


def age(seconds: float) -> str:
    """'5 min', '3 h', '2 d'."""
    if seconds < 90:
        return f"{max(int(seconds), 0)} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def subject_text(a: Alert) -> str:
    kind, _, rest = a.subject.partition(":")
    wells = alert_wells(a)
    if kind == "group":
        return f"{rest} ({', '.join(wells)})" if wells else rest
    if kind == "well":
        return rest
    return f"{kind} {rest}".strip()


def viability_text(a: Alert) -> str:
    """'0.35 (0.21–0.49)' with the alert's 90 % interval when it has one, 'possibly …'
    when the crossing is within that interval, and ⚠ when the images of its read are
    unlike the model's training images."""
    if a.value is None:
        return ""
    d = a.details
    ci = d.get("interval")
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2
            and all(isinstance(v, (int, float)) for v in ci)):
        ci = (None, None)
    text = interval_text(a.value, *ci)
    if d.get("certainty") == "possible":
        text = "possibly " + text
    if d.get("caveat"):
        text += " ⚠"
    return text


def _bold() -> QFont:
    global _BOLD
    if _BOLD is None:
        _BOLD = QFont()
        _BOLD.setBold(True)
    return _BOLD


_BOLD: QFont | None = None
WELLS_MAX_PX = 150  # the wells column at most this wide (elided; the tooltip has all)


class AlertTableModel(QAbstractTableModel):
    """Alerts as table rows (display, sort keys and tooltips)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.alerts: list[Alert] = []
        self.acked_at: dict[int, float] = {}
        self.state = OperatorState()
        self.now = time.time()

    def set_alerts(self, alerts: Sequence[Alert], state: OperatorState) -> None:
        self.beginResetModel()
        self.alerts = list(alerts)
        self.state = state
        self.now = time.time()
        self.endResetModel()

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.alerts)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def shown_state(self, a: Alert) -> str:
        if self.state.shelf_for(a, self.now):
            return "shelved"
        if self.state.ack_expired(a, self.now):
            return "open (ack expired)"
        return a.state

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        a = self.alerts[index.row()]
        col = index.column()
        if role == ALERT_ROLE:
            return a
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(a, col)
        if role == SORT_ROLE:
            return self._sort_key(a, col)
        if role == Qt.ItemDataRole.DecorationRole and col == 0:
            return icon("alert-critical" if a.severity == "critical" else "alert-warning")
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{subject_text(a)}\n{a.message}"
        if role == Qt.ItemDataRole.FontRole and a.state == "open" and a.severity == "critical":
            return _bold()
        if role == Qt.ItemDataRole.ForegroundRole and not self.state.needs_operator(a, self.now) \
                and a.state != "acknowledged":
            return QBrush(QColor("#777777"))
        return None

    def _text(self, a: Alert, col: int) -> str:
        d = a.details
        if col == 0:
            return a.severity
        if col == 1:
            return self.shown_state(a)
        if col == 2:
            return a.plate
        if col == 3:  # a group's compound and µM have their own columns: its wells here
            wells = alert_wells(a)
            return ", ".join(wells) if wells and a.subject.startswith("group:") \
                else subject_text(a)
        if col == 4:
            return str(d.get("compound") or "")
        if col == 5:
            c = d.get("concentration_uM")
            return f"{c:g}" if isinstance(c, (int, float)) else ""
        if col == 6:
            return a.rule
        if col == 7:
            return viability_text(a)
        if col == 8:
            since = d.get("since")
            read = f"time point {since}, " if since is not None else ""
            return f"{read}{age(self.now - a.opened_at)} ago"
        if col == 9:
            ack = self.acked_at.get(a.id)
            if a.state != "acknowledged":
                return ""
            at = ack if ack is not None else a.updated_at
            until = a.ack_until
            extra = f", until {time.strftime('%d %b %H:%M', time.localtime(until))}" \
                if until else ""
            return f"{age(self.now - at)} ago{extra}"
        return ""

    def _sort_key(self, a: Alert, col: int) -> Any:
        if col == 0:
            return (SEVERITY_RANK.get(a.severity, 0), -STATE_RANK.get(a.state, 9), a.opened_at)
        if col == 1:
            return -STATE_RANK.get(a.state, 9)
        if col == 5:
            return float(a.details.get("concentration_uM") or 0.0)
        if col == 7:
            return a.value if a.value is not None else 9.0
        if col in (8, 9):
            return a.opened_at if col == 8 else a.updated_at
        return self._text(a, col)


class AlertFilter(QSortFilterProxyModel):
    """Plate, severity and state filters; sorts on the model's sort keys."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plate = ""
        self.severity = ""
        self.state = "active"
        self.setSortRole(SORT_ROLE)

    def set_filters(self, plate: str, severity: str, state: str) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt ≥ 6.9 (invalidateFilter is deprecated)
            self.beginFilterChange()
            self.plate, self.severity, self.state = plate, severity, state
            self.endFilterChange()
        else:
            self.plate, self.severity, self.state = plate, severity, state
            self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent: _Index) -> bool:
        model: AlertTableModel = self.sourceModel()  # type: ignore[assignment]
        a = model.alerts[row]
        if self.plate and a.plate != self.plate:
            return False
        if self.severity and a.severity != self.severity:
            return False
        if self.state == "active":
            return a.active
        return not self.state or a.state == self.state

    def lessThan(self, left: _Index, right: _Index) -> bool:
        return left.data(SORT_ROLE) < right.data(SORT_ROLE)


class AlertListView(QWidget):
    """Filters above a sortable table of alerts."""

    alert_selected = Signal(object)  # Alert

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = AlertTableModel(self)
        self.proxy = AlertFilter(self)
        self.proxy.setSourceModel(self.model)
        self.plate_box = QComboBox()
        self.severity_box = QComboBox()
        self.severity_box.addItems(["all severities", "critical", "warning", "info"])
        self.state_box = QComboBox()
        self.state_box.addItems(["active", "open", "acknowledged", "resolved", "dismissed", "all"])
        self.count = QLabel()
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Alerts:"))
        for w in (self.plate_box, self.severity_box, self.state_box):
            w.currentIndexChanged.connect(self._filter)
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(self.count)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setResizeContentsPrecision(200)  # size columns on 200 rows, not thousands
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)
        self.table.selectionModel().selectionChanged.connect(self._selected)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.table)

    def set_alerts(self, alerts: Sequence[Alert], state: OperatorState) -> None:
        current = self.current()
        plates = sorted({a.plate for a in alerts})
        chosen = self.plate_box.currentText()
        self.plate_box.blockSignals(True)
        self.plate_box.clear()
        self.plate_box.addItems(["all plates", *plates])
        if chosen in plates:
            self.plate_box.setCurrentText(chosen)
        self.plate_box.blockSignals(False)
        self.model.set_alerts(alerts, state)
        self._filter()
        self.table.resizeColumnsToContents()
        if self.table.columnWidth(3) > WELLS_MAX_PX:
            self.table.setColumnWidth(3, WELLS_MAX_PX)
        if current is not None:
            self.select(current.id, emit=False)

    def _filter(self) -> None:
        plate = self.plate_box.currentText() if self.plate_box.currentIndex() > 0 else ""
        sev = self.severity_box.currentText() if self.severity_box.currentIndex() > 0 else ""
        st = self.state_box.currentText()
        self.proxy.set_filters(plate, sev, "" if st == "all" else st)
        n = self.proxy.rowCount()
        need = sum(self.model.state.needs_operator(a) for a in self.model.alerts)
        self.count.setText(f"{n} shown, {need} need attention")

    def current(self) -> Alert | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(ALERT_ROLE) if rows else None

    def select(self, alert_id: int, *, emit: bool = True) -> bool:
        """Select the alert with this ID (widening the state filter if needed)."""
        for attempt in range(2):
            for r in range(self.proxy.rowCount()):
                idx = self.proxy.index(r, 0)
                if idx.data(ALERT_ROLE).id == alert_id:
                    sm = self.table.selectionModel()
                    sm.blockSignals(True)
                    self.table.selectRow(r)
                    sm.blockSignals(False)
                    self.table.viewport().update()
                    self.table.scrollTo(idx)
                    if emit:
                        self.alert_selected.emit(idx.data(ALERT_ROLE))
                    return True
            if attempt == 0:
                self.state_box.setCurrentText("all")
        return False

    def _selected(self, *_args: object) -> None:
        a = self.current()
        if a is not None:
            self.alert_selected.emit(a)
