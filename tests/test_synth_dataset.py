"""Synthetic labelled training sets: labels.csv, vehicle normalisation, images, masks."""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict

import cv2
import numpy as np
import pytest
import tifffile

from nvir_agent.errors import DataError
from nvir_agent.synth.dataset import LABEL_COLUMNS, SITES, plan_dataset, write_dataset
from nvir_agent.synth.render import TRAINING


def _read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_labels_csv_has_the_documented_columns_and_relative_paths(tmp_path):
    s = write_dataset(tmp_path, 10, seed=1, size=96)
    rows = _read(s.labels)
    assert list(rows[0]) == LABEL_COLUMNS
    assert len(rows) == 10
    for r in rows:
        assert not r["image"].startswith("/")
        img = cv2.imread(str(tmp_path / r["image"]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (96, 96) and img.dtype == np.uint8


def test_viability_label_is_atp_over_the_median_vehicle_atp_of_its_plate_and_day(tmp_path):
    rows = [s.__dict__ for s in plan_dataset(200, seed=3, size=64, sites=2, days=3)]
    vehicle = defaultdict(list)
    for r in rows:
        if r["role"] == "vehicle":
            vehicle[(r["plate"], r["day"])].append(r["atp_raw"])
    assert len({r["site"] for r in rows}) == 2
    assert len(vehicle) >= 6  # several plates and days, each normalised on its own
    for r in rows:
        assert r["viability"] == pytest.approx(
            r["atp_raw"] / statistics.median(vehicle[(r["plate"], r["day"])]), rel=1e-12)


def test_raw_atp_differs_between_plates_so_normalisation_matters():
    rows = plan_dataset(150, seed=4, size=64)
    med = defaultdict(list)
    for s in rows:
        if s.role == "vehicle":
            med[(s.plate, s.day)].append(s.atp_raw)
    medians = [statistics.median(v) for v in med.values()]
    assert max(medians) / min(medians) > 1.3


def test_labels_span_dead_to_healthy_and_follow_the_latent_viability():
    rows = plan_dataset(300, seed=5, size=64)
    v = np.array([s.viability for s in rows])
    latent = np.array([s.latent_viability for s in rows])
    assert v.min() < 0.1 and v.max() > 1.05
    assert np.corrcoef(v, latent)[0, 1] > 0.95
    vehicle = [s.viability for s in rows if s.role == "vehicle"]
    assert 0.97 < statistics.median(vehicle) < 1.03


def test_written_labels_csv_reproduces_the_normalisation(tmp_path):
    s = write_dataset(tmp_path, 30, seed=2, size=64)
    rows = _read(s.labels)
    vehicle = defaultdict(list)
    for r in rows:
        if r["role"] == "vehicle":
            vehicle[(r["plate"], r["day"])].append(float(r["atp_raw"]))
    for r in rows:
        expected = float(r["atp_raw"]) / statistics.median(vehicle[(r["plate"], r["day"])])
        assert float(r["viability"]) == expected  # exactly, from the written numbers


def test_16_bit_sets_are_tiffs_holding_12_bit_data_and_masks_match(tmp_path):
    s = write_dataset(tmp_path, 4, seed=6, size=96, bits=16, masks=True)
    for r in _read(s.labels):
        assert r["image"].endswith(".tif")
        img = tifffile.imread(tmp_path / r["image"])
        assert img.dtype == np.uint16 and img.max() <= 4095
        mask = cv2.imread(str(tmp_path / r["mask"]), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == img.shape and set(np.unique(mask)) <= {0, 255}
        assert img[mask > 0].mean() < img[mask == 0].mean()


def test_same_seed_writes_the_same_set(tmp_path):
    a = write_dataset(tmp_path / "a", 5, seed=9, size=64)
    b = write_dataset(tmp_path / "b", 5, seed=9, size=64)
    assert a.labels.read_text() == b.labels.read_text()
    for r in _read(a.labels):
        assert (tmp_path / "a" / r["image"]).read_bytes() == (tmp_path / "b" / r["image"]).read_bytes()


def test_sites_have_their_own_illumination_and_noise_habits():
    a, b = SITES[0].ranges(TRAINING), SITES[1].ranges(TRAINING)
    assert a.illumination != b.illumination and a.noise != b.noise


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": 5, "bits": 12}, {"n": 5, "sites": 9}])
def test_impossible_requests_are_refused(kwargs):
    with pytest.raises(DataError):
        plan_dataset(**kwargs)
