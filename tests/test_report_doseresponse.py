"""Dose-response fits against known parameters and against an independent fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from nvir_agent.report.doseresponse import fit_dose_response, ic_x

CONC = np.array([0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0])


def two_pl(x, hill, ic50):
    return 1.0 / (1.0 + (x / ic50) ** hill)


def four_pl(x, hill, ic50, top, bottom):
    return bottom + (top - bottom) / (1.0 + (x / ic50) ** hill)


def replicated(conc, reps):
    return np.repeat(conc, reps)


def test_noise_free_2pl_recovers_hill_and_ic50_exactly():
    y = two_pl(CONC, 1.5, 5.0)
    fit = fit_dose_response(CONC, y)
    assert fit.converged and not fit.infinite
    assert fit.ic50 == pytest.approx(5.0, rel=1e-6)
    assert fit.hill == pytest.approx(1.5, rel=1e-6)
    assert (fit.top, fit.bottom) == (1.0, 0.0)
    assert fit.rss < 1e-12 and fit.r2 == pytest.approx(1.0)
    assert fit.ic50_ci95[0] <= fit.ic50 <= fit.ic50_ci95[1]


def test_noise_free_2pl_with_vehicle_at_zero_concentration():
    x = np.concatenate([[0.0, 0.0], CONC])
    fit = fit_dose_response(x, two_pl(x, 2.0, 0.7))
    assert fit.converged
    assert fit.ic50 == pytest.approx(0.7, rel=1e-6)
    assert fit.n == 9


@pytest.mark.parametrize("truth", [(0.8, 0.5), (1.2, 8.0), (3.0, 40.0)])
def test_noisy_2pl_recovers_ic50_within_tolerance(truth):
    hill, ic50 = truth
    rng = np.random.default_rng(7)
    x = replicated(CONC, 3)
    y = two_pl(x, hill, ic50) + rng.normal(0, 0.05, x.size)
    fit = fit_dose_response(x, y)
    assert fit.converged
    assert fit.ic50 == pytest.approx(ic50, rel=0.3)
    assert fit.ic50_ci95[0] < ic50 < fit.ic50_ci95[1]
    assert fit.r2 > 0.9


def test_4pl_fits_raw_luminescence_scale():
    rng = np.random.default_rng(3)
    x = replicated(CONC, 4)
    y = four_pl(x, 1.3, 4.0, 52000.0, 1800.0)
    y = y * (1 + rng.normal(0, 0.04, x.size))
    fit = fit_dose_response(x, y, model="4pl")
    assert fit.converged
    assert fit.ic50 == pytest.approx(4.0, rel=0.2)
    assert fit.top == pytest.approx(52000, rel=0.05)
    assert fit.bottom == pytest.approx(1800, abs=2500)
    # the 2PL cannot describe this scale at all
    two = fit_dose_response(x, y, model="2pl")
    assert two.rss > 100 * fit.rss


def test_4pl_noise_free_recovers_all_four_parameters():
    y = four_pl(CONC, 0.9, 2.5, 120.0, 35.0)
    fit = fit_dose_response(CONC, y, model="4pl")
    assert fit.converged
    for got, want in [(fit.hill, 0.9), (fit.ic50, 2.5), (fit.top, 120.0), (fit.bottom, 35.0)]:
        assert got == pytest.approx(want, rel=1e-5)


def test_4pl_fits_an_increasing_response_with_top_below_bottom():
    y = four_pl(CONC, 1.0, 3.0, 10.0, 90.0)
    fit = fit_dose_response(CONC, y, model="4pl")
    assert fit.converged
    assert fit.ic50 == pytest.approx(3.0, rel=1e-5)
    assert fit.top == pytest.approx(10.0, rel=1e-5)


def test_normalised_plateaus_keep_the_paper_bounds():
    rng = np.random.default_rng(11)
    x = replicated(CONC, 3)
    y = four_pl(x, 1.0, 3.0, 1.0, 0.0) + rng.normal(0, 0.08, x.size)
    y[x == CONC[0]] += 1.0  # wild values at the lowest concentration pull a free top up
    free = fit_dose_response(x, y, model="4pl")
    bounded = fit_dose_response(x, y, model="4pl", plateaus="normalised")
    assert free.converged and bounded.converged
    assert 0.0 <= bounded.bottom <= 1.0 and 0.0 <= bounded.top <= 1.5
    assert free.top > 1.5


def test_normalised_plateaus_report_infinite_when_response_never_halves():
    y = four_pl(CONC, 1.5, 2.0, 1.0, 0.7)
    fit = fit_dose_response(CONC, y, model="4pl", plateaus="normalised")
    assert fit.converged and fit.infinite and math.isinf(fit.ic50)
    assert "never halves" in fit.message


def test_weighted_fit_with_downweighted_outliers_beats_unweighted():
    rng = np.random.default_rng(5)
    x = replicated(CONC, 3)
    y = two_pl(x, 1.2, 6.0) + rng.normal(0, 0.03, x.size)
    w = np.ones_like(y)
    outliers = np.flatnonzero((x == 3.0) | (x == 10.0))[:4]
    y[outliers] = 0.02  # dead-looking artefacts (bubbles, debris) in mid-range wells
    w[outliers] = 0.001
    plain = fit_dose_response(x, y)
    weighted = fit_dose_response(x, y, weights=w)
    assert plain.converged and weighted.converged
    err = lambda f: abs(math.log(f.ic50 / 6.0))  # noqa: E731
    assert err(weighted) < err(plain) / 3
    assert weighted.ic50 == pytest.approx(6.0, rel=0.15)


def test_zero_weights_drop_points():
    y = two_pl(CONC, 1.0, 2.0)
    y_bad = y.copy()
    y_bad[3] = 5.0
    w = np.ones_like(y)
    w[3] = 0.0
    fit = fit_dose_response(CONC, y_bad, weights=w)
    assert fit.n == 6
    assert fit.ic50 == pytest.approx(2.0, rel=1e-6)


def test_ic50_beyond_ten_times_highest_concentration_is_infinite():
    fit = fit_dose_response(CONC, two_pl(CONC, 1.0, 2000.0))
    assert fit.converged and fit.infinite
    assert math.isinf(fit.ic50)
    assert fit.ic50_fitted == pytest.approx(2000.0, rel=1e-4)
    assert "infinite" in fit.message
    within = fit_dose_response(CONC, two_pl(CONC, 1.0, 500.0))
    assert not within.infinite and within.ic50 == pytest.approx(500.0, rel=1e-4)
    assert "extrapolated" in within.message


def test_ic50_above_range_with_unbounded_interval_is_flagged():
    fit = fit_dose_response(CONC, [1.0, 0.99, 1.01, 1.0, 0.98, 1.02, 0.99])
    assert fit.converged and not fit.infinite  # the paper's rule keeps it finite …
    assert "CI reaches beyond 10x" in fit.message  # … but the report says how little it means


def test_harmless_compound_gets_infinite_ic50():
    rng = np.random.default_rng(2)
    x = replicated(CONC, 3)
    fit = fit_dose_response(x, 1.0 + rng.normal(0, 0.05, x.size))
    assert fit.converged and fit.infinite and math.isinf(fit.ic50)
    assert math.isnan(fit.ic50_se)


@pytest.mark.parametrize(
    "x, y, w, why",
    [
        ([1, 2], [1.0, 0.5], None, "at least 3 points"),
        ([1, 2, 3], [1.0, float("nan"), 0.2], None, "finite"),
        ([1, -2, 3], [1.0, 0.5, 0.2], None, "negative"),
        ([5, 5, 5, 5], [1.0, 0.5, 0.2, 0.1], None, "two different positive"),
        ([1, 2, 3, 4], [1.0, 0.5, 0.2, 0.1], [1, 1, -1, 1], "weights"),
        ([1, 2, 3], [1.0, 0.5], None, "length"),
    ],
)
def test_impossible_fit_is_reported_not_raised(x, y, w, why):
    fit = fit_dose_response(x, y, weights=w)
    assert not fit.converged
    assert why in fit.message
    assert math.isnan(fit.ic50)
    assert np.isnan(fit.predict([1.0, 2.0])).all()


def test_4pl_with_four_points_is_reported_as_too_few():
    fit = fit_dose_response([1, 2, 3, 4], [1.0, 0.8, 0.3, 0.1], model="4pl")
    assert not fit.converged and "at least 5 points" in fit.message


def test_ic_x_matches_the_curve():
    fit = fit_dose_response(CONC, two_pl(CONC, 1.5, 5.0))
    ic20 = ic_x(fit, 20)
    assert ic20 == pytest.approx(5.0 * (20 / 80) ** (1 / 1.5), rel=1e-6)
    assert fit.predict([ic20])[0] == pytest.approx(0.8, rel=1e-6)
    assert ic_x(fit, 50) == pytest.approx(fit.ic50)
    assert ic_x(fit, 90) == pytest.approx(5.0 * 9 ** (1 / 1.5), rel=1e-6)


def test_ic_x_on_4pl_is_on_the_top_bottom_scale():
    fit = fit_dose_response(CONC, four_pl(CONC, 1.1, 3.0, 800.0, 200.0), model="4pl")
    ic30 = ic_x(fit, 30)
    assert fit.predict([ic30])[0] == pytest.approx(800 - 0.3 * 600, rel=1e-6)


def test_ic_x_beyond_ten_times_highest_concentration_is_infinite():
    fit = fit_dose_response(CONC, two_pl(CONC, 1.0, 60.0))
    assert math.isfinite(ic_x(fit, 50))
    assert math.isinf(ic_x(fit, 95))  # 60 * 19 = 1140 > 10 * 100
    with pytest.raises(ValueError):
        ic_x(fit, 100)


def _curve_fit_se(model, x, y, sigma=None):
    if model == "2pl":
        popt, pcov = optimize.curve_fit(
            two_pl, x, y, p0=[1.0, float(np.mean(x))], sigma=sigma, bounds=([0, 1e-9], np.inf)
        )
        return popt[1], math.sqrt(pcov[1, 1])
    popt, pcov = optimize.curve_fit(
        four_pl, x, y, p0=[1.0, 3.0, y.max(), y.min()], sigma=sigma, maxfev=20000
    )
    return popt[1], math.sqrt(pcov[1, 1])


@pytest.mark.parametrize("model", ["2pl", "4pl"])
@pytest.mark.parametrize("weighted", [False, True])
def test_ic50_standard_error_agrees_with_curve_fit(model, weighted):
    rng = np.random.default_rng(21)
    x = replicated(CONC, 3)
    truth = two_pl(x, 1.3, 4.0) if model == "2pl" else four_pl(x, 1.3, 4.0, 1.05, 0.1)
    w = rng.uniform(0.3, 3.0, x.size) if weighted else None
    noise = rng.normal(0, 0.06, x.size) / (np.sqrt(w) if weighted else 1.0)
    y = truth + noise
    fit = fit_dose_response(x, y, model=model, weights=w)
    ic50, se = _curve_fit_se(model, x, y, sigma=None if w is None else 1 / np.sqrt(w))
    assert fit.ic50 == pytest.approx(ic50, rel=1e-3)
    assert fit.ic50_se == pytest.approx(se, rel=0.01)


def test_confidence_interval_is_t_based_on_log_scale():
    rng = np.random.default_rng(4)
    x = replicated(CONC, 2)
    y = two_pl(x, 1.0, 3.0) + rng.normal(0, 0.05, x.size)
    fit = fit_dose_response(x, y)
    t = stats.t.ppf(0.975, fit.n - 2)
    se_log = fit.ic50_se / fit.ic50
    low, high = fit.ic50_ci95
    assert low == pytest.approx(fit.ic50 * math.exp(-t * se_log), rel=1e-9)
    assert high == pytest.approx(fit.ic50 * math.exp(t * se_log), rel=1e-9)
    # the interval is symmetric in log(IC50): geometric mean of the bounds is the IC50
    assert math.sqrt(low * high) == pytest.approx(fit.ic50, rel=1e-9)


def test_few_replicates_give_wider_intervals_than_many():
    rng = np.random.default_rng(9)
    x3, x12 = replicated(CONC, 1), replicated(CONC, 12)
    f3 = fit_dose_response(x3, two_pl(x3, 1.0, 3.0) + rng.normal(0, 0.05, x3.size))
    f12 = fit_dose_response(x12, two_pl(x12, 1.0, 3.0) + rng.normal(0, 0.05, x12.size))
    width = lambda f: f.ic50_ci95[1] / f.ic50_ci95[0]  # noqa: E731
    assert width(f3) > width(f12)


def test_extrapolated_flag_marks_finite_ic50_above_the_tested_range():
    above = fit_dose_response(CONC, two_pl(CONC, 1.0, 300.0))
    inside = fit_dose_response(CONC, two_pl(CONC, 1.0, 3.0))
    beyond = fit_dose_response(CONC, two_pl(CONC, 1.0, 3000.0))
    assert above.extrapolated and not inside.extrapolated and not beyond.extrapolated


def test_optimizer_failure_is_reported_not_raised(monkeypatch):
    from types import SimpleNamespace

    from nvir_agent.report import doseresponse

    def gives_up(*args, **kwargs):
        return SimpleNamespace(success=False, message="The maximum number of function "
                               "evaluations is exceeded.", cost=1.0, x=np.array(kwargs.get("x0", args[1])))

    monkeypatch.setattr(doseresponse.optimize, "least_squares", gives_up)
    fit = fit_dose_response(CONC, two_pl(CONC, 1.0, 3.0))
    assert not fit.converged
    assert "did not converge" in fit.message and "maximum number" in fit.message

    def explodes(*args, **kwargs):
        raise ValueError("Residuals are not finite in the initial point.")

    monkeypatch.setattr(doseresponse.optimize, "least_squares", explodes)
    fit = fit_dose_response(CONC, two_pl(CONC, 1.0, 3.0), model="2pl")
    assert not fit.converged and "not finite" in fit.message
