"""Plate maps: what each well of a plate holds (role, compound, concentration).

A plate map comes as CSV (``plate,well,role,compound,concentration_uM`` plus
optional ``group,cmax_uM,unit,dosing_timepoint``; one file may describe several
plates) or as TOML (one plate per file, wells given singly, as lists or as
rectangular ranges such as ``"B02:D04"``). A folder of plate maps is matched to
plate IDs by exact name first, then by glob pattern (``DEMO*``).

Every problem raises :class:`PlateMapError` naming the file, the line and the
fix. Parsing is pure apart from reading the file.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvir_agent.errors import PlateMapError, read_text_file
from nvir_agent.plate import FORMATS, parse_well, row_letters, well_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

log = logging.getLogger(__name__)

ROLES = ("vehicle", "treated", "positive", "untreated", "empty", "ignore")
ROLE_LETTERS = {"vehicle": "V", "treated": "T", "positive": "P", "untreated": "U",
                "empty": ".", "ignore": "x"}
UNITS_TO_UM = {"um": 1.0, "µm": 1.0, "μm": 1.0, "micromolar": 1.0, "nm": 1e-3, "mm": 1e3,
               "pm": 1e-6, "m": 1e6}
MAP_SUFFIXES = (".csv", ".toml")
_RANGE_RE = re.compile(r"^\s*([A-Za-z]{1,2}\d{1,3})\s*:\s*([A-Za-z]{1,2}\d{1,3})\s*$")


@dataclass(frozen=True)
class WellAssignment:
    """What one well holds. Concentrations are in µM."""

    well: str
    role: str
    compound: str | None = None
    concentration_uM: float | None = None
    group: str | None = None
    cmax_uM: float | None = None

    @property
    def group_label(self) -> str | None:
        """Replicate group: the map's label, else compound × concentration."""
        if self.group:
            return self.group
        if self.compound is None:
            return None
        if self.concentration_uM is None:
            return self.compound
        return f"{self.compound} {self.concentration_uM:g} µM"


@dataclass(frozen=True)
class PlateMap:
    """The layout of one plate (``plate`` may be a glob pattern)."""

    plate: str
    wells: Mapping[str, WellAssignment]
    format: int = 96
    source: str = ""
    dosing_timepoint: int | None = None
    cmax_uM: Mapping[str, float] = field(default_factory=dict)

    def role(self, well: str) -> str | None:
        a = self.wells.get(well)
        return a.role if a else None

    def expected_wells(self) -> set[str]:
        """Wells the imager should read (everything mapped except ignore/empty)."""
        return {w for w, a in self.wells.items() if a.role not in ("ignore", "empty")}


# --------------------------------------------------------------------------- wells


def expand_wells(spec: str | list[str], plate_format: int = 96) -> list[str]:
    """'B02', ['B02', 'B03'] or the rectangle 'B02:D04' → canonical well names."""
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not a well name")
        parts = [p for p in re.split(r"[,\s]+", item.strip()) if p]
        for part in parts:
            m = _RANGE_RE.match(part)
            if m:
                r1, c1 = parse_well(m.group(1), plate_format)
                r2, c2 = parse_well(m.group(2), plate_format)
                for r in range(min(r1, r2), max(r1, r2) + 1):
                    for c in range(min(c1, c2), max(c1, c2) + 1):
                        out.append(f"{row_letters(r)}{c:02d}")
            else:
                out.append(well_name(*parse_well(part, plate_format)))
    return out


def to_micromolar(value: float, unit: str | None) -> float:
    """Convert a concentration to µM; unit None or '' means µM."""
    u = (unit or "uM").strip().lower().replace("mol/l", "m")
    if u not in UNITS_TO_UM:
        raise ValueError(f"unknown concentration unit '{unit}'")
    return float(value) * UNITS_TO_UM[u]


# --------------------------------------------------------------------------- builder


