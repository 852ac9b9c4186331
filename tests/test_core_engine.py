"""The engine: resuming, failures, listeners, status, and surviving SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from core_helpers import RecordingStage, make_config, running, wait_until, write_file

from nvir_agent.core.engine import Engine, read_status
from nvir_agent.errors import ConfigError, ModelLoadError
from nvir_agent.plate import ImageKey
from nvir_agent.store import Store, StoreReader, database_path


def test_pending_jobs_from_a_previous_run_are_resumed_at_start(tmp_path):
    acq = tmp_path / "acq"
    files = [write_file(acq / f"P_C{c:02d}_s1_w1.tif") for c in range(1, 4)]
    cfg = make_config(tmp_path, [])  # no folders: only the store can bring them back
    with Store(database_path(cfg)) as s:  # job rows written, then the agent died
        s.add_jobs([(str(f), f.stat().st_size, f.stat().st_mtime, ImageKey()) for f in files])
    stage = RecordingStage()
    with running(cfg, stage) as engine:
        assert wait_until(lambda: engine.status().done == 3)
    assert sorted(stage.paths()) == sorted(map(str, files))


def test_files_already_analysed_are_not_analysed_again_after_a_restart(tmp_path):
    acq = tmp_path / "acq"
    same = write_file(acq / "P_D01_s1_w1.tif")
    changed = write_file(acq / "P_D02_s1_w1.tif")
    cfg = make_config(tmp_path, [acq])
    first = RecordingStage()
    with running(cfg, first) as engine:
        assert wait_until(lambda: engine.status().done == 2)
    write_file(changed, b"II*\x00" + b"\x01" * 200)  # rewritten while the agent was down
    added = write_file(acq / "P_D03_s1_w1.tif")
    second = RecordingStage()
    with running(cfg, second) as engine:
        assert wait_until(lambda: engine.status().done == 3)
        assert engine.wait_idle(3)
    assert sorted(second.paths()) == sorted([str(changed), str(added)])
    assert str(same) not in second.paths()


class FatalStage:
    name = "fatal"

    def run(self, batch):
        raise ModelLoadError("The model file m.nvir is truncated.", "Copy it again.")


def test_fatal_stage_error_stops_the_engine_and_keeps_the_jobs(tmp_path):
    acq = tmp_path / "acq"
    write_file(acq / "P_E01_s1_w1.tif")
    engine = Engine(make_config(tmp_path, [acq]), stages=[FatalStage()], listeners=[])
    engine.start()
    try:
        assert engine.wait(10)
        assert wait_until(lambda: engine.error is not None, 5)
    finally:
        engine.stop()
    assert "truncated" in engine.error.message
    with StoreReader(engine.database) as r:
        assert r.counts().pending == 1
        [row] = r.export_rows()
    assert row["attempts"] == 0  # a broken model does not count against the image


class BuggyStage:
    name = "buggy"

    def run(self, batch):
        raise RuntimeError("index out of range")


def test_unexpected_stage_exception_fails_the_batch_and_the_engine_carries_on(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    with running(make_config(tmp_path, [acq]), BuggyStage()) as engine:
        f = write_file(acq / "P_E02_s1_w1.tif")
        assert wait_until(lambda: engine.status().failed == 1)
        assert "index out of range" in engine.store.image(str(f))["error"]
        write_file(acq / "P_E03_s1_w1.tif")
        assert wait_until(lambda: engine.status().failed == 2)
        assert engine.status().running


def test_listeners_get_committed_ids_and_a_failing_listener_is_harmless(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    got: list[int] = []

    class Collect:
        def on_results(self, image_ids):
            got.extend(image_ids)

    class Broken:
        def on_results(self, image_ids):
            raise ValueError("monitor bug")

    with running(make_config(tmp_path, [acq]), RecordingStage(), [Broken(), Collect()]) as e:
        f = write_file(acq / "P_F01_s1_w1.tif")
        assert wait_until(lambda: len(got) == 1)
        assert e.store.image(str(f))["id"] == got[0]
        write_file(acq / "P_F02_s1_w1.tif")
        assert wait_until(lambda: len(got) == 2)


def test_status_snapshot_is_visible_to_another_reader(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    cfg = make_config(tmp_path, [acq])
    with running(cfg, RecordingStage()) as engine:
        write_file(acq / "P_G01_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)
        assert wait_until(lambda: read_status(cfg).done == 1 and read_status(cfg).running, 10)
        seen = read_status(cfg)
    assert seen.pid == os.getpid()
    assert [(f.folder, f.mode, f.health) for f in seen.folders] == [
        (str(acq), "native", "watching")]
    after = read_status(cfg)
    assert not after.running and after.done == 1


def test_a_second_agent_on_the_same_database_is_refused(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    cfg = make_config(tmp_path, [acq])
    with Store(database_path(cfg)) as s:  # a live agent (our parent process) beats
        s.write_heartbeat({"running": True}, started_at=0.0, pid=os.getppid())
    second = Engine(cfg, stages=[RecordingStage()], listeners=[])
    with pytest.raises(ConfigError, match="already running"):
        second.start()
    second.stop()
    with Store(database_path(cfg)) as s:  # a killed agent's last beat does not block
        s.write_heartbeat({"running": True}, started_at=0.0, pid=2**22 + 12345)
    with running(cfg, RecordingStage()) as third:
        assert third.status().running


def test_importing_the_engine_imports_no_torch_opencv_or_qt():
    heavy = ("torch", "torchvision", "cv2", "PySide6")
    code = ("import sys, nvir_agent.core.engine, nvir_agent.cli.core; "
            f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == ""


def test_an_engine_runs_only_the_stages_and_listeners_it_is_given(tmp_path):
    engine = Engine(make_config(tmp_path, []))
    try:
        assert engine.stages == [] and engine.listeners == []
    finally:
        engine.close()


def _done_snapshot(db: Path) -> dict[str, tuple]:
    with StoreReader(db) as r:
        return {m.path: (m.state, m.attempts, m.measured_at) for m in r.iter_measurements()}


@pytest.mark.slow
def test_agent_killed_mid_run_loses_nothing_and_processes_nothing_twice(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    big = np.zeros((1000, 1000), np.uint8)  # decoding and analysis take a few ms each
    n = 60
    for i in range(n):
        cv2.imwrite(str(acq / f"K{i:03d}_A01_s1_w1.png"), big)
    cfg = tmp_path / "agent.toml"
    db = tmp_path / "agent.sqlite3"
    cfg.write_text(
        f'[watch]\nfolders = ["{acq}"]\nsettle_s = 0.2\nrescan_interval_s = 0.0\n'
        f'[storage]\ndatabase = "{db}"\n[model]\nbatch_size = 4\n', encoding="utf-8")
    cmd = [sys.executable, "-m", "nvir_agent", "--config", str(cfg), "run", "--headless"]

    def finished() -> int:  # done or failed (the real analysis may find no spheroid)
        try:
            with StoreReader(db) as r:
                c = r.counts()
        except Exception:
            return 0
        return c.done + c.failed

    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: finished() >= 1, 60, step=0.01)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    before = _done_snapshot(db)
    states = [v[0] for v in before.values()]
    assert states.count("pending") > 0, "the kill came too late to leave pending jobs"

    late = acq / "K999_A02_s1_w1.png"  # arrives while the agent is down
    cv2.imwrite(str(late), big)
    log = tmp_path / "second.log"
    with open(log, "w") as fh:
        second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh)
        try:
            assert wait_until(lambda: finished() == n + 1, 90)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    err = log.read_text()
    assert second.returncode == 0, err
    after = _done_snapshot(db)
    assert len(after) == n + 1 and {v[0] for v in after.values()} <= {"done", "failed"}
    # every analysed image has its measurement
    assert all(v[2] is not None for v in after.values() if v[0] == "done")
    for path, (state, attempts, created) in before.items():
        if state != "pending":  # committed before the kill: never analysed again
            assert after[path] == (state, attempts, created)
        else:  # interrupted or not started: analysed once more, to completion
            assert after[path][1] == attempts + 1
    assert "Engine stopped" in err and "Traceback" not in err


def test_a_paused_engine_records_new_images_and_analyses_them_on_resume(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    cfg = make_config(tmp_path, [acq])
    stage = RecordingStage()
    with running(cfg, stage) as engine:
        engine.pause()
        assert engine.status().paused
        files = [write_file(acq / f"P_E{c:02d}_s1_w1.tif") for c in range(1, 4)]
        assert wait_until(lambda: engine.status().pending == 3)  # recorded, not analysed
        assert stage.paths() == []
        assert wait_until(lambda: read_status(cfg).paused)  # other processes see it
        engine.resume()
        assert wait_until(lambda: engine.status().done == 3)
        assert not engine.status().paused
    assert sorted(stage.paths()) == sorted(map(str, files))
