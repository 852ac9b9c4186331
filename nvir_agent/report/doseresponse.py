"""Dose-response curves: log-logistic fits, IC50 with its uncertainty, IC_x.

Two models, both decreasing in concentration ``x`` for a positive Hill slope:

- ``2pl`` — the paper's two-parameter log-logistic for responses normalised to
  vehicle controls: ``y = 1 / (1 + (x / IC50)^h)`` with ``h >= 0``,
  ``IC50 >= 0``, start ``h = 1``, ``IC50 = mean concentration``.
- ``4pl`` — the four-parameter log-logistic with free plateaus for responses
  on any scale (raw luminescence, spheroid area …):
  ``y = bottom + (top - bottom) / (1 + (x / IC50)^h)``; starts from the data
  (top and bottom from the response range, IC50 at the geometric middle of the
  tested concentrations, ``h = 1``). ``plateaus="normalised"`` applies the
  paper's plateau bounds for normalised data (top in [0, 1.5], bottom in
  [0, 1]) and its rule that a lower plateau above 0.5 means the response never
  halves (infinite IC50).

Fitting uses ``scipy.optimize.least_squares`` with bounds. The IC50 is fitted
as ``log(IC50)`` (better conditioned over concentrations spanning decades; the
bound ``IC50 >= 0`` becomes implicit). The design's start values are always
tried first; a few more IC50 starts across the tested range guard against local
minima, and the lowest residual sum of squares wins.

Uncertainty: the covariance of the fitted parameters is ``s² (JᵀJ)⁻¹`` with
``J`` the Jacobian of the (weighted) residuals at the optimum and
``s² = RSS / (n − p)``. The IC50's standard error is obtained from the SE of
``log(IC50)`` by the delta method (``SE(IC50) = IC50 · SE(log IC50)``, which
equals the SE of a fit parametrised in IC50 directly); the 95 % confidence
interval is the t-based interval (``n − p`` degrees of freedom) on
``log(IC50)``, exponentiated — it is therefore asymmetric and always positive.

Weights (optional, ``>= 0``) give weighted least squares: residuals are
multiplied by ``sqrt(w)``; RSS and R² are the weighted sums.

IC values above 10× the highest tested concentration count as infinite
(``ic50 = inf``, ``infinite = True``). A fit that cannot be done or does not
converge is reported (``converged = False`` with a message), never raised.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import optimize, special, stats

log = logging.getLogger(__name__)

Model = Literal["2pl", "4pl"]
Plateaus = Literal["free", "normalised"]

MODELS: tuple[str, ...] = ("2pl", "4pl")
INFINITE_FACTOR = 10.0
"""IC values above this many times the highest tested concentration are infinite."""
NORMALISED_TOP = (0.0, 1.5)
NORMALISED_BOTTOM = (0.0, 1.0)
NORMALISED_INFINITE_BOTTOM = 0.5
"""With normalised plateaus, a lower plateau above this never halves the response."""
_LOG_RANGE = math.log(1e6)  # log(IC50) may roam 10^6 beyond the tested range
_EXTRA_STARTS = 4


@dataclass(frozen=True)
class DoseResponseFit:
    """The outcome of one dose-response fit (also when it failed).

    ``ic50`` is the reported value (``inf`` when beyond 10× the highest tested
    concentration, ``nan`` when the fit failed); ``ic50_fitted`` is the curve's
    own parameter, kept for drawing the curve and computing IC_x.
    ``ic50_ci95`` is ``(low, high)``; ``nan`` where not estimable.
    """

    model: str
    ic50: float
    ic50_se: float
    ic50_ci95: tuple[float, float]
    hill: float
    top: float
    bottom: float
    rss: float
    r2: float
    converged: bool
    n: int
    message: str
    infinite: bool
    ic50_fitted: float = math.nan
    max_concentration: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ic50_ci95"] = list(self.ic50_ci95)
        return d

    @property
    def extrapolated(self) -> bool:
        """A finite IC50 above the highest tested concentration (within the 10× rule)."""
        return self.converged and math.isfinite(self.ic50) and self.ic50 > self.max_concentration

    def predict(self, concentrations: Sequence[float] | np.ndarray) -> np.ndarray:
        """The fitted curve at these concentrations (nan when the fit failed)."""
        x = np.asarray(concentrations, dtype=float)
        if not self.converged:
            return np.full(x.shape, np.nan)
        return self.bottom + (self.top - self.bottom) * _fraction(
            x, self.hill, math.log(self.ic50_fitted)
        )


NORMALISED_DATA_RANGE = (-0.5, 3.0)
"""The 2PL expects responses relative to vehicle (about 0–1.5); values outside
this range mean the data are on another scale."""


def scale_warnings(responses: Sequence[float] | np.ndarray, model: str) -> list[str]:
    """Warnings about data the chosen model cannot describe (empty when fine).

    The 2PL has fixed plateaus at 1 and 0: responses far outside 0–1.5 (raw
    luminescence, areas, percentages) make its IC50 and R² meaningless."""
    y = np.asarray(responses, dtype=float)
    y = y[np.isfinite(y)]
    if model != "2pl" or not y.size:
        return []
    lo, hi = NORMALISED_DATA_RANGE
    if y.min() >= lo and y.max() <= hi:
        return []
    return [
        f"responses range from {y.min():.4g} to {y.max():.4g}, far outside the 0–1.5 the "
        "2pl model expects (viability relative to vehicle controls, 1 = like control): "
        "use --model 4pl (free plateaus, any scale), or normalise first by dividing each "
        "response by the median of the vehicle wells"
    ]


def _fraction(x: np.ndarray, hill: float, log_ic50: float) -> np.ndarray:
    """1 / (1 + (x/IC50)^h) evaluated stably; 1 at x = 0 (0.5 when h = 0)."""
    out = np.empty(x.shape, dtype=float)
    pos = x > 0
    out[pos] = special.expit(-hill * (np.log(x[pos]) - log_ic50))
    out[~pos] = 1.0 if hill > 0 else 0.5
    return out


def _fraction_and_derivatives(
    x: np.ndarray, hill: float, log_ic50: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f, df/dh, df/dlog(IC50)."""
    f = _fraction(x, hill, log_ic50)
    pos = x > 0
    slope = f * (1.0 - f)
    d_log_x = np.zeros_like(f)
    d_log_x[pos] = np.log(x[pos]) - log_ic50
    df_dh = np.where(pos, -slope * d_log_x, 0.0)
    df_dtheta = np.where(pos, slope * hill, 0.0)
    return f, df_dh, df_dtheta


