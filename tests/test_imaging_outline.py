"""The stored outline and the review window's thumbnails: small, faithful, and kept
in the user cache folder, never beside the acquisition's images."""

from __future__ import annotations

import cv2
import numpy as np
from core_helpers import make_config

from nvir_agent.core.engine import Engine
from nvir_agent.imaging.outline import display_image, draw_outline, simplify_outline
from nvir_agent.imaging.thumbnails import thumbnail_dir, thumbnail_for, thumbnail_path
from nvir_agent.pipeline.stages import build_stages
from nvir_agent.store import StoreReader, database_path
from nvir_agent.synth.render import render_spheroid


def _fill(outline, shape) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    pts = [np.asarray(outline, np.int32).reshape(-1, 1, 2)]
    cv2.fillPoly(out, pts, 1)
    cv2.polylines(out, pts, True, 1, 1)  # vertices are border pixels: the border is inside
    return out.astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_a_simplified_outline_is_small_and_matches_the_mask():
    mask = np.zeros((1024, 1024), np.uint8)
    cv2.ellipse(mask, (500, 530), (260, 200), 20, 0, 360, 1, -1)
    for x, y in cv2.ellipse2Poly((500, 530), (260, 200), 20, 0, 360, 9):  # a frayed border
        cv2.circle(mask, (int(x), int(y)), 12, 1, -1)
    outline = simplify_outline(mask.astype(bool))
    assert 8 <= len(outline) <= 256
    assert all(isinstance(v, int) for pt in outline for v in pt)
    assert _iou(_fill(outline, mask.shape), mask.astype(bool)) > 0.98


def test_an_empty_mask_has_no_outline_and_a_huge_one_is_capped():
    assert simplify_outline(np.zeros((64, 64), bool)) == ()
    rng = np.random.default_rng(0)
    mask = np.zeros((2048, 2048), np.uint8)
    pts = np.array([[1024 + (600 + 80 * rng.random()) * np.cos(t),
                     1024 + (600 + 80 * rng.random()) * np.sin(t)]
                    for t in np.linspace(0, 2 * np.pi, 3000, endpoint=False)], np.int32)
    cv2.fillPoly(mask, [pts], 1)
    assert len(simplify_outline(mask.astype(bool), tolerance_px=0.1, max_points=64)) <= 64


def test_drawing_an_outline_marks_its_pixels_in_red_at_any_scale():
    def red(px) -> bool:  # BGR
        return px[2] > 200 and px[0] < 100 and px[1] < 100

    gray = np.full((100, 100), 128, np.uint8)
    rgb = draw_outline(gray, ((20, 20), (80, 20), (80, 80), (20, 80)), thickness=2)
    assert red(rgb[20, 50]) and tuple(rgb[50, 50]) == (128, 128, 128)
    half = draw_outline(gray[:50, :50], ((20, 20), (80, 20), (80, 80), (20, 80)), scale=0.5,
                        thickness=2)
    assert red(half[10, 25]) and not red(half[20, 20])


def test_display_image_scales_12_bit_data_to_full_8_bit_range():
    px = np.array([[0, 2048, 4095]], np.uint16)
    assert display_image(px, 12).tolist() == [[0, 127, 255]]


def test_thumbnail_is_made_once_in_the_cache_and_renewed_when_the_image_changes(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    image = acq / "P1_B03_s1_w1.png"
    cv2.imwrite(str(image), np.full((1024, 768), 90, np.uint8))
    thumb = thumbnail_for(image)
    assert thumb.is_file() and thumb.is_relative_to(thumbnail_dir())
    assert sorted(p.name for p in acq.iterdir()) == ["P1_B03_s1_w1.png"]  # nothing written there
    small = cv2.imread(str(thumb), cv2.IMREAD_UNCHANGED)
    assert small.shape == (256, 192)
    assert thumbnail_for(image) == thumb
    cv2.imwrite(str(image), np.full((512, 512), 200, np.uint8))
    assert thumbnail_path(image) != thumb


def test_the_engine_stores_each_outline_and_writes_each_thumbnail(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    for i, v in enumerate((0.9, 0.4)):
        r = render_spheroid(v, seed=40 + i)
        cv2.imwrite(str(acq / f"P1_B0{i + 1}_s1_w1.png"), r.image)
    cfg = make_config(tmp_path, [acq])
    cfg.model.enabled = False
    engine = Engine(cfg, stages=build_stages(cfg), listeners=[])
    try:
        rows = engine.process_paths([acq])
    finally:
        engine.close()
    assert [r["state"] for r in rows] == ["done", "done"]
    with StoreReader(database_path(cfg)) as reader:
        stored = reader.measurements()
    for m in stored:
        assert m.found and m.outline and len(m.outline) >= 8
        assert thumbnail_path(m.path).is_file()
    assert "outline" not in rows[0]  # export rows stay flat
