"""The HTML report: one self-contained file (figures embedded as base64 PNG,
no scripts, no external files) with plate heatmaps per read, viability time
courses per compound with the vehicle band, dose-response curves with IC50
per day, the margin-of-safety table and a QC summary.

:func:`collect_report` gathers everything from the store (through the
time-course API of :mod:`nvir_agent.monitor.timecourse`), :func:`render_html`
turns it into HTML, :func:`write_report` does both. :func:`ic50_table` gives
the IC50 table without drawing anything. The figures come from
:mod:`nvir_agent.report.figures`.
"""

from __future__ import annotations

import html
import logging
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvir_agent.errors import DataError
from nvir_agent.monitor.timecourse import (
    DEFAULT_READ_GAP_S,
    MapLookup,
    PlateTimecourse,
    WellTimepoint,
    assign_timepoints,
    load_plate_timecourses,
    settings_from_config,
)
from nvir_agent.report.dili import (
    CompoundDayFit,
    CompoundLabel,
    DiliEvaluation,
    choose_day,
    evaluate_dili,
    fit_compounds,
    records_from_points,
)
from nvir_agent.report.figures import (
    dose_response_png,
    format_number,
    heatmap_png,
    timecourse_png,
    vehicle_band,
)
from nvir_agent.report.ic50 import R2_FLOOR, STEEP_HILL
from nvir_agent.report.provenance import Provenance, collect_provenance
from nvir_agent.report.trust import (
    COMBINED,
    UNLIKE_MEANING,
    ReadTrust,
    calibrate_advice,
    concentration_intervals,
    has_intervals,
    not_available,
    read_trust,
)
from nvir_agent.store import Reads, open_reader

log = logging.getLogger(__name__)

_MAX_FAILURES = 20


@dataclass(frozen=True)
class Ic50Row:
    """One compound on one day: what the demo prints and the report tabulates."""

    compound: str
    day: int
    ic50: float
    ci95: tuple[float, float]
    converged: bool
    infinite: bool
    ic50_se: float = math.nan
    hill: float = math.nan
    r2: float = math.nan
    n_concentrations: int = 0
    cmax_uM: float | None = None
    mos: float | None = None
    message: str = ""
    extrapolated: bool = False  # finite IC50 above the highest tested concentration
    status: str = ""  # the reporting rule's verdict (nvir_agent.report.ic50)
    ic50_text: str = ""  # '2.1 µM', '> 32 µM (top tested)', 'not reliable', 'fit failed'
    ci_text: str = ""
    mos_text: str = ""
    reason: str = ""  # why the IC50 is not a number, in words
    n_wells: int = 0


@dataclass
class QcSummary:
    images: dict[str, int] = field(default_factory=dict)  # state → count
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, error), newest first
    n_failed: int = 0
    not_found: int = 0
    qc_flags: dict[str, int] = field(default_factory=dict)
    plates_without_map: list[str] = field(default_factory=list)
    open_alerts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReportData:
    database: str
    generated_at: float
    plate: str | None
    day: int | None
    plates: dict[str, PlateTimecourse]
    fits: list[CompoundDayFit]
    dili: DiliEvaluation | None
    dili_day: int | None
    labels: dict[str, CompoundLabel]
    qc: QcSummary
    provenance: Provenance | None = None
    trust: list[ReadTrust] = field(default_factory=list)  # per plate read


# --------------------------------------------------------------------------- data


def _points(plates: Mapping[str, PlateTimecourse]) -> list[WellTimepoint]:
    return [p for tc in plates.values() for p in tc.points]


def collect_report(
    source: Reads | str | os.PathLike[str],
    *,
    plate: str | None = None,
    day: int | None = None,
    compounds: Mapping[str, CompoundLabel] | None = None,
    maps: MapLookup | None = None,
    config: object | None = None,
    model: str = "2pl",
    database_label: str | None = None,
) -> ReportData:
    """Everything the report shows, read from the store (one plate or all).

    ``compounds`` (from :func:`~nvir_agent.report.dili.read_compound_table`)
    adds Cmax and DILI labels; ``maps`` finds plate maps (default: those the
    monitor saved in the store); ``day`` limits heatmaps and dose-response;
    ``database_label`` replaces the database path in the header (e.g. for a
    database that will not outlive the report).
    """
    labels = dict(compounds or {})
    plates, fits = _plates_and_fits(source, plate, day, labels, maps, config, model)
    _check_selection(source, plate, day, plates)
    dili_day = choose_day(fits, day)
    dili = evaluate_dili(fits, labels, day=dili_day) if labels else None
    qc = _qc_summary(source, plate, plates)
    database = database_label or str(getattr(source, "path", source))
    gap = settings_from_config(config).get("read_gap_s", DEFAULT_READ_GAP_S)  # type: ignore[arg-type]
    with open_reader(source) as reads:
        used = reads.model_counts(plate)
        images = [im for im in reads.image_scores(None if plate is None else [plate])
                  if im.plate in plates]
    trust = [r for r in read_trust(images, assign_timepoints(images, gap))
             if day is None or r.timepoint == day]
    provenance = collect_provenance(config, database=database, models_in_data=used)
    return ReportData(
        database=database, generated_at=provenance.generated_at,
        plate=plate, day=day, plates=plates, fits=fits, dili=dili, dili_day=dili_day,
        labels=labels, qc=qc, provenance=provenance, trust=trust,
    )


