"""What the review window shows, read from the store (no Qt here).

Each function takes a database path, opens its own short-lived read-only
connection and returns plain values, so the window can call it from a worker
thread. Nothing here is drawn; the views turn these values into pixels.

A plate loads in two steps, so the first view comes early: :func:`load_plate`
reads the time courses (what the plate view shows first, the time-course
plot and the fits need), :func:`load_plate_details` then pages through the
plate's measurements once for the other metrics (diameter, circularity,
focus) and every well's images with their outlines (the thumbnails strip).
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nvir_agent.monitor.platemap import FORMATS, PlateMap, parse_well
from nvir_agent.monitor.timecourse import (
    ReadSummary,
    WellTimepoint,
    assign_timepoints,
    load_plate_timecourses,
)
from nvir_agent.report.trust import concentration_intervals, has_intervals
from nvir_agent.store import UNLIKE_TRAINING, Alert, MeasurementRow, StoreReader, Trust

# metric key → (label for the picker, unit shown on the colour bar)
METRICS: dict[str, tuple[str, str]] = {
    "rel_control": ("Viability relative to vehicle", "× vehicle"),
    "rel_baseline": ("Viability vs the well's baseline", "× baseline"),
    "diameter": ("Spheroid diameter", "px"),
    "circularity": ("Circularity", ""),
    "focus": ("Focus (Laplacian variance)", ""),
}
FEATURE_KEYS = {"diameter": ("diameter_um", "equivalent_diameter_px"),
                "circularity": ("circularity",), "focus": ("focus",)}


@dataclass(frozen=True)
class WellImage:
    """One analysed image of a well (the thumbnails strip)."""

    image_id: int
    path: str
    timepoint: int
    field: int | None
    state: str
    found: bool | None
    viability: float | None
    qc: tuple[str, ...]
    outline: tuple[tuple[int, int], ...] | None  # full-image pixels, when the engine stored it
    width: int | None = None
    height: int | None = None
    trust: Trust = Trust()  # its interval and typicality (None where the model cannot say)

    @property
    def unlike_training(self) -> bool:
        return UNLIKE_TRAINING in self.qc


@dataclass(frozen=True)
class PlateDetails:
    """The second step of a plate: per-read features and every well's images."""

    features: dict[tuple[str, int], dict[str, float]]
    images: dict[str, list[WellImage]]
    judged: bool = False  # some image has a typicality (the model judges its images)