class _Builder:
    """Collects wells of one plate, checking each as it comes."""

    def __init__(self, plate: str, plate_format: int, source: str) -> None:
        self.plate = plate
        self.format = plate_format
        self.source = source
        self.wells: dict[str, WellAssignment] = {}
        self.lines: dict[str, str] = {}
        self.dosing_timepoint: int | None = None
        self.cmax: dict[str, float] = {}

    def add(self, well: str, role: str, compound: str | None, conc_uM: float | None,
            group: str | None, cmax_uM: float | None, where: str) -> None:
        if well in self.wells:
            raise PlateMapError(
                f"{where}: well {well} of plate '{self.plate}' is listed twice "
                f"(first at {self.lines[well]}).",
                "Keep one line per well; remove or merge the duplicate.",
            )
        if compound and cmax_uM is not None:
            known = self.cmax.get(compound)
            if known is not None and abs(known - cmax_uM) > 1e-12 * max(1.0, known):
                raise PlateMapError(
                    f"{where}: compound '{compound}' has Cmax {cmax_uM:g} µM here but "
                    f"{known:g} µM elsewhere on plate '{self.plate}'.",
                    "Give each compound a single Cmax.",
                )
            self.cmax[compound] = cmax_uM
        self.wells[well] = WellAssignment(well, role, compound, conc_uM, group, cmax_uM)
        self.lines[well] = where

    def build(self) -> PlateMap:
        wells = {
            w: (a if a.cmax_uM is not None or a.compound not in self.cmax
                else WellAssignment(a.well, a.role, a.compound, a.concentration_uM, a.group,
                                    self.cmax[a.compound]))
            for w, a in self.wells.items()
        }
        return PlateMap(self.plate, wells, self.format, self.source, self.dosing_timepoint,
                        dict(self.cmax))


def _check_entry(role_raw: Any, compound_raw: Any, conc_raw: Any, unit: Any, where: str
                 ) -> tuple[str, str | None, float | None]:
    role = str(role_raw or "").strip().lower()
    if role not in ROLES:
        shown = role_raw if str(role_raw or "").strip() else "(empty)"
        raise PlateMapError(
            f"{where}: unknown role '{shown}'.",
            f"Use one of: {', '.join(ROLES)}.",
        )
    compound = str(compound_raw).strip() if compound_raw not in (None, "") else None
    conc: float | None = None
    if conc_raw not in (None, ""):
        try:
            conc = to_micromolar(float(str(conc_raw).strip()), unit)
        except ValueError as exc:
            raise PlateMapError(
                f"{where}: concentration {conc_raw!r} (unit {unit or 'µM'!r}) is not usable: "
                f"{exc}.",
                "Write a plain number; units: µM (default), nM, mM, pM, M.",
            ) from exc
        if conc < 0 or conc != conc:
            raise PlateMapError(f"{where}: concentration {conc_raw} is negative or not a number.",
                                "Concentrations are ≥ 0.")
        if compound is None:
            raise PlateMapError(
                f"{where}: a concentration ({conc_raw}) is given without a compound.",
                "Add the compound name, or clear the concentration.",
            )
    if role in ("treated", "positive") and compound is None:
        raise PlateMapError(
            f"{where}: a {role} well needs a compound.",
            "Name the compound in the 'compound' column.",
        )
    return role, compound, conc


def _optional_float(raw: Any, what: str, where: str) -> float | None:
    if raw in (None, ""):
        return None
    try:
        v = float(str(raw).strip())
    except ValueError as exc:
        raise PlateMapError(f"{where}: {what} {raw!r} is not a number.",
                            f"Write {what} as a plain number.") from exc
    if v <= 0 or v != v:
        raise PlateMapError(f"{where}: {what} {raw!r} must be > 0.", f"Fix {what}.")
    return v


def _optional_int(raw: Any, what: str, where: str) -> int | None:
    if raw in (None, ""):
        return None
    try:
        return int(str(raw).strip())
    except ValueError as exc:
        raise PlateMapError(f"{where}: {what} {raw!r} is not a whole number.",
                            f"Write {what} as a time point index, e.g. 1.") from exc


# --------------------------------------------------------------------------- CSV


