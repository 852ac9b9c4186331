"""Viability time courses: per-image scores → per-well values per plate read,
normalised to the vehicle controls and to each well's own baseline.

Pure part (no files, no clock): :func:`assign_timepoints`,
:func:`aggregate_wells`, :func:`normalise`, :func:`summarise_reads`.
Store part: :func:`load_timecourses` and :func:`load_plate` read the images,
measurements and plate-map tables and run the pure part.

Rules that make results stable while images keep arriving:
- time points come from the file name (index, else elapsed time clustered into
  reads), else from acquisition time (file mtime) clustered into reads: a gap
  longer than ``read_gap_s`` between consecutive images starts a new read;
- the latest image per (plate, well, time point, field, channel, z) wins, so a
  re-imaged well replaces its earlier image instead of being counted twice;
- several fields of one well at one time point → the median of those that
  count under the counting rule (:mod:`nvir_agent.monitor.counting`);
- a read is *complete* once a later read of the same plate has begun: only
  then can a well be called missing from it. A well counts as expected at a
  read when the plate map lists it, or when it was imaged at that read or an
  earlier one — a well first imaged at read 3 is not missing from reads 1
  and 2 unless the plate map says it should have been there.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nvir_agent.config import Config
from nvir_agent.monitor import counting
from nvir_agent.monitor.platemap import (
    PlateMap,
    WellAssignment,
    plate_map_from_dict,
    plate_map_to_dict,
)
from nvir_agent.store import UNLIKE_TRAINING, ImageScore, Reads, Transaction, open_reader

log = logging.getLogger(__name__)


DEFAULT_READ_GAP_S = 900.0
DEFAULT_MIN_CONTROLS = 3

# Flags on a WellTimepoint
FLAG_FALLBACK = "fallback"  # controls taken from the same time point on other plates
FLAG_NO_CONTROLS = "no_controls"  # no usable vehicle wells at all
FLAG_NO_MAP = "no_map"  # the plate has no plate map
FLAG_QC = "qc"  # no field of this well passed segmentation QC
FLAG_NOT_FOUND = "not_found"  # no spheroid found
FLAG_FAILED = "failed"  # the image could not be read/analysed
FLAG_NO_SCORE = "no_score"  # analysed but not scored (no model)
FLAG_BASELINE = "baseline"  # this time point is the well's baseline
FLAG_NO_BASELINE = "no_baseline"  # no usable baseline score

FLAG_EXCLUDED = "excluded"  # the counting rule excludes this well at this read

# Segmentation QC flags that mean the image itself is poor (not the spheroid);
# see nvir_agent.monitor.counting for the whole rule.
IMAGING_QC_FLAGS = counting.IMAGING_FAILURE_FLAGS


@dataclass(frozen=True)
class WellRead:
    """One well at one time point, fields combined."""

    plate: str
    well: str
    timepoint: int
    score: float | None
    passed_qc: bool
    flags: tuple[str, ...]
    n_fields: int
    acquired_at: float
    elapsed_s: float | None = None
    image_ids: tuple[int, ...] = ()
    counted: bool = True  # the counting rule keeps this well at this read
    exclusion: str = ""  # why not, in words ("" when counted)
    score_low: float | None = None  # the score's 90 % interval (median of its images')
    score_high: float | None = None
    unlike_training: bool = False  # most of its scored images are unlike the training images
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class WellTimepoint:
    """The time-course point of one well: what reports and rules read."""

    plate: str
    well: str
    timepoint: int
    role: str | None
    compound: str | None
    concentration_uM: float | None
    group: str | None
    score: float | None
    viability_rel_control: float | None
    viability_rel_baseline: float | None
    flags: tuple[str, ...] = ()
    cmax_uM: float | None = None
    control_median: float | None = None
    passed_qc: bool = True
    acquired_at: float = 0.0
    elapsed_s: float | None = None
    n_fields: int = 1
    counted: bool = True  # the counting rule keeps this well at this read
    exclusion: str = ""  # why not, in words ("" when counted)
    image_ids: tuple[int, ...] = ()
    rel_control_low: float | None = None  # 90 % interval of viability_rel_control
    rel_control_high: float | None = None
    unlike_training: bool = False


@dataclass(frozen=True)
class ControlLevel:
    """The vehicle reference of one plate at one time point."""

    median: float | None
    cv: float | None
    n: int
    source: str  # plate | fallback | none


@dataclass(frozen=True)
class ReadSummary:
    """One plate read: coverage, QC and vehicle controls (for the plate QC rules)."""

    plate: str
    timepoint: int
    wells_imaged: int
    wells_failed_qc: int  # excluded for an imaging failure or a damaged control
    missing_wells: tuple[str, ...]
    control: ControlLevel
    acquired_at: float = 0.0
    wells_unreadable: int = 0  # no image of the well could be read (not a QC failure)
    wells_scored: int = 0
    wells_unlike_training: int = 0  # most of their images unlike the model's training images
    models: tuple[str, ...] = ()


# --------------------------------------------------------------------------- time points


def _cluster(values: Sequence[float], gap: float) -> list[int]:
    """1-based cluster index per value: sorted values split where the gap > gap."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0] * len(values)
    cluster, prev = 0, None
    for i in order:
        v = values[i]
        if prev is None or v - prev > gap:
            cluster += 1
        out[i] = cluster
        prev = v
    return out


