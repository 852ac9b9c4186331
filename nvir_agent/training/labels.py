"""Labelled images for training and evaluation: read a labels CSV and turn raw
ATP into viability the way the NViR paper does.

A labels CSV has one row per image. It names the image (column ``image``, or
``path``/``file``/``filename``; relative paths are taken from the image root)
and gives either

* ``viability`` — ATP already normalised to the vehicle wells, or
* raw ATP (``atp`` or ``atp_raw``) with ``plate``, ``day`` and ``role``: each
  well is divided by the median ATP of the vehicle wells of its plate and day.

Optional columns: ``site`` (microscope or lab; default ``default``), ``well``,
``compound``, ``concentration_uM``, ``batch`` (defaults to the plate) and
``date`` (orders batches for the chronological split). Rows whose role is
``empty`` or ``ignore`` are left out.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nvir_agent.errors import DataError, listing

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image", "path", "file", "filename")
ATP_COLUMNS = ("atp", "atp_raw")
SKIPPED_ROLES = frozenset({"empty", "ignore"})
VEHICLE_ROLE = "vehicle"
DEFAULT_SITE = "default"
MAX_LISTED = 5

LabelSource = Literal["auto", "viability", "atp"]


@dataclass(frozen=True)
class LabelledImage:
    """One image with its viability label and where it came from."""

    path: Path
    name: str
    viability: float
    site: str = DEFAULT_SITE
    plate: str = ""
    well: str = ""
    day: float | None = None
    role: str = ""
    compound: str = ""
    concentration_uM: float | None = None
    batch: str = ""
    date: str = ""


@dataclass
class LabelSet:
    """The usable rows of a labels CSV, in file order."""

    items: list[LabelledImage]
    source: Path | None = None
    root: Path | None = None
    label_source: str = "viability"
    skipped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, indices: Iterable[int]) -> LabelSet:
        return LabelSet(
            [self.items[i] for i in indices], self.source, self.root, self.label_source, 0
        )

    def viabilities(self) -> list[float]:
        return [it.viability for it in self.items]

    def summary(self) -> dict[str, Any]:
        """Counts and label statistics, as recorded in a model file's metadata."""
        values = self.viabilities()
        days = sorted({it.day for it in self.items if it.day is not None})
        return {
            "labels_csv": str(self.source.resolve()) if self.source else None,
            "image_root": str(self.root.resolve()) if self.root else None,
            "label_source": self.label_source,
            "n_images": len(values),
            "n_plates": len({(it.site, it.plate) for it in self.items if it.plate}),
            "sites": sorted({it.site for it in self.items}),
            "days": [day_label(d) for d in days],
            "viability": _stats(values),
        }


def day_label(day: float | None) -> str:
    """A day as people write it: ``3`` rather than ``3.0``; ``?`` when unknown."""
    if day is None:
        return "?"
    return str(int(day)) if float(day).is_integer() else f"{day:g}"


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "mean": round(statistics.fmean(values), 6),
        "std": round(statistics.pstdev(values), 6),
        "min": round(min(values), 6),
        "median": round(statistics.median(values), 6),
        "max": round(max(values), 6),
    }


def read_labels(
    csv_path: str | Path,
    image_root: str | Path | None = None,
    *,
    label_source: LabelSource = "auto",
    check_images: bool = True,
) -> LabelSet:
    """Read a labels CSV into a :class:`LabelSet`.

    ``image_root`` is where relative image paths start (default: the CSV's
    folder). ``label_source`` ``auto`` uses ``viability`` when the CSV has that
    column and raw ATP otherwise. Raises :class:`DataError` naming the file,
    the rows or columns at fault and what to do.
    """
    csv_path = Path(csv_path)
    root = Path(image_root) if image_root is not None else csv_path.parent
    header, rows = _read_csv(csv_path)
    columns = {name.strip().lower(): name for name in header if name}
    image_col = next((columns[c] for c in IMAGE_COLUMNS if c in columns), None)
    if image_col is None:
        raise DataError(
            f"{csv_path} has no image column (columns: {', '.join(header) or 'none'})",
            "add a column 'image' with each image's path (relative to the image folder)",
        )
    source = _choose_source(csv_path, columns, label_source)
    records = [_parse_row(csv_path, i + 2, row, columns, image_col, root) for i, row in
               enumerate(rows)]
    kept = [r for r in records if r["role"] not in SKIPPED_ROLES]
    skipped = len(records) - len(kept)
    if skipped:
        log.info("%s: left out %d rows with role empty/ignore", csv_path.name, skipped)
    if not kept:
        raise DataError(f"{csv_path} has no labelled rows", "add one row per labelled image")
    if source == "viability":
        values = [_number(csv_path, r["line"], "viability", r["raw"].get(columns["viability"]))
                  for r in kept]
    else:
        values = normalise_to_vehicle(
            [
                (r["site"], r["plate"], r["day"], r["role"],
                 _number(csv_path, r["line"], "atp", r["raw"].get(columns[_atp_col(columns)])))
                for r in kept
            ],
            source=str(csv_path),
        )
    items = [
        LabelledImage(
            path=r["path"], name=r["name"], viability=v, site=r["site"], plate=r["plate"],
            well=r["well"], day=r["day"], role=r["role"], compound=r["compound"],
            concentration_uM=r["concentration"], batch=r["batch"] or r["plate"], date=r["date"],
        )
        for r, v in zip(kept, values, strict=True)
    ]
    if check_images:
        check_images_exist(items, csv_path, root)
    return LabelSet(items, csv_path, root, source, skipped)


