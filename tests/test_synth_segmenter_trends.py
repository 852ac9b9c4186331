"""Viability drives what the segmenter measures on rendered spheroids: the
body gets lighter, the halo denser and the outline less round as v falls."""

from __future__ import annotations

import numpy as np
import pytest

from nvir_agent.synth import Conditions, render_spheroid

segmentation = pytest.importorskip("nvir_agent.imaging.segmentation")

CLEAN = Conditions(width=512, height=512, diameter_frac=0.3, offset=(0.0, 0.0),
                   illumination=0.65, gradient=0.0, vignetting=0.0, well_wall=0.0,
                   focus=0.2, noise=0.006, bubbles=0, debris=0)
LEVELS = (1.1, 0.8, 0.5, 0.2)


def _features(v: float) -> dict[str, float]:
    feats = [segmentation.segment(render_spheroid(v, s, CLEAN).image, bit_depth=8).features
             for s in range(3)]
    keys = ("brightness_ratio", "halo_fraction", "circularity", "solidity")
    return {k: float(np.mean([f[k] for f in feats])) for k in keys}


def test_segmenter_features_follow_viability():
    f = {v: _features(v) for v in LEVELS}
    bright = [f[v]["brightness_ratio"] for v in LEVELS]
    halo = [f[v]["halo_fraction"] for v in LEVELS]
    assert all(np.diff(bright) > 0), bright
    assert all(np.diff(halo) > 0), halo
    for key in ("circularity", "solidity"):
        values = [f[v][key] for v in LEVELS]
        assert values[0] > values[1] > max(values[2:]), (key, values)


def test_segmenter_finds_the_rendered_body():
    for v in LEVELS:
        r = render_spheroid(v, 1, CLEAN)
        seg = segmentation.segment(r.image, bit_depth=8)
        iou = (seg.mask & r.mask).sum() / (seg.mask | r.mask).sum()
        assert seg.found and iou > 0.8, (v, iou)