class _Problem:
    """Model function and Jacobian in the fitted parametrisation.

    2pl parameters: (h, log IC50). 4pl: (h, log IC50, top, bottom).
    """

    def __init__(self, model: str, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        self.model = model
        self.x, self.y, self.sw = x, y, np.sqrt(w)
        self.p = 2 if model == "2pl" else 4

    def curve(self, params: np.ndarray) -> np.ndarray:
        f = _fraction(self.x, params[0], params[1])
        if self.model == "2pl":
            return f
        top, bottom = params[2], params[3]
        return bottom + (top - bottom) * f

    def residuals(self, params: np.ndarray) -> np.ndarray:
        return self.sw * (self.curve(params) - self.y)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        f, df_dh, df_dt = _fraction_and_derivatives(self.x, params[0], params[1])
        if self.model == "2pl":
            cols = [df_dh, df_dt]
        else:
            span = params[2] - params[3]
            cols = [span * df_dh, span * df_dt, f, 1.0 - f]
        return self.sw[:, None] * np.column_stack(cols)


def _failed(model: str, n: int, message: str, max_conc: float = math.nan) -> DoseResponseFit:
    nan = math.nan
    return DoseResponseFit(
        model=model, ic50=nan, ic50_se=nan, ic50_ci95=(nan, nan), hill=nan, top=nan,
        bottom=nan, rss=nan, r2=nan, converged=False, n=n, message=message,
        infinite=False, max_concentration=max_conc,
    )


def fit_dose_response(
    concentrations: Sequence[float] | np.ndarray,
    responses: Sequence[float] | np.ndarray,
    *,
    model: Model = "2pl",
    weights: Sequence[float] | np.ndarray | None = None,
    plateaus: Plateaus = "free",
) -> DoseResponseFit:
    """Fit a log-logistic curve; never raises for bad data (see module docstring).

    ``concentrations`` must be >= 0 (0 = vehicle, response at the top plateau);
    ``weights`` are relative (inverse variances up to a constant).
    """
    if model not in MODELS:
        raise ValueError(f"unknown dose-response model {model!r}; use one of {MODELS}")
    if plateaus not in ("free", "normalised"):
        raise ValueError(f"plateaus must be 'free' or 'normalised', not {plateaus!r}")
    x = np.asarray(concentrations, dtype=float).ravel()
    y = np.asarray(responses, dtype=float).ravel()
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float).ravel()
    if not (x.shape == y.shape == w.shape):
        return _failed(model, int(y.size), "concentrations, responses and weights differ in length")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(w))):
        return _failed(model, int(y.size), "concentrations, responses and weights must be finite numbers")
    if np.any(x < 0):
        return _failed(model, int(y.size), "concentrations must not be negative")
    if np.any(w < 0):
        return _failed(model, int(y.size), "weights must not be negative")
    keep = w > 0
    x, y, w = x[keep], y[keep], w[keep]
    n = int(y.size)
    p = 2 if model == "2pl" else 4
    max_conc = float(x.max()) if n else math.nan
    if n <= p:
        return _failed(
            model, n, f"a {model} fit needs at least {p + 1} points with positive weight, got {n}",
            max_conc,
        )
    positive = np.unique(x[x > 0])
    if positive.size < 2:
        return _failed(model, n, "needs at least two different positive concentrations", max_conc)
    problem = _Problem(model, x, y, w)
    lo_theta = math.log(positive[0]) - _LOG_RANGE
    hi_theta = math.log(positive[-1]) + _LOG_RANGE
    lower, upper = [0.0, lo_theta], [np.inf, hi_theta]
    if model == "4pl":
        if plateaus == "normalised":
            lower += [NORMALISED_TOP[0], NORMALISED_BOTTOM[0]]
            upper += [NORMALISED_TOP[1], NORMALISED_BOTTOM[1]]
        else:
            lower += [-np.inf, -np.inf]
            upper += [np.inf, np.inf]
    best = None
    last_error = ""
    for x0 in _starts(model, x, y, positive):
        x0 = np.clip(x0, np.add(lower, 1e-9), np.subtract(upper, 1e-9))
        try:
            res = optimize.least_squares(
                problem.residuals, x0, jac=problem.jacobian, bounds=(lower, upper),
                method="trf", x_scale="jac", max_nfev=2000,
            )
        except (ValueError, np.linalg.LinAlgError) as exc:
            last_error = str(exc)
            continue
        if res.success and (best is None or res.cost < best.cost):
            best = res
        elif not res.success:
            last_error = res.message
    if best is None:
        msg = f"fit did not converge: {last_error}" if last_error else "fit did not converge"
        log.debug("dose-response %s fit failed: %s", model, msg)
        return _failed(model, n, msg, max_conc)
    return _summarise(problem, best.x, n, max_conc, plateaus)


