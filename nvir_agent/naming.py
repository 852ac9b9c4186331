"""Vendor file names → ImageKey (plate, well, time point, field, channel, z)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ImageKey:
    """Where an image belongs. Fields a name does not give are None."""

    vendor: str | None = None
    plate: str | None = None
    well: str | None = None  # canonical, e.g. "B03"
    row: int | None = None  # 1-based (A = 1)
    column: int | None = None  # 1-based
    field: int | None = None
    channel: str | None = None
    z: int | None = None
    timepoint: int | None = None
    elapsed_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
