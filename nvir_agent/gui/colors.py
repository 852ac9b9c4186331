"""Colour scales of the plate view: cividis (readable with colour-vision
deficiencies, and in grey) sampled from matplotlib, interpolated here."""

from __future__ import annotations

import math

from PySide6.QtGui import QColor

# matplotlib's cividis at 0, 0.1, … 1.0 (8-bit RGB)
CIVIDIS = ((0, 34, 77), (8, 51, 112), (53, 69, 108), (78, 86, 108), (102, 105, 112),
           (124, 123, 120), (148, 142, 119), (174, 162, 113), (200, 183, 101),
           (228, 206, 81), (253, 231, 55))
NO_DATA = QColor("#ffffff")
EXCLUDED = QColor("#d9d9d9")


def cividis(t: float) -> QColor:
    """The colour at t in [0, 1] (clipped)."""
    if not math.isfinite(t):
        return NO_DATA
    t = min(max(t, 0.0), 1.0) * (len(CIVIDIS) - 1)
    i = min(int(t), len(CIVIDIS) - 2)
    f = t - i
    a, b = CIVIDIS[i], CIVIDIS[i + 1]
    return QColor(*(round(a[k] + (b[k] - a[k]) * f) for k in range(3)))


def text_colour(c: QColor) -> QColor:
    """Black or white, whichever reads better on ``c``."""
    luma = 0.299 * c.red() + 0.587 * c.green() + 0.114 * c.blue()
    return QColor("#000000") if luma > 140 else QColor("#ffffff")


class ColourScale:
    """Maps values in [low, high] onto cividis."""

    def __init__(self, low: float, high: float) -> None:
        if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
            low, high = (low, low + 1.0) if math.isfinite(low) else (0.0, 1.0)
        self.low, self.high = low, high

    def colour(self, value: float | None) -> QColor:
        if value is None:
            return NO_DATA
        return cividis((value - self.low) / (self.high - self.low))