def _starts(model: str, x: np.ndarray, y: np.ndarray, positive: np.ndarray) -> list[np.ndarray]:
    """The design's start first, then IC50 starts spread across the tested range."""
    log_lo, log_hi = math.log(positive[0]), math.log(positive[-1])
    grid = np.linspace(log_lo, log_hi, _EXTRA_STARTS)
    if model == "2pl":
        first = [1.0, math.log(float(np.mean(x)))]  # h = 1, IC50 = mean concentration
        return [np.array(first)] + [np.array([1.0, t]) for t in grid]
    low_x = y[x <= np.quantile(x, 0.25)].mean()
    high_x = y[x >= np.quantile(x, 0.75)].mean()
    top, bottom = (y.max(), y.min()) if low_x >= high_x else (y.min(), y.max())
    middle = 0.5 * (log_lo + log_hi)  # geometric middle of the tested concentrations
    starts = [np.array([1.0, middle, top, bottom])]
    starts += [np.array([1.0, t, top, bottom]) for t in grid]
    return starts


def _summarise(
    problem: _Problem, params: np.ndarray, n: int, max_conc: float, plateaus: str
) -> DoseResponseFit:
    hill, theta = float(params[0]), float(params[1])
    top, bottom = (1.0, 0.0) if problem.model == "2pl" else (float(params[2]), float(params[3]))
    r = problem.residuals(params)
    rss = float(r @ r)
    w = problem.sw**2
    y_mean = float(np.sum(w * problem.y) / np.sum(w))
    tss = float(np.sum(w * (problem.y - y_mean) ** 2))
    r2 = 1.0 - rss / tss if tss > 0 else math.nan
    dof = n - problem.p
    se_theta, note = _log_ic50_se(problem.jacobian(params), rss / dof)
    ic50_fitted = math.exp(theta)
    ic50, se = ic50_fitted, ic50_fitted * se_theta  # delta method
    if math.isfinite(se_theta):
        t = float(stats.t.ppf(0.975, dof))
        ci = (_exp(theta - t * se_theta), _exp(theta + t * se_theta))
    else:
        ci = (math.nan, math.nan)
    infinite = ic50_fitted > INFINITE_FACTOR * max_conc
    messages = [note] if note else []
    if problem.model == "4pl" and plateaus == "normalised" and bottom > NORMALISED_INFINITE_BOTTOM:
        infinite = True
        messages.append(f"lower plateau {bottom:.2f} > {NORMALISED_INFINITE_BOTTOM}: never halves")
    min_conc = float(problem.x[problem.x > 0].min())
    if max_conc < ic50_fitted <= INFINITE_FACTOR * max_conc:
        messages.append(f"IC50 above the highest concentration ({max_conc:g}): extrapolated")
        if not ci[1] <= INFINITE_FACTOR * max_conc:
            messages.append("its 95% CI reaches beyond 10x the highest concentration")
    if ic50_fitted < min_conc / INFINITE_FACTOR:
        messages.append(f"IC50 far below the lowest concentration ({min_conc:g}): extrapolated")
    if infinite:
        ic50, se, ci = math.inf, math.nan, (math.nan, math.nan)
        if ic50_fitted > INFINITE_FACTOR * max_conc:
            messages.append(
                f"IC50 beyond {INFINITE_FACTOR:g}x the highest concentration "
                f"({max_conc:g}): reported as infinite"
            )
    return DoseResponseFit(
        model=problem.model, ic50=ic50, ic50_se=se, ic50_ci95=ci, hill=hill, top=top,
        bottom=bottom, rss=rss, r2=r2, converged=True, n=n, message="; ".join(messages),
        infinite=infinite, ic50_fitted=ic50_fitted, max_concentration=max_conc,
    )