def assign_timepoints(images: Iterable[ImageScore], read_gap_s: float = DEFAULT_READ_GAP_S
                      ) -> dict[int, int]:
    """image_id → time point, decided per plate.

    A plate whose images all carry a time point index uses it; else, when all
    carry an elapsed time, reads are elapsed-time clusters; else acquisition
    time (mtime) clusters. Clusters are numbered 1, 2, … in time order.
    """
    by_plate: dict[str, list[ImageScore]] = defaultdict(list)
    for im in images:
        by_plate[im.plate].append(im)
    out: dict[int, int] = {}
    for ims in by_plate.values():
        if all(im.timepoint is not None for im in ims):
            out.update({im.image_id: int(im.timepoint) for im in ims})  # type: ignore[arg-type]
            continue
        if all(im.elapsed_s is not None for im in ims):
            values = [float(im.elapsed_s) for im in ims]  # type: ignore[arg-type]
        else:
            values = [im.mtime for im in ims]
        for im, tp in zip(ims, _cluster(values, read_gap_s), strict=True):
            out[im.image_id] = tp
    return out


# --------------------------------------------------------------------------- wells


def aggregate_wells(images: Iterable[ImageScore], timepoints: dict[int, int], *,
                    qc_ignore: Iterable[str] = (),
                    maps: dict[str, PlateMap | None] | None = None) -> list[WellRead]:
    """Combine fields per (plate, well, time point); the latest image per site wins.

    The counting rule (:func:`~nvir_agent.monitor.counting.image_verdict`,
    with the well's role from ``maps``) decides which fields count; the score is
    their median. A well none of whose fields count is not ``counted``; its
    score is then the median of whatever was scored, for the record only."""
    ignore = frozenset(qc_ignore)
    maps = maps or {}
    latest: dict[tuple, ImageScore] = {}
    for im in images:
        if im.state == "pending" or im.image_id not in timepoints:
            continue
        site = (im.plate, im.well, timepoints[im.image_id], im.field, im.channel, im.z)
        cur = latest.get(site)
        if cur is None or (im.mtime, im.image_id) > (cur.mtime, cur.image_id):
            latest[site] = im
    per_well: dict[tuple[str, str, int], list[ImageScore]] = defaultdict(list)
    for (plate, well, tp, *_), im in latest.items():
        per_well[(plate, well, tp)].append(im)
    out: list[WellRead] = []
    for (plate, well, tp), ims in sorted(per_well.items()):
        pm = maps.get(plate)
        role = pm.role(well) if pm else None
        verdicts = [counting.image_verdict(im, role, ignore) for im in ims]
        counted = [v.value for v in verdicts if v.counts and v.value is not None]
        clean = [im.viability for im in ims if im.state == "done" and bool(im.found)
                 and im.viability is not None
                 and not (set(im.qc) - ignore - counting.CAVEAT_FLAGS)]
        scored = [im.viability for im in ims if im.state == "done" and im.viability is not None]
        flags: list[str] = []
        if any(im.state == "failed" for im in ims):
            flags.append(FLAG_FAILED)
        if any(im.state == "done" and im.found is False for im in ims):
            flags.append(FLAG_NOT_FOUND)
        if not scored and any(im.state == "done" for im in ims):
            flags.append(FLAG_NO_SCORE)
        if not clean:
            flags.append(FLAG_QC)
        flags.extend(sorted({q for im in ims for q in im.qc} - ignore))
        if not counted:
            flags.append(FLAG_EXCLUDED)
        values = counted or scored
        used = [im for im, v in zip(ims, verdicts, strict=True) if v.counts] or [
            im for im in ims if im.state == "done" and im.viability is not None]
        lows = [im.trust.viability_low for im in used]
        highs = [im.trust.viability_high for im in used]
        judged = [im for im in used if im.trust.typicality is not None]
        unlike = sum(UNLIKE_TRAINING in im.qc for im in judged)
        elapsed = [im.elapsed_s for im in ims if im.elapsed_s is not None]
        out.append(WellRead(
            plate=plate, well=well, timepoint=tp,
            score=float(statistics.median(values)) if values else None,  # type: ignore[type-var]
            passed_qc=bool(clean), flags=tuple(dict.fromkeys(flags)), n_fields=len(ims),
            acquired_at=min(im.mtime for im in ims),
            elapsed_s=float(statistics.median(elapsed)) if elapsed else None,
            image_ids=tuple(sorted(im.image_id for im in ims)),
            counted=bool(counted), exclusion="" if counted else counting.well_reason(verdicts),
            score_low=_median_or_none(lows), score_high=_median_or_none(highs),
            unlike_training=bool(judged) and unlike * 2 > len(judged),
            models=tuple(sorted({im.model for im in used if im.model})),
        ))
    return out


