"""Drug-induced liver injury (DILI): IC50 per compound and day, margin of
safety, and how well the margin separates DILI-positive from DILI-negative
compounds.

Following the NViR paper:
- per compound and day, the median viability (relative to the vehicle
  controls of the same plate and read) per concentration is fitted with the
  two-parameter log-logistic (:mod:`nvir_agent.report.doseresponse`);
- margin of safety MOS = IC50 / Cmax (Cmax: the compound's maximal plasma
  concentration in µM, from the compound table or the plate map);
- ROC AUC of MOS against binary DILI labels on day 7 by default (else the last
  day with fits), infinite MOS counted as 1e6, DILI-negative as the positive
  class (a high margin should mean "safe"); AUC by the Mann–Whitney formula;
- sensitivity and specificity at a 100× margin: DILI+ is predicted when
  MOS < 100 (Proctor et al. 2017 reported 59.4 % and 80.5 %).

Everything here is pure (values in, values out) except
:func:`read_compound_table`, which reads the user's compound CSV.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvir_agent.errors import DataError, read_text_file
from nvir_agent.monitor.counting import IMAGING_FAILURE_FLAGS
from nvir_agent.report.doseresponse import DoseResponseFit, fit_dose_response
from nvir_agent.report.ic50 import Ic50Call, call_ic50, mos_text

log = logging.getLogger(__name__)

DEFAULT_DAY = 7
DEFAULT_MARGIN = 100.0
INFINITE_MOS = 1e6
ARTEFACT_FLAGS = IMAGING_FAILURE_FLAGS
"""QC flags that make a well's score untrustworthy whatever the drug did."""
_DILI_WORDS = {
    "1": True, "positive": True, "pos": True, "true": True, "yes": True, "+": True,
    "dili+": True, "0": False, "negative": False, "neg": False, "false": False, "no": False,
    "-": False, "dili-": False,
}


@dataclass(frozen=True)
class ViabilityRecord:
    """One treated well at one day, viability relative to vehicle controls."""

    compound: str
    day: int
    concentration_uM: float
    viability: float
    cmax_uM: float | None = None
    plate: str | None = None
    well: str | None = None


@dataclass(frozen=True)
class CompoundDayFit:
    """The dose-response of one compound on one day."""

    compound: str
    day: int
    concentrations: tuple[float, ...]
    medians: tuple[float, ...]
    wells: tuple[int, ...]  # wells behind each median
    fit: DoseResponseFit
    cmax_uM: float | None = None
    replicates: tuple[tuple[float, ...], ...] = ()  # every counted well, per concentration

    @property
    def mos(self) -> float | None:
        """IC50 / Cmax; inf for an infinite IC50; None without Cmax or a fit."""
        return margin_of_safety(self.fit, self.cmax_uM)

    @property
    def call(self) -> Ic50Call:
        """The IC50 as it may be reported (:mod:`nvir_agent.report.ic50`)."""
        return call_ic50(self.fit, self.concentrations, self.medians)

    @property
    def mos_call(self) -> tuple[float | None, str]:
        """The margin of safety under the same rule: (number or None, text)."""
        return mos_text(self.call, self.cmax_uM)


@dataclass(frozen=True)
class CompoundLabel:
    """A row of the compound table."""

    compound: str
    dili: bool | None
    cmax_uM: float | None = None


@dataclass(frozen=True)
class DiliRow:
    compound: str
    dili: bool
    ic50: float
    cmax_uM: float
    mos: float
    predicted_dili: bool


