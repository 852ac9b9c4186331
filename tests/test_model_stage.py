"""Scoring inside the engine: viability and model on each image with a spheroid; off without a model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nvir_agent.cli.main import main
from nvir_agent.config import Config
from nvir_agent.errors import ModelLoadError
from nvir_agent.model import locate
from nvir_agent.model.modelfile import save_model
from nvir_agent.model.network import build_nvir
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.pipeline.contract import Analysis, ImageRecord
from nvir_agent.pipeline.scoring import NOT_SCORED, ScoreStage
from nvir_agent.plate import ImageKey
from nvir_agent.synth.render import Conditions, render_spheroid


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("models")
    net = build_nvir()
    square = save_model(d / "tiny.safetensors", net, PreprocessSpec(size=64))
    around = save_model(
        d / "tiny-spheroid.safetensors",
        net,
        PreprocessSpec(size=64, crop="spheroid", intensity="bitdepth"),
    )
    return square, around


@pytest.fixture(autouse=True)
def no_demo_model(monkeypatch, tmp_path):
    monkeypatch.setattr(locate, "demo_model_path", lambda: tmp_path / "no-demo.safetensors")


def config_for(model: Path | None) -> Config:
    cfg = Config()
    cfg.model.path = str(model) if model else ""
    cfg.model.fast_path = "fp32"
    cfg.model.low_priority = False
    return cfg


def analysis(i: int, pixels=None, found=None, mask=None, path="x.png") -> Analysis:
    rec = ImageRecord(id=i, path=Path(path), key=ImageKey(), size=1, mtime=0.0)
    return Analysis(
        record=rec,
        pixels=pixels,
        bit_depth=8 if pixels is not None else None,
        found=found,
        mask=mask,
    )


def test_images_with_a_spheroid_get_viability_and_model_name(tiny_models):
    stage = ScoreStage(config_for(tiny_models[0]))
    rng = np.random.default_rng(0)
    batch = [
        analysis(i, rng.integers(0, 256, (80, 100), dtype=np.uint8), found=True) for i in range(3)
    ]
    batch.append(analysis(9, rng.integers(0, 256, (80, 100), dtype=np.uint8), found=False))
    stage.run(batch)
    assert all(isinstance(a.viability, float) for a in batch[:3])
    assert batch[0].model.startswith("tiny.safetensors@")
    assert batch[3].viability is None and batch[3].model is None  # no spheroid: not scored


def test_spheroid_crop_model_scores_around_the_mask_and_flags_images_without_one(tiny_models):
    stage = ScoreStage(config_for(tiny_models[1]))
    img = np.full((80, 100), 200, dtype=np.uint8)
    mask = np.zeros((80, 100), dtype=bool)
    mask[30:50, 40:60] = True
    with_mask = analysis(1, img, found=True, mask=mask)
    without = analysis(2, img, found=None, mask=None)
    stage.run([with_mask, without])
    assert with_mask.viability is not None
    assert without.viability is None and NOT_SCORED in without.qc and not without.failed


def test_without_a_model_scoring_is_off_and_says_how_to_get_one(caplog):
    with caplog.at_level(logging.WARNING):
        stage = ScoreStage(config_for(None))
    assert not stage.enabled
    assert "Scoring is off" in caplog.text and "nvir-agent model import" in caplog.text
    a = analysis(1, np.zeros((10, 10), dtype=np.uint8), found=True)
    stage.run([a])
    assert a.viability is None and not a.failed


def test_a_configured_model_that_cannot_load_stops_the_engine_at_start(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(ModelLoadError, match="broken.safetensors"):
        ScoreStage(config_for(bad))


def test_stage_reads_the_file_when_no_earlier_stage_did(tiny_models, tmp_path):
    p = tmp_path / "img.png"
    cv2.imwrite(str(p), np.full((60, 80), 120, dtype=np.uint8))
    a = analysis(1, None, path=str(p))
    ScoreStage(config_for(tiny_models[0])).run([a])
    assert a.viability is not None


@pytest.fixture
def acquisition(tmp_path):
    img = render_spheroid(0.9, seed=3, conditions=Conditions(width=320, height=240, bits=8)).image
    path = tmp_path / "PLATE1_B03_s1_w1.png"
    cv2.imwrite(str(path), img)
    return path


def _process(tmp_path, image, model, capsys):
    cfg = tmp_path / "agent.toml"
    lines = [
        f'[storage]\ndatabase = "{tmp_path / "db.sqlite3"}"',
        "[model]",
        'fast_path = "fp32"',
        "low_priority = false",
    ]
    if model:
        lines.append(f'path = "{model}"')
    cfg.write_text("\n".join(lines) + "\n")
    rc = main(["--config", str(cfg), "process", str(image), "--json"])
    out, err = capsys.readouterr()
    return rc, [json.loads(x) for x in out.splitlines() if x.startswith("{")], err


def test_process_json_gains_viability_and_model(tiny_models, acquisition, tmp_path, capsys):
    rc, rows, _ = _process(tmp_path, acquisition, tiny_models[0], capsys)
    assert rc == 0 and len(rows) == 1
    assert rows[0]["found"] is True
    assert isinstance(rows[0]["viability"], float)
    assert rows[0]["model"].startswith("tiny.safetensors@")


def test_process_without_a_model_still_segments_and_says_scoring_is_off(
    acquisition, tmp_path, capsys
):
    rc, rows, err = _process(tmp_path, acquisition, None, capsys)
    assert rc == 0 and rows[0]["found"] is True
    assert rows[0]["viability"] is None
    assert "Scoring is off" in err and "nvir-agent model import" in err