def _median_or_none(values: Sequence[float | None]) -> float | None:
    """The median when every value is known, else None."""
    if not values or any(v is None for v in values):
        return None
    return float(statistics.median(values))  # type: ignore[type-var]


# --------------------------------------------------------------------------- controls


def control_level(values: Sequence[float], min_controls: int, source: str) -> ControlLevel:
    """Median and coefficient of variation of vehicle scores (None when too few)."""
    vals = [v for v in values if v is not None]
    if len(vals) < min_controls or not vals:
        return ControlLevel(None, None, len(vals), "none")
    med = float(statistics.median(vals))
    mean = statistics.fmean(vals)
    cv = float(statistics.stdev(vals) / mean) if len(vals) > 1 and mean > 0 else None
    return ControlLevel(med, cv, len(vals), source)


def _vehicle_scores(reads: Iterable[WellRead], maps: dict[str, PlateMap | None]
                    ) -> dict[tuple[str, int], list[float]]:
    out: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in reads:
        pm = maps.get(r.plate)
        if pm and pm.role(r.well) == "vehicle" and r.counted and r.score is not None:
            out[(r.plate, r.timepoint)].append(r.score)
    return out


def control_levels(reads: Sequence[WellRead], maps: dict[str, PlateMap | None],
                   min_controls: int = DEFAULT_MIN_CONTROLS) -> dict[tuple[str, int], ControlLevel]:
    """(plate, time point) → vehicle reference, falling back to the same time
    point's vehicle wells across plates when a plate has too few of its own."""
    vehicle = _vehicle_scores(reads, maps)
    by_tp: dict[int, list[float]] = defaultdict(list)
    for (_, tp), vals in vehicle.items():
        by_tp[tp].extend(vals)
    out: dict[tuple[str, int], ControlLevel] = {}
    for plate, tp in {(r.plate, r.timepoint) for r in reads}:
        if maps.get(plate) is None:
            out[(plate, tp)] = ControlLevel(None, None, 0, "none")
            continue
        own = control_level(vehicle.get((plate, tp), []), min_controls, "plate")
        if own.median is None:
            shared = control_level(by_tp.get(tp, []), min_controls, "fallback")
            if shared.median is not None:
                own = ControlLevel(shared.median, own.cv, own.n, "fallback")
        out[(plate, tp)] = own
    return out


