"""The store: schema, idempotent jobs, atomic results, readers beside the writer.

Tests taking ``store`` run on both backends: SQLite and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nvir_agent.errors import StoreError
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.plate import ImageKey
from nvir_agent.store import MIGRATIONS, Measurement, Result, Store, StoreReader

KEY = ImageKey(vendor="imagexpress", plate="P1", well="B03", row=2, column=3, field=1,
               channel="1", timepoint=4)


def results(*analyses: Analysis) -> list[Result]:
    return [a.result() for a in analyses]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    target = (tmp_path / "agent.sqlite3" if request.param == "sqlite"
              else request.getfixturevalue("pg_url"))
    s = Store(target)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    s = Store(tmp_path / "agent.sqlite3")
    yield s
    s.close()


def test_new_database_has_the_v1_tables_wal_and_latest_version(sqlite_store):
    store = sqlite_store
    conn = sqlite3.connect(store.path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"images", "measurements", "plates", "alerts", "alert_events"} <= tables
    cols = [r[1] for r in conn.execute("PRAGMA table_info(images)")]
    assert cols == ["id", "path", "size", "mtime", "vendor", "plate", "well", "row", "col",
                    "field", "channel", "z", "timepoint", "elapsed_s", "state", "error",
                    "attempts", "created_at", "updated_at",
                    "station", "scope", "claimed_by", "claimed_at"]  # v4: stations
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()


def test_only_one_open_alert_per_plate_subject_rule(store):
    def insert(tx):
        return tx.insert_alert(plate="P", subject="B03", rule="low", severity="warning",
                               message="low", value=None, timepoint=None, now=1.0, details={})

    with store.transaction() as tx:
        closed = insert(tx)
        tx.set_alert_state(closed, "resolved", 2.0, 2.0)
        insert(tx)  # a closed episode does not count
    with pytest.raises(StoreError, match="(?i)unique"), store.transaction() as tx:
        insert(tx)
    assert [a.state for a in store.alerts(include_closed=True)] == ["open", "resolved"]


def test_reopening_an_existing_database_keeps_its_rows(store):
    store.add_jobs([("/a/x.tif", 10, 1.0, KEY)])
    with Store(store.path if store._sql.name == "sqlite" else store.url) as s:
        assert s.counts().pending == 1 and s.schema_version() == len(MIGRATIONS)


def test_same_file_is_queued_once_and_a_changed_file_again(store):
    assert len(store.add_jobs([("/a/x.tif", 10, 1.0, KEY)])) == 1
    assert store.add_jobs([("/a/x.tif", 10, 1.0, KEY)]) == []
    [rec] = store.pending(10)
    store.commit_results(results(Analysis(record=rec, found=True, viability=0.8)))
    assert store.add_jobs([("/a/x.tif", 10, 1.0, KEY)]) == []
    assert store.add_jobs([("/a/x.tif", 12, 2.0, KEY)]) == [rec.id]
    c = store.counts()
    assert (c.seen, c.pending, c.done) == (1, 1, 0)
    row = store.image("/a/x.tif")
    assert row["state"] == "pending" and "viability" not in row  # old result dropped


def test_force_queues_an_unchanged_file_again(store):
    [i] = store.add_jobs([("/a/x.tif", 10, 1.0, KEY)])
    assert store.add_jobs([("/a/x.tif", 10, 1.0, KEY)], force=True) == [i]


def test_results_of_a_batch_are_committed_together_with_measurements(store):
    store.add_jobs([(f"/a/{i}.tif", 10, 1.0, KEY) for i in range(3)])
    recs = store.pending(10)
    ok = Analysis(record=recs[0], found=True, viability=np.float32(0.5), qc=["blurred"],
                  features={"area_px": np.int64(1234), "bad": float("nan")},
                  image_meta={"width": 640})
    bad = Analysis(record=recs[1])
    bad.fail("not a TIFF")
    written = store.commit_results(results(ok, bad))
    assert written == [recs[0].id, recs[1].id]
    row = store.image("/a/0.tif")
    assert row["state"] == "done" and row["viability"] == pytest.approx(0.5)
    assert row["qc"] == ["blurred"] and row["area_px"] == 1234 and row["bad"] is None
    assert row["width"] == 640 and row["found"] is True
    failed = store.image("/a/1.tif")
    assert failed["state"] == "failed" and failed["error"] == "not a TIFF"
    assert store.counts().pending == 1


def test_page_rows_tell_when_each_image_was_queued_and_its_result_stored(store):
    before = time.time()
    store.add_jobs([("/a/x.tif", 10, 1.0, KEY), ("/a/y.tif", 10, 1.0, KEY)])
    queued = time.time()
    time.sleep(0.05)
    [rec, _] = store.pending(10)
    store.commit_results(results(Analysis(record=rec, found=True, viability=0.8)))
    after = time.time()
    with StoreReader(store.path) as r:
        done, waiting = r.measurements()
    assert before <= done.queued_at <= queued < done.updated_at <= after
    assert done.measured_at == pytest.approx(done.updated_at)
    assert before <= waiting.queued_at <= queued and waiting.measured_at is None


def test_a_non_numeric_viability_fails_only_that_image(store):
    store.add_jobs([(f"/a/{i}.tif", 10, 1.0, KEY) for i in range(2)])
    recs = store.pending(10)
    good = Analysis(record=recs[0], viability=0.9)
    broken = Analysis(record=recs[1], viability="high")
    store.commit_results(results(good, broken))
    assert store.image("/a/0.tif")["state"] == "done"
    assert "not a number" in store.image("/a/1.tif")["error"]


def test_an_interrupted_commit_leaves_every_job_of_the_batch_pending(store):
    store.add_jobs([(f"/a/{i}.tif", 10, 1.0, KEY) for i in range(2)])
    recs = store.pending(10)

    class Boom(dict):
        def keys(self):
            raise KeyboardInterrupt  # e.g. Ctrl-C halfway through the transaction

        __iter__ = keys

    second = Result(recs[1], None, Measurement(viability=0.5, features=Boom()))
    with pytest.raises(KeyboardInterrupt):
        store.commit_results([*results(Analysis(record=recs[0], viability=0.9)), second])
    assert store.counts().pending == 2


def test_result_for_a_file_changed_meanwhile_is_dropped(store):
    store.add_jobs([("/a/x.tif", 10, 1.0, KEY)])
    [rec] = store.pending(1)
    store.add_jobs([("/a/x.tif", 20, 2.0, KEY)])  # imager rewrote it during analysis
    assert store.commit_results(results(Analysis(record=rec, viability=0.1))) == []
    assert store.counts().pending == 1


def test_jobs_interrupted_too_often_are_failed_with_a_hint(store):
    [i] = store.add_jobs([("/a/x.tif", 10, 1.0, KEY)])
    for _ in range(3):
        store.begin_attempt([i])
    assert store.fail_exhausted(3) == ["/a/x.tif"]
    assert "process --force" in store.image("/a/x.tif")["error"]


def test_plates_are_recorded_with_first_and_last_seen(store):
    store.add_jobs([("/a/x.tif", 10, 1.0, KEY)])
    store.add_jobs([("/a/y.tif", 10, 1.0, KEY)])
    [row] = store.plates()
    assert row.plate == "P1" and row.first_seen <= row.last_seen and row.plate_map is None


def test_reader_reads_while_the_writer_holds_a_write_transaction(store):
    store.add_jobs([("/a/x.tif", 10, 1.0, KEY)])
    seen: list = []
    with store.transaction() as tx:
        tx.insert_alert(plate="P1", subject="B03", rule="low", severity="warning",
                        message="not committed yet", value=None, timepoint=None, now=1.0,
                        details={})

        def read():
            with StoreReader(store.path) as r:
                seen.append((r.counts(), r.alerts(include_closed=True)))

        t = threading.Thread(target=read)
        t.start()
        t.join(5)
    assert seen and seen[0][0].pending == 1 and seen[0][1] == []  # committed state, no wait
    assert len(store.alerts()) == 1


def test_writer_is_not_blocked_by_an_open_read_transaction(store):
    store.add_jobs([("/a/x.tif", 10, 1.0, KEY)])
    with StoreReader(store.path) as r:
        rows = r.iter_measurements(page=1)
        next(rows)  # a read statement is open on the reader
        store.add_jobs([("/a/y.tif", 10, 1.0, KEY)])  # would raise 'database is locked'
        rows.close()
    assert store.counts().seen == 2


def test_reader_of_a_missing_database_says_how_to_create_it(tmp_path):
    with pytest.raises(StoreError, match="no database") as exc:
        StoreReader(tmp_path / "none.sqlite3")
    assert "nvir-agent run" in exc.value.hint


def test_a_file_that_is_not_a_database_gives_a_store_error(tmp_path):
    p = tmp_path / "junk.sqlite3"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(p)):
        Store(p)


def test_a_database_from_a_newer_version_is_refused(tmp_path):
    p = tmp_path / "new.sqlite3"
    Store(p).close()
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(p)


def test_sql_values_are_parameters_not_text(store):
    evil = "/a/x'); DROP TABLE images; --.tif"
    store.add_jobs([(evil, 1, 1.0, ImageKey(plate="P'1"))])
    assert store.image(evil)["plate"] == "P'1"
    assert Path(store.pending(1)[0].path) == Path(evil)
