"""Vendor file names → ImageKey (plate, well, time point, field, channel, z; see plate.py).

Pure functions over path strings: nothing here touches the file system.

Presets cover the imagers named in DESIGN.md; ``auto`` tries them from the
most specific pattern to the least specific one. A user regex with named
groups (``plate``, ``well`` or ``row``+``column``, ``field``, ``channel``,
``z``, ``timepoint``, ``elapsed_s`` or ``days``/``hours``/``minutes``/
``seconds``) handles anything else. When a name carries no plate, the plate
comes from the nearest parent folder that is not a structural one
(``TimePoint_n``, ``ZStep_n``, ``Images``, dates, bare numbers).
Names that are not valid UTF-8 are read in their readable form, where each
such byte is ``\\xNN`` (a Latin-1 ``Plate_É_B03`` gives plate ``Plate_\\xc9``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any

from nvir_agent.errors import NamingError
from nvir_agent.ingest.pathnames import readable
from nvir_agent.plate import ImageKey, parse_well, row_number, well_name

# Rows A–Z then AA–AF; columns 1–48, zero-padded or not.
_WELL = r"(?:A[A-F]|[A-Z])\d{1,2}"
_GUID = r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"
_EXT = r"\.[A-Za-z0-9]{1,5}"
# Well letters are upper case (as every imager writes them); the rest of a
# pattern ignores case through (?i:...) where vendors vary.
_PLATE = r"(?:(?P<plate>.+?)_)?"
_CHANNEL_NAME = r"[A-Za-z][A-Za-z0-9 +\-\[\]().]*?"

# Most specific first: ``auto`` tries them in this order.
PRESETS: dict[str, re.Pattern[str]] = {
    # Opera Phenix / Operetta (Harmony): r02c03f01p01-ch1sk1fk1fl1.tiff
    "harmony": re.compile(
        r"^(?i:r)(?P<row>\d{2})(?i:c)(?P<column>\d{2})(?i:f)(?P<field>\d{2,3})(?i:p)(?P<z>\d{2,3})"
        r"(?i:-ch)(?P<channel>\d+)(?i:sk)(?P<timepoint>\d+)(?i:fk)\d+(?i:fl)\d+" + _EXT + "$"
    ),
    # Yokogawa CellVoyager: Plate_B02_T0001F001L01A01Z01C02.tif
    "cellvoyager": re.compile(
        "^" + _PLATE + r"(?P<well>" + _WELL + r")_(?i:T)(?P<timepoint>\d{4})(?i:F)(?P<field>\d{3})"
        r"(?i:L)\d{2}(?i:A)\d{2}(?i:Z)(?P<z>\d{2})(?i:C)(?P<channel>\d{2})" + _EXT + "$"
    ),
    # Cellomics / ArrayScan: PLATE_090915160001_A01f00d0.tif
    "cellomics": re.compile(
        "^" + _PLATE + r"(?P<well>" + _WELL + r")(?i:f)(?P<field>\d{2,3})(?i:d)(?P<channel>\d)"
        + _EXT + "$"
    ),
    # Incucyte export: VID1957_phase_E11_5_06d12h05m.tif
    "incucyte": re.compile(
        "^" + _PLATE + r"(?P<channel>" + _CHANNEL_NAME + r")_(?P<well>" + _WELL + r")"
        r"_(?P<field>\d+)_(?P<days>\d+)(?i:d)(?P<hours>\d+)(?i:h)(?P<minutes>\d+)(?i:m)"
        + _EXT + "$"
    ),
    # Cytation / Gen5: B5_03_1_1_Bright Field_001.tif
    "cytation": re.compile(
        "^" + _PLATE + r"(?P<well>" + _WELL + r")_-?\d+_\d+_(?P<field>\d+)"
        r"_(?P<channel>" + _CHANNEL_NAME + r")_(?P<timepoint>\d{3,})" + _EXT + "$"
    ),
    # ImageXpress: PLATE1_B03_s1_w1.TIF, MIP-2P-2sub_C05_s2_w2<GUID>.tif
    "imagexpress": re.compile(
        "^" + _PLATE + r"(?P<well>" + _WELL + r")(?:(?i:_s)(?P<field>\d+))?(?:(?i:_w)(?P<channel>\d+?))?"
        r"(?i:" + _GUID + r")?" + _EXT + "$"
    ),
}

PRESET_NAMES = ("auto", *PRESETS, "regex")

# Folders that describe an acquisition's structure, never a plate.
_STRUCTURAL = re.compile(
    r"^(?:TimePoint_\d+|ZStep_\d+|Images|Measurement ?\d*|\d+|\d{4}-\d{2}-\d{2}.*|"
    r"\d{8}(?:[_-]\d+)?|[A-Za-z]:)$",
    re.IGNORECASE,
)
_TIMEPOINT_DIR = re.compile(r"^TimePoint_(\d+)$", re.IGNORECASE)
_ZSTEP_DIR = re.compile(r"^ZStep_(\d+)$", re.IGNORECASE)

# Never images, whatever the patterns say: previews, Office locks, partial copies.
ALWAYS_IGNORED = ("*_thumb*", "~$*", "*.tmp", "*.part", "*.partial", "*.crdownload")


def _pure(path: str | PurePath) -> PurePath:
    """A pure path of the readable form: a byte that is not UTF-8 reads as ``\\xNN``."""
    if isinstance(path, PurePath):
        return type(path)(readable(str(path)))
    path = readable(path)
    if "\\" in path and "/" not in path:
        return PureWindowsPath(path)
    return PurePosixPath(path)


def plate_from_folders(path: str | PurePath) -> str | None:
    """The nearest parent folder that is not structural (TimePoint_n, dates …)."""
    for parent in _pure(path).parents:
        name = parent.name
        if not name:
            return None
        if not _STRUCTURAL.match(name):
            return name
    return None


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _channel(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    value = value.strip()
    return str(int(value)) if value.isdigit() else value


def _key_from_groups(vendor: str, groups: dict[str, str | None]) -> ImageKey:
    """Build a key from regex groups; ValueError when the well is impossible."""
    if groups.get("well"):
        row, column = parse_well(groups["well"])  # type: ignore[arg-type]
    elif groups.get("row") and groups.get("column"):
        raw_row = groups["row"].strip()  # type: ignore[union-attr]
        row = int(raw_row) if raw_row.isdigit() else row_number(raw_row)
        column = int(groups["column"])  # type: ignore[arg-type]
    else:
        raise ValueError("the name gives no well")
    well = well_name(row, column)
    elapsed: float | None = None
    if groups.get("elapsed_s"):
        elapsed = float(groups["elapsed_s"])  # type: ignore[arg-type]
    elif any(groups.get(k) for k in ("days", "hours", "minutes", "seconds")):
        elapsed = float(
            int(groups.get("days") or 0) * 86400
            + int(groups.get("hours") or 0) * 3600
            + int(groups.get("minutes") or 0) * 60
            + float(groups.get("seconds") or 0)
        )
    plate = groups.get("plate")
    return ImageKey(
        vendor=vendor,
        plate=plate.strip(" _-") or None if plate else None,
        well=well,
        row=row,
        column=column,
        field=_int(groups.get("field")),
        channel=_channel(groups.get("channel")),
        z=_int(groups.get("z")),
        timepoint=_int(groups.get("timepoint")),
        elapsed_s=elapsed,
    )


def _with_folders(key: ImageKey, path: PurePath) -> ImageKey:
    """Fill what the folders tell: TimePoint_n, ZStep_n, and the plate."""
    changes: dict[str, Any] = {}
    for parent in path.parents:
        if key.timepoint is None and "timepoint" not in changes:
            m = _TIMEPOINT_DIR.match(parent.name)
            if m:
                changes["timepoint"] = int(m.group(1))
        if key.z is None and "z" not in changes:
            m = _ZSTEP_DIR.match(parent.name)
            if m:
                changes["z"] = int(m.group(1))
    if key.plate is None:
        plate = plate_from_folders(path)
        if plate is not None:
            changes["plate"] = plate
    return replace(key, **changes) if changes else key


def _match(vendor: str, pattern: re.Pattern[str], path: PurePath) -> ImageKey | None:
    m = pattern.search(path.name)
    if m is None and vendor == "custom":
        m = pattern.search(path.as_posix())
    if m is None:
        return None
    try:
        key = _key_from_groups(vendor, m.groupdict())
    except ValueError:
        return None
    return _with_folders(key, path)


def parse_path(
    path: str | PurePath, preset: str = "auto", regex: str | re.Pattern[str] | None = None
) -> ImageKey:
    """The ImageKey of an image path (its name and parent folders).

    ``preset`` is one of PRESET_NAMES; with ``auto`` a given ``regex`` is
    tried first, then the presets from the most specific to the least.
    Raises NamingError when nothing matches.
    """
    p = _pure(path)
    if preset not in PRESET_NAMES:
        raise NamingError(
            f"Unknown naming preset {preset!r}.",
            f"Use one of: {', '.join(PRESET_NAMES)}.",
        )
    tried: list[tuple[str, re.Pattern[str]]] = []
    if regex:
        tried.append(("custom", re.compile(regex) if isinstance(regex, str) else regex))
    elif preset == "regex":
        raise NamingError(
            "watch.naming is 'regex' but watch.regex is empty.",
            "Give watch.regex with named groups such as (?P<well>[A-P]\\d{2}).",
        )
    if preset == "auto":
        tried.extend(PRESETS.items())
    elif preset != "regex":
        tried = [(preset, PRESETS[preset])]
        if regex:
            tried.insert(0, ("custom", re.compile(regex) if isinstance(regex, str) else regex))
    for vendor, pattern in tried:
        key = _match(vendor, pattern, p)
        if key is not None:
            return key
    names = ", ".join(v for v, _ in tried)
    raise NamingError(
        f"The file name {p.name!r} matches no known naming scheme (tried {names}).",
        "Set watch.naming to your imager's preset, or give watch.regex with named groups "
        "such as (?P<plate>…)_(?P<well>[A-P]\\d{2}).",
    )


def try_parse_path(
    path: str | PurePath, preset: str = "auto", regex: str | re.Pattern[str] | None = None
) -> ImageKey:
    """Like parse_path, but an unrecognised name gives a key with vendor None
    (the image is still analysed; only its plate/well are unknown)."""
    try:
        return parse_path(path, preset, regex)
    except NamingError:
        return ImageKey()


def _fnmatch_any(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat.lower()) for pat in patterns)


def is_candidate(
    path: str | PurePath, patterns: Iterable[str], ignore: Iterable[str] = ()
) -> bool:
    """True when a file name matches the image patterns (case-insensitive)
    and none of the ignore patterns, nor a preview/temporary-file rule."""
    name = _pure(path).name.lower()
    if not name or _fnmatch_any(name, ALWAYS_IGNORED) or _fnmatch_any(name, ignore):
        return False
    return _fnmatch_any(name, patterns)