def _check_selection(source: Reads | str | os.PathLike[str], plate: str | None,
                     day: int | None, plates: Mapping[str, PlateTimecourse]) -> None:
    """A clear error when --plate or --timepoint names nothing in the database."""
    if plate is not None and plate not in plates:
        with open_reader(source) as reads:
            known = reads.plate_names()
        raise DataError(
            f"The database has no analysed images of plate '{plate}'.",
            f"Plates in the database: {', '.join(known[:20]) or 'none yet'}.",
        )
    if day is not None:
        days = sorted({p.timepoint for p in _points(plates)})
        if day not in days:
            raise DataError(
                f"No time point {day} in the database{' for plate ' + plate if plate else ''}.",
                f"Time points present: {', '.join(map(str, days)) or 'none yet'}.",
            )


def ic50_rows(fits: Iterable[CompoundDayFit]) -> list[Ic50Row]:
    """One row per compound and day, with the IC50 reporting rule applied."""
    rows = []
    for f in sorted(fits, key=lambda f: (f.compound, f.day)):
        call = f.call
        _, mos = f.mos_call
        rows.append(Ic50Row(
            compound=f.compound, day=f.day, ic50=f.fit.ic50, ci95=f.fit.ic50_ci95,
            converged=f.fit.converged, infinite=f.fit.infinite, ic50_se=f.fit.ic50_se,
            hill=f.fit.hill, r2=f.fit.r2, n_concentrations=len(f.concentrations),
            cmax_uM=f.cmax_uM, mos=f.mos, message=f.fit.message,
            extrapolated=f.fit.extrapolated, status=call.status, ic50_text=call.text,
            ci_text=call.ci_text, mos_text=mos, reason=call.reason, n_wells=sum(f.wells),
        ))
    return rows


def ic50_table(
    source: Reads | str | os.PathLike[str],
    *,
    plate: str | None = None,
    day: int | None = None,
    compounds: Mapping[str, CompoundLabel] | None = None,
    maps: MapLookup | None = None,
    config: object | None = None,
    model: str = "2pl",
) -> list[Ic50Row]:
    """IC50 (with 95 % CI) per compound and day from the store; draws nothing."""
    _, fits = _plates_and_fits(source, plate, day, compounds or {}, maps, config, model)
    return ic50_rows(fits)


def _plates_and_fits(
    source: Reads | str | os.PathLike[str], plate: str | None, day: int | None,
    compounds: Mapping[str, CompoundLabel], maps: MapLookup | None, config: object | None,
    model: str,
) -> tuple[dict[str, PlateTimecourse], list[CompoundDayFit]]:
    """The plates' time courses from the store and the dose-response fits on them."""
    plates = load_plate_timecourses(source, plate, maps=maps,
                                    **settings_from_config(config))
    cmax = {n: c.cmax_uM for n, c in compounds.items() if c.cmax_uM}
    fits = fit_compounds(records_from_points(_points(plates)), model=model, cmax=cmax,
                         days=None if day is None else [day])
    return plates, fits


def _qc_summary(source: Reads | str | os.PathLike[str], plate: str | None,
                plates: Mapping[str, PlateTimecourse]) -> QcSummary:
    qc = QcSummary(plates_without_map=sorted(p for p, tc in plates.items() if tc.plate_map is None))
    with open_reader(source) as reads:
        states = reads.image_states(plate, max_failures=_MAX_FAILURES)
        alerts = reads.alerts(plate=plate)
    qc.images = dict(states.by_state)
    qc.n_failed = qc.images.get("failed", 0)
    qc.failures = list(states.failures)
    flags: Counter[str] = Counter()
    for found, flag_list in states.done_found_qc:
        if found is False:
            qc.not_found += 1
        flags.update(flag_list)
    qc.qc_flags = dict(flags.most_common())
    qc.open_alerts = [a.as_dict() for a in sorted(alerts, key=lambda a: a.opened_at)]
    return qc


