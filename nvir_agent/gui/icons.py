"""Tray and window icons, loaded from package data through importlib.resources."""

from __future__ import annotations

from importlib import resources

from PySide6.QtGui import QIcon, QPixmap

STATES = ("watching", "analysing", "alert-warning", "alert-critical", "paused", "error")
SIZES = (16, 32, 64)
_CACHE: dict[str, QIcon] = {}


def icon(state: str) -> QIcon:
    """The icon of a tray state (16, 32 and 64 px renderings of its SVG)."""
    if state not in STATES:
        raise ValueError(f"unknown icon state {state!r}")
    if state not in _CACHE:
        folder = resources.files("nvir_agent") / "assets" / "icons"
        ic = QIcon()
        for size in SIZES:
            data = (folder / f"{state}-{size}.png").read_bytes()
            pm = QPixmap()
            pm.loadFromData(data, "PNG")
            ic.addPixmap(pm)
        _CACHE[state] = ic
    return _CACHE[state]
