"""The classic-feature baseline: a quadratic ridge regression that recovers a
quadratic relation, never extrapolates beyond the training labels, and is fed
by the segmentation's features."""

from __future__ import annotations

import numpy as np
import pytest

from nvir_agent.errors import DataError
from nvir_agent.synth.render import Conditions, render_spheroid
from nvir_agent.training.baseline import FEATURES, Baseline, baseline_for_model, image_features
from nvir_agent.training.labels import LabelSet


def test_baseline_recovers_a_quadratic_relation_of_the_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = 0.5 + 0.2 * x[:, 0] - 0.1 * x[:, 1] ** 2 + 0.05 * x[:, 2] * x[:, 3]
    model = Baseline.fit(x, y)
    test = rng.normal(size=(50, 4)) * 0.8
    want = 0.5 + 0.2 * test[:, 0] - 0.1 * test[:, 1] ** 2 + 0.05 * test[:, 2] * test[:, 3]
    assert np.max(np.abs(model.predict(test) - want)) < 0.01


def test_baseline_predictions_stay_within_the_training_labels():
    x = np.linspace(0, 1, 20)[:, None].repeat(4, axis=1)
    model = Baseline.fit(x, 0.2 + 0.6 * x[:, 0])
    assert model.predict(np.full((1, 4), 50.0))[0] == pytest.approx(0.8)
    assert model.predict(np.full((1, 4), -50.0))[0] == pytest.approx(0.2)


def test_baseline_needs_two_training_images():
    with pytest.raises(DataError, match="at least 2 training images"):
        Baseline.fit(np.zeros((1, 4)), np.zeros(1))


def test_features_come_from_the_segmented_spheroid_and_track_viability():
    healthy = render_spheroid(1.0, 11, Conditions(width=384, height=384, focus=0.0))
    dying = render_spheroid(0.3, 11, Conditions(width=384, height=384, focus=0.0))
    fh = dict(zip(FEATURES, image_features(healthy.image), strict=True))
    fd = dict(zip(FEATURES, image_features(dying.image), strict=True))
    assert 0 < fh["area_fraction"] < 1
    assert fd["brightness_ratio"] > fh["brightness_ratio"]  # dying bodies are lighter
    with pytest.raises(DataError, match="no spheroid"):
        image_features(np.full((128, 128), 160, np.uint8))


def test_baseline_needs_the_training_labels_the_model_records_or_given(tmp_path):
    with pytest.raises(DataError, match="does not record its training labels") as exc:
        baseline_for_model({}, LabelSet([]))
    assert "--train-labels" in exc.value.hint
    gone = {"data": {"labels_csv": str(tmp_path / "gone.csv")}}
    with pytest.raises(DataError, match="cannot use the training labels the model records"):
        baseline_for_model(gone, LabelSet([]))