@dataclass
class DiliEvaluation:
    """ROC AUC of MOS and sensitivity/specificity at a margin, on one day."""

    day: int | None
    margin: float
    auc: float
    sensitivity: float
    specificity: float
    n_dili_positive: int
    n_dili_negative: int
    rows: list[DiliRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # compound → why not evaluated


# --------------------------------------------------------------------------- records


def usable_for_dose_response(point: Any) -> bool:
    """Whether a well's value may enter a dose-response fit: the counting rule
    of :mod:`nvir_agent.monitor.counting` (fragmentation, shrinkage, a missing
    body are what toxicity looks like and count; imaging failures do not)."""
    return bool(getattr(point, "counted", True))


def records_from_points(points: Iterable[Any]) -> list[ViabilityRecord]:
    """Viability records from time-course points (``WellTimepoint``-like objects).

    Keeps treated and positive-control wells with a compound, a positive
    concentration, a value relative to control and usable QC
    under the counting rule (:func:`usable_for_dose_response`); the day is the read's time point.
    """
    out = []
    for p in points:
        if p.role not in ("treated", "positive") or not p.compound:
            continue
        if p.concentration_uM is None or not p.concentration_uM > 0:
            continue
        if p.viability_rel_control is None or not usable_for_dose_response(p):
            continue
        out.append(ViabilityRecord(
            compound=p.compound, day=int(p.timepoint), concentration_uM=float(p.concentration_uM),
            viability=float(p.viability_rel_control), cmax_uM=getattr(p, "cmax_uM", None),
            plate=getattr(p, "plate", None), well=getattr(p, "well", None),
        ))
    return out


def _conc_key(c: float) -> float:
    return float(f"{c:.6g}")  # one concentration even when written slightly differently


def replicates_by_concentration(
    records: Iterable[ViabilityRecord],
) -> dict[tuple[str, int], list[tuple[float, tuple[float, ...]]]]:
    """(compound, day) → [(concentration, every well's viability)] by concentration."""
    groups: dict[tuple[str, int], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if math.isfinite(r.viability) and r.concentration_uM > 0:
            groups[(r.compound, r.day)][_conc_key(r.concentration_uM)].append(r.viability)
    return {
        key: [(c, tuple(v)) for c, v in sorted(by_conc.items())]
        for key, by_conc in sorted(groups.items())
    }


def median_by_concentration(
    records: Iterable[ViabilityRecord],
) -> dict[tuple[str, int], list[tuple[float, float, int]]]:
    """(compound, day) → [(concentration, median viability, wells)] sorted by concentration."""
    return {
        key: [(c, float(statistics.median(v)), len(v)) for c, v in points]
        for key, points in replicates_by_concentration(records).items()
    }


def fit_compounds(
    records: Iterable[ViabilityRecord],
    *,
    model: str = "2pl",
    cmax: Mapping[str, float | None] | None = None,
    days: Iterable[int] | None = None,
) -> list[CompoundDayFit]:
    """Fit every compound on every day (or the given days).

    ``cmax`` (compound → µM) takes precedence over Cmax carried by the records
    (the plate map's ``cmax_uM`` column).
    """
    records = list(records)
    map_cmax: dict[str, float] = {}
    for r in records:
        if r.cmax_uM is not None and r.cmax_uM > 0:
            map_cmax.setdefault(r.compound, float(r.cmax_uM))
    wanted = None if days is None else set(days)
    out = []
    for (compound, day), points in replicates_by_concentration(records).items():
        if wanted is not None and day not in wanted:
            continue
        conc = tuple(p[0] for p in points)
        med = tuple(float(statistics.median(p[1])) for p in points)
        fit = fit_dose_response(conc, med, model=model)  # type: ignore[arg-type]
        if not fit.converged:
            log.info("%s time point %d: dose-response fit failed: %s", compound, day, fit.message)
        c = (cmax or {}).get(compound) or map_cmax.get(compound)
        out.append(CompoundDayFit(
            compound=compound, day=day, concentrations=conc, medians=med,
            wells=tuple(len(p[1]) for p in points), fit=fit, cmax_uM=c,
            replicates=tuple(p[1] for p in points),
        ))
    return out


def margin_of_safety(fit: DoseResponseFit, cmax_uM: float | None) -> float | None:
    """IC50 / Cmax (inf when the IC50 is infinite); None when not computable."""
    if cmax_uM is None or not cmax_uM > 0 or not fit.converged:
        return None
    if fit.infinite:
        return math.inf
    return fit.ic50 / cmax_uM


# --------------------------------------------------------------------------- compound table


def parse_compound_table(text: str, *, source: str = "compound table") -> dict[str, CompoundLabel]:
    """Parse ``compound,dili[,cmax_uM]`` CSV text (dili: 1/0, positive/negative, …)."""
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{source} is empty.", "Add a header 'compound,dili,cmax_uM' and rows.")
    header = [c.strip().lower() for c in rows[0]]
    if "compound" not in header:
        raise DataError(
            f"{source} has no 'compound' column (header: {','.join(rows[0])}).",
            "The first line must name the columns: compound,dili[,cmax_uM].",
        )
    if "dili" not in header and "cmax_um" not in header:
        raise DataError(
            f"{source} has neither a 'dili' nor a 'cmax_uM' column.",
            "Give DILI labels (1/0 or positive/negative) and/or Cmax in µM per compound.",
        )
    ci = header.index("compound")
    di = header.index("dili") if "dili" in header else None
    mi = header.index("cmax_um") if "cmax_um" in header else None
    out: dict[str, CompoundLabel] = {}
    for line, row in enumerate(rows[1:], start=2):
        def cell(i: int | None, row: list[str] = row) -> str:
            return row[i].strip() if i is not None and i < len(row) else ""

        name = cell(ci)
        if not name:
            raise DataError(f"{source} line {line}: the compound name is empty.",
                            "Name the compound as in the plate map.")
        if name in out:
            raise DataError(f"{source} line {line}: compound '{name}' is listed twice.",
                            "Keep one row per compound.")
        dili: bool | None = None
        raw = cell(di).lower()
        if raw:
            if raw not in _DILI_WORDS:
                raise DataError(
                    f"{source} line {line}: dili value '{cell(di)}' is not understood.",
                    "Use 1/0, positive/negative, yes/no or true/false (empty: unknown).",
                )
            dili = _DILI_WORDS[raw]
        cmax: float | None = None
        if cell(mi):
            try:
                cmax = float(cell(mi))
            except ValueError:
                raise DataError(f"{source} line {line}: cmax_uM '{cell(mi)}' is not a number.",
                                "Give Cmax in µM, or leave the cell empty.") from None
            if not (math.isfinite(cmax) and cmax > 0):
                raise DataError(f"{source} line {line}: cmax_uM must be a positive number.",
                                "Give Cmax in µM, or leave the cell empty.")
        out[name] = CompoundLabel(name, dili, cmax)
    return out


def read_compound_table(path: str | Path) -> dict[str, CompoundLabel]:
    """Read the compound CSV; DataError naming the file for every problem."""
    p = Path(path)
    text = read_text_file(p, "Compound table", DataError, encoding="utf-8-sig",
                          missing_hint="Check the --compounds path.",
                          format_hint="Give a UTF-8 CSV file 'compound,dili[,cmax_uM]'.")
    return parse_compound_table(text, source=str(p))


# --------------------------------------------------------------------------- ROC


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve by the Mann–Whitney formula: the probability
    that a random positive scores higher than a random negative (ties count
    half). nan when either class is empty."""
    pos = [s for s, y in zip(scores, positive, strict=True) if y]
    neg = [s for s, y in zip(scores, positive, strict=True) if not y]
    if not pos or not neg:
        return math.nan
    wins = 0.0
    for p in pos:
        for n in neg:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(pos) * len(neg))


def choose_day(fits: Sequence[CompoundDayFit], day: int | None = None) -> int | None:
    """The requested day, else day 7 when fitted, else the last fitted day."""
    days = sorted({f.day for f in fits})
    if day is not None:
        return day
    if not days:
        return None
    return DEFAULT_DAY if DEFAULT_DAY in days else days[-1]


def evaluate_dili(
    fits: Sequence[CompoundDayFit],
    labels: Mapping[str, CompoundLabel],
    *,
    day: int | None = None,
    margin: float = DEFAULT_MARGIN,
) -> DiliEvaluation:
    """ROC AUC of MOS (DILI-negative = positive class) and sensitivity /
    specificity at ``margin`` (DILI+ predicted when MOS < margin) on one day.

    Cmax comes from the compound table, else from the fit (plate map).
    Compounds without a label, a Cmax or a converged fit are listed in
    ``skipped`` with the reason.
    """
    chosen = choose_day(fits, day)
    on_day = {f.compound: f for f in fits if f.day == chosen}
    rows: list[DiliRow] = []
    skipped: dict[str, str] = {}
    for name in sorted(set(labels) | set(on_day)):
        label = labels.get(name)
        f = on_day.get(name)
        if label is None or label.dili is None:
            skipped[name] = "no DILI label"
            continue
        if f is None:
            skipped[name] = f"no dose-response at time point {chosen}"
            continue
        cmax = label.cmax_uM or f.cmax_uM
        if cmax is None:
            skipped[name] = "no Cmax"
            continue
        mos = margin_of_safety(f.fit, cmax)
        if mos is None:
            skipped[name] = f"fit failed: {f.fit.message}"
            continue
        rows.append(DiliRow(name, label.dili, f.fit.ic50, cmax, mos, mos < margin))
    scores = [INFINITE_MOS if math.isinf(r.mos) else r.mos for r in rows]
    auc = roc_auc(scores, [not r.dili for r in rows])
    n_pos = sum(r.dili for r in rows)
    n_neg = len(rows) - n_pos
    tp = sum(r.dili and r.predicted_dili for r in rows)
    tn = sum(not r.dili and not r.predicted_dili for r in rows)
    return DiliEvaluation(
        day=chosen, margin=margin, auc=auc,
        sensitivity=tp / n_pos if n_pos else math.nan,
        specificity=tn / n_neg if n_neg else math.nan,
        n_dili_positive=n_pos, n_dili_negative=n_neg, rows=rows, skipped=skipped,
    )