def _exp(v: float) -> float:
    return math.inf if v > 700.0 else math.exp(v)


def _log_ic50_se(jac: np.ndarray, s2: float) -> tuple[float, str]:
    """SE of log(IC50) (parameter 1) from s² (JᵀJ)⁻¹; nan when not identifiable."""
    _, sv, vt = np.linalg.svd(jac, full_matrices=False)
    if sv.size == 0 or sv[-1] <= sv[0] * max(jac.shape) * np.finfo(float).eps:
        return math.nan, "IC50 standard error not estimable (parameters not identifiable)"
    cov = (vt.T / sv**2) @ vt * s2
    var = float(cov[1, 1])
    if not (math.isfinite(var) and var >= 0):
        return math.nan, "IC50 standard error not estimable"
    return math.sqrt(var), ""


def ic_x(fit: DoseResponseFit, percent: float) -> float:
    """The concentration that reduces the response by ``percent`` % of the way
    from top to bottom: ``IC50 · (x / (100 − x))^(1/h)``.

    For the 2PL this is where the normalised response falls to ``1 − x/100``.
    Returns ``inf`` beyond 10× the highest tested concentration (or when the
    fit itself was judged infinite and the value is not smaller), ``nan`` for a
    failed fit or a zero Hill slope.
    """
    if not 0 < percent < 100:
        raise ValueError(f"IC percent must lie between 0 and 100, got {percent}")
    if not fit.converged or not fit.hill > 0:
        return math.nan
    value = fit.ic50_fitted * (percent / (100.0 - percent)) ** (1.0 / fit.hill)
    if value > INFINITE_FACTOR * fit.max_concentration:
        return math.inf
    if fit.infinite and percent >= 50:
        return math.inf
    return value