def parse_csv(text: str, *, source: str = "plate map", plate_format: int = 96) -> list[PlateMap]:
    """Parse CSV text into one PlateMap per plate named in the ``plate`` column."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if not header:
        raise PlateMapError(f"{source}: the file is empty.",
                            "Start with the header line plate,well,role,compound,concentration_uM.")
    reader.fieldnames = header
    conc_col = "concentration_um" if "concentration_um" in header else "concentration"
    missing = [c for c in ("plate", "well", "role") if c not in header]
    if missing:
        raise PlateMapError(
            f"{source}: line 1: the header lacks {', '.join(missing)} "
            f"(found: {', '.join(header)}).",
            "The header must be plate,well,role,compound,concentration_uM "
            "(optional: group,cmax_uM,unit,dosing_timepoint).",
        )
    builders: dict[str, _Builder] = {}
    for row in reader:
        where = f"{source}: line {reader.line_num}"
        if None in row:
            raise PlateMapError(f"{where}: more values than header columns.",
                                "Quote values that contain commas.")
        values = {k: (v or "").strip() for k, v in row.items()}
        if not any(values.values()) or values.get("plate", "").startswith("#"):
            continue
        plate = values.get("plate", "")
        if not plate:
            raise PlateMapError(f"{where}: the plate column is empty.", "Give the plate ID.")
        b = builders.setdefault(plate, _Builder(plate, plate_format, source))
        try:
            wells = expand_wells(values["well"], plate_format)
        except ValueError as exc:
            raise PlateMapError(f"{where}: {exc}.",
                                f"Use wells of a {plate_format}-well plate, e.g. B03, "
                                "or set [plates] format.") from exc
        if not wells:
            raise PlateMapError(f"{where}: the well column is empty.", "Give the well, e.g. B03.")
        role, compound, conc = _check_entry(values.get("role"), values.get("compound"),
                                            values.get(conc_col), values.get("unit"), where)
        cmax = _optional_float(values.get("cmax_um"), "cmax_uM", where)
        dosing = _optional_int(values.get("dosing_timepoint"), "dosing_timepoint", where)
        if dosing is not None:
            if b.dosing_timepoint not in (None, dosing):
                raise PlateMapError(f"{where}: plate '{plate}' has two dosing time points "
                                    f"({b.dosing_timepoint} and {dosing}).",
                                    "Give one dosing time point per plate.")
            b.dosing_timepoint = dosing
        for w in wells:
            b.add(w, role, compound, conc, values.get("group") or None, cmax, where)
    if not builders:
        raise PlateMapError(f"{source}: no wells are listed.", "Add one line per well.")
    return [b.build() for b in builders.values()]


# --------------------------------------------------------------------------- TOML


def parse_toml(text: str, *, source: str = "plate map", plate_format: int = 96) -> list[PlateMap]:
    """Parse the TOML form: plate = "ID", optional format/dosing_timepoint/[cmax_uM],
    then [[wells]] tables with wells, role, compound, concentration, unit, group."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlateMapError(f"{source}: not valid TOML: {exc}.",
                            "Fix the line named; see the README for the form.") from exc
    except RecursionError as exc:  # tomllib parses nested arrays recursively
        raise PlateMapError(f"{source}: arrays or tables are nested too deeply for a plate map.",
                            "See the README for the form.") from exc
    known = {"plate", "format", "dosing_timepoint", "cmax_uM", "wells"}
    for key in raw:
        if key not in known:
            raise PlateMapError(f"{source}: unknown key '{key}'.",
                                f"Known keys: {', '.join(sorted(known))}.")
    plate = raw.get("plate")
    if not isinstance(plate, str) or not plate.strip():
        raise PlateMapError(f"{source}: 'plate' is missing.",
                            'Start with plate = "PLATE-ID" (a glob such as "DEMO*" is allowed).')
    fmt = raw.get("format", plate_format)
    if fmt not in FORMATS:
        raise PlateMapError(f"{source}: format = {fmt!r} is not a plate format.",
                            "Use 96, 384 or 1536.")
    b = _Builder(plate.strip(), fmt, source)
    b.dosing_timepoint = _optional_int(raw.get("dosing_timepoint"), "dosing_timepoint", source)
    cmax_table = raw.get("cmax_uM", {})
    if not isinstance(cmax_table, dict):
        raise PlateMapError(f"{source}: cmax_uM must be a table of compound = µM.",
                            'Write [cmax_uM] then lines such as Toxazine = 1.5.')
    for compound, value in cmax_table.items():
        b.cmax[compound] = _optional_float(value, f"cmax_uM.{compound}", source) or 0.0
    entries = raw.get("wells", [])
    if not isinstance(entries, list) or not entries:
        raise PlateMapError(f"{source}: no [[wells]] entries.",
                            'Add [[wells]] tables with wells = "B02:D04" and role = "treated".')
    entry_keys = {"wells", "role", "compound", "concentration", "concentration_uM", "unit",
                  "group", "cmax_uM"}
    for i, entry in enumerate(entries, start=1):
        where = f"{source}: [[wells]] entry {i}"
        if not isinstance(entry, dict):
            raise PlateMapError(f"{where} is not a table.", "Write it as a [[wells]] table.")
        for key in entry:
            if key not in entry_keys:
                raise PlateMapError(f"{where}: unknown key '{key}'.",
                                    f"Known keys: {', '.join(sorted(entry_keys))}.")
        try:
            wells = expand_wells(entry.get("wells", []), fmt)
        except ValueError as exc:
            raise PlateMapError(f"{where}: {exc}.",
                                f"Use wells of a {fmt}-well plate or set format.") from exc
        if not wells:
            raise PlateMapError(f"{where}: no wells given.", 'Add wells = "B02:D04".')
        conc = entry.get("concentration", entry.get("concentration_uM"))
        role, compound, conc_uM = _check_entry(entry.get("role"), entry.get("compound"), conc,
                                               entry.get("unit"), where)
        cmax = _optional_float(entry.get("cmax_uM"), "cmax_uM", where)
        for w in wells:
            b.add(w, role, compound, conc_uM, entry.get("group") or None, cmax, where)
    return [b.build()]


