"""Alert rules: pure functions from a plate's time course to the conditions
that hold now.

A condition is identified by (plate, subject, rule). Subjects are
``well:B03``, ``group:<label>`` (a replicate group: compound × concentration or
the map's group label), ``plate`` and ``read:<time point>``. Every rule scans
the whole history of its subject, so the result depends only on the data and
not on the order in which images arrived:

- ``viability`` (treated wells and groups): below ``threshold`` on ``confirm``
  consecutive time points → warning; below ``critical`` on ``confirm``
  consecutive time points → critical. It clears after ``confirm`` consecutive
  time points at or above ``threshold + hysteresis``.
- ``drop`` (treated wells and groups): viability relative to the well's own
  baseline at or below ``1 − drop``, with the same confirmation and hysteresis.
- plate QC: ``control_cv`` (vehicle CV above ``control_cv``), ``control_drop``
  (vehicle median fell more than ``control_drop`` since the previous read),
  ``qc_fail`` (more than ``qc_fail_fraction`` of the segmented wells fail QC
  under the counting rule of :mod:`nvir_agent.monitor.counting`: imaging
  failures and damaged controls; unreadable files and drug effects do not
  count), ``missing_wells`` (a complete read lacks wells it was expected to
  hold; see :mod:`nvir_agent.monitor.timecourse` for "complete" and
  "expected"), ``no_controls`` and
  ``no_map`` (information: viability is then relative to each well's first
  time point).

Groups alert on the median of their wells; a well whose group holds the same
condition is *suppressed* (listed in the group's details instead), and so is a
``drop`` condition of a subject that already holds a ``viability`` one.

How sure a ``viability`` alert is (when the model gives intervals): at the
alert's time point, the subject's value ``v`` (a well's, or the median of a
group's wells) gets a 90 % interval ``v ± 1.645·se`` with
``se² = mean(σᵢ²)/n + s²/n`` — ``σᵢ`` each well's interval half-width / 1.645
(the model's uncertainty), ``s`` the spread of the ``n`` replicate wells (0
for one well). When the interval reaches the level crossed (``threshold``,
or ``critical`` for a critical alert), the crossing is within the uncertainty:
the alert is marked **possible** (``details['certainty']``), and a critical
one is raised as a warning. Otherwise it is **sure**. The message gives the
interval and the number of replicates.

Images unlike the model's training images (``unlike_training``): when more
than half of the scored wells of a read are, the plate holds one
``unlike_training`` warning that says so in plain words, and every
``viability``/``drop`` alert at such a read carries the caveat
(``details['caveat']``, and in its message).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nvir_agent.config import AlertsConfig
from nvir_agent.errors import listing
from nvir_agent.monitor.timecourse import PlateTimecourse, WellTimepoint
from nvir_agent.store.rows import Key  # the one order of alert severities


@dataclass(frozen=True)
class Episode:
    """The current run of a condition: confirmed at ``since``, still holding."""

    since: int
    severity: str
    timepoint: int
    value: float | None


@dataclass(frozen=True)
class Condition:
    """A rule that holds now for one subject of one plate."""

    plate: str
    subject: str
    rule: str
    severity: str
    since: int
    timepoint: int
    value: float | None
    message: str
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> Key:
        return (self.plate, self.subject, self.rule)


@dataclass
class Evaluation:
    """What holds for one plate: the conditions to alert on, and the well
    conditions rolled into their group (key → the group's subject)."""

    plate: str
    conditions: list[Condition] = field(default_factory=list)
    suppressed: dict[Key, str] = field(default_factory=dict)


def scan(series: Sequence[tuple[int, float | None]], *, breach: Callable[[float], bool],
         clear: Callable[[float], bool], confirm: int,
         escalate: Callable[[float], bool] | None = None) -> Episode | None:
    """Walk a time-ordered series; return the episode that holds at its end.

    A condition starts after ``confirm`` consecutive breaching values, becomes
    critical after ``confirm`` consecutive escalating ones and ends after
    ``confirm`` consecutive clearing ones. Missing values (None) are skipped;
    severity never drops within an episode."""
    confirm = max(1, confirm)
    run_breach = run_escalate = run_clear = 0
    episode: Episode | None = None
    for tp, v in sorted(series, key=lambda x: x[0]):
        if v is None:
            continue
        run_breach = run_breach + 1 if breach(v) else 0
        run_escalate = run_escalate + 1 if escalate is not None and escalate(v) else 0
        run_clear = run_clear + 1 if clear(v) else 0
        if episode is None:
            if run_breach >= confirm:
                sev = "critical" if run_escalate >= confirm else "warning"
                episode = Episode(tp, sev, tp, v)
        elif run_clear >= confirm:
            episode = None
        else:
            sev = "critical" if run_escalate >= confirm else episode.severity
            episode = Episode(episode.since, sev, tp, v)
    return episode


def below(series: Sequence[tuple[int, float | None]], *, threshold: float, confirm: int,
          hysteresis: float, critical: float | None = None) -> Episode | None:
    """Episode of 'value below threshold' (critical level optional)."""
    return scan(
        series, breach=lambda v: v < threshold, clear=lambda v: v >= threshold + hysteresis,
        confirm=confirm, escalate=(lambda v: v < critical) if critical is not None else None,
    )


# --------------------------------------------------------------------------- subjects


def _median_series(points: Sequence[WellTimepoint], attr: str) -> list[tuple[int, float | None]]:
    per_tp: dict[int, list[float]] = defaultdict(list)
    for p in points:
        v = getattr(p, attr)
        if v is not None:
            per_tp[p.timepoint].append(v)
        else:
            per_tp.setdefault(p.timepoint, [])
    return [(tp, float(statistics.median(vs)) if vs else None) for tp, vs in sorted(per_tp.items())]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


Z90 = 1.645
UNLIKE_FRACTION = 0.5  # more than this share of a read's scored wells → plate alert
CAVEAT = ("the images of this read are unlike the images model {model} was trained on; "
          "the score may be wrong")


def subject_interval(points: Sequence[WellTimepoint], timepoint: int
                     ) -> tuple[float, float, int] | None:
    """(low, high, replicates) of a subject's value at ``timepoint`` (see module doc);
    None when a well there has no interval."""
    pts = [p for p in points if p.timepoint == timepoint and p.viability_rel_control is not None]
    if not pts or any(p.rel_control_low is None or p.rel_control_high is None for p in pts):
        return None
    values = [float(p.viability_rel_control) for p in pts]  # type: ignore[arg-type]
    sig = [(float(p.rel_control_high) - float(p.rel_control_low)) / (2 * Z90)  # type: ignore[arg-type]
           for p in pts]
    n = len(pts)
    rep = statistics.variance(values) if n >= 2 else 0.0
    se = math.sqrt(sum(s * s for s in sig) / n / n + rep / n)
    v = float(statistics.median(values))
    # a viability cannot be below 0: the interval stops there (but holds v itself)
    return max(v - Z90 * se, min(v, 0.0)), max(v + Z90 * se, 0.0), n


def _models_of(tc: PlateTimecourse) -> str:
    names = sorted({m for r in tc.reads for m in r.models})
    return ", ".join(names) if names else "the model"


def _subject_conditions(plate: str, subject: str, label: str, points: Sequence[WellTimepoint],
                        cfg: AlertsConfig, *, mapped: bool, details: dict[str, Any],
                        unlike: dict[int, str] | None = None) -> list[Condition]:
    """viability and drop conditions for one well or group (``unlike``: time point →
    caveat, for reads whose images are unlike the model's training images)."""
    unlike = unlike or {}
    out: list[Condition] = []
    if mapped:
        series = _median_series(points, "viability_rel_control")
        ref = "of vehicle control"
    else:
        series = _median_series(points, "viability_rel_baseline")
        ref = "of its first time point (plate has no map)"
    values = {tp: v for tp, v in series}
    ep = below(series, threshold=cfg.threshold, confirm=cfg.confirm,
               hysteresis=cfg.hysteresis, critical=cfg.critical)
    if ep is not None:
        level = cfg.critical if ep.severity == "critical" else cfg.threshold
        severity, sure, extra = ep.severity, "", {}
        interval = subject_interval(points, ep.timepoint) if mapped else None
        if interval is not None:
            low, high, n = interval
            possible = high >= level
            if possible and severity == "critical":
                severity = "warning"
            sure = (f"; {'possible' if possible else 'sure'}: 90% interval {low:.2f}–"
                    f"{high:.2f} from {n} {'replicate' if n == 1 else 'replicates'}")
            extra = {"certainty": "possible" if possible else "sure",
                     "interval": [round(low, 4), round(high, 4)], "replicates": n}
        caveat = unlike.get(ep.timepoint)
        if caveat:
            extra["caveat"] = caveat
        out.append(Condition(
            plate, subject, "viability", severity, ep.since, ep.timepoint, ep.value,
            f"{label}: {'possibly ' if extra.get('certainty') == 'possible' else ''}"
            f"viability {_fmt(ep.value)} {ref} at time point {ep.timepoint} "
            f"({ep.severity} level {level:g}, confirmed over {cfg.confirm} time points; alerting "
            f"since time point {ep.since}{sure})" + (f". Caution: {caveat}." if caveat else ""),
            {**details, "since": ep.since, "values": values, "reference": ref, **extra},
        ))
    if mapped:
        base_series = _median_series(points, "viability_rel_baseline")
        ep = below(base_series, threshold=1.0 - cfg.drop, confirm=cfg.confirm,
                   hysteresis=cfg.hysteresis)
        if ep is not None:
            caveat = unlike.get(ep.timepoint)
            out.append(Condition(
                plate, subject, "drop", "warning", ep.since, ep.timepoint, ep.value,
                f"{label}: viability fell to {_fmt(ep.value)} of its own baseline at time point "
                f"{ep.timepoint} (a drop of {cfg.drop:.0%} or more since time point {ep.since})"
                + (f". Caution: {caveat}." if caveat else ""),
                {**details, "since": ep.since, "values": dict(base_series),
                 "reference": "baseline", **({"caveat": caveat} if caveat else {})},
            ))
    return out


def _well_conditions(tc: PlateTimecourse, cfg: AlertsConfig) -> tuple[
        list[Condition], list[Condition], dict[str, str]]:
    """Well and group conditions, and each treated well's group subject."""
    mapped = tc.plate_map is not None
    caveat = CAVEAT.format(model=_models_of(tc))
    unlike = {tp: caveat for tp, share in _unlike_series(tc)
              if share is not None and share > UNLIKE_FRACTION}
    by_well: dict[str, list[WellTimepoint]] = defaultdict(list)
    for p in tc.points:
        if not mapped or p.role == "treated":
            by_well[p.well].append(p)
    groups: dict[str, list[str]] = defaultdict(list)
    for well, pts in by_well.items():
        if mapped and pts[0].group:
            groups[pts[0].group].append(well)
    well_conds: list[Condition] = []
    for well, pts in sorted(by_well.items()):
        p0 = pts[0]
        label = f"well {well}" + (f" ({p0.group})" if p0.group else "")
        well_conds += _subject_conditions(
            tc.plate, f"well:{well}", f"{tc.plate} {label}", pts, cfg, mapped=mapped,
            details={"wells": [well], "compound": p0.compound,
                     "concentration_uM": p0.concentration_uM, "group": p0.group},
            unlike=unlike)
    group_conds: list[Condition] = []
    group_of: dict[str, str] = {}
    for group, wells in sorted(groups.items()):
        if len(wells) < 2:
            continue  # a single well is its own alert
        for w in wells:
            group_of[w] = f"group:{group}"
        pts = [p for w in wells for p in by_well[w]]
        p0 = pts[0]
        group_conds += _subject_conditions(
            tc.plate, f"group:{group}", f"{tc.plate} {group} ({len(wells)} wells)", pts, cfg,
            mapped=True, details={"wells": sorted(wells), "compound": p0.compound,
                                  "concentration_uM": p0.concentration_uM, "group": group},
            unlike=unlike)
    return well_conds, group_conds, group_of


def _unlike_series(tc: PlateTimecourse) -> list[tuple[int, float | None]]:
    """Per read: the share of scored wells whose images are unlike the training images."""
    return [(r.timepoint, r.wells_unlike_training / r.wells_scored if r.wells_scored else None)
            for r in sorted(tc.reads, key=lambda r: r.timepoint)]


def unlike_training_condition(tc: PlateTimecourse) -> Condition | None:
    """The plate's ``unlike_training`` warning while most wells of its reads are unlike."""
    series = _unlike_series(tc)
    ep = scan(series, breach=lambda v: v > UNLIKE_FRACTION,
              clear=lambda v: v <= UNLIKE_FRACTION, confirm=1)
    if ep is None:
        return None
    model = _models_of(tc)
    init = model.split("@")[0] if "," not in model else "MODEL"
    return Condition(
        tc.plate, "plate", "unlike_training", "warning", ep.since, ep.timepoint, ep.value,
        f"{tc.plate}: {ep.value:.0%} of the wells at time point {ep.timepoint} look unlike "
        f"the images model {model} was trained on: this microscope's images differ from "
        "them, so its scores may be wrong. Calibrate the model with "
        f"`nvir-agent train --init {init}` on a few ATP-measured wells of this microscope.",
        {"since": ep.since, "values": dict(series), "model": model})


def _plate_conditions(tc: PlateTimecourse, cfg: AlertsConfig) -> list[Condition]:
    out: list[Condition] = []
    plate, reads = tc.plate, sorted(tc.reads, key=lambda r: r.timepoint)
    if not reads:
        return out
    unlike = unlike_training_condition(tc)
    if unlike is not None:
        out.append(unlike)
    last = reads[-1]
    # The latest read may still be arriving: judge it only once it is complete
    # (for the control rules: once all its vehicle wells are in).
    settled = reads if not last.missing_wells else reads[:-1]
    vehicles = ({w for w, a in tc.plate_map.wells.items() if a.role == "vehicle"}
                if tc.plate_map else set())
    control_reads = (reads if not set(last.missing_wells) & vehicles else reads[:-1])
    if tc.plate_map is None:
        out.append(Condition(
            plate, "plate", "no_map", "info", reads[0].timepoint, last.timepoint, None,
            f"{plate}: no plate map matches this plate; viability is relative to each well's "
            "first time point until one is added under [plates] maps.", {}))
    else:
        cv_series = [(r.timepoint, r.control.cv) for r in control_reads
                     if r.control.source == "plate"]
        ep = scan(cv_series, breach=lambda v: v > cfg.control_cv,
                  clear=lambda v: v <= cfg.control_cv, confirm=1)
        if ep is not None:
            out.append(Condition(
                plate, "plate", "control_cv", "warning", ep.since, ep.timepoint, ep.value,
                f"{plate}: vehicle controls vary too much at time point {ep.timepoint} "
                f"(CV {ep.value:.0%} > {cfg.control_cv:.0%}); check pipetting, edge effects "
                "or focus.", {"since": ep.since, "values": dict(cv_series)}))
        own = [r for r in control_reads if r.control.source == "plate" and r.control.median]
        for prev, cur in zip(own, own[1:], strict=False):
            ratio = cur.control.median / prev.control.median  # type: ignore[operator]
            if ratio < 1.0 - cfg.control_drop:
                out.append(Condition(
                    plate, f"read:{cur.timepoint}", "control_drop", "warning", cur.timepoint,
                    cur.timepoint, ratio,
                    f"{plate}: vehicle median fell to {ratio:.0%} of the previous time point "
                    f"(time point {prev.timepoint} → {cur.timepoint}); check the incubator, "
                    "medium and imaging settings.",
                    {"since": cur.timepoint, "previous": prev.timepoint,
                     "medians": [prev.control.median, cur.control.median]}))
        nc = scan([(r.timepoint, 1.0 if r.control.median is None else 0.0)
                   for r in control_reads],
                  breach=lambda v: v > 0.5, clear=lambda v: v < 0.5, confirm=1)
        if nc is not None:
            out.append(Condition(
                plate, "plate", "no_controls", "warning", nc.since, nc.timepoint, None,
                f"{plate}: fewer than {cfg.min_controls} usable vehicle wells at time point "
                f"{nc.timepoint}, here and on other plates; viability relative to control "
                "cannot be computed.", {"since": nc.since}))
    qc_series: list[tuple[int, float | None]] = []
    for r in settled:
        # unreadable files were never segmented: they are neither passes nor failures
        judged = r.wells_imaged - r.wells_unreadable
        expected = judged + len(r.missing_wells)
        enough = judged >= min(10, max(1, expected))
        qc_series.append((r.timepoint, r.wells_failed_qc / judged
                          if enough and judged else None))
    ep = scan(qc_series, breach=lambda v: v > cfg.qc_fail_fraction,
              clear=lambda v: v <= cfg.qc_fail_fraction, confirm=1)
    if ep is not None:
        out.append(Condition(
            plate, "plate", "qc_fail", "warning", ep.since, ep.timepoint, ep.value,
            f"{plate}: {ep.value:.0%} of the wells fail segmentation QC at time point "
            f"{ep.timepoint} (limit {cfg.qc_fail_fraction:.0%}); check focus, illumination "
            "and bubbles.", {"since": ep.since, "values": dict(qc_series)}))
    for r in reads[:-1]:  # the latest read may still be in progress
        if r.missing_wells:
            out.append(Condition(
                plate, f"read:{r.timepoint}", "missing_wells", "warning", r.timepoint,
                r.timepoint, float(len(r.missing_wells)),
                f"{plate}: time point {r.timepoint} lacks {len(r.missing_wells)} "
                f"well(s): {listing(r.missing_wells, 12)}.", {"since": r.timepoint, "wells": list(r.missing_wells)}))
    return out


def evaluate_plate(tc: PlateTimecourse, cfg: AlertsConfig) -> Evaluation:
    """All conditions that hold now for one plate, with well→group roll-up."""
    ev = Evaluation(tc.plate)
    well_conds, group_conds, group_of = _well_conditions(tc, cfg)
    active_groups = {(c.subject, c.rule): c for c in group_conds}
    for c in well_conds:
        group_subject = group_of.get(c.subject.removeprefix("well:"))
        group = active_groups.get((group_subject, c.rule)) if group_subject else None
        if group is not None:
            ev.suppressed[c.key] = group.subject
            group.details.setdefault("alerting_wells", []).append(c.subject.removeprefix("well:"))
        else:
            ev.conditions.append(c)
    subject_conds = group_conds + ev.conditions
    # a drop alert adds nothing while the same subject holds a viability alert
    low = {c.subject: c for c in subject_conds if c.rule == "viability"}
    kept: list[Condition] = []
    for c in subject_conds:
        if c.rule == "drop" and c.subject in low:
            ev.suppressed[c.key] = c.subject
            low[c.subject].details["baseline_drop"] = c.value
        else:
            kept.append(c)
    ev.conditions = kept + _plate_conditions(tc, cfg)
    return ev
