"""Overlapping stages: image workers in processes, scoring in its own thread."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import cv2
import numpy as np
import pytest
from core_helpers import (
    BlasThreadsStage,
    CrashOrRaiseStage,
    RecordingStage,
    SleepStage,
    SlowStage,
    make_config,
    running,
    wait_until,
    write_file,
)

from nvir_agent.config import Config
from nvir_agent.core.batches import BatchQueue
from nvir_agent.core.engine import Engine
from nvir_agent.errors import ModelLoadError
from nvir_agent.model.preprocess import PreprocessSpec, preprocess
from nvir_agent.pipeline.contract import Analysis, split_stages
from nvir_agent.pipeline.image_stages import ReadStage, SegmentStage
from nvir_agent.pipeline.workers import WORKER_DIED, ImageWorkers, image_workers
from nvir_agent.plate import ImageKey
from nvir_agent.store.rows import ImageRecord


def _analyses(paths: list[Path]) -> list[Analysis]:
    return [Analysis(record=ImageRecord(i + 1, p, ImageKey(), 1, 0.0))
            for i, p in enumerate(paths)]


def _spheroid(path: Path, radius: int) -> Path:
    img = np.full((160, 160), 170, np.uint8)
    cv2.circle(img, (80, 80), radius, 40, -1)
    cv2.imwrite(str(path), img)
    return path


def test_batch_queue_hands_over_in_order_and_neither_side_waits_for_a_gone_one():
    q: BatchQueue[int] = BatchQueue(1)
    assert q.put(1)
    q.close()
    assert q.get() == 1 and q.get() is None
    q2: BatchQueue[int] = BatchQueue(1)
    assert q2.put(1)
    assert q2.abandon() == [1]
    assert not q2.put(2)  # full and abandoned: returns at once


def test_stages_split_at_the_first_stage_with_its_own_thread():
    read, score, after = SlowStage("read", 0), SlowStage("score", 0, True), SlowStage("x", 0)
    assert split_stages([read, score, after]) == ([read], [score, after])
    assert split_stages([read]) == ([read], [])


def test_workers_default_to_the_scoring_threads_and_follow_the_setting():
    cfg = Config()
    cfg.model.threads = 2
    assert image_workers(cfg) == 2
    cfg.imaging.workers = 3
    assert image_workers(cfg) == 3


def test_image_workers_in_processes_give_what_the_stages_give_in_this_thread(tmp_path):
    paths = [_spheroid(tmp_path / "a.png", 30), _spheroid(tmp_path / "b.png", 45),
             write_file(tmp_path / "bad.png", b"not an image")]
    cfg, spec = Config(), PreprocessSpec(size=64)
    here, there = _analyses(paths), _analyses(paths)
    stages = [ReadStage(cfg), SegmentStage(cfg)]
    ImageWorkers(stages, processes=0, spec=spec).run(here)
    workers = ImageWorkers(stages, processes=2, spec=spec)
    try:
        workers.run(there)
    finally:
        workers.close()
    assert multiprocessing.active_children() == []
    for a, b in zip(here, there, strict=True):
        assert (a.error, a.found, a.qc, a.features, a.outline, a.image_meta) == (
            b.error, b.found, b.qc, b.features, b.outline, b.image_meta)
    assert there[2].failed and "not a TIFF, PNG" in there[2].error
    assert there[0].pixels is None and there[0].mask is None  # the pixels stay in the worker
    expected = preprocess(here[0].pixels, spec, bit_depth=8)
    assert np.array_equal(there[0].network_input, expected)


def test_a_crashed_worker_or_a_bug_fails_only_its_image(tmp_path):
    paths = [tmp_path / n for n in ("P_A01.tif", "CRASH_A02.tif", "RAISE_A03.tif",
                                    "P_A04.tif")]
    batch = _analyses(paths)
    workers = ImageWorkers([CrashOrRaiseStage()], processes=1)
    try:
        workers.run(batch)
        again = _analyses([tmp_path / "P_A05.tif"])
        workers.run(again)  # the pool was started again
    finally:
        workers.close()
    assert multiprocessing.active_children() == []
    ok, crashed, raised, ok2 = batch
    assert ok.found and ok2.found and again[0].found and not ok.failed
    assert crashed.error == WORKER_DIED
    assert "Internal error during analysis" in raised.error and "a bug" in raised.error


def test_each_image_worker_keeps_every_blas_library_to_one_thread(tmp_path, monkeypatch):
    # OpenCV's wheel bundles an OpenBLAS that cv2.setNumThreads does not govern; with a
    # thread per core in every worker, each cv2.gemm woke them all and they spun
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")  # what a worker would otherwise take
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    batch = _analyses([tmp_path / "P_A01.tif"])
    workers = ImageWorkers([BlasThreadsStage()], processes=1)
    try:
        workers.run(batch)
    finally:
        workers.close()
    blas = batch[0].image_meta["blas"]
    assert blas, "no BLAS library found in the worker"
    assert any("opencv" in path for path in blas), blas
    assert set(blas.values()) == {1}, blas


def test_stages_that_cannot_go_to_another_process_run_in_this_thread():
    workers = ImageWorkers([RecordingStage()], processes=2)  # holds a lock
    assert workers.processes == 0


def test_the_next_batch_is_prepared_while_the_one_before_is_scored(tmp_path):
    acq = tmp_path / "acq"
    files = [write_file(acq / f"P_A{c:02d}_s1_w1.tif") for c in range(1, 9)]
    cfg = make_config(tmp_path, [acq])
    cfg.model.batch_size = 2
    prepare, score = SlowStage("read", 0.15), SlowStage("score", 0.15, own_thread=True)
    engine = Engine(cfg, stages=[prepare, score])
    try:
        rows = engine.process_paths(files)
    finally:
        engine.close()
    assert [r["state"] for r in rows] == ["done"] * 8
    assert {s[0] for s in score.spans} == {"nvir-score"}
    # batch k + 1 was being prepared while batch k was scored
    assert any(p[1] < s[2] and s[1] < p[2] for p in prepare.spans[1:] for s in score.spans)


def test_more_image_workers_than_the_batch_size_all_work_at_once(tmp_path):
    # a machine with many cores: batches of the model's size (2 here) kept all but
    # two of the six worker processes waiting
    spans = tmp_path / "spans"
    spans.mkdir()
    files = [write_file(tmp_path / "acq" / f"P_A{c:02d}_s1_w1.tif") for c in range(1, 13)]
    cfg = make_config(tmp_path, [])
    cfg.model.batch_size = 2
    engine = Engine(cfg, stages=[ImageWorkers([SleepStage(0.5, spans)], processes=6)])
    try:
        rows = engine.process_paths(files)
    finally:
        engine.close()
    assert [r["state"] for r in rows] == ["done"] * 12
    times = [tuple(map(float, f.read_text().split())) for f in spans.iterdir()]
    assert len(times) == 12  # each image once
    busy_at_once = max(sum(s <= t < e for s, e in times) for t, _ in times)
    assert busy_at_once >= 5, f"at most {busy_at_once} of 6 workers were busy at once"


def test_scoring_takes_a_third_of_the_cores_beside_image_workers(tmp_path):
    from nvir_agent.app import build_engine
    from nvir_agent.pipeline.scoring import ScoreStage, threads_beside_workers

    assert [threads_beside_workers(t, w) for t, w in ((2, 2), (1, 1), (16, 16), (6, 0))] == [
        1, 1, 5, 6]
    cfg = make_config(tmp_path, [])
    cfg.model.threads, cfg.model.fast_path = 6, "fp32"  # the bundled demo model
    engine = build_engine(cfg)
    try:
        workers, score = engine._stages[0], engine._stages[-1]
        assert isinstance(workers, ImageWorkers) and workers.processes == 6
        assert isinstance(score, ScoreStage) and score.scorer is not None
        assert score.scorer.threads == 2
    finally:
        engine.close()


def test_the_watching_engine_overlaps_and_a_fatal_scoring_error_keeps_the_jobs(tmp_path):
    class FatalScore:
        name, own_thread = "score", True

        def run(self, batch):
            raise ModelLoadError("The model cannot load.")

    acq = tmp_path / "acq"
    cfg = make_config(tmp_path, [acq])
    prepare = SlowStage("read", 0.05)
    with running(cfg, prepare) as engine:  # no scoring stage: commits still in order
        files = [write_file(acq / f"P_A{c:02d}_s1_w1.tif") for c in range(1, 4)]
        assert wait_until(lambda: engine.status().done == 3)
    engine = Engine(cfg, stages=[SlowStage("read", 0), FatalScore()])
    engine.start()
    try:
        write_file(acq / "P_B01_s1_w1.tif")
        assert wait_until(lambda: engine.error is not None)
    finally:
        engine.stop()
    engine2 = Engine(cfg, stages=[])
    try:
        row = engine2.store.image(str(acq / "P_B01_s1_w1.tif"))
        assert row["state"] == "pending" and row["attempts"] == 0  # the attempt was given back
        assert all(engine2.store.image(str(f))["state"] == "done" for f in files)
    finally:
        engine2.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_process_with_image_workers_analyses_each_image_once(tmp_path, workers):
    from nvir_agent.app import build_engine

    paths = [_spheroid(tmp_path / f"P_A{i:02d}_s1_w1.png", 20 + 3 * i) for i in range(1, 6)]
    cfg = make_config(tmp_path, [])
    cfg.model.enabled = False
    cfg.model.batch_size = 2
    cfg.imaging.workers = workers
    engine = build_engine(cfg)
    try:
        rows = engine.process_paths(paths)
    finally:
        engine.close()
    assert multiprocessing.active_children() == []
    assert [r["state"] for r in rows] == ["done"] * 5
    assert all(r["found"] for r in rows)
