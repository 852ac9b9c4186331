"""The IC50 reporting rule: a number only when the data support one."""

from __future__ import annotations

import math

import pytest

from nvir_agent.report.dili import ViabilityRecord, fit_compounds
from nvir_agent.report.ic50 import (
    ABOVE_RANGE,
    BELOW_RANGE,
    CI_NOT_ESTIMABLE,
    ESTIMATE,
    NOT_RELIABLE,
    R2_FLOOR,
    call_ic50,
    mos_text,
)

CONCS = (0.5, 2.0, 8.0, 32.0)


def fitted(values_by_conc, cmax=None):
    recs = [ViabilityRecord("X", 6, c, v, cmax_uM=cmax) for c, vs in zip(
        CONCS, values_by_conc, strict=True) for v in vs]
    (f,) = fit_compounds(recs)
    return f


def test_a_harmless_compound_reads_above_the_top_tested_concentration():
    # flat near 1 with a slight dip at the top: a steep finite fit is possible,
    # but viability never halved within the tested range
    f = fitted([(1.0, 1.01, 0.99), (1.0, 0.98, 1.02), (0.99, 1.0, 1.01), (0.93, 0.9, 0.95)],
               cmax=0.5)
    call = f.call
    assert call.status == ABOVE_RANGE and call.text == "> 32 µM (top tested)"
    assert not call.is_number and call.ci_text == ""
    assert f.mos_call == (None, "> 64")


def test_a_toxic_compound_gets_a_number_with_its_interval():
    f = fitted([(0.98, 1.0, 1.02), (0.8, 0.85, 0.78), (0.25, 0.3, 0.2), (0.05, 0.04, 0.06)],
               cmax=0.1)
    call = f.call
    assert call.status == ESTIMATE and call.value == pytest.approx(f.fit.ic50_fitted)
    assert 2.0 < call.value < 8.0 and call.text.endswith("µM")
    lo, hi = call.ci95
    assert lo < call.value < hi and call.ci_text == f"{lo:.3g} – {hi:.3g} µM"
    value, text = f.mos_call
    assert value == pytest.approx(call.value / 0.1) and text == f"{value:.3g}"


def test_everything_dead_reads_below_the_lowest_tested_concentration():
    f = fitted([(0.2, 0.15, 0.25), (0.05, 0.04, 0.06), (0.03, 0.04, 0.02), (0.02, 0.03, 0.01)])
    assert f.call.status == BELOW_RANGE and f.call.text == "< 0.5 µM (lowest tested)"
    assert mos_text(f.call, 0.1) == (None, "< 5")


def test_a_steep_step_between_two_doses_is_not_reliable():
    f = fitted([(1.0, 1.0, 1.0), (1.0, 0.99, 1.01), (0.02, 0.03, 0.01), (0.02, 0.01, 0.03)])
    assert f.fit.hill >= 10
    assert f.call.status == NOT_RELIABLE and "Hill slope" in f.call.reason
    assert f.call.text == "not reliable" and f.mos_call[0] is None


def test_a_poor_fit_is_not_reliable():
    f = fitted([(1.0, 0.2, 0.6), (0.3, 1.0, 0.5), (0.9, 0.1, 0.4), (0.2, 0.9, 0.3)])
    if f.call.status == NOT_RELIABLE:
        assert "R²" in f.call.reason or "median" in f.call.reason
    else:  # the rule prints a number only with R² at the floor or above
        assert f.call.status != ESTIMATE or f.fit.r2 >= R2_FLOOR


def test_an_interval_that_cannot_be_estimated_says_so():
    f = fitted([(0.98, 1.0, 1.02), (0.8, 0.85, 0.78), (0.25, 0.3, 0.2), (0.05, 0.04, 0.06)])
    broken = type(f.fit)(**{**f.fit.__dict__, "ic50_ci95": (math.nan, math.nan)})
    call = call_ic50(broken, f.concentrations, f.medians)
    assert call.status == ESTIMATE and call.ci_text == CI_NOT_ESTIMABLE
    assert "could not be estimated" in call.label
