"""Validation splits (chronological by batch within a site, random, held-out
site) and evaluation metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from nvir_agent.errors import DataError
from nvir_agent.training.data import split_labels
from nvir_agent.training.evaluate import metrics_report, plot_predictions, regression_metrics
from nvir_agent.training.labels import LabelledImage, LabelSet


def labels_of(rows: list[tuple[str, str, str]]) -> LabelSet:
    """rows of (site, plate, date)."""
    items = [LabelledImage(path=f"/x/{i}.png", name=f"{i}.png", viability=1.0, site=s,
                           plate=p, batch=p, date=d, day=1.0) for i, (s, p, d) in enumerate(rows)]
    return LabelSet(items)


def test_chronological_split_holds_out_the_latest_plates_of_each_site():
    rows = [("A", f"P{n}", "") for n in (1, 2, 10, 3, 4) for _ in range(2)]
    rows += [("B", "Q1", ""), ("B", "Q2", "")]
    labels = labels_of(rows)
    split = split_labels(labels, "chronological", val_fraction=0.2)
    val_plates = {(labels.items[i].site, labels.items[i].plate) for i in split.val}
    # natural order: P1 < P2 < P3 < P4 < P10; 20 % of 5 plates = 1; site B: 1 of 2
    assert val_plates == {("A", "P10"), ("B", "Q2")}
    assert split.details["val_batches"] == {"A": ["P10"], "B": ["Q2"]}
    assert sorted(split.train + split.val) == list(range(len(labels)))


def test_chronological_split_orders_batches_by_date_when_given():
    labels = labels_of([("A", "late", "2024-03-01"), ("A", "early", "2024-01-01"),
                        ("A", "mid", "2024-02-01")])
    split = split_labels(labels, "chronological", val_fraction=0.3)
    assert [labels.items[i].plate for i in split.val] == ["late"]


def test_chronological_split_needs_two_batches_somewhere():
    with pytest.raises(DataError, match="at least two batches") as exc:
        split_labels(labels_of([("A", "P1", "")] * 4 + [("B", "P2", "")] * 3), "chronological")
    assert "--split random" in exc.value.hint


def test_random_split_is_seeded_and_holds_out_the_fraction():
    labels = labels_of([("A", "P1", "")] * 50)
    a = split_labels(labels, "random", val_fraction=0.2, seed=3)
    b = split_labels(labels, "random", val_fraction=0.2, seed=3)
    c = split_labels(labels, "random", val_fraction=0.2, seed=4)
    assert a.val == b.val and a.val != c.val and len(a.val) == 10
    assert not set(a.val) & set(a.train)


def test_site_split_holds_out_every_image_of_that_site():
    labels = labels_of([("A", "P1", ""), ("B", "P2", ""), ("A", "P3", ""), ("B", "P4", "")])
    split = split_labels(labels, "site:B")
    assert split.val == [1, 3] and split.train == [0, 2]
    with pytest.raises(DataError, match="site 'C' is not in the labels \\(sites: A, B\\)"):
        split_labels(labels, "site:C")
    with pytest.raises(DataError, match="leaves nothing to train on"):
        split_labels(labels_of([("A", "P1", "")] * 3), "site:A")
    with pytest.raises(DataError, match="unknown split 'latest'"):
        split_labels(labels, "latest")


def test_r2_and_mae_match_hand_computed_values():
    # y = 1, 2, 3, 4 (mean 2.5, SS_tot 5); errors 0.5, -0.5, 0, 1 (SS_res 1.5)
    m = regression_metrics([1, 2, 3, 4], [1.5, 1.5, 3, 5])
    assert m == {"n": 4, "r2": pytest.approx(0.7), "mae": pytest.approx(0.5)}
    assert regression_metrics([2, 2], [1, 3])["r2"] is None  # undefined for constant truth
    assert regression_metrics([], []) == {"n": 0, "r2": None, "mae": None}


def test_metrics_are_reported_per_site_and_per_day():
    items = [LabelledImage(path="/x", name=str(i), viability=0, site=s, day=d)
             for i, (s, d) in enumerate([("A", 1.0), ("A", 2.0), ("B", 1.0), ("B", 2.0)])]
    report = metrics_report(items, [1.0, 0.0, 0.5, 1.0], [0.9, 0.2, 0.5, 0.6])
    assert report["n"] == 4 and report["mae"] == pytest.approx(0.175)
    assert report["per_site"]["A"]["mae"] == pytest.approx(0.15)
    assert report["per_site"]["B"]["mae"] == pytest.approx(0.2)
    # day 1: truth 1.0, 0.5 (SS_tot 0.125), errors 0.1, 0 → R² = 1 − 0.01/0.125 = 0.92
    assert list(report["per_day"]) == ["1", "2"]
    assert report["per_day"]["1"]["r2"] == pytest.approx(0.92)


def test_scatter_plot_is_written_as_png(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 1.2, 40)
    out = plot_predictions(tmp_path / "plots" / "p.png", y, y + rng.normal(0, 0.05, 40),
                           title="test", baseline=y * 0.8, baseline_true=y)
    img = imread(out)
    assert img.shape[0] > 300 and img.shape[1] > 300
