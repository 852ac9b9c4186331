"""Scoring: batches, devices, threads, priority, and the fast path's validation and fallback."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from nvir_agent.config import Config
from nvir_agent.errors import ConfigError, ModelLoadError
from nvir_agent.model import fastpath, locate
from nvir_agent.model import scorer as scorer_mod
from nvir_agent.model.fastpath import Candidate, choose_fast_path
from nvir_agent.model.modelfile import load_model, save_model
from nvir_agent.model.network import build_nvir
from nvir_agent.model.preprocess import PreprocessSpec, preprocess
from nvir_agent.model.scorer import Scorer, default_threads, pick_device

SPEC = PreprocessSpec(size=64)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    save_model(path, build_nvir(), SPEC, {"provenance": {"source": "random weights"}})
    return path


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 65535, (90, 120), dtype=np.uint16) for _ in range(n)]


def eager_fp32(path, imgs):
    loaded = load_model(path)
    x = torch.from_numpy(np.stack([preprocess(i, loaded.spec) for i in imgs]))
    with torch.no_grad():
        return loaded.module(x).squeeze(1).numpy()


def test_fp32_scores_equal_the_network_on_preprocessed_images(tiny_model):
    s = Scorer.from_path(tiny_model, fast_path="fp32", threads=1)
    imgs = images(5)
    assert s.fast_path == "fp32"
    np.testing.assert_allclose(s.score(imgs), eager_fp32(tiny_model, imgs), atol=1e-6)


def test_batch_size_does_not_change_scores(tiny_model):
    imgs = images(7, seed=1)
    a = Scorer.from_path(tiny_model, fast_path="fp32", batch_size=3).score(imgs)
    b = Scorer.from_path(tiny_model, fast_path="fp32", batch_size=8).score(imgs)
    assert a.shape == (7,)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_auto_fast_path_stays_within_0_01_of_fp32(tiny_model):
    s = Scorer.from_path(tiny_model, fast_path="auto", threads=1)
    imgs = images(6, seed=2)
    assert np.max(np.abs(s.score(imgs) - eager_fp32(tiny_model, imgs))) <= 0.01
    assert s.choice.images_per_s["fp32"] > 0


def test_score_tensors_rejects_a_batch_of_the_wrong_size(tiny_model):
    s = Scorer.from_path(tiny_model, fast_path="fp32")
    with pytest.raises(ValueError, match=r"\(N, 1, 64, 64\)"):
        s.score_tensors(np.zeros((2, 1, 32, 32), dtype=np.float32))


def _offset_candidates(monkeypatch, offset):
    real = fastpath.build_candidates

    def with_offset(*args, **kwargs):
        reference, fast = real(*args, **kwargs)

        def shifted(c):
            return Candidate(c.name, lambda: lambda x: c.run(x) + offset, c.description)

        extra = Candidate("fake", lambda: lambda x: reference.run(x) + offset, "fake fast path")
        return reference, [shifted(c) for c in fast] + [extra]

    monkeypatch.setattr(fastpath, "build_candidates", with_offset)


def test_a_fast_path_that_drifts_from_fp32_is_rejected_and_fp32_is_used(
    tiny_model, monkeypatch, caplog
):
    _offset_candidates(monkeypatch, 0.05)
    loaded = load_model(tiny_model)
    with caplog.at_level(logging.WARNING, logger="nvir_agent.model.fastpath"):
        choice = choose_fast_path(
            loaded.module, torch.device("cpu"), input_size=64, model_hash=loaded.sha256
        )
    assert choice.chosen.name == "fp32"
    assert "fake" in choice.rejected
    assert "differs from fp32 by 0.05" in caplog.text
    assert "falling back to fp32" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nvir_agent.model.fastpath"):
        again = choose_fast_path(
            loaded.module, torch.device("cpu"), input_size=64, model_hash=loaded.sha256
        )
    assert again.chosen.name == "fp32" and again.from_cache
    assert "did not match fp32" in caplog.text  # said again at every start


def test_a_small_drift_within_the_limit_is_accepted(tiny_model, monkeypatch):
    _offset_candidates(monkeypatch, 0.003)  # reduced precision: limit 0.01 / 3 on the probe
    loaded = load_model(tiny_model)
    choice = choose_fast_path(loaded.module, torch.device("cpu"), input_size=64)
    assert choice.max_delta["fake"] == pytest.approx(0.003, abs=1e-6)
    assert "fake" not in choice.rejected


def test_the_fastest_valid_option_is_chosen_and_remembered(tiny_model, monkeypatch):
    loaded = load_model(tiny_model)
    memo = {}
    real = fastpath.build_candidates

    def build(*args, **kwargs):
        reference, _ = real(*args, **kwargs)

        def instant(x):  # same numbers as fp32, computed once per input
            key = (tuple(x.shape), float(x.sum()))
            if key not in memo:
                memo[key] = reference.run(x)
            return memo[key]

        return reference, [Candidate("instant", lambda: instant, "precomputed")]

    monkeypatch.setattr(fastpath, "build_candidates", build)
    first = choose_fast_path(
        loaded.module, torch.device("cpu"), input_size=64, model_hash=loaded.sha256
    )
    assert first.chosen.name == "instant" and not first.from_cache
    second = choose_fast_path(
        loaded.module, torch.device("cpu"), input_size=64, model_hash=loaded.sha256
    )
    assert second.chosen.name == "instant" and second.from_cache


def test_requesting_fp32_measures_nothing_else(tiny_model):
    s = Scorer.from_path(tiny_model, fast_path="fp32")
    assert s.choice.chosen.name == "fp32" and not s.choice.max_delta


def test_auto_device_is_cpu_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        pytest.skip("Apple MPS is present")
    assert pick_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        pick_device("cuda")


def test_threads_default_to_all_cores_but_one(monkeypatch):
    monkeypatch.setattr(scorer_mod.os, "cpu_count", lambda: 8)
    assert default_threads(0) == 7
    assert default_threads(3) == 3
    monkeypatch.setattr(scorer_mod.os, "cpu_count", lambda: 1)
    assert default_threads(0) == 1


def test_scorer_sets_the_torch_thread_count(tiny_model):
    before = torch.get_num_threads()
    try:
        Scorer.from_path(tiny_model, fast_path="fp32", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_low_priority_renices_once(monkeypatch, tiny_model):
    calls = []
    monkeypatch.setattr(scorer_mod, "_priority_lowered", False)
    monkeypatch.setattr(scorer_mod.sys, "platform", "linux")
    monkeypatch.setattr(scorer_mod, "_nice_every_thread", lambda n: calls.append(n))
    Scorer.from_path(tiny_model, fast_path="fp32", low_priority=True)
    Scorer.from_path(tiny_model, fast_path="fp32", low_priority=True)
    assert calls == [10]


LOWER_FROM_A_THREAD = """
import os, threading, time
from nvir_agent.model.scorer import lower_process_priority
def nice(tid):
    with open(f"/proc/self/task/{tid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[16])
started = threading.Event()
other = threading.Thread(target=lambda: (started.set(), time.sleep(5)), daemon=True)
other.start(); started.wait()
scoring = threading.Thread(target=lower_process_priority)
scoring.start(); scoring.join()
later = []
threading.Thread(target=lambda: later.append(nice(threading.get_native_id()))).start()
time.sleep(0.2)
print(nice(threading.get_native_id()), nice(other.native_id), later[0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice is per thread on Linux")
def test_low_priority_asked_by_one_thread_lowers_every_thread_of_the_agent():
    out = subprocess.run([sys.executable, "-c", LOWER_FROM_A_THREAD], capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert [int(v) for v in out] == [10, 10, 10], "main, watcher-like and later threads"


def test_no_model_and_no_demo_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(locate, "demo_model_path", lambda: tmp_path / "absent.safetensors")
    with pytest.raises(ModelLoadError) as info:
        Scorer.from_config(Config())
    assert "No model to score with" in info.value.message
    assert "nvir-agent model import" in info.value.hint


def test_demo_model_is_used_with_a_warning_when_none_is_configured(monkeypatch, tiny_model, caplog):
    monkeypatch.setattr(locate, "demo_model_path", lambda: tiny_model)
    cfg = Config()
    cfg.model.fast_path = "fp32"
    cfg.model.low_priority = False
    with caplog.at_level(logging.WARNING):
        s = Scorer.from_config(cfg)
    assert s.model.path == tiny_model
    assert "DEMO model" in caplog.text and "synthetic images only" in caplog.text


def test_configured_model_path_is_resolved_against_the_config_file(tiny_model, tmp_path):
    cfg = Config(source=tiny_model.parent / "agent.toml")
    cfg.model.path = tiny_model.name
    cfg.model.fast_path = "fp32"
    cfg.model.low_priority = False
    assert Scorer.from_config(cfg).model.path == tiny_model


def test_a_remembered_choice_that_no_longer_matches_fp32_is_dropped(
    tiny_model, monkeypatch, caplog
):
    loaded = load_model(tiny_model)
    real = fastpath.build_candidates
    offset = {"value": 0.0}
    memo = {}

    def build(*args, **kwargs):
        reference, _ = real(*args, **kwargs)

        def instant(x):
            key = (tuple(x.shape), float(x.sum()))
            if key not in memo:
                memo[key] = reference.run(x)
            return memo[key] + offset["value"]

        return reference, [Candidate("instant", lambda: instant, "precomputed")]

    monkeypatch.setattr(fastpath, "build_candidates", build)
    kwargs = {"input_size": 64, "model_hash": loaded.sha256}
    assert choose_fast_path(loaded.module, torch.device("cpu"), **kwargs).chosen.name == "instant"
    offset["value"] = 0.5  # e.g. a driver or library update broke the fast path
    with caplog.at_level(logging.WARNING, logger="nvir_agent.model.fastpath"):
        again = choose_fast_path(loaded.module, torch.device("cpu"), **kwargs)
    assert again.chosen.name == "fp32" and "falling back to fp32" in caplog.text
    offset["value"] = 0.0
    third = choose_fast_path(loaded.module, torch.device("cpu"), **kwargs)
    assert not third.from_cache  # measured afresh
