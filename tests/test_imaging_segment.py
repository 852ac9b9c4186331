"""Segmentation: accuracy on rendered spheroids, morphology features, every QC flag,
and the engine's read and segment stages."""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from nvir_agent.config import Config
from nvir_agent.errors import AnalysisError
from nvir_agent.imaging.features import QC_FLAGS
from nvir_agent.imaging.segmentation import segment
from nvir_agent.pipeline.contract import Analysis, ImageRecord, run_stages
from nvir_agent.plate import ImageKey
from nvir_agent.synth.render import Conditions, render_spheroid


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a & b)) / max(1, np.count_nonzero(a | b))


def _disc_image(size=(480, 640), centre=None, radius=60, *, level=0.65, body=0.2,
                bits=8, blur=0.0, seed=0, extra=()) -> np.ndarray:
    """A dark textured disc (or several) on a lit background, with noise."""
    h, w = size
    rng = np.random.default_rng(seed)
    img = np.full((h, w), level, np.float32)
    cx, cy = centre if centre is not None else (w / 2, h / 2)
    texture = cv2.resize(rng.normal(0, 1, (h // 6 + 1, w // 6 + 1)).astype(np.float32), (w, h))
    for x, y, r in ((cx, cy, radius), *extra):
        disc = np.zeros((h, w), np.uint8)
        cv2.circle(disc, (int(round(x * 16)), int(round(y * 16))), int(round(r * 16)), 1, -1,
                   cv2.LINE_AA, shift=4)
        img = np.where(disc > 0, level * (body + 0.05 * texture), img)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img = img + rng.normal(0, 0.005, (h, w)).astype(np.float32)
    full = 255 if bits == 8 else 4095
    return np.clip(img * full + 0.5, 0, full).astype(np.uint8 if bits == 8 else np.uint16)


def _disc_mask(size, centre, radius) -> np.ndarray:
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2


# ------------------------------------------------------------------ accuracy

# condition → (viability range, nuisances); 3 rendered images each
ACCURACY_SET = {
    "healthy": ((0.9, 1.2), Conditions(focus=0.1, well_wall=0.0, bubbles=0)),
    "dying_halo": ((0.2, 0.5), Conditions(fragmented=False)),
    "defocused": ((0.3, 1.1), Conditions(focus=1.3)),
    "off_centre": ((0.3, 1.1), Conditions(offset=(0.22, -0.18))),
    "well_wall": ((0.3, 1.1), Conditions(well_wall=0.9)),
    "bits16": ((0.3, 1.1), Conditions(bits=16)),
    "small_4x": ((0.3, 1.1), Conditions(diameter_frac=0.06)),
    "bubbles_debris": ((0.3, 1.1), Conditions(bubbles=3, debris=80)),
    "fragmented": ((0.05, 0.3), Conditions(fragmented=True)),
}


@pytest.mark.slow
def test_rendered_spheroids_are_outlined_with_high_iou_in_every_condition():
    per_condition = {}
    for name, ((lo, hi), cond) in ACCURACY_SET.items():
        rng = np.random.default_rng(5)
        ious = []
        for i in range(3):
            r = render_spheroid(float(rng.uniform(lo, hi)),
                                seed=77 + 31 * i + zlib.crc32(name.encode()) % 1000,
                                conditions=cond)
            seg = segment(r.image, bit_depth=r.bit_depth)
            ious.append(_iou(seg.mask, r.mask) if seg.found else 0.0)
        per_condition[name] = float(np.mean(ious))
    overall = float(np.mean(list(per_condition.values())))
    assert overall >= 0.95, per_condition  # 0.964 measured
    intact = {k: v for k, v in per_condition.items() if k != "fragmented"}
    assert min(intact.values()) >= 0.92, per_condition  # 0.940 (dying_halo) measured
    assert per_condition["fragmented"] >= 0.83, per_condition  # 0.854 measured


def test_band_classifier_moves_a_dying_spheroids_border_off_its_fringe_of_shed_cells():
    traced, refined = [], []
    for seed in range(4):
        r = render_spheroid(0.3, seed=seed, conditions=Conditions(fragmented=False))
        traced.append(_iou(segment(r.image, bit_depth=8, refine_boundary=False).mask, r.mask))
        refined.append(_iou(segment(r.image, bit_depth=8).mask, r.mask))
    # measured: edge trace 0.872, classified band 0.907 (each ≥ 0.894)
    assert np.mean(refined) > np.mean(traced) + 0.02, (traced, refined)
    assert min(refined) > 0.88, refined


def test_unreadable_boundary_weights_give_a_clear_error(tmp_path, monkeypatch):
    from nvir_agent.errors import ModelLoadError
    from nvir_agent.imaging import boundary

    bad = tmp_path / "boundary_mlp.npz"
    bad.write_bytes(b"not an npz")
    monkeypatch.setattr(boundary, "WEIGHTS", bad)
    boundary._weights.cache_clear()
    try:
        with pytest.raises(ModelLoadError, match="boundary weights"):
            segment(render_spheroid(0.5, seed=1).image, bit_depth=8)
    finally:
        boundary._weights.cache_clear()


def test_broken_spheroid_keeps_all_its_pieces_and_is_flagged_fragmented():
    for seed in range(4):
        r = render_spheroid(0.1, seed=seed, conditions=Conditions(fragmented=True, focus=0.1,
                                                                   well_wall=0.0, bubbles=0))
        seg = segment(r.image, bit_depth=8)
        assert seg.found, seed
        count, labels, stats, _ = cv2.connectedComponentsWithStats(r.mask.view(np.uint8))
        pieces = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] > 0.02 * r.mask.sum()]
        assert len(pieces) >= 2, seed
        for i in pieces:  # every piece, not only the one beside a crack
            piece = labels == i
            assert np.count_nonzero(seg.mask & piece) > 0.5 * np.count_nonzero(piece), (seed, i)
        kept = np.count_nonzero(seg.mask & r.mask) / np.count_nonzero(r.mask)
        assert kept > 0.8, (seed, kept)  # 0.82-0.91 measured: the borders lie in a dense halo
        assert _iou(seg.mask, r.mask) > 0.7, seed
        assert "fragmented" in seg.qc, (seed, seg.features["solidity"])


def test_small_broken_spheroid_is_outlined_round_its_pieces_not_round_the_light_gap():
    # 6 % of the frame, the cracks' crossing wider than the pieces are deep:
    # the first trace goes round the light crossing (IoU 0.04 before the fix)
    r = render_spheroid(0.316, seed=29464, conditions=Conditions(diameter_frac=0.06))
    assert r.params["fragmented"]
    seg = segment(r.image, bit_depth=r.bit_depth)
    assert seg.found and "fragmented" in seg.qc, seg.qc
    assert _iou(seg.mask, r.mask) > 0.7  # 0.79 measured


def test_intact_spheroids_are_not_flagged_fragmented():
    for seed in range(4):
        r = render_spheroid(0.5, seed=seed, conditions=Conditions(fragmented=False))
        seg = segment(r.image, bit_depth=8)
        assert seg.found and "fragmented" not in seg.qc, (seed, seg.qc)
        assert seg.features["n_pieces"] == 1, seed


def test_12_bit_and_8_bit_versions_of_an_image_give_the_same_outline():
    img12 = _disc_image(bits=12, seed=4)
    img8 = (img12 >> 4).astype(np.uint8)
    a = segment(img12, bit_depth=12)
    b = segment(img8, bit_depth=8)
    assert a.found and b.found
    assert _iou(a.mask, b.mask) > 0.97


def test_vignetting_and_gradient_do_not_move_the_outline():
    size, centre, radius = (480, 640), (300, 260), 70
    img = _disc_image(size, centre, radius).astype(np.float32)
    yy, xx = np.mgrid[:size[0], :size[1]]
    rr = ((xx - 320) ** 2 + (yy - 240) ** 2) / (320**2 + 240**2)
    shaded = img * (1 - 0.4 * rr) * (1 + 0.2 * (xx / 640 - 0.5))
    seg = segment(np.clip(shaded, 0, 255).astype(np.uint8), bit_depth=8)
    assert _iou(seg.mask, _disc_mask(size, centre, radius)) > 0.95


# ------------------------------------------------------------------ features


def test_features_of_a_disc_match_its_geometry():
    size, centre, radius = (480, 640), (320.0, 240.0), 80
    seg = segment(_disc_image(size, centre, radius), pixel_size_um=2.0)
    f = seg.features
    assert seg.found and seg.mask.shape == size and seg.mask.dtype == bool
    assert f["equivalent_diameter_px"] == pytest.approx(2 * radius, rel=0.03)
    assert f["perimeter_px"] == pytest.approx(2 * np.pi * radius, rel=0.05)
    assert f["circularity"] > 0.9 and f["solidity"] > 0.97 and f["eccentricity"] < 0.35
    assert f["perimeter_circumference_ratio"] == pytest.approx(1.0, abs=0.05)
    assert f["centroid"] == pytest.approx(list(centre), abs=2.0)
    x, y, w, h = f["bbox"]
    assert abs(x - (centre[0] - radius)) <= 3 and abs(w - 2 * radius) <= 5
    assert f["brightness_ratio"] == pytest.approx(0.2, abs=0.05)
    assert f["halo_fraction"] < 0.05
    assert f["diameter_um"] == pytest.approx(2 * f["equivalent_diameter_px"], rel=1e-3)
    assert f["area_um2"] == pytest.approx(4 * f["area_px"], rel=1e-3)
    assert seg.contour.ndim == 2 and seg.contour.shape[1] == 2 and len(seg.contour) > 100
    assert f["mean_boundary_curvature"] > 0
    assert seg.qc == []


def test_an_elongated_spheroid_has_a_high_eccentricity():
    img = np.full((400, 600), 170, np.uint8)
    cv2.ellipse(img, (300, 200), (120, 50), 0, 0, 360, 40, -1)
    img = (img + np.random.default_rng(1).normal(0, 2, img.shape)).clip(0, 255).astype(np.uint8)
    f = segment(img).features
    assert f["eccentricity"] > 0.85


def test_a_dying_spheroid_measures_lighter_and_with_more_halo_than_a_healthy_one():
    clean = Conditions(width=768, height=768, focus=0.1, well_wall=0.0, bubbles=0, debris=0,
                       gradient=0.0, vignetting=0.0, fragmented=False, diameter_frac=0.3)
    healthy = segment(render_spheroid(1.0, 9, clean).image).features
    dying = segment(render_spheroid(0.25, 9, clean).image).features
    assert dying["brightness_ratio"] > healthy["brightness_ratio"] + 0.1
    assert dying["halo_fraction"] > healthy["halo_fraction"]


# ------------------------------------------------------------------ QC flags


def test_flat_image_has_no_spheroid():
    img = np.clip(np.random.default_rng(2).normal(160, 3, (300, 400)), 0, 255).astype(np.uint8)
    seg = segment(img)
    assert not seg.found and seg.qc == ["no_spheroid"]
    assert not seg.mask.any() and seg.mask.shape == (300, 400) and len(seg.contour) == 0
    assert "area_px" not in seg.features and "background_level" in seg.features


def test_two_similar_dark_bodies_are_multiple_objects():
    img = _disc_image(centre=(230, 240), radius=60, extra=((440, 240, 55),))
    seg = segment(img)
    assert seg.found and "multiple_objects" in seg.qc


def test_small_debris_is_not_a_second_object():
    img = _disc_image(radius=70, extra=((80, 80, 4), (560, 400, 5), (100, 380, 3)))
    seg = segment(img)
    assert seg.found and "multiple_objects" not in seg.qc


def test_spheroid_cut_by_the_frame_touches_border():
    seg = segment(_disc_image(centre=(610, 240), radius=60))
    assert seg.found and "touches_border" in seg.qc


def test_blurred_spheroid_is_out_of_focus_and_sharp_one_is_not():
    cond = Conditions(width=768, height=768, well_wall=0.0, bubbles=0, noise=0.006)
    sharp = segment(render_spheroid(0.9, 5, Conditions(**{**cond.__dict__, "focus": 0.0})).image)
    blurred = segment(render_spheroid(0.9, 5, Conditions(**{**cond.__dict__, "focus": 1.4})).image)
    assert "out_of_focus" not in sharp.qc
    assert "out_of_focus" in blurred.qc
    assert blurred.features["focus"] < sharp.features["focus"]


def test_dark_image_is_underexposed():
    img = (_disc_image().astype(np.float32) * 0.15).astype(np.uint8)
    seg = segment(img, bit_depth=8)
    assert "underexposed" in seg.qc


def test_12_bit_image_in_a_16_bit_container_is_not_underexposed_when_the_bit_depth_is_given():
    img = _disc_image(bits=12)
    assert "underexposed" not in segment(img, bit_depth=12).qc
    assert "underexposed" in segment(img, bit_depth=16).qc


def test_clipped_background_is_saturated():
    img = np.clip(_disc_image().astype(np.int32) * 2, 0, 255).astype(np.uint8)
    seg = segment(img, bit_depth=8)
    assert seg.found and "saturated" in seg.qc


def test_tiny_spheroid_is_too_small_and_huge_one_too_large():
    small = segment(_disc_image(radius=11))
    assert small.found and "too_small" in small.qc
    huge = segment(_disc_image(size=(700, 700), radius=270))
    assert huge.found and "too_large" in huge.qc


def test_every_flag_is_known():
    assert set(QC_FLAGS) == {"no_spheroid", "multiple_objects", "touches_border",
                             "out_of_focus", "underexposed", "saturated", "too_small",
                             "too_large", "fragmented"}


def test_non_image_array_is_an_analysis_error():
    with pytest.raises(AnalysisError, match="2-D grayscale"):
        segment(np.zeros((10, 10, 3), np.uint8))


# ------------------------------------------------------------------ engine stages


def _analysis(path: Path, i: int = 1) -> Analysis:
    st = path.stat()
    return Analysis(ImageRecord(i, path, ImageKey(), st.st_size, st.st_mtime))


@pytest.mark.slow  # importing the analysis module imports the scoring stage (torch)
def test_stages_read_and_segment_and_keep_going_past_a_bad_file(tmp_path):
    from nvir_agent.pipeline.stages import ReadStage, SegmentStage, build_stages

    tifffile.imwrite(tmp_path / "good.tif", _disc_image(bits=12))
    (tmp_path / "bad.tif").write_bytes(b"not an image at all")
    cv2.imwrite(str(tmp_path / "empty.png"), np.full((200, 300), 150, np.uint8))
    batch = [_analysis(tmp_path / n, i) for i, n in enumerate(("good.tif", "bad.tif",
                                                                "empty.png"))]
    assert [s.name for s in build_stages(Config())][:2] == ["read", "segment"]
    run_stages([ReadStage(Config()), SegmentStage(Config())], batch)
    good, bad, empty = batch
    assert good.found is True and good.mask is not None and good.error is None
    assert good.image_meta["bit_depth"] == 12 and good.image_meta["width"] == 640
    assert good.features["area_px"] > 0
    row = good.measurement().as_dict()
    for key in ("area_px", "circularity", "solidity", "focus", "centroid", "bbox"):
        assert key in row
    assert bad.failed and "bad.tif" in bad.error
    assert empty.error is None and empty.found is False and empty.qc == ["no_spheroid"]


def test_pixel_size_from_config_reaches_the_features(tmp_path):
    from nvir_agent.pipeline.stages import ReadStage, SegmentStage

    tifffile.imwrite(tmp_path / "a.tif", _disc_image())
    cfg = Config()
    cfg.imaging.pixel_size_um = 1.5
    a = _analysis(tmp_path / "a.tif")
    run_stages([ReadStage(cfg), SegmentStage(cfg)], [a])
    assert a.image_meta["pixel_size_um"] == 1.5
    # both rounded to 0.01
    assert a.features["diameter_um"] == pytest.approx(1.5 * a.features["equivalent_diameter_px"],
                                                      abs=0.011)
