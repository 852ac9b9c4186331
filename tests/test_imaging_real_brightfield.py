"""Segmentation and QC flags on real ImageXpress bright-field images
(tests/data/real-brightfield: five spheroid wells with reference outlines and
one organoid-in-gel well; BSD-3, see the README there)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from nvir_agent.imaging.reading import read_image
from nvir_agent.imaging.segmentation import segment

DATA = Path(__file__).parent / "data" / "real-brightfield"

# the right flags of each well: G12 is a broken body in three joined lobes; N07
# holds several aggregates of similar size. None of them is out of focus.
EXPECTED_FLAGS = {
    "B03": [],
    "B06": [],
    "E11": [],
    "G12": ["fragmented"],
    "N07": ["multiple_objects"],
}
# IoU against the reference outline: the corrected one where there is one (N07,
# whose original takes in the light single cells on its border and runs over
# background; see the README there), else the original. Against its original
# outline N07 measures about 0.82; that is pinned too, so a change shows.
MIN_IOU = 0.90
MIN_IOU_ORIGINAL = {"B03": 0.90, "B06": 0.90, "E11": 0.90, "G12": 0.90, "N07": 0.80}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a & b)) / max(1, np.count_nonzero(a | b))


def _read(name: str):
    return read_image(DATA / f"{name}.tif")


@pytest.fixture(scope="module")
def spheroids():
    out = {}
    for well in EXPECTED_FLAGS:
        img = _read(f"spheroid_{well}")
        out[well] = (img, segment(img.pixels, bit_depth=img.bit_depth))
    return out


def test_real_16_bit_images_read_as_16_bit_data_over_part_of_the_range():
    img = _read("spheroid_B03")
    assert img.pixels.dtype == np.uint16 and img.pixels.shape == (1024, 1024)
    assert img.bit_depth == 16  # values reach 49,000: more than 14 bits
    lo, hi = np.percentile(img.pixels, [1, 99])
    assert 5000 < lo < 10000 and 40000 < hi < 50000


def _reference(well: str, corrected: bool = True) -> np.ndarray:
    path = DATA / f"spheroid_{well}_mask_corrected.png"
    if not (corrected and path.exists()):
        path = DATA / f"spheroid_{well}_mask.png"
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0


@pytest.mark.parametrize("well", list(EXPECTED_FLAGS))
def test_each_real_spheroid_is_outlined_like_its_reference(spheroids, well):
    _, seg = spheroids[well]
    assert seg.found
    assert _iou(seg.mask, _reference(well)) >= MIN_IOU


@pytest.mark.parametrize("well", list(EXPECTED_FLAGS))
def test_each_real_spheroid_keeps_its_iou_against_the_original_reference(spheroids, well):
    _, seg = spheroids[well]
    assert _iou(seg.mask, _reference(well, corrected=False)) >= MIN_IOU_ORIGINAL[well]


def test_the_corrected_n07_reference_leaves_the_loose_border_cells_out():
    # the corrected outline lies inside the original one, which took in the light
    # single cells on the border; it keeps the dark mass (0.87 of the original area)
    original, corrected = _reference("N07", corrected=False), _reference("N07")
    assert np.count_nonzero(corrected & ~original) < 0.01 * corrected.sum()
    assert 0.8 * original.sum() < corrected.sum() < 0.95 * original.sum()


@pytest.mark.parametrize("well", list(EXPECTED_FLAGS))
def test_real_spheroids_carry_only_their_right_qc_flags(spheroids, well):
    _, seg = spheroids[well]
    assert seg.qc == EXPECTED_FLAGS[well]


def test_the_loose_lobe_of_a_lobed_spheroid_is_part_of_its_body(spheroids):
    # B06: a dense mass of loosely packed cells hangs on the left of the body,
    # joined by a wide neck; the reference includes it
    _, seg = spheroids["B06"]
    ref = _reference("B06")
    lobe = np.zeros_like(ref)
    lobe[301:331, 413:443] = True  # the core of the lobe, left of the body (x 400–480, y 290–355)
    assert np.count_nonzero(lobe & ref) == lobe.sum()
    assert np.count_nonzero(seg.mask & lobe) > 0.8 * lobe.sum()


def test_the_main_body_of_a_well_with_several_aggregates_is_the_largest(spheroids):
    _, seg = spheroids["N07"]
    # the largest aggregate lies left of centre; the satellites near the centre are smaller
    assert seg.features["centroid"][0] < 400
    assert seg.features["n_aggregates"] >= 2
    assert seg.features["aggregates_area_px"] > 1.5 * seg.features["area_px"]
    _, single = spheroids["B03"]
    assert single.features["n_aggregates"] == 1
    assert single.features["aggregates_area_px"] == single.features["area_px"]


@pytest.mark.parametrize("well", list(EXPECTED_FLAGS))
def test_real_spheroids_blurred_with_sigma_4_px_are_out_of_focus(spheroids, well):
    img, sharp = spheroids[well]
    blurred = cv2.GaussianBlur(img.pixels.astype(np.float32), (0, 0), 4.0)
    seg = segment(np.rint(blurred).astype(np.uint16), bit_depth=img.bit_depth)
    assert "out_of_focus" in seg.qc
    assert seg.features["focus"] < sharp.features["focus"]


def test_organoids_in_gel_are_not_taken_for_a_single_spheroid():
    # many small organoids at different depths: either nothing spheroid-like is
    # found, or the largest is outlined and the image says there are several
    img = _read("organoid_B06")
    seg = segment(img.pixels, bit_depth=img.bit_depth)
    assert not seg.found or "multiple_objects" in seg.qc
    if seg.found:
        assert seg.features["n_aggregates"] >= 2
