"""Odd file names, symbolic links and failing paths: none of them stops the agent.

Names that are not valid UTF-8 (a Latin-1 share mounted on Linux), links back
to a parent folder or to a sibling, hard links, and paths whose handling
raises: each good image is analysed exactly once and the engine keeps running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from core_helpers import RecordingStage, make_config, running, wait_until, write_file

from nvir_agent.core import engine as engine_mod
from nvir_agent.ingest.filenames import try_parse_path
from nvir_agent.ingest.pathnames import from_db, readable, to_db
from nvir_agent.ingest.watch import LinkPolicy, iter_candidates
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.plate import ImageKey
from nvir_agent.store import Store, StoreReader

pytestmark = pytest.mark.skipif(os.name != "posix", reason="byte file names and symlinks")

FF_FE = b"BAD_A09_s1_w1_\xff\xfe.tif"
LATIN1 = "Plate_É_B03_s1_w1.tif".encode("latin-1")


def byte_file(folder: Path, name: bytes, data: bytes = b"II*\x00" + b"\x00" * 60) -> str:
    """Write a file whose name is given as raw bytes; returns its path as os.scandir would."""
    folder.mkdir(parents=True, exist_ok=True)
    path = os.fsencode(folder) + b"/" + name
    with open(path, "wb") as fh:
        fh.write(data)
    return os.fsdecode(path)


# --- names ----------------------------------------------------------------------------


def test_a_name_that_is_not_utf8_reads_with_its_bytes_escaped_and_round_trips():
    name = os.fsdecode(FF_FE)
    assert readable(name) == "BAD_A09_s1_w1_\\xff\\xfe.tif"
    assert to_db(name) == FF_FE and from_db(to_db(name)) == name
    assert to_db("Plate_É_B03.tif") == "Plate_É_B03.tif"  # valid names stay text
    assert readable("Plate_É_B03.tif") == "Plate_É_B03.tif"


def test_the_well_is_read_from_a_latin1_name_and_the_plate_shows_the_odd_byte():
    key = try_parse_path("/acq/" + os.fsdecode(LATIN1))
    assert (key.vendor, key.plate, key.well, key.field) == (
        "imagexpress", "Plate_\\xc9", "B03", 1)


# --- store ----------------------------------------------------------------------------


def test_store_keeps_a_non_utf8_path_exactly_and_exports_it_readably(tmp_path):
    odd = "/acq/" + os.fsdecode(FF_FE)
    look_alike = "/acq/BAD_A09_s1_w1_\\xff\\xfe.tif"  # a real name with backslashes
    with Store(tmp_path / "db.sqlite3") as store:
        ids = store.add_jobs([(odd, 10, 1.0, ImageKey()), (look_alike, 10, 1.0, ImageKey())])
        assert len(ids) == 2
        assert store.add_jobs([(odd, 10, 1.0, ImageKey())]) == []  # unchanged: not again
        assert set(store.known_files()) == {odd, look_alike}
        [record] = [r for r in store.pending(10) if r.id == ids[0]]
        assert str(record.path) == odd  # opens the same file
        a = Analysis(record=record)
        a.fail(f"{record.path}: cannot decode")  # messages quoting the name stay writable
        store.commit_results([a.result()])
    with StoreReader(tmp_path / "db.sqlite3") as reader:
        rows = {r["id"]: r for r in reader.export_rows()}
        assert rows[ids[0]]["path"] == look_alike  # shown alike, kept apart
        assert rows[ids[0]]["error"] == f"{look_alike}: cannot decode"
        assert reader.image(odd)["id"] == ids[0]
        assert reader.image(look_alike)["id"] == ids[1]


# --- links ----------------------------------------------------------------------------


def link_tree(tmp_path: Path) -> tuple[Path, list[Path]]:
    """acq/BAD/loop/up -> .., acq/BAD/sib -> ../GOOD, with images in each real folder."""
    acq = tmp_path / "acq"
    images = [write_file(acq / "BAD" / "loop" / f"L_A{c:02d}_s1_w1.tif") for c in (1, 2)]
    images += [write_file(acq / "BAD" / f"B_B{c:02d}_s1_w1.tif") for c in (1, 2)]
    images += [write_file(acq / "GOOD" / f"G_C{c:02d}_s1_w1.tif") for c in (1, 2, 3, 4)]
    os.symlink("..", acq / "BAD" / "loop" / "up")
    os.symlink("../GOOD", acq / "BAD" / "sib")
    os.symlink("../GOOD/G_C01_s1_w1.tif", acq / "BAD" / "A_C01_s1_w1.tif")  # a file link
    return acq, images


def test_scan_skips_links_back_inside_and_finds_each_image_once_under_its_real_path(tmp_path):
    acq, images = link_tree(tmp_path)
    found = list(iter_candidates(acq, ["*.tif"], links=LinkPolicy([acq])))
    assert sorted(found) == sorted(map(str, images))


def test_links_leading_outside_are_followed_only_when_configured_and_never_loop(tmp_path):
    acq = tmp_path / "acq"
    share = tmp_path / "share"
    inside = write_file(acq / "P_A01_s1_w1.tif")
    outside = write_file(share / "plate" / "S_A02_s1_w1.tif")
    os.symlink(share, acq / "linked")
    os.symlink("..", share / "plate" / "up")  # a loop inside the linked share
    assert list(iter_candidates(acq, ["*.tif"], links=LinkPolicy([acq]))) == [str(inside)]
    found = list(iter_candidates(acq, ["*.tif"], links=LinkPolicy([acq], follow_outside=True)))
    assert found == [str(inside), str(acq / "linked" / "plate" / outside.name)]


def test_an_event_path_through_a_link_back_inside_is_not_admitted(tmp_path):
    acq, _ = link_tree(tmp_path)
    policy = LinkPolicy([acq])
    assert policy.admits(str(acq / "BAD" / "loop" / "L_A01_s1_w1.tif"))
    assert not policy.admits(str(acq / "BAD" / "loop" / "up" / "loop" / "L_A01_s1_w1.tif"))
    assert not policy.admits(str(acq / "BAD" / "sib" / "G_C02_s1_w1.tif"))
    assert not policy.admits(str(acq / "BAD" / "A_C01_s1_w1.tif"))


def test_engine_analyses_each_image_once_despite_loops_sibling_links_and_hard_links(tmp_path):
    acq, images = link_tree(tmp_path)
    os.link(images[-1], acq / "GOOD" / "Z_hardlink_C04_s1_w1.tif")  # same inode
    stage = RecordingStage()
    cfg = make_config(tmp_path, [acq], rescan_interval_s=0.3)  # rescans must not add any
    with running(cfg, stage) as engine:
        assert wait_until(lambda: engine.status().done == len(images))
        assert engine.wait_idle(3)
        event_path = acq / "BAD" / "loop" / "up" / "GOOD" / "G_C02_s1_w1.tif"
        engine._candidates.put(str(event_path))  # as a polling observer might report it
        write_file(acq / "GOOD" / "G_C05_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == len(images) + 1)
        assert engine.wait_idle(1)
        assert engine.status().seen == len(images) + 1
    assert sorted(stage.paths()) == sorted([*map(str, images), str(acq / "GOOD" / "G_C05_s1_w1.tif")])


# --- no single path stops a thread ----------------------------------------------------


def test_an_exception_while_ingesting_one_path_is_recorded_and_ingest_carries_on(
        tmp_path, monkeypatch):
    acq = tmp_path / "acq"
    acq.mkdir()

    def parse(path, *args):
        if "BOOM" in str(path):
            raise RuntimeError("parser bug")
        return try_parse_path(path, *args)

    monkeypatch.setattr(engine_mod, "try_parse_path", parse)
    with running(make_config(tmp_path, [acq]), RecordingStage()) as engine:
        boom = write_file(acq / "BOOM_A01_s1_w1.tif")
        engine._candidates.put(str(acq / "nul\x00byte.tif"))  # os.stat raises ValueError
        assert wait_until(lambda: engine.status().failed == 2)
        good = write_file(acq / "P_A02_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)
        assert engine.status().running and engine.error is None
        row = engine.store.image(str(boom))
        assert row["state"] == "failed" and "parser bug" in row["error"]
        assert engine.store.image(str(good))["state"] == "done"
    with StoreReader(engine.database) as reader:
        assert reader.counts().seen == 3


class Unwritable:
    def __str__(self):
        raise RuntimeError("cannot show this value")


class MeasuresOddly(RecordingStage):
    """Gives one image a measurement the store cannot write."""

    def run(self, batch):
        super().run(batch)
        for a in batch:
            if "ODD" in str(a.record.path):
                a.image_meta["odd"] = Unwritable()


def test_an_exception_while_recording_one_image_fails_it_and_the_worker_carries_on(tmp_path):
    acq = tmp_path / "acq"
    odd = write_file(acq / "ODD_A01_s1_w1.tif")
    good = [write_file(acq / f"P_A{c:02d}_s1_w1.tif") for c in (2, 3, 4)]
    with running(make_config(tmp_path, [acq]), MeasuresOddly()) as engine:
        assert wait_until(lambda: engine.status().done == 3 and engine.status().failed == 1)
        row = engine.store.image(str(odd))
        assert row["state"] == "failed" and "cannot show this value" in row["error"]
        later = write_file(acq / "P_A05_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 4)
        assert engine.status().running and engine.error is None
        assert all(engine.store.image(str(f))["state"] == "done" for f in [*good, later])


# --- the whole agent ------------------------------------------------------------------


def _spheroid() -> bytes:
    img = np.full((96, 96), 170, np.uint8)
    cv2.circle(img, (48, 48), 22, 40, -1)
    ok, data = cv2.imencode(".tif", img)
    assert ok
    return data.tobytes()


@pytest.mark.slow
def test_run_analyses_odd_names_and_linked_folders_once_and_keeps_running(tmp_path):
    acq, _ = link_tree(tmp_path)
    image = _spheroid()
    good = []
    for path in [p for p in acq.rglob("*.tif") if not p.is_symlink()]:
        path.write_bytes(image)
        good.append(str(path))
    odd = [byte_file(acq / "BAD", FF_FE, image), byte_file(acq / "BAD", LATIN1, image)]
    cfg = tmp_path / "agent.toml"
    db = tmp_path / "agent.sqlite3"
    cfg.write_text(f'[watch]\nfolders = ["{acq}"]\nsettle_s = 0.2\nrescan_interval_s = 1.0\n'
                   f'[storage]\ndatabase = "{db}"\n', encoding="utf-8")
    base = [sys.executable, "-m", "nvir_agent", "--config", str(cfg)]

    def finished() -> int:
        try:
            with StoreReader(db) as r:
                c = r.counts()
        except Exception:
            return 0
        return c.done + c.failed

    log = tmp_path / "run.log"
    with open(log, "w") as fh:
        agent = subprocess.Popen([*base, "run", "--headless"], stdout=subprocess.DEVNULL,
                                 stderr=fh)
        try:
            assert wait_until(lambda: finished() == len(good) + 2, 120)
            later = [byte_file(acq / "GOOD", b"G_D%02d_s1_w1.tif" % c, image) for c in (1, 2)]
            assert wait_until(lambda: finished() == len(good) + 4, 60)
            time.sleep(2.5)  # periodic rescans pass over the links and odd names again
            assert finished() == len(good) + 4
            assert agent.poll() is None  # still running
            status = subprocess.run([*base, "status", "--json"], capture_output=True,
                                    text=True, timeout=60, check=True)
            assert json.loads(status.stdout)["running"]
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(60)
    err = log.read_text(encoding="utf-8", errors="replace")
    assert agent.returncode == 0, err
    assert "Traceback" not in err and "Internal error" not in err
    assert "BAD_A09_s1_w1_\\xff\\xfe.tif" in err  # the log shows the name readably
    out = subprocess.run([*base, "export", "--format", "jsonl"], capture_output=True,
                         text=True, timeout=60, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()][1:]  # after the provenance
    by_path = {r["path"]: r for r in rows}
    assert len(rows) == len(by_path) == len(good) + 4  # each image once, no link paths
    expected = [*good, *later, *odd]
    assert sorted(by_path) == sorted(readable(p) for p in expected)
    assert all(r["state"] in ("done", "failed") and r["attempts"] == 1 for r in rows)
    latin = by_path[readable(odd[1])]
    assert (latin["plate"], latin["well"]) == ("Plate_\\xc9", "B03")
    assert by_path[readable(odd[0])]["state"] == "done"
