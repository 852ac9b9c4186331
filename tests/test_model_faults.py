"""The model file missing, corrupt or replaced while the real agent runs (real engine,
real image workers, tiny models on temporary folders): images are still read and
measured and wait for a score, the operator is told, and once a usable file is in
place the waiting images are scored."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import pytest
import torch
from core_helpers import wait_until

from nvir_agent.app import build_engine
from nvir_agent.config import Config, config_from_dict
from nvir_agent.core.status import EngineStatus, read_status
from nvir_agent.gui.tray_state import TraySnapshot, tooltip, tray_state
from nvir_agent.model import locate
from nvir_agent.model.modelfile import save_model
from nvir_agent.model.network import build_nvir
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.monitor.counting import NOT_SCORED, image_verdict
from nvir_agent.monitor.notify import Message
from nvir_agent.store import AWAITING_MODEL, ImageScore, StoreReader
from nvir_agent.synth.render import Conditions, render_spheroid


@pytest.fixture(autouse=True)
def no_demo_model(monkeypatch, tmp_path):
    monkeypatch.setattr(locate, "demo_model_path", lambda: tmp_path / "no-demo.safetensors")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two small model files with different weights (so different names)."""
    d = tmp_path_factory.mktemp("models")
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(save_model(d / f"m{seed}.safetensors", build_nvir(), PreprocessSpec(size=64)))
    return out


class Recorder:
    """A notification sink that keeps what it is sent."""

    name = "recorder"

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)

    def told(self) -> str:
        with self._lock:
            return "\n".join(f"{m.title}\n{m.body}" for m in self.messages)


def spheroid_png(path: Path, seed: int) -> Path:
    img = render_spheroid(0.9, seed=seed, conditions=Conditions(width=320, height=240,
                                                                 bits=8)).image
    assert cv2.imwrite(str(path), img)
    return path


def agent_config(tmp_path: Path, model: Path) -> Config:
    watched = tmp_path / "acq"
    watched.mkdir()
    raw = {
        "watch": {"folders": [str(watched)], "settle_s": 0.2, "rescan_interval_s": 0.0,
                  "poll_interval_s": 0.2},
        "storage": {"database": str(tmp_path / "agent.sqlite3")},
        "model": {"path": str(model), "fast_path": "fp32", "low_priority": False,
                  "threads": 1, "batch_size": 4},
        "imaging": {"workers": 1},
        "notify": {"min_interval_s": 0.5},
    }
    return config_from_dict(raw, source=tmp_path / "agent.toml", check_folders=False)


def rows(db: Path) -> dict[str, dict]:
    with StoreReader(db) as reader:
        return {Path(r["path"]).name: r for r in reader.export_rows()}


@pytest.mark.slow
def test_model_missing_corrupt_and_replaced_while_running_scores_every_image_once_usable(
        tmp_path, two_models, caplog):
    model_a, model_b = two_models
    model = tmp_path / "nvir.safetensors"
    model.write_bytes(model_a.read_bytes())
    config = agent_config(tmp_path, model)
    db = tmp_path / "agent.sqlite3"
    watched = tmp_path / "acq"
    sink = Recorder()
    engine = build_engine(config, sinks=[sink])
    engine.start()

    def done(n: int) -> bool:
        return engine.status().done == n and engine.status().pending == 0

    try:
        with caplog.at_level(logging.INFO):
            spheroid_png(watched / "P1_B02_s1_w1.png", 1)
            assert wait_until(lambda: done(1), 120)
            name_a = rows(db)["P1_B02_s1_w1.png"]["model"]
            assert name_a.startswith("nvir.safetensors@")

            # replaced by another good model: the next image is scored with it
            model.write_bytes(model_b.read_bytes())
            spheroid_png(watched / "P1_B03_s1_w1.png", 2)
            assert wait_until(lambda: done(2), 120)
            name_b = rows(db)["P1_B03_s1_w1.png"]["model"]
            assert name_b.startswith("nvir.safetensors@") and name_b != name_a
            assert "was replaced" in caplog.text

            # missing: measured, recorded without a score, the operator told
            model.unlink()
            spheroid_png(watched / "P1_B04_s1_w1.png", 3)
            assert wait_until(lambda: done(3), 120)
            r = rows(db)["P1_B04_s1_w1.png"]
            assert r["state"] == "done" and r["found"] is True and r["viability"] is None
            assert AWAITING_MODEL in r["qc"] and r["area_px"] > 0
            (problem,) = engine.status().problems
            assert str(model) in problem and "cannot be found" in problem
            assert engine.error is None and engine.status().running
            # `nvir-agent status` in another process sees it through the heartbeat
            assert wait_until(lambda: problem in read_status(config).problems, 30)

            # corrupt (a copy that stopped half way): the same, with the reason
            model.write_bytes(model_a.read_bytes()[:5000])
            spheroid_png(watched / "P1_B05_s1_w1.png", 4)
            assert wait_until(lambda: done(4), 120)
            r = rows(db)["P1_B05_s1_w1.png"]
            assert r["viability"] is None and AWAITING_MODEL in r["qc"]
            (problem,) = engine.status().problems
            assert str(model) in problem and "truncated" in problem
            # the operator is told both (the notifier may coalesce them into one message)
            assert wait_until(lambda: "cannot be found" in sink.told()
                              and "is truncated" in sink.told(), 30)

            # a good file back, no new image: the waiting images are scored
            model.write_bytes(model_a.read_bytes())
            assert wait_until(lambda: all(r.get("viability") is not None
                                          for r in rows(db).values()), 120)
            assert wait_until(lambda: done(4) and not engine.status().problems, 30)
            assert wait_until(lambda: "can be used again" in sink.told(), 30)
            assert "can be used again" in caplog.text
    finally:
        engine.stop()
    assert engine.error is None
    final = rows(db)
    assert {n: r["model"] for n, r in final.items()} == {
        "P1_B02_s1_w1.png": name_a, "P1_B03_s1_w1.png": name_b,
        "P1_B04_s1_w1.png": name_a, "P1_B05_s1_w1.png": name_a}
    assert not any(AWAITING_MODEL in r["qc"] for r in final.values())
    assert all(r["state"] == "done" and r["error"] is None for r in final.values())


