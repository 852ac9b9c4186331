"""The out-of-distribution check and the intervals: the training summary in the
model file, typicality and the unlike_training flag, calibrated intervals, and
old model files that have neither."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nvir_agent.imaging.analyse import analyse
from nvir_agent.imaging.reading import read_image
from nvir_agent.imaging.segmentation import segment
from nvir_agent.model.heads import mc_dropout
from nvir_agent.model.locate import demo_model_path
from nvir_agent.model.modelfile import add_trust, load_model, save_model
from nvir_agent.model.network import build_nvir
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.model.scorer import Scorer
from nvir_agent.model.typicality import (
    STATISTICS,
    describe,
    fit_summary,
    image_statistics,
    statistics_vector,
    typicality_of,
)
from nvir_agent.model.uncertainty import (
    IntervalCalibration,
    conformal_scale,
    spreads,
)
from nvir_agent.synth.render import Conditions, render_spheroid

SPEC = PreprocessSpec(size=64, crop="spheroid", intensity="percentile", percentile_side=32)
REAL = Path(__file__).parent / "data" / "real-brightfield"
SIDE = 256


def _stats_rows(n, rng, shift=0.0):
    base = np.array([10.0, 8.0, 0.65, 0.6, -1.3, 0.005])
    spread = np.array([0.0, 0.0, 0.04, 0.05, 0.3, 0.002])
    return base + spread * rng.standard_normal((n, len(STATISTICS))) + shift


def test_typicality_is_the_fraction_of_held_out_images_farther():
    held = np.array([0.5, 1.0, 1.5, 2.0])
    assert typicality_of([0.1, 1.2, 3.0], held).tolist() == [1.0, 0.5, 0.0]


def test_held_out_images_of_the_training_distribution_are_rarely_flagged():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((600, 512)) * np.linspace(3, 0.1, 512)
    stats = _stats_rows(600, rng)
    s = fit_summary(feats[:300], stats[:300], feats[300:450], stats[300:450])
    new = s.assess(feats[450:], stats[450:])
    assert np.mean([j.unlike_training for j in new]) <= 0.05
    assert 0.3 < np.mean([j.typicality for j in new]) < 0.7  # about uniform
    shifted = s.assess(feats[450:] + 4.0, stats[450:])
    assert all(j.unlike_training for j in shifted)
    odd = stats[450:].copy()
    odd[:, 1] = 16  # 16-bit data, the training images were 8-bit
    judged = s.assess(feats[450:], odd)
    assert all(j.unlike_training and j.farthest_statistic == "bit_depth" for j in judged)


def test_image_statistics_see_frame_bit_depth_level_contrast_size_and_noise():
    r = render_spheroid(0.9, 3, Conditions(width=SIDE, height=SIDE, bits=8, noise=0.01))
    st = image_statistics(r.image, 8, r.mask)
    assert st["frame_side_log2"] == pytest.approx(8.0)
    assert st["bit_depth"] == 8
    assert 0.4 < st["background"] < 0.9 and 0.2 < st["contrast"] < 1.0
    assert st["spheroid_size_log"] < 0 and 0.003 < st["noise"] < 0.03
    no_mask = image_statistics(r.image, 8, None)
    assert np.isnan(no_mask["contrast"]) and np.isnan(no_mask["spheroid_size_log"])


def test_conformal_scale_covers_the_nominal_fraction():
    rng = np.random.default_rng(1)
    sd = rng.uniform(0.02, 0.1, 2000)
    y = rng.normal(0, sd)
    q = conformal_scale(y[:1000], np.zeros(1000), sd[:1000])
    covered = np.abs(y[1000:]) <= q * sd[1000:]
    assert q == pytest.approx(1.645, abs=0.15) and 0.87 < covered.mean() < 0.93


def test_mc_dropout_is_reproducible_and_spreads():
    torch.manual_seed(0)
    head = build_nvir().regression_head
    feats = torch.randn(5, 512)
    a, b = mc_dropout(head, feats, 16, seed=3), mc_dropout(head, feats, 16, seed=3)
    assert a.shape == (16, 5) and np.array_equal(a, b) and (a.std(axis=0) > 0).all()
    wide = spreads(a, np.array([0.5, 1, 2, 4, 8]), widen_from=2.0)
    assert np.allclose(wide / np.maximum(a.std(axis=0), 1e-3), [1, 1, 1, 2, 4])


# --------------------------------------------------------------------------- tiny model


def _render(seed, **cond):
    c = Conditions(width=cond.pop("width", SIDE), height=cond.pop("height", SIDE),
                   bits=cond.pop("bits", 8), **cond)
    v = 0.3 + 0.7 * ((seed * 7919) % 100) / 100
    return render_spheroid(v, seed, c)


def _inputs(scorer, renders):
    xs, st = [], []
    for r in renders:
        bits = 8 if r.image.dtype == np.uint8 else 12
        xs.append(scorer.preprocess(r.image, bit_depth=bits, mask=r.mask))
        st.append(scorer.image_statistics(r.image, bit_depth=bits, mask=r.mask))
    return np.stack(xs), st


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random-weight model, summarised on 48 training-range renders (36 fit,
    12 held out) with a fixed interval scale."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny")
    plain = save_model(folder / "plain.safetensors", build_nvir(), SPEC,
                       {"provenance": {"source": "random weights"}})
    scorer = Scorer.from_path(plain, fast_path="fp32", use_cache=False, threads=1)
    x, st = _inputs(scorer, [_render(s) for s in range(48)])
    feats = scorer.features(x).double().numpy()
    rows = np.stack([statistics_vector(s) for s in st])
    summary = fit_summary(feats[:36], rows[:36], feats[36:], rows[36:],
                          info={"images": 36, "source": "renders"})
    widen = float(np.quantile(summary.held_out, 0.9))
    judged = add_trust(plain, folder / "judged.safetensors", summary,
                       IntervalCalibration(scale=1.645, widen_from=widen))
    return plain, judged


def _assess(path, renders):
    scorer = Scorer.from_path(path, fast_path="fp32", use_cache=False, threads=1)
    x, st = _inputs(scorer, renders)
    return scorer.assess_tensors(x, st)


def test_training_range_renders_are_mostly_not_flagged(tiny):
    out = _assess(tiny[1], [_render(s) for s in range(100, 120)])
    assert sum(a.unlike_training for a in out) <= 2
    assert all(a.typicality is not None and a.low <= a.viability <= a.high and a.low < a.high
               for a in out)


@pytest.mark.parametrize("shift", [
    {"illumination": 0.3},  # a much darker lamp (training 0.58–0.72)
    {"diameter_frac": 0.05},  # far lower magnification (training 0.15–0.45)
    {"bits": 16},  # 12-bit data (training: 8-bit)
])
def test_renders_with_shifted_illumination_magnification_or_bit_depth_are_flagged(tiny, shift):
    out = _assess(tiny[1], [_render(s, **shift) for s in range(200, 212)])
    assert sum(a.unlike_training for a in out) >= 10
    assert np.median([a.typicality for a in out]) == 0.0


def test_intervals_widen_on_out_of_range_images(tiny):
    inside = _assess(tiny[1], [_render(s) for s in range(300, 312)])
    outside = _assess(tiny[1], [_render(s, illumination=0.3) for s in range(300, 312)])
    width = [np.median([a.high - a.low for a in out]) for out in (inside, outside)]
    assert width[1] > 1.5 * width[0]


def test_the_summary_survives_the_file_and_the_weights_stay_byte_identical(tiny):
    plain, judged = tiny
    a, b = load_file(plain), load_file(judged)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(set(b) - set(a)) == ["typicality.components", "typicality.mean",
                                       "typicality.variances"]
    m = load_model(judged)
    assert m.summary is not None and m.intervals is not None and m.intervals.scale == 1.645
    assert "36 training images summarised" in describe(m.summary)


def test_a_model_file_without_a_summary_still_loads_and_says_the_check_is_unavailable(tiny):
    m = load_model(tiny[0])
    assert m.summary is None and m.intervals is None
    assert describe(m.summary).startswith("unavailable")
    out = _assess(tiny[0], [_render(1)])
    assert out[0].typicality is None and out[0].low is None and not out[0].unlike_training
    scorer = Scorer.from_path(tiny[0], fast_path="fp32", use_cache=False, threads=1)
    x, _ = _inputs(scorer, [_render(1)])
    assert out[0].viability == pytest.approx(float(scorer.score_tensors(x)[0]), abs=1e-6)


# --------------------------------------------------------------------------- demo model


def test_demo_model_flags_real_spheroids_and_not_its_own_renders():
    """The plainest demonstration that the check works: the bundled synthetic model
    calls the real ImageXpress spheroids unlike its training images, and images the
    renderer draws in its training ranges mostly not."""
    loaded = load_model(demo_model_path())
    assert loaded.summary is not None and loaded.intervals is not None
    scorer = Scorer(loaded, fast_path="fp32", use_cache=False, threads=1)
    xs, st = [], []
    for p in sorted(REAL.glob("spheroid_*.tif")):
        img = read_image(p)
        seg = segment(img.pixels, bit_depth=img.bit_depth)
        xs.append(scorer.preprocess(img.pixels, bit_depth=img.bit_depth, mask=seg.mask))
        st.append(scorer.image_statistics(img.pixels, bit_depth=img.bit_depth, mask=seg.mask))
    real = scorer.assess_tensors(np.stack(xs), st)
    assert all(a.unlike_training for a in real)
    xs, st = [], []
    for s in range(12):
        r = render_spheroid(0.2 + 0.07 * s, 5000 + s, Conditions(width=1024, height=1024, bits=8))
        seg = analyse(r.image, bit_depth=8)
        xs.append(scorer.preprocess(r.image, bit_depth=8, mask=seg.segmentation.mask))
        st.append(scorer.image_statistics(r.image, bit_depth=8, mask=seg.segmentation.mask))
    own = scorer.assess_tensors(np.stack(xs), st)
    assert sum(a.unlike_training for a in own) <= 2
