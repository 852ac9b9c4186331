"""Preprocessing is pinned to hand-computed values (the paper's way and ours)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from nvir_agent.errors import AnalysisError
from nvir_agent.imaging.reading import read_image
from nvir_agent.model.preprocess import PreprocessSpec, preprocess


def approx(v):
    """float32 output against hand-computed float64 values."""
    return pytest.approx(v, abs=1e-6)


def norm(v: float) -> float:
    """(v / 255 − 0.5) / 0.5 by hand."""
    return (v / 255 - 0.5) / 0.5


def test_landscape_frame_keeps_the_centre_columns():
    # 6 wide × 4 high: columns [(6-4)//2, +4) = 1..4; value = 10·column + row
    img = np.array([[10 * c + r for c in range(6)] for r in range(4)], dtype=np.uint8)
    out = preprocess(img, PreprocessSpec(size=4))
    assert out.shape == (1, 4, 4) and out.dtype == np.float32
    assert out[0, 0, 0] == approx(norm(10))  # column 1, row 0
    assert out[0, 3, 3] == approx(norm(43))  # column 4, row 3
    assert out[0, 2, 1] == approx(norm(22))


def test_portrait_frame_keeps_the_centre_rows():
    # 4 wide × 7 high: rows [(7-4)//2, +4) = 1..4
    img = np.array([[10 * r + c for c in range(4)] for r in range(7)], dtype=np.uint8)
    out = preprocess(img, PreprocessSpec(size=4))
    assert out[0, 0, 0] == approx(norm(10))  # row 1
    assert out[0, 3, 2] == approx(norm(42))  # row 4, column 2


def test_odd_margin_floors_the_offset_like_the_paper():
    # 7 wide × 4 high: (7-4)//2 = 1, so columns 1..4 (column 0 and 5, 6 dropped)
    img = np.tile(np.arange(7, dtype=np.uint8) * 20, (4, 1))
    out = preprocess(img, PreprocessSpec(size=4))
    assert out[0, 0].tolist() == approx([norm(20), norm(40), norm(60), norm(80)])


def test_resize_uses_linear_exact_which_averages_pixel_pairs_at_half_size():
    # 8×8 with value 10·column → 4×4: destination column j samples 2j and 2j+1 → 20j + 5
    img = np.tile(np.arange(8, dtype=np.uint8) * 10, (8, 1))
    out = preprocess(img, PreprocessSpec(size=4))
    assert out[0, 5 % 4].tolist() == approx([norm(5), norm(25), norm(45), norm(65)])


def test_16_bit_uint8_spec_divides_by_256_like_opencv_reading():
    img = np.array([[0, 255, 256, 1000], [32768, 65535, 511, 4095]] * 2, dtype=np.uint16)
    out = preprocess(img[:4, :4], PreprocessSpec(size=4))
    # 1000 // 256 = 3, 32768 // 256 = 128, 65535 // 256 = 255, 511 // 256 = 1, 4095 // 256 = 15
    assert out[0, 0].tolist() == approx([norm(0), norm(0), norm(1), norm(3)])
    assert out[0, 1].tolist() == approx([norm(128), norm(255), norm(1), norm(15)])


def test_12_bit_data_is_dark_with_the_paper_spec_and_full_range_with_bitdepth():
    img = np.full((4, 4), 4095, dtype=np.uint16)
    img[0, 0], img[0, 1] = 2048, 1000
    paper = preprocess(img, PreprocessSpec(size=4), bit_depth=12)
    assert paper[0, 1, 1] == approx(norm(15))  # 4095 // 256
    aware = preprocess(img, PreprocessSpec(size=4, intensity="bitdepth"), bit_depth=12)
    assert aware[0, 1, 1] == approx(1.0)  # 4095 → 255
    assert aware[0, 0, 0] == approx(norm(128))  # 2048·255/4095 = 127.53 → 128
    assert aware[0, 0, 1] == approx(norm(62))  # 1000·255/4095 = 62.27 → 62


def test_bitdepth_spec_without_a_known_depth_uses_the_container_depth():
    img = np.full((4, 4), 65535, dtype=np.uint16)
    img[0, 0] = 257
    out = preprocess(img, PreprocessSpec(size=4, intensity="bitdepth"))
    assert out[0, 0, 0] == approx(norm(1))  # 257·255/65535 = 1
    assert out[0, 3, 3] == approx(1.0)


def test_rgb_becomes_opencv_luma():
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    img[...] = (100, 50, 200)  # 0.299·100 + 0.587·50 + 0.114·200 = 82.05 → 82
    out = preprocess(img, PreprocessSpec(size=4))
    assert np.allclose(out, norm(82))


def test_16_bit_rgb_with_the_paper_spec_goes_to_8_bit_then_luma():
    img = np.zeros((4, 4, 3), dtype=np.uint16)
    img[...] = (100 * 256 + 255, 50 * 256, 200 * 256 + 7)  # high bytes 100, 50, 200
    out = preprocess(img, PreprocessSpec(size=4))
    assert np.allclose(out, norm(82))


def test_rgba_alpha_is_ignored():
    img = np.zeros((4, 4, 4), dtype=np.uint8)
    img[...] = (100, 50, 200, 7)
    assert np.allclose(preprocess(img, PreprocessSpec(size=4)), norm(82))


def test_percentile_spec_stretches_the_declared_percentiles_to_full_range():
    img = np.arange(100, dtype=np.uint16).reshape(10, 10)
    spec = PreprocessSpec(size=10, intensity="percentile", low_percentile=10, high_percentile=90)
    out = preprocess(img, spec)
    # nearest rank: 10th percentile = 9, 90th = 89; 29 → (29−9)·255/80 = 63.75 → 64
    assert out[0, 2, 9] == approx(norm(64))
    assert out[0, 0, 5] == approx(-1.0)  # below the low percentile
    assert out[0, 9, 5] == approx(1.0)  # above the high percentile


def test_percentiles_from_the_reduced_crop_keep_a_noisy_images_contrast():
    # a dark disc on a light background; pixel noise widens the full-resolution
    # extremes (lower contrast after mapping), the 32 × 32 area average hardly moves
    yy, xx = np.mgrid[:256, :256]
    clean = np.where((xx - 128) ** 2 + (yy - 128) ** 2 < 60**2, 40.0, 170.0)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 12, clean.shape), 0, 255)
    disc = (xx - 128) ** 2 + (yy - 128) ** 2 < 50**2

    def contrast(img, side):
        spec = PreprocessSpec(size=64, intensity="percentile", percentile_side=side)
        out = cv2.resize(preprocess(img.astype(np.uint8), spec)[0], (256, 256))
        return float(out[~disc].mean() - out[disc].mean())

    clean_contrast = contrast(clean, 0)
    assert contrast(clean, 32) == pytest.approx(clean_contrast, rel=0.02)
    # measured: 0.71 of the clean contrast from every pixel, 0.90 from the reduced crop
    # (what is left is the noise clipped at the ends of the range)
    assert contrast(noisy, 0) < 0.75 * clean_contrast
    assert contrast(noisy, 32) > 0.88 * clean_contrast


def test_percentile_side_reduces_before_ranking_and_leaves_small_crops_alone():
    img = np.zeros((8, 8), np.uint16)
    img[:, 4:] = 100
    img[0, 0] = 1000  # a single hot pixel: the top percentile of the pixels
    full = PreprocessSpec(size=8, intensity="percentile", low_percentile=0, high_percentile=100)
    reduced = PreprocessSpec(size=8, intensity="percentile", low_percentile=0,
                             high_percentile=100, percentile_side=2)
    # every pixel: 0 → −1 and 1000 → +1, so 100 maps to 26 (100·255/1000 = 25.5 → 26)
    assert preprocess(img, full)[0, 4, 5] == approx(norm(26))
    # 2 × 2 area average: blocks of 4 × 4 pixels, [62.5 (the hot pixel among zeros),
    # 100, 0, 100] → range 0..100, so 100 maps to 255
    assert preprocess(img, reduced)[0, 4, 5] == approx(1.0)
    tiny = PreprocessSpec(size=8, intensity="percentile", low_percentile=0,
                          high_percentile=100, percentile_side=16)  # larger than the crop
    assert preprocess(img, tiny)[0, 4, 5] == approx(norm(26))


def test_spheroid_crop_is_a_square_around_the_mask_with_margin():
    img = np.array([[10 * r + c for c in range(10)] for r in range(8)], dtype=np.uint8)
    mask = np.zeros((8, 10), dtype=bool)
    mask[2:4, 4:6] = True  # 2×2 box, centre (5, 3); margin 0.5 → side 4 → x 3..6, y 1..4
    out = preprocess(img, PreprocessSpec(size=4, crop="spheroid", margin=0.5), mask=mask)
    assert out[0, 0, 0] == approx(norm(13))
    assert out[0, 3, 3] == approx(norm(46))


def test_spheroid_crop_at_the_frame_edge_pads_with_edge_values():
    img = np.array([[10 * r + c for c in range(10)] for r in range(8)], dtype=np.uint8)
    mask = np.zeros((8, 10), dtype=bool)
    mask[0:2, 0:2] = True  # centre (1, 1), side 4 → x −1..2, y −1..2
    out = preprocess(img, PreprocessSpec(size=4, crop="spheroid", margin=0.5), mask=mask)
    assert out[0, 0, 0] == approx(norm(0))  # replicated corner
    assert out[0, 0, 3] == approx(norm(2))  # replicated top row, column 2
    assert out[0, 3, 3] == approx(norm(22))


def test_spheroid_crop_without_a_spheroid_is_a_per_image_error():
    spec = PreprocessSpec(size=4, crop="spheroid")
    img = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(AnalysisError, match="mask"):
        preprocess(img, spec)
    with pytest.raises(AnalysisError, match="No spheroid"):
        preprocess(img, spec, mask=np.zeros((8, 8), dtype=bool))


def test_unsupported_pixel_types_and_shapes_are_per_image_errors():
    with pytest.raises(AnalysisError, match="float32"):
        preprocess(np.zeros((8, 8), dtype=np.float32), PreprocessSpec())
    with pytest.raises(AnalysisError, match="shape"):
        preprocess(np.zeros((2, 8, 8), dtype=np.uint8), PreprocessSpec())


def test_default_spec_is_the_papers():
    spec = PreprocessSpec()
    assert (spec.crop, spec.size, spec.interpolation, spec.intensity) == (
        "center-square",
        256,
        5,
        "uint8",
    )
    assert (spec.mean, spec.std) == (0.5, 0.5)


def test_spec_round_trips_through_a_dict_and_rejects_unknown_or_bad_values():
    spec = PreprocessSpec(crop="spheroid", margin=0.4, size=128, intensity="percentile")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown keys colour"):
        PreprocessSpec.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="crop 'round'"):
        PreprocessSpec(crop="round")
    with pytest.raises(ValueError, match="interpolation 9"):
        PreprocessSpec(interpolation=9)
    with pytest.raises(ValueError, match="percentile_side 1 "):
        PreprocessSpec(percentile_side=1)
    # files written before percentile_side existed take their percentiles from every pixel
    old = spec.to_dict()
    del old["percentile_side"]
    assert PreprocessSpec.from_dict(old).percentile_side == 0


def _paper_reference(path) -> np.ndarray:
    """The reference code's way: cv2.imread grayscale, centre square, resize code 5, scale."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    h, w = img.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[top : top + side, left : left + side]
    img = cv2.resize(img, (256, 256), interpolation=5)
    return ((img / 255.0 - 0.5) / 0.5).astype(np.float32)[None]


@pytest.mark.parametrize(
    "name, shape, dtype, tol",
    [
        ("gray16.tif", (300, 500), np.uint16, 1e-6),  # 16-bit: the same as OpenCV, exactly
        ("gray8.png", (520, 310), np.uint8, 1e-6),
        ("rgb8.png", (300, 400, 3), np.uint8, 1 / 127.5 + 1e-6),  # luma rounding may differ by 1
    ],
)
def test_reading_and_preprocessing_a_file_matches_the_reference_code(
    tmp_path, name, shape, dtype, tol
):
    rng = np.random.default_rng(5)
    top = 65536 if dtype == np.uint16 else 256
    pixels = rng.integers(0, top, shape).astype(dtype)
    path = tmp_path / name
    cv2.imwrite(str(path), pixels)
    img = read_image(path)
    ours = preprocess(img.pixels, PreprocessSpec(), bit_depth=img.bit_depth)
    assert np.max(np.abs(ours - _paper_reference(path))) <= tol
