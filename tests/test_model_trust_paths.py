"""A model that judges trust scores on the fast paths too: the fast path gives the
encoder features, the heads run in fp32 on them, and the path is checked against
fp32 on the viability and on the distance from the training images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nvir_agent.model import fastpath
from nvir_agent.model.bench import run_benchmark
from nvir_agent.model.fastpath import Candidate, choose_fast_path, probe_batch
from nvir_agent.model.modelfile import add_trust, load_model, save_model
from nvir_agent.model.network import Features, build_nvir
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.model.scorer import Scorer
from nvir_agent.model.typicality import fit_summary
from nvir_agent.model.uncertainty import IntervalCalibration

SIZE = 64


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A random-weight model with a training summary of probe images and an interval scale."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("judged")
    plain = save_model(folder / "plain.safetensors", build_nvir(), PreprocessSpec(size=SIZE))
    scorer = Scorer.from_path(plain, fast_path="fp32", use_cache=False, threads=1)
    feats = scorer.features(probe_batch(SIZE, n=24, seed=9)).double().numpy()
    rows = np.tile([12.0, 8.0, 0.65, 0.6, -1.3, 0.005], (24, 1))
    summary = fit_summary(feats[:16], rows[:16], feats[16:], rows[16:], info={"images": 16})
    return add_trust(plain, folder / "judged.safetensors", summary,
                     IntervalCalibration(scale=1.6, widen_from=2.0))


def _assess(path, fast_path, x):
    s = Scorer(load_model(path), fast_path=fast_path, use_cache=False, threads=1)
    return s, s.assess_tensors(x)


@pytest.mark.parametrize("path", ["fp32-cl", "onnx"])
def test_the_fast_path_gives_features_and_the_assessment_matches_fp32(judged, path,
                                                                      fp32_measured_slowest):
    if path == "onnx" and not fastpath.onnxruntime_available():
        pytest.skip("ONNX Runtime is not installed")
    x = probe_batch(SIZE, n=6, seed=3).numpy()
    _, ref = _assess(judged, "fp32", x)
    s, got = _assess(judged, path, x)
    assert s.judges_trust and s.fast_path == path
    assert s.choice.chosen.run(torch.from_numpy(x)).shape == (6, 512)
    assert s.choice.max_distance_delta[path] < 1e-3
    for a, b in zip(got, ref, strict=True):
        assert a.viability == pytest.approx(b.viability, abs=1e-4)
        assert a.distance == pytest.approx(b.distance, rel=1e-3)
        assert a.low == pytest.approx(b.low, abs=1e-4) and a.high == pytest.approx(b.high, abs=1e-4)
        assert a.typicality == pytest.approx(b.typicality, abs=1 / 8)  # 8 held-out images


def test_a_path_that_moves_the_distance_is_rejected_even_when_the_viability_agrees(
        judged, monkeypatch):
    model = load_model(judged)
    summary = model.summary
    features = Features(model.module).eval()
    real = fastpath.build_candidates

    def build(*args, **kwargs):
        reference, _ = real(*args, **kwargs)
        scaled = [Candidate(f"x{k}", lambda k=k: lambda x: reference.run(x) * k, f"× {k}")
                  for k in (1.001, 1.2)]
        return reference, scaled

    monkeypatch.setattr(fastpath, "build_candidates", build)
    choice = choose_fast_path(
        features, torch.device("cpu"), input_size=SIZE, use_cache=False,
        readout=lambda f: np.zeros(len(f)),  # the viability agrees whatever the features
        distance=lambda f: summary.embedding_distances(f) / summary.embedding_scale)
    assert "x1.2" in choice.rejected and "distance" in choice.rejected["x1.2"]
    assert choice.max_distance_delta["x1.001"] < fastpath.MAX_DISTANCE_DELTA
    assert "x1.001" not in choice.rejected


def test_bench_times_the_whole_assessment_of_a_model_that_judges_trust(judged):
    result = run_benchmark(judged, images=8, threads=1, rounds=1)
    assert result.assess_batch8 and result.assess_batch8 > 0
    assert result.max_delta <= fastpath.MAX_DELTA
    assert "with typicality and interval, batch 8" in result.table()
    assert result.max_distance_delta is not None and result.max_distance_delta < 0.02