# --------------------------------------------------------------------------- files


def read_plate_maps(path: str | Path, plate_format: int = 96) -> list[PlateMap]:
    """Read a CSV or TOML plate map file (one or more plates)."""
    p = Path(path)
    text = read_text_file(p, "Plate map", PlateMapError,
                          missing_hint="Check the path, or [plates] maps in agent.toml.",
                          format_hint="Save it as UTF-8 CSV or TOML.")
    if p.suffix.lower() == ".toml":
        return parse_toml(text, source=str(p), plate_format=plate_format)
    if p.suffix.lower() == ".csv":
        return parse_csv(text, source=str(p), plate_format=plate_format)
    raise PlateMapError(f"Plate map {p} is neither .csv nor .toml.",
                        "Save it as CSV or TOML with that file extension.")


class PlateMapLibrary:
    """The plate maps of a folder (or one file), matched to plates by ID.

    Exact plate IDs win over glob patterns; among patterns the longest
    (most specific) wins. Files are re-read when they change on disk. A broken
    file is logged and skipped so the other maps keep working.
    """

    def __init__(self, location: str | Path | None, plate_format: int = 96) -> None:
        self.location = Path(location) if location else None
        self.format = plate_format
        self._stamp: tuple[tuple[str, float, int], ...] | None = None
        self._maps: list[PlateMap] = []
        self.errors: list[str] = []

    def _files(self) -> list[Path]:
        loc = self.location
        if loc is None:
            return []
        if loc.is_file():
            return [loc]
        if not loc.is_dir():
            return []
        return sorted(p for p in loc.iterdir()
                      if p.is_file() and p.suffix.lower() in MAP_SUFFIXES
                      and not p.name.startswith("."))

    def refresh(self) -> None:
        """Re-read the maps when a file was added, removed or changed."""
        try:
            files = self._files()
            stamp = tuple((str(p), p.stat().st_mtime, p.stat().st_size) for p in files)
        except OSError as exc:
            log.warning("cannot list plate maps in %s: %s", self.location, exc)
            return
        if stamp == self._stamp:
            return
        maps: list[PlateMap] = []
        errors: list[str] = []
        for p in files:
            try:
                maps.extend(read_plate_maps(p, self.format))
            except PlateMapError as exc:
                errors.append(str(exc))
                log.error("plate map skipped: %s", exc)
        self._maps, self.errors, self._stamp = maps, errors, stamp

    def maps(self) -> list[PlateMap]:
        self.refresh()
        return list(self._maps)

    @property
    def version(self) -> tuple[tuple[str, float, int], ...] | None:
        """Changes whenever a map file is added, removed or edited."""
        self.refresh()
        return self._stamp

    def for_plate(self, plate: str) -> PlateMap | None:
        """The map for this plate ID, or None."""
        return match_plate(plate, self.maps())


def match_plate(plate: str, maps: Iterable[PlateMap]) -> PlateMap | None:
    """Exact ID first, then the longest glob pattern that matches."""
    maps = list(maps)
    for m in maps:
        if m.plate == plate:
            return m
    globs = [m for m in maps if any(ch in m.plate for ch in "*?[")
             and fnmatch.fnmatchcase(plate, m.plate)]
    return max(globs, key=lambda m: len(m.plate)) if globs else None


# --------------------------------------------------------------------------- layout