@dataclass
class PlateData:
    """One plate: its layout, the time-course points and (once the details are
    loaded) per-read features and images."""

    plate: str
    format: int
    plate_map: PlateMap | None
    timepoints: list[int]
    points: dict[tuple[str, int], WellTimepoint] = field(default_factory=dict)
    reads: list[ReadSummary] = field(default_factory=list)
    acquired_at: dict[int, float] = field(default_factory=dict)
    vehicle_band: dict[int, tuple[float, float]] = field(default_factory=dict)
    expected: frozenset[str] = frozenset()  # wells the imager should read (× when no data)
    details: PlateDetails | None = None
    version: int = -1  # the store's analysed-image count when this was read (store_version)
    has_intervals: bool = False  # the model gave its scores intervals (a calibrated file)
    _by_read: dict[int, list[WellTimepoint]] = field(default_factory=dict, repr=False)

    @property
    def features(self) -> dict[tuple[str, int], dict[str, float]]:
        """Per (well, read) diameter, circularity and focus ({} until the details)."""
        return self.details.features if self.details is not None else {}

    @property
    def shape(self) -> tuple[int, int]:
        return FORMATS.get(self.format, FORMATS[96])

    def value(self, well: str, timepoint: int, metric: str) -> float | None:
        """The metric of a well at a read (None: no data)."""
        if metric in ("rel_control", "rel_baseline"):
            p = self.points.get((well, timepoint))
            if p is None:
                return None
            v = p.viability_rel_control if metric == "rel_control" else p.viability_rel_baseline
            return v if v is not None and math.isfinite(v) else None
        return self.features.get((well, timepoint), {}).get(metric)

    def values(self, timepoint: int | None, metric: str) -> list[float]:
        """Every value of the metric on this plate (one read, or all reads)."""
        if metric in ("rel_control", "rel_baseline"):
            if not self._by_read:
                for p in self.points.values():
                    self._by_read.setdefault(p.timepoint, []).append(p)
            tps = self.timepoints if timepoint is None else [timepoint]
            out = []
            for tp in tps:
                for p in self._by_read.get(tp, ()):
                    v = p.viability_rel_control if metric == "rel_control" \
                        else p.viability_rel_baseline
                    if v is not None and math.isfinite(v):
                        out.append(v)
            return out
        return [v for (_w, tp), f in self.features.items()
                if (timepoint is None or tp == timepoint) and (v := f.get(metric)) is not None]

    @property
    def models(self) -> tuple[str, ...]:
        """The models that scored this plate's images."""
        return tuple(sorted({m for r in self.reads for m in r.models}))

    @property
    def has_typicality(self) -> bool | None:
        """The model judged how typical the images are (None until the images are read)."""
        return None if self.details is None else self.details.judged

    def role(self, well: str) -> str | None:
        return self.plate_map.role(well) if self.plate_map else None

    def describe(self, well: str) -> str:
        """'Fictazine 8 µM (treated)' / 'vehicle' / 'not mapped'."""
        a = self.plate_map.wells.get(well) if self.plate_map else None
        if a is None:
            return "not mapped"
        if a.compound:
            conc = f" {a.concentration_uM:g} µM" if a.concentration_uM is not None else ""
            return f"{a.compound}{conc} ({a.role})"
        return a.role

    def group_wells(self, well: str) -> list[str]:
        """The replicate group of a well (the well alone when it has none)."""
        if self.plate_map is None or well not in self.plate_map.wells:
            return [well]
        label = self.plate_map.wells[well].group_label
        if label is None:
            return [well]
        return sorted(w for w, a in self.plate_map.wells.items() if a.group_label == label)

    def vehicle_wells(self) -> list[str]:
        if self.plate_map is None:
            return []
        return sorted(w for w, a in self.plate_map.wells.items() if a.role == "vehicle")


