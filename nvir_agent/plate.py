"""Plates and wells: where an image belongs (``ImageKey``), canonical well names,
and the plate formats (96, 384 and 1536 wells).

Pure values and functions, used by every layer above.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FORMATS", "MAX_COLUMNS", "MAX_ROWS", "ImageKey", "parse_well", "row_letters",
           "row_number", "well_name"]


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


MAX_ROWS = 32  # 1536-well plates: rows A–AF
MAX_COLUMNS = 48
FORMATS = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}  # wells → (rows, columns)

MAX_ROWS = 32  # 1536-well plates: rows A–AF
MAX_COLUMNS = 48
FORMATS = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}  # wells → (rows, columns)


def row_number(letters: str) -> int:
    """'A' → 1 … 'Z' → 26, 'AA' → 27 … 'AF' → 32."""
    letters = letters.upper()
    if len(letters) == 1 and "A" <= letters <= "Z":
        return ord(letters) - 64
    if len(letters) == 2 and letters[0] == "A" and "A" <= letters[1] <= "F":
        return 26 + ord(letters[1]) - 64
    raise ValueError(f"not a plate row: {letters!r}")


def row_letters(row: int) -> str:
    """1 → 'A' … 26 → 'Z', 27 → 'AA' … 32 → 'AF'."""
    if not 1 <= row <= MAX_ROWS:
        raise ValueError(f"plate row {row} is outside 1–{MAX_ROWS}")
    return chr(64 + row) if row <= 26 else "A" + chr(64 + row - 26)


def well_name(row: int, column: int) -> str:
    """Canonical well name: row letters and a zero-padded column ('B03', 'AF48')."""
    if not 1 <= column <= MAX_COLUMNS:
        raise ValueError(f"plate column {column} is outside 1–{MAX_COLUMNS}")
    return f"{row_letters(row)}{column:02d}"


def parse_well(text: str, plate_format: int | None = None) -> tuple[int, int]:
    """'B3', 'b03', 'AF48' → (row, column); ValueError for anything else, and for
    a well that is not on a ``plate_format``-well plate (96, 384, 1536) when given."""
    m = re.fullmatch(r"([A-Za-z]{1,2})0*(\d{1,2})", str(text).strip())
    try:
        row = row_number(m.group(1)) if m else 0
    except ValueError:
        row = 0
    column = int(m.group(2)) if m else 0
    if not row or not 1 <= column <= MAX_COLUMNS:
        raise ValueError(f"'{text}' is not a well name (expected e.g. B03)")
    if plate_format is not None:
        rows, columns = FORMATS[plate_format]
        if row > rows or column > columns:
            raise ValueError(f"well '{text}' does not exist on a {plate_format}-well plate "
                             f"(rows A–{row_letters(rows)}, columns 1–{columns})")
    return row, column