def _abbreviations(pm: PlateMap) -> dict[str, str]:
    """Compound → two-letter code, unique within the plate."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for compound in sorted({a.compound for a in pm.wells.values()
                            if a.compound and a.role in ("treated", "positive")}):
        letters = re.sub(r"[^A-Za-z0-9]", "", compound) or "C"
        cands = [letters[:2].title()] + [letters[0].upper() + ch.lower() for ch in letters[2:]]
        cands += [f"{letters[0].upper()}{i}" for i in range(1, 100)]
        code = next(c for c in cands if len(c) == 2 and c not in used)
        used.add(code)
        out[compound] = code
    return out


def render_layout(pm: PlateMap) -> str:
    """A text grid (rows × columns) with role letters / compound codes and a legend."""
    rows, cols = FORMATS[pm.format]
    abbrev = _abbreviations(pm)
    # concentration rank within each compound: 1 = lowest
    ranks: dict[tuple[str, float], int] = {}
    for compound in abbrev:
        concs = sorted({a.concentration_uM for a in pm.wells.values()
                        if a.compound == compound and a.concentration_uM is not None})
        ranks.update({(compound, c): i for i, c in enumerate(concs, start=1)})

    def cell(a: WellAssignment | None) -> str:
        if a is None:
            return "-"
        if a.role in ("treated", "positive") and a.compound:
            rank = ranks.get((a.compound, a.concentration_uM or -1.0))
            return abbrev[a.compound] + (str(rank) if rank else "")
        return ROLE_LETTERS[a.role]

    width = max([3] + [len(cell(a)) for a in pm.wells.values()]) + 1
    lines = [f"Plate {pm.plate} ({pm.format} wells, {len(pm.wells)} mapped)"
             + (f" — {pm.source}" if pm.source else "")]
    lines.append("    " + "".join(f"{c:>{width}}" for c in range(1, cols + 1)))
    for r in range(1, rows + 1):
        label = row_letters(r)
        cells = [cell(pm.wells.get(f"{label}{c:02d}")) for c in range(1, cols + 1)]
        lines.append(f"{label:>3} " + "".join(f"{x:>{width}}" for x in cells))
    lines.append("")
    lines.append("Legend: V vehicle  U untreated  . empty  x ignore  - not mapped;"
                 " treated/positive: compound code + concentration rank (1 = lowest)")
    for compound, code in abbrev.items():
        concs = sorted({a.concentration_uM for a in pm.wells.values()
                        if a.compound == compound and a.concentration_uM is not None})
        roles = sorted({a.role for a in pm.wells.values() if a.compound == compound})
        cmax = pm.cmax_uM.get(compound)
        conc_text = ", ".join(f"{i}={c:g}" for i, c in enumerate(concs, start=1))
        lines.append(f"  {code}  {compound} ({'/'.join(roles)}): "
                     + (f"{conc_text} µM" if conc_text else "no concentration")
                     + (f"; Cmax {cmax:g} µM" if cmax else ""))
    counts = {role: sum(1 for a in pm.wells.values() if a.role == role) for role in ROLES}
    lines.append("Wells: " + ", ".join(f"{n} {role}" for role, n in counts.items() if n))
    if pm.dosing_timepoint is not None:
        lines.append(f"Dosing at time point {pm.dosing_timepoint}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- JSON


def plate_map_to_dict(pm: PlateMap) -> dict[str, Any]:
    """A plain dict (JSON-safe) of a plate map, as the store keeps it."""
    return {
        "plate": pm.plate, "format": pm.format, "source": pm.source,
        "dosing_timepoint": pm.dosing_timepoint, "cmax_uM": dict(pm.cmax_uM),
        "wells": {w: {"role": a.role, "compound": a.compound,
                      "concentration_uM": a.concentration_uM, "group": a.group,
                      "cmax_uM": a.cmax_uM} for w, a in sorted(pm.wells.items())},
    }


def plate_map_from_dict(d: Mapping[str, Any]) -> PlateMap:
    """Inverse of :func:`plate_map_to_dict`."""
    wells = {w: WellAssignment(w, v["role"], v.get("compound"), v.get("concentration_uM"),
                               v.get("group"), v.get("cmax_uM"))
             for w, v in d.get("wells", {}).items()}
    return PlateMap(d["plate"], wells, int(d.get("format", 96)), d.get("source", ""),
                    d.get("dosing_timepoint"), dict(d.get("cmax_uM") or {}))