def _median(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(vals) if vals else None


def _feature(row: MeasurementRow, metric: str) -> float | None:
    for key in FEATURE_KEYS[metric]:
        v = row.features.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    return None


def load_plate(database: str | os.PathLike[str], plate: str,
               settings: dict[str, Any] | None = None) -> PlateData:
    """A plate's time courses as the monitor computes them (the first view)."""
    from nvir_agent.report.figures import vehicle_band

    version = store_version(database)  # before reading: a later change reloads the plate
    tc = load_plate_timecourses(database, [plate], **(settings or {})).get(plate)
    pm = tc.plate_map if tc else None
    wells = {p.well for p in tc.points} if tc else set()
    data = PlateData(plate=plate, format=pm.format if pm else _guess_format(wells),
                     plate_map=pm, timepoints=[], version=version)
    if tc is not None:
        data.points = {(p.well, p.timepoint): p for p in tc.points}
        data.reads = sorted(tc.reads, key=lambda r: r.timepoint)
        data.acquired_at = {r.timepoint: r.acquired_at for r in tc.reads}
        data.vehicle_band = vehicle_band(tc.points)
        data.has_intervals = has_intervals(tc.points)
    data.timepoints = sorted({tp for (_w, tp) in data.points})
    data.expected = frozenset(pm.expected_wells() if pm else wells)
    data.values(None, "rel_control")  # index the points by read here, not on the UI thread
    return data


def load_plate_details(database: str | os.PathLike[str], plate: str,
                       read_gap_s: float = 900.0, page: int = 2000) -> PlateDetails:
    """The plate's features per (well, read) and each well's images in time order,
    from one pass over its measurements, ``page`` rows at a time."""
    per: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    images: dict[str, list[WellImage]] = defaultdict(list)
    with StoreReader(database) as reader:
        tps = assign_timepoints(reader.image_scores([plate]), read_gap_s)
        after = 0
        while True:
            rows = reader.measurements(plate=plate, after_id=after, limit=page)
            for row in rows:
                well = row.key.well
                if not well:
                    continue
                tp = tps.get(row.id)
                images[well].append(_well_image(row, tp))
                if tp is None or row.state != "done" or not row.found:
                    continue
                for metric in FEATURE_KEYS:
                    v = _feature(row, metric)
                    if v is not None:
                        per[(well, tp)][metric].append(v)
            if len(rows) < page:
                break
            after = rows[-1].id
    features = {k: {m: v for m, vals in d.items() if (v := _median(vals)) is not None}
                for k, d in per.items()}
    for ims in images.values():
        ims.sort(key=lambda w: (w.timepoint, w.field or 0, w.image_id))
    judged = any(im.trust.typicality is not None for ims in images.values() for im in ims)
    return PlateDetails(features, dict(images), judged)


def _well_image(row: MeasurementRow, timepoint: int | None) -> WellImage:
    return WellImage(
        image_id=row.id, path=row.path,
        timepoint=timepoint if timepoint is not None else (row.key.timepoint or 0),
        field=row.key.field, state=row.state, found=row.found, viability=row.viability,
        qc=row.qc, outline=row.outline or None,
        width=row.features.get("width"), height=row.features.get("height"), trust=row.trust)


def _guess_format(wells: Iterable[str]) -> int:
    fmt = 96
    for well in wells:
        try:
            r, c = parse_well(well)
        except Exception:  # an odd well name: keep the smallest plate that fits the rest
            continue
        if r > 16 or c > 24:
            return 1536
        if r > 8 or c > 12:
            fmt = 384
    return fmt


def load_alerts(database: str | os.PathLike[str], station: str | None = None) -> list[Alert]:
    """Every alert (on the plates one station imaged), active ones first (the alert
    list filters)."""
    with StoreReader(database) as reader:
        return reader.alerts(include_closed=True, station=station)


def plate_names(database: str | os.PathLike[str], station: str | None = None) -> list[str]:
    """The plates with images (of one station, or of all)."""
    with StoreReader(database) as reader:
        return reader.plate_names(station=station)


def station_names(database: str | os.PathLike[str]) -> list[str]:
    """Every station that has written to the store (several microscopes), sorted."""
    with StoreReader(database) as reader:
        return [s.name for s in reader.stations()]


def store_version(database: str | os.PathLike[str]) -> int:
    """Images analysed or failed so far (one count query): a plate read at an
    older version may lack results."""
    with StoreReader(database) as reader:
        c = reader.counts()
    return c.done + c.failed


def alert_wells(alert: Alert) -> list[str]:
    """The wells an alert is about (a well alert, or a group's wells)."""
    kind, _, rest = alert.subject.partition(":")
    if kind == "well":
        return [rest]
    wells = alert.details.get("alerting_wells") or alert.details.get("wells") or []
    return [str(w) for w in wells]


def onset(values: Sequence[tuple[int, float | None]], threshold: float) -> int | None:
    """The first read from which the values stay below ``threshold`` (loss onset)."""
    start = None
    for tp, v in values:
        below = v is not None and v < threshold
        start = (tp if start is None else start) if below else None
    return start


@dataclass(frozen=True)
class DoseResponse:
    """A compound's dose-response at one read: the fit and its replicate points."""

    compound: str
    timepoint: int
    fit: Any  # report.dili.CompoundDayFit, or None when it could not be fitted
    points: tuple[tuple[float, float, str], ...]  # (µM, viability, well)
    # (time point, µM) → 90 % interval of the median there (none: the model gives none)
    intervals: dict[tuple[int, float], tuple[float, float]] = field(default_factory=dict)


def dose_response(data: PlateData, compound: str, timepoint: int) -> DoseResponse:
    """Fit the compound's wells at this read (runs scipy: call it from a worker)."""
    from nvir_agent.report.dili import fit_compounds, records_from_points

    points = [p for p in data.points.values() if p.timepoint == timepoint]
    records = [r for r in records_from_points(points) if r.compound == compound]
    fits = fit_compounds(records, days=[timepoint]) if records else []
    return DoseResponse(compound, timepoint, fits[0] if fits else None,
                        tuple((r.concentration_uM, r.viability, r.well or "") for r in records),
                        concentration_intervals(points, compound))