# --------------------------------------------------------------------------- normalise


def _baseline_tp(tps: list[int], dosing: int | None) -> int | None:
    if not tps:
        return None
    if dosing is not None:
        before = [t for t in tps if t < dosing]
        if before:
            return max(before)
    return min(tps)


def normalise(reads: Sequence[WellRead], maps: dict[str, PlateMap | None], *,
              min_controls: int = DEFAULT_MIN_CONTROLS,
              levels: dict[tuple[str, int], ControlLevel] | None = None) -> list[WellTimepoint]:
    """Per-well time-course points relative to control and to the well's baseline."""
    levels = levels if levels is not None else control_levels(reads, maps, min_controls)
    scored_tps: dict[tuple[str, str], list[int]] = defaultdict(list)
    score_at: dict[tuple[str, str, int], float] = {}
    for r in reads:
        if r.score is not None and r.counted:
            scored_tps[(r.plate, r.well)].append(r.timepoint)
            score_at[(r.plate, r.well, r.timepoint)] = r.score
    out: list[WellTimepoint] = []
    for r in reads:
        pm = maps.get(r.plate)
        a: WellAssignment | None = pm.wells.get(r.well) if pm else None
        flags = list(r.flags)
        if pm is None:
            flags.append(FLAG_NO_MAP)
        lvl = levels.get((r.plate, r.timepoint), ControlLevel(None, None, 0, "none"))
        rel_control = rel_low = rel_high = None
        if pm is not None:
            if lvl.source == "fallback":
                flags.append(FLAG_FALLBACK)
            if lvl.median is None:
                flags.append(FLAG_NO_CONTROLS)
            elif r.score is not None and r.counted and lvl.median > 0:
                rel_control = r.score / lvl.median
                if r.score_low is not None and r.score_high is not None:
                    rel_low, rel_high = r.score_low / lvl.median, r.score_high / lvl.median
        base_tp = _baseline_tp(sorted(scored_tps.get((r.plate, r.well), [])),
                               pm.dosing_timepoint if pm else None)
        rel_base = None
        if base_tp is not None and r.score is not None and r.counted:
            base = score_at[(r.plate, r.well, base_tp)]
            if base > 0:
                rel_base = r.score / base
            else:
                flags.append(FLAG_NO_BASELINE)
            if base_tp == r.timepoint:
                flags.append(FLAG_BASELINE)
        out.append(WellTimepoint(
            plate=r.plate, well=r.well, timepoint=r.timepoint,
            role=a.role if a else None, compound=a.compound if a else None,
            concentration_uM=a.concentration_uM if a else None,
            group=a.group_label if a else None, score=r.score,
            viability_rel_control=rel_control, viability_rel_baseline=rel_base,
            flags=tuple(dict.fromkeys(flags)), cmax_uM=a.cmax_uM if a else None,
            control_median=lvl.median, passed_qc=r.passed_qc, acquired_at=r.acquired_at,
            elapsed_s=r.elapsed_s, n_fields=r.n_fields, counted=r.counted,
            exclusion=r.exclusion, image_ids=r.image_ids,
            rel_control_low=rel_low, rel_control_high=rel_high,
            unlike_training=r.unlike_training,
        ))
    return out