def check_images_exist(items: Sequence[LabelledImage], csv_path: Path, root: Path) -> None:
    """Raise a DataError listing (the first few) images the CSV names that do not exist."""
    missing = [it.name for it in items if not it.path.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(items)} images named in {csv_path} are missing "
            f"under {root}: {listing(missing, MAX_LISTED)}",
            "check --images (the folder the image paths are relative to) or fix the paths "
            "in the CSV",
        )


def normalise_to_vehicle(
    rows: Sequence[tuple[str, str, float | None, str, float]], *, source: str = "labels"
) -> list[float]:
    """Viability of each row = ATP / median ATP of the vehicle wells of its site,
    plate and day (the paper's normalisation).

    ``rows`` are ``(site, plate, day, role, atp)``. Raises :class:`DataError`
    naming every plate and day without vehicle wells (or with a median ≤ 0).
    """
    vehicle: dict[tuple, list[float]] = defaultdict(list)
    for site, plate, day, role, atp in rows:
        if role == VEHICLE_ROLE:
            vehicle[(site, plate, day)].append(atp)
    medians: dict[tuple, float] = {}
    bad: list[str] = []
    for key in sorted({(s, p, d) for s, p, d, _, _ in rows}, key=lambda k: (k[0], k[1],
                                                                           k[2] or 0.0)):
        values = vehicle.get(key)
        median = statistics.median(values) if values else None
        if median is None or median <= 0:
            site, plate, day = key
            where = f"plate {plate or '?'} day {day_label(day)}"
            if site != DEFAULT_SITE:
                where = f"site {site} {where}"
            bad.append(where if median is None else f"{where} (vehicle median {median:g})")
        else:
            medians[key] = median
    if bad:
        raise DataError(
            f"{source}: cannot normalise ATP: {len(bad)} plate/day groups have no usable "
            f"vehicle wells: {listing(bad, MAX_LISTED, '; ')}",
            "mark the vehicle (medium/DMSO) wells with role 'vehicle', or give a "
            "'viability' column that is already normalised",
        )
    return [atp / medians[(site, plate, day)] for site, plate, day, _, atp in rows]


def _read_csv(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except FileNotFoundError as exc:
        raise DataError(f"labels file {csv_path} does not exist",
                        "give the path of the labels CSV with --labels") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read labels file {csv_path}: {exc}",
                        "give a UTF-8 CSV file with a header row") from exc
    if not header:
        raise DataError(f"labels file {csv_path} is empty",
                        "the first line must name the columns (image, viability, …)")
    return header, rows


def _atp_col(columns: dict[str, str]) -> str:
    return next(c for c in ATP_COLUMNS if c in columns)


def _choose_source(csv_path: Path, columns: dict[str, str], wanted: str) -> str:
    has_viability = "viability" in columns
    has_atp = any(c in columns for c in ATP_COLUMNS)
    if wanted == "viability" or (wanted == "auto" and has_viability):
        if not has_viability:
            raise DataError(f"{csv_path} has no 'viability' column",
                            "add it, or use raw ATP with columns atp, plate, day, role")
        return "viability"
    if wanted not in ("auto", "atp"):
        raise DataError(f"unknown label source {wanted!r}", "use auto, viability or atp")
    needed = [c for c in ("plate", "day", "role") if c not in columns]
    if not has_atp:
        needed.insert(0, "atp (or atp_raw)")
    if needed:
        raise DataError(
            f"{csv_path} lacks column(s) {', '.join(needed)}",
            "give either a 'viability' column (ATP already normalised to vehicle wells) or "
            "raw 'atp' with 'plate', 'day' and 'role' (vehicle wells marked 'vehicle')",
        )
    return "atp"


def _parse_row(csv_path: Path, line: int, row: dict[str, str], columns: dict[str, str],
               image_col: str, root: Path) -> dict[str, Any]:
    def text(name: str) -> str:
        col = columns.get(name)
        return (row.get(col) or "").strip() if col else ""

    name = (row.get(image_col) or "").strip()
    if not name:
        raise DataError(f"{csv_path} line {line}: the image column is empty",
                        "every row must name its image")
    path = Path(name)
    day_text = text("day")
    conc_text = text("concentration_um")
    return {
        "line": line,
        "raw": row,
        "name": name,
        "path": path if path.is_absolute() else root / path,
        "site": text("site") or DEFAULT_SITE,
        "plate": text("plate"),
        "well": text("well"),
        "day": _number(csv_path, line, "day", day_text) if day_text else None,
        "role": text("role").lower(),
        "compound": text("compound"),
        "concentration": _number(csv_path, line, "concentration_uM", conc_text)
        if conc_text else None,
        "batch": text("batch"),
        "date": text("date"),
    }


def _number(csv_path: Path, line: int, column: str, value: str | None) -> float:
    text = (value or "").strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        shown = repr(text) if text else "empty"
        raise DataError(f"{csv_path} line {line}: {column} is {shown}, not a number",
                        f"fill in {column} as a plain number (e.g. 0.85)")
    return number