def _interval(ci: tuple[float, float]) -> str:
    if all(math.isnan(v) for v in ci):
        return "–"
    return f"{format_number(ci[0])} – {format_number(ci[1])}"


def _e(v: Any) -> str:
    return html.escape(str(v))


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#212121}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:14px}table{border-collapse:collapse;font-size:12px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f5f5f5}
.grid{display:flex;flex-wrap:wrap;gap:8px}.note{color:#757575;font-size:12px}
.warn{color:#b71c1c}
.banner{background:#fff3e0;border:1px solid #e65100;padding:8px 12px;color:#bf360c}
table.prov th{width:160px}
"""


def render_html(data: ReportData) -> str:
    """The whole report as one HTML string (figures inline)."""
    started = time.perf_counter()
    points = _points(data.plates)
    compounds = sorted({f.compound for f in data.fits} | {
        p.compound for p in points if p.compound and p.role in ("treated", "positive")})
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>NViR Agent report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>NViR Agent report</h1>",
        f"<p class='note'>{'plate ' + _e(data.plate) + ' · ' if data.plate else ''}"
        f"{'time point ' + _e(data.day) + ' · ' if data.day is not None else ''}"
        f"{len(data.plates)} plate(s), {len(compounds)} compound(s)</p>",
    ]
    parts += _provenance_section(data)
    parts += _caveat_banner(data)
    parts += _qc_section(data)
    parts += _trust_section(data, points)
    parts += _plate_section(data)
    parts += _timecourse_section(data, compounds, points)
    parts += _dose_response_section(data, compounds, points)
    parts += _mos_section(data)
    parts.append("</body></html>")
    log.info("report rendered in %.1f s", time.perf_counter() - started)
    return "\n".join(parts)


def _provenance_section(data: ReportData) -> list[str]:
    prov = data.provenance
    if prov is None:
        return [f"<p class='note'>Database {_e(data.database)}</p>"]
    out = []
    if prov.warning:
        out.append(f"<p class='banner'><b>Demo model.</b> {_e(prov.warning)}</p>")
    out.append("<table class='prov'><tbody>" + "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in prov.pairs()
        if k != "warning") + "</tbody></table>")
    return out


def _unlike_alerts(data: ReportData) -> list[dict[str, Any]]:
    return [a for a in data.qc.open_alerts if a["rule"] == "unlike_training"]


def _caveat_banner(data: ReportData) -> list[str]:
    """The plate-level warning that most images differ from the training images."""
    return [f"<p class='banner'><b>Images unlike the model's training images.</b> "
            f"{_e(a['message'])}</p>" for a in _unlike_alerts(data)]


def _trust_section(data: ReportData, points: Sequence[WellTimepoint]) -> list[str]:
    """How far the scores can be trusted: the words, then per plate and time point
    how many images the model judged unlike its training images."""
    out = ["<h2>How far the scores can be trusted</h2>"]
    intervals = has_intervals(points)
    judged = any(r.judged for r in data.trust)
    models = sorted({m for r in data.trust for m in r.models})
    out.append(
        "<p>Each score comes with a <b>90 % interval</b>: the range that holds the true "
        "viability of nine images in ten like those the model was calibrated on; it widens on "
        "images unlike them. A well's interval is the median of its images' intervals; "
        f"{_e(COMBINED)} (σᵢ: a well's half-width / 1.645; s: the spread of the n replicate "
        "wells), the same as the viability alerts use. The <b>typicality</b> of an image is "
        "the share of the model's held-out training-like images that lie farther from its "
        "training images (1: as typical as any, 0: farther than all). An image farther "
        "than 99 % of them (a typicality of about 0.01 or less) is flagged <b>unlike the "
        "training images</b>: its score may be wrong. The flag is a caveat, not a QC failure: the image still counts. When more "
        "than half of a read's wells are unlike, the plate gets an alert, and every viability "
        "alert at that read carries the caveat.</p>")
    if not intervals and not judged:
        out.append(f"<p class='note'>{_e(not_available(models))}</p>")
        return out
    if not intervals:
        out.append("<p class='note'>Intervals: not available for this model (its file has no "
                   "calibration on labelled images); typicality is.</p>")
    if not judged:
        out.append("<p class='note'>Typicality: not available for this model (its file has no "
                   "summary of its training images); intervals are.</p>")
        return out
    flagged = sum(r.unlike for r in data.trust)
    total = sum(r.judged for r in data.trust)
    if flagged:
        out.append(f"<p class='warn'><b>{flagged} of {total} images look unlike the images "
                   f"the model was trained on.</b> {_e(UNLIKE_MEANING)} "
                   f"{_e(calibrate_advice(models[0] if len(models) == 1 else None))}</p>")
    else:
        out.append(f"<p>None of the {total} images the model judged looks unlike its "
                   "training images.</p>")
    wells = {(tc.plate, s.timepoint): s for tc in data.plates.values() for s in tc.reads}
    rows = []
    for r in data.trust:
        s = wells.get((r.plate, r.timepoint))
        share = f"{s.wells_unlike_training} of {s.wells_scored}" if s else "–"
        rows.append((r.plate, r.timepoint, r.scored, r.judged, r.unlike, share,
                     format_number(r.typicality, 2)))
    out.append(_table(["plate", "time point", "images scored", "judged", "unlike training",
                       "wells unlike training", "median typicality"], rows))
    return out


def _qc_section(data: ReportData) -> list[str]:
    qc = data.qc
    out = ["<h2>QC summary</h2>"]
    states = ", ".join(f"{n} {s}" for s, n in sorted(qc.images.items())) or "none"
    out.append(f"<p>Images: {_e(states)}. Spheroid not found: {qc.not_found}.</p>")
    if qc.plates_without_map:
        out.append("<p class='warn'>Plates without a plate map (viability relative to each "
                   f"well's first time point): {_e(', '.join(qc.plates_without_map))}</p>")
    if qc.qc_flags:
        out.append("<h3>QC flags</h3>" + _table(["flag", "images"], qc.qc_flags.items()))
    if qc.failures:
        out.append(f"<h3>Failed images ({qc.n_failed}, newest {len(qc.failures)} shown)</h3>")
        out.append(_table(["file", "error"], qc.failures))
    out.append(f"<h3>Open alerts ({len(qc.open_alerts)})</h3>")
    if qc.open_alerts:
        out.append(_table(
            ["id", "plate", "subject", "rule", "severity", "state", "time point", "message"],
            [(a["id"], a["plate"], a["subject"], a["rule"], a["severity"], a["state"],
              a["timepoint"] if a["timepoint"] is not None else "–", a["message"])
             for a in qc.open_alerts]))
    return out


def _plate_section(data: ReportData) -> list[str]:
    out = ["<h2>Plates</h2>"]
    for plate, tc in sorted(data.plates.items()):
        reads = sorted({p.timepoint for p in tc.points})
        if data.day is not None:
            reads = [t for t in reads if t == data.day]
        out.append(f"<h3>{_e(plate)}</h3>")
        if tc.plate_map is None:
            out.append("<p class='warn'>No plate map: colours show viability relative to each "
                       "well's first time point.</p>")
        if not reads:
            out.append("<p class='note'>No time points to show.</p>")
            continue
        summary_rows = [(s.timepoint, s.wells_imaged, s.wells_failed_qc, s.wells_unreadable,
                         len(s.missing_wells), format_number(s.control.median),
                         format_number(s.control.cv), s.control.source)
                        for s in tc.reads if s.timepoint in reads]
        out.append(_table(["time point", "wells", "failed QC (imaging)", "unreadable", "missing",
                           "vehicle median", "vehicle CV", "controls"], summary_rows))
        out.append("<p class='note'>Heatmaps: viability relative to the vehicle median; "
                   "each well names its compound (first letters) and concentration in µM "
                   "(V vehicle, + positive control). ✕: excluded by the counting rule "
                   "(imaging failure, damaged control, unreadable file); a hatched grey "
                   "well has no data.</p>")
        out.append(_img(heatmap_png(tc, reads), f"plate {plate} heatmaps"))
    return out


def _timecourse_section(data: ReportData, compounds: Sequence[str],
                        points: Sequence[WellTimepoint]) -> list[str]:
    out = ["<h2>Time courses</h2>",
           "<p class='note'>Median viability relative to vehicle per concentration over the "
           "wells that count (dead wells included; imaging failures excluded); grey band: "
           "vehicle wells, median ± SD"
           + ("; error bars: the median's 90 % interval (replicates combined as above)"
              if has_intervals(points) else "")
           + ".</p><div class='grid'>"]
    plates_of: dict[str, set[str]] = defaultdict(set)
    for p in points:
        if p.compound:
            plates_of[p.compound].add(p.plate)
    for compound in compounds:
        mine = [p for p in points if p.compound == compound and p.role in ("treated", "positive")]
        band = vehicle_band(p for p in points if p.plate in plates_of[compound])
        out.append(_img(timecourse_png(compound, mine, band), f"{compound} time course"))
    out.append("</div>")
    return out


def _dose_response_section(data: ReportData, compounds: Sequence[str],
                           points: Sequence[WellTimepoint]) -> list[str]:
    out = ["<h2>Dose-response</h2>",
           "<p class='note'>Dots: every counted well; black bars: median and range per "
           "concentration. Two-parameter log-logistic fit to the medians, drawn over the "
           "tested range. The IC50 is printed as a number only when the data support it: "
           "above the highest tested concentration it reads “&gt; top tested”, below the "
           f"lowest “&lt; lowest tested”; a fit with R² below {R2_FLOOR:g}, or a Hill slope of "
           f"{STEEP_HILL:g} or more with fewer than two concentrations on the transition, is "
           "“not reliable”. Horizontal bar at the IC50: its 95 % CI."
           + (" Wide pale bar at a concentration: the 90 % interval of its median "
              "(replicates combined as above)." if has_intervals(points) else "")
           + "</p><div class='grid'>"]
    by_compound: dict[str, list[CompoundDayFit]] = defaultdict(list)
    for f in data.fits:
        by_compound[f.compound].append(f)
    for compound in compounds:
        if by_compound.get(compound):
            out.append(_img(dose_response_png(compound, by_compound[compound],
                                              concentration_intervals(points, compound)),
                            f"{compound} dose-response"))
    out.append("</div><h3>IC50 per compound and time point</h3>")
    rows = [(r.compound, r.day, r.ic50_text, r.ci_text or "–", format_number(r.hill),
             format_number(r.r2), r.n_concentrations, r.n_wells, r.reason or r.message)
            for r in ic50_rows(data.fits)]
    out.append(_table(["compound", "time point", "IC50", "95% CI", "hill", "R²", "conc.", "wells",
                       "note"], rows))
    missing = [c for c in compounds if not by_compound.get(c)]
    if missing:
        out.append(f"<p class='note'>No dose-response (no counted treated wells): "
                   f"{_e(', '.join(missing))}</p>")
    return out


def _mos_section(data: ReportData) -> list[str]:
    day = data.dili_day
    out = [f"<h2>Margin of safety (time point {_e(day if day is not None else '–')})</h2>"]
    fits = sorted((f for f in data.fits if f.day == day), key=lambda f: f.compound)
    rows = []
    for f in fits:
        label = data.labels.get(f.compound)
        dili = "–" if label is None or label.dili is None else ("DILI+" if label.dili else "DILI−")
        mos, mos_text = f.mos_call
        call = f.call
        if mos is not None:
            pred = "DILI+" if mos < 100 else "DILI−"
        elif mos_text.startswith("> ") and f.cmax_uM and call.value is not None \
                and call.value / f.cmax_uM >= 100:
            pred = "DILI−"
        elif mos_text.startswith("< ") and f.cmax_uM and call.value is not None \
                and call.value / f.cmax_uM < 100:
            pred = "DILI+"
        else:
            pred = "–"
        rows.append((f.compound, call.text, format_number(f.cmax_uM), mos_text, pred, dili))
    out.append(_table(["compound", "IC50", "Cmax (µM)", "MOS = IC50/Cmax",
                       "predicted (MOS < 100)", "label"], rows))
    ev = data.dili
    if ev is None:
        out.append("<p class='note'>No compound table given: pass --compounds "
                   "(compound,dili,cmax_uM) for ROC AUC, sensitivity and specificity.</p>")
        return out
    out.append(
        f"<p>ROC AUC of MOS (DILI− as positive class, infinite MOS = 10⁶): <b>{format_number(ev.auc)}</b>; "
        f"at a {ev.margin:g}× margin: sensitivity {format_number(ev.sensitivity)}, specificity "
        f"{format_number(ev.specificity)} ({ev.n_dili_positive} DILI+, {ev.n_dili_negative} DILI−). "
        "Proctor et al. 2017: 59.4 % / 80.5 %.</p>")
    if ev.skipped:
        out.append(_table(["compound", "not evaluated because"], sorted(ev.skipped.items())))
    return out


def write_report(source: Reads | str | os.PathLike[str], out: str | os.PathLike[str],
                 **kwargs: Any) -> Path:
    """Collect, render and write the report (kwargs as for :func:`collect_report`)."""
    path = Path(out)
    if not path.parent.is_dir():
        raise DataError(f"Cannot write the report {path}: the folder {path.parent} does not exist.",
                        "Create the folder first or choose another place for the report.")
    data = collect_report(source, **kwargs)
    text = render_html(data)
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise DataError(f"Cannot write the report {path}: {exc.strerror or exc}.",
                        "Choose a folder you may write to.") from exc
    return path
