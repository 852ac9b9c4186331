"""The synthetic spheroid renderer: determinism, nuisances, exact masks and the
monotone link between viability and what a segmenter can measure."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from nvir_agent.errors import DataError
from nvir_agent.synth import WIDE, Conditions, render_spheroid

SMALL = Conditions(width=384, height=384)
# clean frame for measuring biology: no nuisance that would blur the trends
CLEAN = Conditions(width=512, height=512, diameter_frac=0.3, offset=(0.0, 0.0),
                   illumination=0.65, gradient=0.0, vignetting=0.0, well_wall=0.0,
                   focus=0.0, noise=0.005, bubbles=0, debris=0)


def _shape_features(mask: np.ndarray) -> tuple[float, float]:
    """Circularity 4πA/P² and solidity A/hull of all pieces of a mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    area = float(mask.sum())
    perim = sum(cv2.arcLength(c, True) for c in contours)
    hull = cv2.convexHull(np.vstack(contours))
    return 4 * np.pi * area / perim**2, area / max(cv2.contourArea(hull), 1.0)


def _measure(v: float, seed: int) -> dict[str, float]:
    r = render_spheroid(v, seed, CLEAN)
    img = r.image.astype(np.float32)
    m = r.mask.astype(np.uint8)
    out = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
    radius = np.sqrt(m.sum() / np.pi)
    bg = float(np.median(img[out > 2.5 * radius]))
    ring = (out > 0.15 * radius) & (out < 1.0 * radius)
    circ, sol = _shape_features(r.mask)
    return {
        "body": float(img[r.mask].mean()) / bg,
        "circularity": circ,
        "solidity": sol,
        "halo": float((img[ring] < 0.8 * bg).mean()),
    }


def test_same_seed_gives_the_same_image_and_mask():
    a = render_spheroid(0.6, 11, SMALL)
    b = render_spheroid(0.6, 11, SMALL)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert a.params == b.params


def test_different_seeds_give_different_images():
    a = render_spheroid(0.6, 1, SMALL)
    b = render_spheroid(0.6, 2, SMALL)
    assert not np.array_equal(a.image, b.image)


def test_result_has_image_mask_viability_and_json_params():
    r = render_spheroid(0.8, 3, SMALL)
    assert r.image.ndim == 2 and r.image.dtype == np.uint8
    assert r.mask.dtype == bool and r.mask.shape == r.image.shape == (384, 384)
    assert r.viability == 0.8
    assert json.loads(json.dumps(r.params))["viability"] == 0.8


def test_frame_size_follows_width_and_height():
    r = render_spheroid(1.0, 3, Conditions(width=300, height=200))
    assert r.image.shape == r.mask.shape == (200, 300)


def test_16_bit_output_holds_12_bit_data():
    r = render_spheroid(1.0, 4, dataclasses.replace(SMALL, bits=16))
    assert r.image.dtype == np.uint16
    assert r.image.max() <= 4095
    assert r.image.max() > 1000  # really 12-bit, not 8-bit data in a 16-bit array


# one value per Conditions field that must visibly change the image
FIELD_VALUES = {
    "width": (384, 400),
    "height": (384, 400),
    "bits": (8, 16),
    "diameter_frac": (0.2, 0.4),
    "offset": ((0.0, 0.0), (0.15, -0.1)),
    "illumination": (0.5, 0.8),
    "gradient": (0.0, 0.3),
    "vignetting": (0.0, 0.4),
    "well_wall": (0.0, 1.0),
    "focus": (0.0, 2.0),
    "noise": (0.002, 0.04),
    "bubbles": (0, 3),
    "debris": (0, 60),
    "fragmented": (False, True),
    "identity": (1, 2),
    "streaks": (0.0, 0.05),
    "dark_body": (False, True),
    "satellites": (0, 4),
    "aggregates": (0, 2),
    "fibres": (0, 2),
}


def test_every_conditions_field_is_covered():
    assert set(FIELD_VALUES) == {f.name for f in dataclasses.fields(Conditions)}


@pytest.mark.parametrize("name", sorted(FIELD_VALUES))
def test_each_conditions_field_changes_the_image(name):
    lo, hi = FIELD_VALUES[name]
    a = render_spheroid(0.3, 8, dataclasses.replace(SMALL, **{name: lo}))
    b = render_spheroid(0.3, 8, dataclasses.replace(SMALL, **{name: hi}))
    assert a.image.shape != b.image.shape or not np.array_equal(a.image, b.image)
    assert a.params[name] != b.params[name]


def test_fixing_one_field_leaves_the_other_draws_alone():
    a = render_spheroid(0.7, 9, Conditions(width=256, height=256))
    b = render_spheroid(0.7, 9, Conditions(width=256, height=256, noise=0.02))
    for key in ("illumination", "gradient", "diameter_frac", "offset", "identity"):
        assert a.params[key] == b.params[key]