def fails_imaging_qc(r: WellRead, role: str | None = None) -> bool:
    """Does this well count as a QC failure for the plate? Only when the
    counting rule excluded it for an imaging failure or as a damaged control
    (unreadable files are counted apart; drug effects are data)."""
    return not r.counted and counting.counts_as_qc_failure(r.exclusion)


def summarise_reads(reads: Sequence[WellRead], maps: dict[str, PlateMap | None],
                    levels: dict[tuple[str, int], ControlLevel]) -> list[ReadSummary]:
    """Per plate read: wells imaged, wells failing QC, unreadable, missing; controls.

    A well is missing from a read when it is expected there and was not imaged:
    expected are the plate map's wells (not empty/ignore) and the wells imaged
    at this read or an earlier one of the plate — never a well first imaged
    later. QC failures follow :func:`fails_imaging_qc`."""
    by_read: dict[tuple[str, int], list[WellRead]] = defaultdict(list)
    first_seen: dict[tuple[str, str], int] = {}
    for r in reads:
        by_read[(r.plate, r.timepoint)].append(r)
        key = (r.plate, r.well)
        first_seen[key] = min(first_seen.get(key, r.timepoint), r.timepoint)
    out: list[ReadSummary] = []
    for (plate, tp), rs in sorted(by_read.items()):
        pm = maps.get(plate)
        skip = {w for w, a in pm.wells.items() if a.role in ("ignore", "empty")} if pm else set()
        seen_by_now = {w for (p, w), t in first_seen.items() if p == plate and t <= tp}
        expected = (pm.expected_wells() if pm else set()) | (seen_by_now - skip)
        imaged = {r.well for r in rs}
        counted = [r for r in rs if r.well not in skip]
        out.append(ReadSummary(
            plate=plate, timepoint=tp, wells_imaged=len(counted),
            wells_failed_qc=sum(1 for r in counted if fails_imaging_qc(r)),
            missing_wells=tuple(sorted(expected - imaged)),
            control=levels.get((plate, tp), ControlLevel(None, None, 0, "none")),
            acquired_at=min(r.acquired_at for r in rs),
            wells_unreadable=sum(1 for r in counted
                                 if not r.counted and counting.is_unreadable(r.exclusion)),
            wells_scored=sum(1 for r in counted if r.score is not None),
            wells_unlike_training=sum(1 for r in counted if r.unlike_training),
            models=tuple(sorted({m for r in counted for m in r.models})),
        ))
    return out


@dataclass
class PlateTimecourse:
    """Everything the alert rules need for one plate."""

    plate: str
    plate_map: PlateMap | None
    points: list[WellTimepoint] = field(default_factory=list)
    reads: list[ReadSummary] = field(default_factory=list)


def build_timecourses(images: Sequence[ImageScore], maps: dict[str, PlateMap | None], *,
                      read_gap_s: float = DEFAULT_READ_GAP_S,
                      min_controls: int = DEFAULT_MIN_CONTROLS,
                      qc_ignore: Iterable[str] = ()) -> dict[str, PlateTimecourse]:
    """The whole pure chain for a set of images: plate → PlateTimecourse."""
    tps = assign_timepoints(images, read_gap_s)
    reads = aggregate_wells(images, tps, qc_ignore=qc_ignore, maps=maps)
    levels = control_levels(reads, maps, min_controls)
    points = normalise(reads, maps, min_controls=min_controls, levels=levels)
    summaries = summarise_reads(reads, maps, levels)
    out: dict[str, PlateTimecourse] = {}
    for plate in sorted({r.plate for r in reads}):
        out[plate] = PlateTimecourse(plate, maps.get(plate))
    for p in points:
        out[p.plate].points.append(p)
    for s in summaries:
        out[s.plate].reads.append(s)
    return out


# --------------------------------------------------------------------------- store


def save_plate_map(tx: Transaction, plate: str, pm: PlateMap | None) -> bool:
    """Record the plate's map in the store (None clears it); True when it changed."""
    return tx.save_plate_map(plate, None if pm is None else plate_map_to_dict(pm))


