"""What the demo found next to what the renderer was told: per compound its
truth (toxic or not, IC50, onset), the first alert and the fitted IC50, and a
check of the alerts against the ground truth.

Ground truth of a replicate group (compound × concentration) comes from the
compound's noise-free dose-response curve on each day. A group *should*
alert when the curve lies clearly below the alert threshold (by
``MARGIN_BELOW``) on ``alerts.confirm`` consecutive reads; it *must not*
alert when the curve stays clearly above it (by ``MARGIN_ABOVE``) on every
read — harmless compounds and vehicle controls among them. Groups in between
are borderline: either outcome is right. Plate-level alerts (vehicle-control
spread or drop, QC failures, missing wells) are false alarms on a demo plate
that has none of these problems.

Pure functions over values; :func:`format_summary` returns text and prints
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nvir_agent.config import AlertsConfig
from nvir_agent.monitor.alerts import Alert
from nvir_agent.report.html import Ic50Row
from nvir_agent.store.rows import SEVERITY_RANK
from nvir_agent.synth.plate import Compound

MARGIN_BELOW = 0.10
MARGIN_ABOVE = 0.15
IC50_FACTOR = 2.0

GroupKey = tuple[str, float]  # (compound, concentration µM)


@dataclass(frozen=True)
class CompoundSummary:
    """One line of the demo's summary table."""

    compound: str
    positive_control: bool
    toxic: bool
    ic50_true: float | None
    onset_day: float
    concentrations: tuple[float, ...]
    first_alert_read: int | None
    worst_severity: str | None
    alerted_concentrations: tuple[float, ...]
    fit: Ic50Row | None  # the fit on the last day with one

    @property
    def ic50_in_range(self) -> bool:
        return bool(self.toxic and self.concentrations and self.ic50_true is not None
                    and self.concentrations[0] <= self.ic50_true <= self.concentrations[-1])


