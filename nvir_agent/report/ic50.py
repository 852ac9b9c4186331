"""How an IC50 is reported: one rule for the report, its tables and legends,
the exports, the demo summary and the command line.

A fitted IC50 is a number only when the data support one. In order:

1. **fit failed** — the fit did not converge (the reason is given).
2. **above the tested range** — the curve's IC50 lies above the highest tested
   concentration (including the "beyond 10×" infinite case) and the median
   viability at that concentration has not fallen to the curve's midpoint:
   reported as ``> 32 µM (top tested)``; the margin of safety as
   ``> top / Cmax``.
3. **below the tested range** — the IC50 lies below the lowest tested
   concentration and the response there is already below the midpoint:
   ``< 0.5 µM (lowest tested)``; MOS ``< lowest / Cmax``.
4. **not reliable** — a fit that would place the IC50 where the data
   contradict it (above or below the range while the medians say otherwise),
   an R² below :data:`R2_FLOOR`, or a Hill slope of :data:`STEEP_HILL` or more
   with fewer than :data:`MIN_TRANSITION_POINTS` tested concentrations on the
   transition (where the curve lies between 20 % and 80 % of the way from top
   to bottom): the step could sit anywhere between two concentrations.
   No number is printed.
5. otherwise an **estimate** in µM with its 95 % confidence interval; an
   interval that cannot be estimated says so in words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nvir_agent.report.doseresponse import DoseResponseFit

R2_FLOOR = 0.5
"""Below this R² a fitted IC50 is not reported as a number."""
STEEP_HILL = 10.0
"""A Hill slope this steep needs points on the transition to be believed."""
MIN_TRANSITION_POINTS = 2
TRANSITION = (0.2, 0.8)
"""The transition: where the curve lies between 20 % and 80 % of the way down."""

ESTIMATE = "estimate"
ABOVE_RANGE = "above range"
BELOW_RANGE = "below range"
NOT_RELIABLE = "not reliable"
FAILED = "fit failed"
CI_NOT_ESTIMABLE = "could not be estimated"


@dataclass(frozen=True)
class Ic50Call:
    """What to say about one fitted IC50."""

    status: str  # estimate | above range | below range | not reliable | fit failed
    value: float | None  # µM: the estimate, or the tested bound for above/below range
    ci95: tuple[float, float] | None  # only for an estimate with an estimable interval
    text: str  # '2.1 µM', '> 32 µM (top tested)', 'not reliable', 'fit failed'
    ci_text: str  # '1.6 – 2.8 µM', 'could not be estimated', '' when no estimate
    reason: str = ""  # why not a number (in words)

    @property
    def is_number(self) -> bool:
        return self.status == ESTIMATE

    @property
    def label(self) -> str:
        """One line: 'IC50 2.1 µM (95% CI 1.6 – 2.8)', 'IC50 > 32 µM (top tested)', …"""
        if self.status == ESTIMATE:
            ci = (f"95% CI {self.ci_text}" if self.ci95 is not None
                  else f"95% CI {CI_NOT_ESTIMABLE}")
            return f"IC50 {self.text} ({ci})"
        if self.status in (NOT_RELIABLE, FAILED):
            return f"IC50 {self.text}"
        return f"IC50 {self.text}"


def num(v: float, digits: int = 3) -> str:
    """A short number: 3 significant digits, no exponent below 1e6."""
    if v is None or not math.isfinite(v):
        return "–" if v is None or math.isnan(v) else "∞"
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _transition_points(fit: DoseResponseFit, concentrations: Sequence[float]) -> int:
    lo, hi = TRANSITION
    n = 0
    for c in concentrations:
        if c <= 0:
            continue
        f = 1.0 / (1.0 + (c / fit.ic50_fitted) ** fit.hill) if fit.hill > 0 else 0.5
        if lo <= f <= hi:
            n += 1
    return n


def call_ic50(fit: DoseResponseFit, concentrations: Sequence[float],
              medians: Sequence[float]) -> Ic50Call:
    """Apply the reporting rule to a fit of these tested concentrations and the
    median responses at them (same order)."""
    if not fit.converged:
        return Ic50Call(FAILED, None, None, FAILED, "", fit.message)
    pairs = sorted((c, m) for c, m in zip(concentrations, medians, strict=True) if c > 0)
    if not pairs:
        return Ic50Call(FAILED, None, None, FAILED, "", "no positive concentration")
    (c_lo, m_lo), (c_hi, m_hi) = pairs[0], pairs[-1]
    midpoint = 0.5 * (fit.top + fit.bottom)
    fitted = fit.ic50_fitted
    if fit.infinite or fitted > c_hi:
        if m_hi >= midpoint:
            return Ic50Call(ABOVE_RANGE, c_hi, None, f"> {num(c_hi)} µM (top tested)", "",
                            f"viability did not halve up to the highest tested {num(c_hi)} µM")
        return Ic50Call(NOT_RELIABLE, None, None, NOT_RELIABLE, "",
                        f"the curve puts the IC50 above {num(c_hi)} µM but the median there "
                        f"is {num(m_hi, 2)}")
    if fitted < c_lo:
        if m_lo < midpoint:
            return Ic50Call(BELOW_RANGE, c_lo, None, f"< {num(c_lo)} µM (lowest tested)", "",
                            f"viability already below half at the lowest tested {num(c_lo)} µM")
        return Ic50Call(NOT_RELIABLE, None, None, NOT_RELIABLE, "",
                        f"the curve puts the IC50 below {num(c_lo)} µM but the median there "
                        f"is {num(m_lo, 2)}")
    if not (math.isfinite(fit.r2) and fit.r2 >= R2_FLOOR):
        return Ic50Call(NOT_RELIABLE, None, None, NOT_RELIABLE, "",
                        f"R² {num(fit.r2, 2)} below {R2_FLOOR:g}")
    if fit.hill >= STEEP_HILL:
        n = _transition_points(fit, [c for c, _ in pairs])
        if n < MIN_TRANSITION_POINTS:
            return Ic50Call(NOT_RELIABLE, None, None, NOT_RELIABLE, "",
                            f"Hill slope {num(fit.hill, 3)} with {n} tested concentration(s) "
                            "on the transition: the step lies somewhere between two doses")
    lo, hi = fit.ic50_ci95
    if math.isfinite(lo) and math.isfinite(hi):
        return Ic50Call(ESTIMATE, fitted, (lo, hi), f"{num(fitted)} µM",
                        f"{num(lo)} – {num(hi)} µM")
    return Ic50Call(ESTIMATE, fitted, None, f"{num(fitted)} µM", CI_NOT_ESTIMABLE)


def mos_text(call: Ic50Call, cmax_uM: float | None) -> tuple[float | None, str]:
    """Margin of safety (IC50 / Cmax) under the same rule: (number or None, text)."""
    if cmax_uM is None or not cmax_uM > 0:
        return None, "– (no Cmax)"
    if call.status == ESTIMATE and call.value is not None:
        v = call.value / cmax_uM
        return v, num(v)
    if call.status == ABOVE_RANGE and call.value is not None:
        return None, f"> {num(call.value / cmax_uM)}"
    if call.status == BELOW_RANGE and call.value is not None:
        return None, f"< {num(call.value / cmax_uM)}"
    return None, f"– ({call.status})"