def load_stored_map(reads: Reads, plate: str) -> PlateMap | None:
    """The plate map recorded for this plate by the monitor, or None."""
    text = reads.plate_map_text(plate)
    if not text:
        return None
    try:
        return plate_map_from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError):
        log.warning("plate %s: the stored plate map is unreadable; treated as unmapped", plate)
        return None


def load_images(reads: Reads, plates: Iterable[str] | None = None) -> list[ImageScore]:
    """Image results from the store (all plates, or only the named ones)."""
    return reads.image_scores(plates)


MapLookup = Callable[[str], "PlateMap | None"]


def load_plate_timecourses(source: Reads | str | os.PathLike[str],
                           plates: str | Iterable[str] | None = None,
                           *, maps: MapLookup | None = None,
                           read_gap_s: float = DEFAULT_READ_GAP_S,
                           min_controls: int = DEFAULT_MIN_CONTROLS,
                           qc_ignore: Iterable[str] = ()) -> dict[str, PlateTimecourse]:
    """Time courses and read summaries per plate from the store (all plates, or
    the plate/plates named).

    ``maps`` finds a plate's map; by default the maps saved in the store. When
    a plate lacks enough vehicle wells at a time point, the vehicle wells of
    the other plates are loaded too (the fallback)."""
    wanted = [plates] if isinstance(plates, str) else (None if plates is None else list(plates))
    with open_reader(source) as reads:
        return _load_plate_timecourses(reads, wanted, maps, read_gap_s, min_controls,
                                       tuple(qc_ignore))


def _load_plate_timecourses(reads: Reads, wanted: list[str] | None,
                            maps: MapLookup | None, read_gap_s: float, min_controls: int,
                            qc_ignore: tuple[str, ...]) -> dict[str, PlateTimecourse]:
    images = load_images(reads, wanted)
    cache: dict[str, PlateMap | None] = {}

    def lookup(p: str) -> PlateMap | None:
        if p not in cache:
            cache[p] = maps(p) if maps else load_stored_map(reads, p)
        return cache[p]

    found = {p: lookup(p) for p in {im.plate for im in images}}
    tcs = build_timecourses(images, found, read_gap_s=read_gap_s,
                            min_controls=min_controls, qc_ignore=qc_ignore)
    short = any(r.control.source != "plate" for tc in tcs.values() if tc.plate_map
                for r in tc.reads)
    if wanted is not None and short:
        others = [im for im in load_images(reads) if im.plate not in found]
        for p in {im.plate for im in others}:
            found[p] = lookup(p)
        images = images + [im for im in others if found[im.plate] is not None
                           and found[im.plate].role(im.well) == "vehicle"]  # type: ignore[union-attr]
        tcs = build_timecourses(images, found, read_gap_s=read_gap_s,
                                min_controls=min_controls, qc_ignore=qc_ignore)
    return {p: tc for p, tc in tcs.items() if wanted is None or p in wanted}


def load_timecourses(source: Reads | str | os.PathLike[str], plate: str | None = None, *,
                     config: Config | None = None) -> list[WellTimepoint]:
    """All time-course points (optionally one plate), sorted by plate, well, time point.

    ``config`` (a Config) supplies ``plates.read_gap_s``, ``alerts.min_controls``
    and ``alerts.qc_ignore``; defaults otherwise."""
    kwargs = settings_from_config(config)
    tcs = load_plate_timecourses(source, plate, **kwargs)
    points = [p for tc in tcs.values() for p in tc.points]
    return sorted(points, key=lambda p: (p.plate, p.well, p.timepoint))


def settings_from_config(config: Config | None) -> dict[str, Any]:
    """read_gap_s / min_controls / qc_ignore from a Config ({} when None: defaults)."""
    if config is None:
        return {}
    return {"read_gap_s": config.plates.read_gap_s, "min_controls": config.alerts.min_controls,
            "qc_ignore": tuple(config.alerts.qc_ignore)}
