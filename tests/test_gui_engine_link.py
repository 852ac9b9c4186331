"""The tray's link to a real running engine (``app.build_engine`` on a temp folder,
rendered bright-field images, no model so it stays fast): start, status
snapshots, pause, resume and stop with no image lost."""

from __future__ import annotations

import cv2
import pytest

from nvir_agent.config import Config, ModelConfig, StorageConfig, WatchConfig
from nvir_agent.gui import workers
from nvir_agent.gui.engine_link import EngineController
from nvir_agent.store import StoreReader
from nvir_agent.synth.render import Conditions, render_spheroid


def write_images(folder, wells, read=1) -> None:
    """One read of plate PLATE1 as an ImageXpress would name it."""
    out = folder / f"TimePoint_{read}"
    out.mkdir(exist_ok=True)
    for i, well in enumerate(wells):
        img = render_spheroid(0.9, 100 * read + i, Conditions(width=256, height=256)).image
        cv2.imwrite(str(out / f"PLATE1_{well}_s1_w1.tif"), img)


def counts(db):
    with StoreReader(db) as r:
        return r.counts()


@pytest.fixture
def running(qtbot, tmp_path, no_leaked_workers):
    acq = tmp_path / "acq"
    acq.mkdir()
    db = tmp_path / "agent.sqlite3"
    config = Config(watch=WatchConfig(folders=[str(acq)], settle_s=0.2, rescan_interval_s=0.0,
                                      observer="polling", poll_interval_s=0.2,
                                      naming="imagexpress"),
                    storage=StorageConfig(database=str(db)),
                    model=ModelConfig(enabled=False))
    controller = EngineController(config, poll_ms=200)
    snaps = []
    controller.snapshot.connect(snaps.append)
    failures = []
    controller.failed.connect(failures.append)
    yield controller, acq, db, snaps
    if controller.engine is not None:
        with qtbot.waitSignal(controller.stopped, timeout=30000):
            controller.stop()
    assert workers.wait_for_workers(10000)
    assert not failures, failures


def test_real_engine_starts_pauses_resumes_and_stops_without_losing_an_image(
        qtbot, running):
    controller, acq, db, snaps = running
    write_images(acq, ["A01", "A02", "B01"])
    controller.start()
    qtbot.waitUntil(lambda: controller.engine is not None, timeout=30000)
    qtbot.waitUntil(lambda: bool(snaps) and snaps[-1].status.done == 3, timeout=30000)
    snap = snaps[-1]
    assert snap.status.running and not snap.paused and snap.status.pending == 0
    assert [(f.folder, f.health) for f in snap.status.folders] == [(str(acq), "watching")]

    controller.pause()
    qtbot.waitUntil(lambda: snaps[-1].paused and snaps[-1].status.paused, timeout=10000)
    write_images(acq, ["C01", "C02"], read=2)
    # noticed and recorded while paused, not analysed
    qtbot.waitUntil(lambda: counts(db).pending == 2, timeout=30000)
    qtbot.wait(1000)
    assert counts(db).done == 3

    controller.resume()
    qtbot.waitUntil(lambda: snaps[-1].status.done == 5 and not snaps[-1].paused,
                    timeout=30000)

    controller.pause()
    write_images(acq, ["D01", "D02"], read=3)
    qtbot.waitUntil(lambda: counts(db).pending == 2, timeout=30000)
    with qtbot.waitSignal(controller.stopped, timeout=30000):
        controller.stop()
    assert controller.engine is None
    c = counts(db)
    assert (c.seen, c.done, c.pending, c.failed) == (7, 5, 2, 0)  # the paused ones are kept

    snaps.clear()  # started again: the kept images are analysed
    controller.start()
    qtbot.waitUntil(lambda: bool(snaps) and snaps[-1].status.done == 7, timeout=30000)
    assert counts(db).pending == 0
