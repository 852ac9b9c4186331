"""Read → segment in one call: files and pixels give the same outline; the pixel
size given wins over the file's; OpenCV failures become per-image errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from nvir_agent.errors import AnalysisError, ImageReadError
from nvir_agent.imaging import analyse as analyse_module
from nvir_agent.imaging.analyse import analyse
from nvir_agent.imaging.segmentation import segment
from nvir_agent.synth.render import render_spheroid


def test_a_file_and_its_pixels_give_the_same_segmentation(tmp_path):
    r = render_spheroid(0.8, seed=3)
    path = tmp_path / "P1_B03_s1_w1.png"
    cv2.imwrite(str(path), r.image)
    from_file = analyse(path)
    direct = segment(r.image, bit_depth=r.bit_depth)
    assert from_file.bit_depth == 8 and from_file.meta["format"]
    assert from_file.segmentation.found and direct.found
    assert np.array_equal(from_file.segmentation.mask, direct.mask)
    assert from_file.segmentation.features == direct.features


def test_the_pixel_size_given_adds_sizes_in_micrometres():
    r = render_spheroid(0.8, seed=3)
    plain = analyse(r.image, bit_depth=8).segmentation.features
    sized = analyse(r.image, bit_depth=8, pixel_size_um=2.0).segmentation.features
    assert "diameter_um" not in plain
    assert sized["diameter_um"] == pytest.approx(sized["equivalent_diameter_px"] * 2.0, rel=1e-3)


def test_an_unreadable_file_is_an_image_read_error(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError):
        analyse(bad)


def test_an_opencv_failure_is_an_analysis_error_naming_the_image(monkeypatch):
    def broken(*_a, **_k):
        raise cv2.error("bad")

    monkeypatch.setattr(analyse_module, "segment", broken)
    with pytest.raises(AnalysisError, match="well B03: OpenCV could not segment"):
        analyse(np.zeros((64, 64), np.uint8), name="well B03")
