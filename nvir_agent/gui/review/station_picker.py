"""The station picker: whose plates and alerts the review window lists when
several microscopes share one store (all stations, or one by name).

It shows itself only when the store holds images of two or more stations (or
a station was asked for), so a single microscope sees nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

ALL = "all stations"


class StationPicker(QWidget):
    """'Station: [all stations ▾]'; emits ``station_chosen(name or None)``."""

    station_chosen = Signal(object)  # str, or None for every station

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.box = QComboBox()
        self.box.setToolTip("Show the plates and alerts of one microscope's station, or of "
                            "all stations sharing this store")
        self.box.currentIndexChanged.connect(self._chosen)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 6, 0)
        row.addWidget(QLabel("Station:"))
        row.addWidget(self.box)

    @property
    def station(self) -> str | None:
        return self.box.currentText() if self.box.currentIndex() > 0 else None

    @staticmethod
    def wanted_visible(stations: Sequence[str], current: str | None) -> bool:
        """Shown once the store has two stations, or when one was asked for."""
        return len(stations) > 1 or current is not None

    def set_stations(self, stations: Sequence[str], current: str | None) -> None:
        """Every station of the store, ``current`` picked (None: all), without emitting."""
        names = list(stations)
        if current is not None and current not in names:
            names.append(current)
        wanted = [ALL, *names]
        self.box.blockSignals(True)
        if [self.box.itemText(i) for i in range(self.box.count())] != wanted:
            self.box.clear()
            self.box.addItems(wanted)
        self.box.setCurrentIndex(wanted.index(current) if current else 0)
        self.box.blockSignals(False)

    def _chosen(self, _index: int) -> None:
        self.station_chosen.emit(self.station)