def test_mask_covers_the_dark_body_and_nothing_of_the_background():
    r = render_spheroid(1.0, 5, CLEAN)
    img = r.image.astype(float)
    m = r.mask.astype(np.uint8)
    inner = cv2.erode(m, np.ones((9, 9), np.uint8)).astype(bool)
    far = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5) > 0.5 * np.sqrt(m.sum() / np.pi)
    assert img[inner].mean() < 0.5 * np.median(img[far])
    # one compact body whose size matches the drawn radius
    n, _ = cv2.connectedComponents(m)
    assert n == 2
    radius = r.params["radius_px"]
    assert 0.85 < m.sum() / (np.pi * radius**2) < 1.15


def test_mask_centre_follows_the_offset():
    r = render_spheroid(1.0, 6, dataclasses.replace(CLEAN, offset=(0.2, -0.15)))
    ys, xs = np.nonzero(r.mask)
    assert abs(xs.mean() - (256 + 0.2 * 512)) < 15
    assert abs(ys.mean() - (256 - 0.15 * 512)) < 15


def test_fragmented_body_is_several_pieces_and_halo_is_not_in_the_mask():
    r = render_spheroid(0.1, 7, dataclasses.replace(CLEAN, fragmented=True))
    n, _ = cv2.connectedComponents(r.mask.astype(np.uint8))
    assert n - 1 >= 2
    assert r.params["halo_cells"] > 0


def test_healthy_spheroid_matches_the_measured_real_image():
    # DESIGN.md: background 0.65, outer 30 px band 0.30 (std 0.14), core 0.12, radius 277 px
    c = dataclasses.replace(CLEAN, width=1936, height=1456, diameter_frac=554 / 1936)
    r = render_spheroid(1.0, 0, dataclasses.replace(c, fragmented=False))
    img = r.image.astype(float) / 255
    m = r.mask.astype(np.uint8)
    ins = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    s = np.sqrt(m.sum() / np.pi) / 277
    band = (ins > 0) & (ins <= 30 * s)
    assert abs(np.median(img[~r.mask]) - 0.65) < 0.03
    assert abs(img[band].mean() - 0.30) < 0.05 and 0.09 < img[band].std() < 0.2
    assert abs(img[ins > 150 * s].mean() - 0.12) < 0.03


def test_falling_viability_makes_body_lighter_rounder_less_and_halo_denser():
    levels = [1.1, 0.8, 0.5, 0.2]
    seeds = range(3)
    avg = {k: [np.mean([_measure(v, s)[k] for s in seeds]) for v in levels]
           for k in ("body", "circularity", "solidity", "halo")}
    assert all(np.diff(avg["body"]) > 0), avg["body"]
    assert all(np.diff(avg["circularity"]) < 0), avg["circularity"]
    assert avg["solidity"][-1] < avg["solidity"][0] - 0.05, avg["solidity"]
    assert all(np.diff(avg["halo"]) > 0), avg["halo"]


def test_wide_ranges_draw_varied_frames_and_bit_depths():
    seen = {(render_spheroid(1.0, s, ranges=WIDE).image.dtype.name) for s in range(8)}
    assert seen == {"uint8", "uint16"}


@pytest.mark.parametrize("bad", [
    {"viability": -0.1}, {"viability": float("nan")}, {"bits": 12}, {"width": 4},
    {"diameter_frac": 0.0},
])
def test_impossible_settings_are_refused_with_a_clear_error(bad):
    v = bad.pop("viability", 1.0)
    with pytest.raises(DataError):
        render_spheroid(v, 1, dataclasses.replace(SMALL, **bad))


def test_real_plate_appearance_is_off_by_default_and_leaves_the_body_mask_alone():
    base = Conditions(width=384, height=384, focus=0.1, bubbles=0, debris=0, diameter_frac=0.25)
    plain = render_spheroid(0.9, 21, base)
    off = render_spheroid(0.9, 21, dataclasses.replace(base, streaks=0.0, dark_body=False, satellites=0,
                                           aggregates=0, fibres=0))
    assert np.array_equal(plain.image, off.image)
    on = render_spheroid(0.9, 21, dataclasses.replace(base, streaks=0.04, satellites=4, aggregates=2,
                                          fibres=1))
    assert np.array_equal(on.mask, plain.mask)
    assert not np.array_equal(on.image, plain.image)
    assert len(on.params["satellite_list"]) == 4 and len(on.params["aggregate_list"]) == 2
    dark = render_spheroid(0.9, 21, dataclasses.replace(base, dark_body=True))
    assert dark.image[dark.mask].mean() < 0.7 * plain.image[plain.mask].mean()
