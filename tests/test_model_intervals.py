"""The interval rules: the split-conformal quantile at its finite-sample rank, no
calibration on too few labelled images, and the spread of an ensemble."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from nvir_agent.model.modelfile import save_model
from nvir_agent.model.network import build_nvir
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.model.uncertainty import (
    ENSEMBLE,
    MC_DROPOUT,
    MIN_CALIBRATION,
    IntervalCalibration,
    base_spread,
    conformal_rank,
    conformal_scale,
    intervals,
)
from nvir_agent.training.summarise import Embedded, write_summary


def test_the_conformal_scale_is_the_ceil_n_plus_1_times_level_th_ratio_not_the_quantile():
    ratios = np.arange(1.0, 21.0)  # |label − centre| / spread = 1, 2, …, 20
    rng = np.random.default_rng(0)
    order = rng.permutation(20)
    scale = conformal_scale(ratios[order], np.zeros(20), np.ones(20))
    assert conformal_rank(20) == 19 == math.ceil(21 * 0.9)
    assert scale == 19.0 and np.quantile(ratios, 0.9) == pytest.approx(18.1)
    assert conformal_rank(99) == 90 and conformal_rank(9) == 9 and conformal_rank(8) == 9
    with pytest.raises(ValueError, match="8 held-out labels are too few for a 90% interval"):
        conformal_scale(np.ones(8), np.zeros(8), np.ones(8))


def test_the_finite_sample_rank_covers_at_least_the_nominal_level_on_twenty_images():
    """Exchangeable draws: with 20 calibration images the conformal interval covers a
    new one with probability 19/21 ≥ 0.9; the plain 90 % quantile covers less."""
    rng = np.random.default_rng(1)
    trials = 20000
    cal = np.abs(rng.standard_normal((trials, 20)))
    new = np.abs(rng.standard_normal(trials))
    conformal = np.sort(cal, axis=1)[:, conformal_rank(20) - 1]
    plain = np.quantile(cal, 0.9, axis=1)
    assert np.mean(new <= conformal) == pytest.approx(19 / 21, abs=0.01)
    assert np.mean(new <= conformal) >= 0.9 > np.mean(new <= plain)


def test_an_ensembles_spread_adds_the_members_disagreement_to_their_dropout_spread():
    outputs = np.array([[0.5, 0.8], [0.7, 0.8], [0.6, 0.8]])  # 3 members, 2 images
    samples = np.zeros((3, 4, 2))
    samples[:, :, 1] = [[0.7, 0.9, 0.7, 0.9]] * 3  # each member's dropout sd 0.1 on image 2
    sd = base_spread(outputs, samples, ENSEMBLE)
    assert sd == pytest.approx([0.1, 0.1])  # image 1: members' sd 0.1 (ddof 1); 2: dropout
    noisy = samples.copy()
    noisy[:, :, 0] = outputs[:, :1] + np.array([-0.1, 0.1, -0.1, 0.1])  # dropout sd 0.1 too
    both = base_spread(outputs, noisy, ENSEMBLE)
    assert both[0] == pytest.approx(math.sqrt(0.1**2 + 0.1**2))
    assert base_spread(outputs, None, ENSEMBLE) == pytest.approx([0.1, 1e-3])
    assert base_spread(outputs[:1], samples[:1], MC_DROPOUT) == pytest.approx([1e-3, 0.1])
    with pytest.raises(ValueError, match="at least 2 members"):
        base_spread(outputs[:1], samples[:1], ENSEMBLE)


def test_an_ensemble_calibration_survives_its_metadata_and_describes_itself():
    cal = IntervalCalibration(scale=1.7, widen_from=2.0, method=ENSEMBLE, passes=0,
                              info={"calibrated_on": 40})
    again = IntervalCalibration.from_metadata(cal.metadata())
    assert again == cal and again.describe() == (
        "90% by ensemble spread, calibrated on 40 held-out images")
    with pytest.raises(ValueError, match="unknown"):
        IntervalCalibration.from_metadata({**cal.metadata(), "method": "bootstrap"})


def _embedded(n: int, labelled: int, rng: np.random.Generator) -> Embedded:
    feats = rng.standard_normal((n, 512))
    stats = np.tile([10.0, 8.0, 0.65, 0.6, -1.3, 0.005], (n, 1))
    centre = rng.uniform(0.2, 1.0, n)
    labels = np.full(n, np.nan)
    labels[:labelled] = centre[:labelled] + rng.normal(0, 0.05, labelled)
    samples = centre[None, None, :] + rng.normal(0, 0.05, (1, 32, n))
    return Embedded([], labels, feats, stats, centre, centre[None, :], samples)


@pytest.mark.parametrize("labelled", [MIN_CALIBRATION - 1, MIN_CALIBRATION])
def test_fewer_than_twenty_labelled_held_out_images_give_no_calibration_and_a_log_line(
        tmp_path, caplog, labelled):
    torch.manual_seed(0)
    model = save_model(tmp_path / "m.safetensors", build_nvir(), PreprocessSpec(size=32))
    rng = np.random.default_rng(2)
    with caplog.at_level(logging.WARNING, logger="nvir_agent.training.summarise"):
        report = write_summary(model, tmp_path / "out.safetensors", _embedded(40, 40, rng),
                               _embedded(30, labelled, rng), {"images": 40})
    assert report.labelled == labelled
    if labelled < MIN_CALIBRATION:
        assert not report.calibrated
        assert f"Only {labelled} labelled held-out images (at least 20 are needed" in caplog.text
    else:
        assert report.calibrated and 0.85 <= report.coverage <= 1.0
        assert "labelled held-out images" not in caplog.text


def test_an_interval_stops_at_zero_viability_but_holds_the_score():
    cal = IntervalCalibration(scale=2.0)
    low, high = intervals(np.array([0.04, 0.5, -0.01]), np.array([0.05, 0.05, 0.01]), cal)
    assert low.tolist() == pytest.approx([0.0, 0.4, -0.01])
    assert high.tolist() == pytest.approx([0.14, 0.6, 0.01])