@pytest.mark.slow
@pytest.mark.slow
def test_a_replacing_model_with_other_preprocessing_is_fed_by_the_image_workers_at_once(
        tmp_path, monkeypatch):
    from nvir_agent.imaging.reading import read_image
    from nvir_agent.model.scorer import Scorer
    from nvir_agent.pipeline import scoring

    torch.manual_seed(3)
    spec_a, spec_b = PreprocessSpec(size=64), PreprocessSpec(size=96, intensity="percentile")
    model_a = save_model(tmp_path / "a.safetensors", build_nvir(), spec_a)
    model_b = save_model(tmp_path / "b.safetensors", build_nvir(), spec_b)
    model = tmp_path / "nvir.safetensors"
    model.write_bytes(model_a.read_bytes())
    reread = []  # images the scoring thread had to read again
    original = scoring.ScoreStage._pixels
    monkeypatch.setattr(scoring.ScoreStage, "_pixels",
                        lambda self, a: reread.append(a.record.path.name) or original(self, a))
    config = agent_config(tmp_path, model)
    db, watched = tmp_path / "agent.sqlite3", tmp_path / "acq"
    engine = build_engine(config)
    engine.start()
    try:
        spheroid_png(watched / "P1_C02_s1_w1.png", 1)
        assert wait_until(lambda: engine.status().done == 1, 120)
        model.write_bytes(model_b.read_bytes())
        for i, name in enumerate(("P1_C03_s1_w1.png", "P1_C04_s1_w1.png")):
            spheroid_png(watched / name, 2 + i)
            assert wait_until(lambda i=i: engine.status().done == 2 + i, 120)
        workers = engine._stages[0]
        assert workers.spec == spec_b
    finally:
        engine.stop()
    # an image prepared the old way before the new file was seen (the stage also looks
    # while idle, so there may be none) is read again; the next one the worker
    # processes already prepare for the new model
    assert "P1_C04_s1_w1.png" not in reread and set(reread) <= {"P1_C03_s1_w1.png"}
    got = rows(db)
    direct = Scorer.from_path(model_b, fast_path="fp32", use_cache=False)
    for name in ("P1_C03_s1_w1.png", "P1_C04_s1_w1.png"):
        img = read_image(watched / name)
        expected = float(direct.score([img.pixels], bit_depths=[img.bit_depth])[0])
        assert got[name]["viability"] == pytest.approx(expected, abs=1e-4)


def test_images_left_waiting_for_a_score_are_scored_after_a_restart(tmp_path, two_models,
                                                                    caplog):
    model = tmp_path / "nvir.safetensors"
    model.write_bytes(two_models[0].read_bytes())
    config = agent_config(tmp_path, model)
    db = tmp_path / "agent.sqlite3"
    engine = build_engine(config)
    engine.start()
    try:
        model.unlink()  # gone before the first image: it waits for a score
        spheroid_png(tmp_path / "acq" / "P1_B02_s1_w1.png", 1)
        assert wait_until(lambda: engine.status().done == 1, 120)
    finally:
        engine.stop()
    assert AWAITING_MODEL in rows(db)["P1_B02_s1_w1.png"]["qc"]
    model.write_bytes(two_models[0].read_bytes())  # put back while the agent is down
    engine = build_engine(config)
    with caplog.at_level(logging.WARNING):
        engine.start()
        try:
            assert wait_until(lambda: rows(db)["P1_B02_s1_w1.png"].get("viability")
                              is not None, 120)
        finally:
            engine.stop()
    r = rows(db)["P1_B02_s1_w1.png"]
    assert AWAITING_MODEL not in r["qc"] and r["model"].startswith("nvir.safetensors@")
    assert "1 image(s) that waited for a score are analysed again" in caplog.text


def score(qc: tuple[str, ...], viability: float | None = None) -> ImageScore:
    return ImageScore(image_id=1, plate="P1", well="B02", timepoint=1, state="done",
                      found=True, viability=viability, qc=qc)


@pytest.mark.parametrize("role", ["vehicle", "treated", None])
def test_an_image_waiting_for_the_model_does_not_count_and_says_why_in_any_well(role):
    verdict = image_verdict(score((AWAITING_MODEL,)), role)
    assert not verdict.counts
    assert verdict.reason == f"{NOT_SCORED}: waiting for a usable model file"
    # once scored the flag is gone and the image counts like any other
    assert image_verdict(score((), 0.8), role).counts


def test_the_tray_shows_a_problem_the_running_engine_reports():
    problem = "model file /m.safetensors cannot be found: images … wait for a score"
    snap = TraySnapshot(EngineStatus(running=True, database="db", model="model /m",
                                     problems=[problem]))
    assert tray_state(snap) == "error"
    assert problem in tooltip(snap)
    assert tray_state(TraySnapshot(EngineStatus(running=True, database="db",
                                                model="model /m"))) == "watching"