@dataclass
class TruthCheck:
    """Alerts and fits against the renderer's ground truth."""

    expected: list[GroupKey] = field(default_factory=list)  # groups that should alert
    quiet: list[GroupKey] = field(default_factory=list)  # groups that must not alert
    alerted: list[GroupKey] = field(default_factory=list)
    missed: list[GroupKey] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)  # described
    ic50: list[tuple[str, float, float | None, bool]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missed and not self.false_alarms and all(ok for *_, ok in self.ic50)


def _conc(value: Any) -> float | None:
    try:
        c = float(value)
    except (TypeError, ValueError):
        return None
    return float(f"{c:.6g}")


def alert_group(alert: Alert) -> GroupKey | None:
    """The (compound, concentration) a well or group alert is about; None for plate alerts."""
    compound = alert.details.get("compound")
    conc = _conc(alert.details.get("concentration_uM"))
    if not compound or conc is None:
        return None
    return (str(compound), conc)


def alert_read(alert: Alert) -> int | None:
    """The plate read at which the alert's condition was confirmed."""
    since = alert.details.get("since")
    if isinstance(since, int):
        return since
    return alert.timepoint


def tested_groups(truth: dict[str, Any]) -> list[GroupKey]:
    """Every treated (compound, concentration) on the plate."""
    groups = {(w["compound"], _conc(w["concentration_uM"])) for w in truth["wells"]
              if w["role"] == "treated" and w["compound"]}
    return sorted((c, x) for c, x in groups if x is not None)


def expectation(compound: Compound, conc: float, days: Sequence[int],
                cfg: AlertsConfig) -> str:
    """'alert', 'quiet' or 'borderline' for a group, from the noise-free curve."""
    curve = [compound.viability(conc, d) for d in days]
    run = longest = 0
    for v in curve:
        run = run + 1 if v < cfg.threshold - MARGIN_BELOW else 0
        longest = max(longest, run)
    if longest >= cfg.confirm:
        return "alert"
    if all(v >= cfg.threshold + MARGIN_ABOVE for v in curve):
        return "quiet"
    return "borderline"


def check_against_truth(truth: dict[str, Any], compounds: dict[str, Compound],
                        alerts: Iterable[Alert], ic50: Sequence[Ic50Row],
                        cfg: AlertsConfig) -> TruthCheck:
    """Compare viability alerts and fitted IC50s with what the renderer drew."""
    check = TruthCheck()
    days = list(truth["days"])
    alerted: set[GroupKey] = set()
    for a in alerts:
        if a.state == "dismissed":
            continue
        group = alert_group(a)
        if group is None:
            if a.severity != "info":
                check.false_alarms.append(f"{a.plate} {a.subject} {a.rule}: {a.message}")
            continue
        alerted.add(group)
    check.alerted = sorted(alerted)
    for group in tested_groups(truth):
        verdict = expectation(compounds[group[0]], group[1], days, cfg)
        if verdict == "alert":
            check.expected.append(group)
            if group not in alerted:
                check.missed.append(group)
        elif verdict == "quiet":
            check.quiet.append(group)
            if group in alerted:
                check.false_alarms.append(f"{group[0]} {group[1]:g} µM (should stay quiet)")
    last_fit = _last_fits(ic50)
    for name, info in truth["compounds"].items():
        if not info.get("ic50_in_range"):
            continue
        true = float(info["ic50_uM"])
        row = last_fit.get(name)
        fitted = (row.ic50 if row is not None and row.converged
                  and row.status in ("", "estimate") else None)
        ok = (fitted is not None and math.isfinite(fitted) and fitted > 0
              and 1 / IC50_FACTOR <= fitted / true <= IC50_FACTOR)
        check.ic50.append((name, true, fitted, ok))
    return check


def _last_fits(rows: Iterable[Ic50Row]) -> dict[str, Ic50Row]:
    """Per compound the fit of its last day."""
    out: dict[str, Ic50Row] = {}
    for r in sorted(rows, key=lambda r: r.day):
        out[r.compound] = r
    return out


def summarise(truth: dict[str, Any], alerts: Iterable[Alert],
              ic50: Sequence[Ic50Row], positive_control: str) -> list[CompoundSummary]:
    """One row per compound on the plate, the positive control first."""
    alerts = [a for a in alerts if a.state != "dismissed"]
    fits = _last_fits(ic50)
    rows = []
    for name, info in truth["compounds"].items():
        concs = tuple(info["concentrations_uM"])
        if not concs:
            continue  # not on this plate
        mine = [a for a in alerts if (g := alert_group(a)) is not None and g[0] == name]
        reads = [r for a in mine if (r := alert_read(a)) is not None]
        worst = max((a.severity for a in mine), key=lambda s: SEVERITY_RANK.get(s, 0),
                    default=None)
        rows.append(CompoundSummary(
            compound=name, positive_control=name == positive_control, toxic=bool(info["toxic"]),
            ic50_true=info["ic50_uM"], onset_day=float(info["onset_day"]),
            concentrations=concs, first_alert_read=min(reads) if reads else None,
            worst_severity=worst,
            alerted_concentrations=tuple(sorted({g[1] for a in mine
                                                 if (g := alert_group(a)) is not None})),
            fit=fits.get(name),
        ))
    return sorted(rows, key=lambda r: (not r.positive_control, not r.toxic,
                                       r.ic50_true or math.inf, r.compound))


# --------------------------------------------------------------------------- text


def _num(v: float) -> str:
    return f"{v:.3g}"


def fit_text(row: Ic50Row | None, highest_uM: float | None = None) -> str:
    """The IC50 under the report's reporting rule (:mod:`nvir_agent.report.ic50`):
    '2.3 µM (1.6–3.2)', '> 32 µM (top tested)', 'not reliable (…)' or why there
    is no fit."""
    if row is None:
        return "no data"
    if row.n_concentrations < 3:
        return f"n/a ({row.n_concentrations} concentration{'s' if row.n_concentrations > 1 else ''})"
    if not row.converged:
        return "no fit" + (f" ({row.message})" if row.message else "")
    if row.status and row.status != "estimate":
        return row.ic50_text + (f" ({row.reason})" if row.status == "not reliable" else "")
    if not row.status and (row.infinite or not math.isfinite(row.ic50)):
        return "none (infinite)"
    lo, hi = row.ci95
    ci = (f"{_num(lo)}–{_num(hi)}" if math.isfinite(lo) and math.isfinite(hi)
          else "CI could not be estimated")
    return f"{_num(row.ic50)} µM ({ci})"


def truth_text(s: CompoundSummary) -> str:
    if not s.toxic:
        return "harmless"
    return f"toxic, IC50 {_num(s.ic50_true or math.nan)} µM, day {s.onset_day:g}"


def alert_text(s: CompoundSummary) -> str:
    if s.positive_control:
        return "(control: not alerted)"
    if s.first_alert_read is None:
        return "none"
    concs = ", ".join(_num(c) for c in s.alerted_concentrations)
    return f"time point {s.first_alert_read}, {s.worst_severity} ({concs} µM)"


def format_summary(rows: Sequence[CompoundSummary]) -> str:
    """The summary table as aligned text."""
    header = ("Compound", "Truth (renderer)", "First alert", "Fitted IC50 (95 % CI)", "Time point")
    lines = [header]
    for s in rows:
        name = s.compound + (" (positive control)" if s.positive_control else "")
        day = str(s.fit.day) if s.fit is not None else "-"
        highest = max(s.concentrations) if s.concentrations else None
        lines.append((name, truth_text(s), alert_text(s), fit_text(s.fit, highest), day))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
           for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_check(check: TruthCheck) -> str:
    """A few lines: how the alerts and fits compare with the ground truth."""
    n_expected = len(check.expected)
    lines = [
        f"Alerts vs truth: {n_expected - len(check.missed)} of {n_expected} clearly toxic "
        f"groups alerted; {len(check.false_alarms)} false alarm(s) "
        f"({len(check.quiet)} groups should stay quiet).",
    ]
    for c, x in check.missed:
        lines.append(f"  missed: {c} {_num(x)} µM")
    for text in check.false_alarms:
        lines.append(f"  false alarm: {text}")
    for name, true, fitted, ok in check.ic50:
        got = ("no fit" if fitted is None else f"{_num(fitted)} µM" if math.isfinite(fitted)
               else "infinite")
        verdict = f"within {IC50_FACTOR:g}x" if ok else f"NOT within {IC50_FACTOR:g}x"
        lines.append(f"IC50 {name}: true {_num(true)} µM, fitted {got} — {verdict}")
    return "\n".join(lines)
