"""Database faults with the real engine and real files on temporary folders: the file
locked by another process, a damaged or foreign file at start-up, schemas from older
versions (migrated, data kept) and from newer ones (refused)."""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from core_helpers import make_config, wait_until, write_file

from nvir_agent.app import build_engine
from nvir_agent.cli.main import main
from nvir_agent.core import engine as engine_module
from nvir_agent.core.status import read_status
from nvir_agent.errors import StoreError
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.plate import ImageKey
from nvir_agent.store import DamagedDatabase, Store, StoreReader, schema

# A second program holding the database's write lock until it reads a line.
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
conn.close()
"""


class GatedStage:
    """Counts every image it analyses; holds the batch with a ``hold`` file until
    ``release`` is set (so the lock can be taken between analysis and commit)."""

    name = "gated"

    def __init__(self) -> None:
        self.seen: collections.Counter[str] = collections.Counter()
        self.holding = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def run(self, batch: list[Analysis]) -> None:
        for a in batch:
            with self._lock:
                self.seen[Path(a.record.path).name] += 1
            a.found = True
            a.image_meta["bytes"] = a.record.size
        if any("hold" in Path(a.record.path).name for a in batch):
            self.holding.set()
            assert self.release.wait(60), "the test never released the batch"


@pytest.fixture
def short_busy_timeout(monkeypatch):
    """Writes give up waiting for the lock after 0.5 s (30 s in use), so a lock held for
    a few seconds outlasts the busy timeout many times over."""
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_S", 0.5)
    monkeypatch.setattr(engine_module, "STORE_RETRY_S", 0.1)


def start_locker(db: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(db)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def release_locker(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(30) == 0


def test_a_database_locked_by_another_process_is_waited_for_and_caught_up_without_loss(
        tmp_path, short_busy_timeout, caplog):
    watched = tmp_path / "acq"
    watched.mkdir()
    config = make_config(tmp_path, [watched])
    db = tmp_path / "agent.sqlite3"
    stage = GatedStage()
    engine = build_engine(config, stages=[stage])
    engine.start()
    locker = None
    try:
        with caplog.at_level(logging.INFO):
            write_file(watched / "before_1.tif")
            write_file(watched / "before_2.tif")
            assert wait_until(lambda: engine.status().done == 2)
            # a batch is analysed, then the database is locked before it is committed
            write_file(watched / "hold.tif")
            assert stage.holding.wait(30)
            locker = start_locker(db)
            stage.release.set()
            for i in range(4):  # images arriving while the lock is held
                write_file(watched / f"during_{i}.tif")
            assert wait_until(lambda: any("locked by another program" in p
                                          for p in engine.status().problems), 30)
            time.sleep(3 * 0.5 * 2)  # the lock outlasts the busy timeout several times
            st = engine.status()
            assert st.running and st.error is None and engine.error is None
            assert all(t.is_alive() for t in engine._threads)
            assert st.done == 2  # nothing recorded while locked, nothing recorded wrong
            assert "locked by another program" in caplog.text
            release_locker(locker)
            locker = None
            assert wait_until(lambda: engine.status().done == 7, 60)
            assert wait_until(lambda: not engine.status().problems, 30)
            assert "can be written again" in caplog.text
    finally:
        stage.release.set()
        if locker is not None:
            release_locker(locker)
        engine.stop()
    assert engine.error is None
    # no job lost, nothing analysed twice
    assert stage.seen == {n: 1 for n in ["before_1.tif", "before_2.tif", "hold.tif",
                                         *(f"during_{i}.tif" for i in range(4))]}
    with StoreReader(db) as reader:
        counts = reader.counts()
    assert (counts.seen, counts.done, counts.pending, counts.failed) == (7, 7, 0, 0)


def test_the_status_of_an_agent_waiting_for_a_locked_database_says_so(tmp_path,
                                                                     short_busy_timeout):
    watched = tmp_path / "acq"
    watched.mkdir()
    config = make_config(tmp_path, [watched])
    engine = build_engine(config, stages=[GatedStage()])
    engine.start()
    try:
        assert wait_until(lambda: read_status(config).running, 30)
        locker = start_locker(tmp_path / "agent.sqlite3")
        try:
            write_file(watched / "a.tif")
            assert wait_until(lambda: engine.status().problems, 30)
            problem = engine.status().problems[0]
            assert str(tmp_path / "agent.sqlite3") in problem and "nothing is lost" in problem
            # another process (`nvir-agent status`) sees the heartbeat stop, and why
            assert wait_until(lambda: any(
                "locked by another program" in p and str(os.getpid()) in p
                for p in read_status(config, stale_after_s=1.0).problems), 30)
        finally:
            release_locker(locker)
        assert wait_until(lambda: engine.status().done == 1, 60)
        # once written again, other processes see the agent running and no problem
        assert wait_until(lambda: read_status(config).running
                          and not read_status(config).problems, 30), read_status(config)
    finally:
        engine.stop()


def test_readers_beside_the_writer_in_one_process_keep_its_locks(tmp_path):
    """Checking a file must not open it outside SQLite: closing that descriptor would
    drop the process's POSIX locks, and the next program to close the file would
    then delete the write-ahead log and its index under the running writer."""
    db = tmp_path / "agent.sqlite3"
    with Store(db, thorough=True) as writer:
        writer.add_jobs([("/a/x.tif", 1, 1.0, ImageKey())])
        for _ in range(3):
            with StoreReader(db) as reader:
                assert reader.counts().seen == 1
        release_locker(start_locker(db))  # another program opens, writes, closes
        assert db.with_name(db.name + "-shm").exists()
        writer.add_jobs([("/a/y.tif", 1, 1.0, ImageKey())])
        with StoreReader(db) as reader:
            assert reader.counts().seen == 2


def test_starting_on_a_database_locked_by_another_process_says_so_without_a_traceback(
        tmp_path, short_busy_timeout):
    watched = tmp_path / "acq"
    watched.mkdir()
    config = make_config(tmp_path, [watched])
    Store(tmp_path / "agent.sqlite3").close()
    locker = start_locker(tmp_path / "agent.sqlite3")
    try:
        engine = build_engine(config, stages=[GatedStage()])
        try:
            with pytest.raises(StoreError, match="locked by another program") as exc:
                engine.start()
        finally:
            engine.stop()
    finally:
        release_locker(locker)
    assert str(tmp_path / "agent.sqlite3") in exc.value.message
    assert "Close the program" in exc.value.hint


# --- damaged and foreign files at start-up -------------------------------------------------


def real_database(path: Path, images: int = 300) -> Path:
    with Store(path) as store:
        store.add_jobs([(f"/data/P1_B{i:03d}_s1_w1.tif", 1000 + i, 1.0,
                         ImageKey(plate="P1", well="B03")) for i in range(images)])
    assert not path.with_name(path.name + "-wal").exists()  # checkpointed into the file
    return path


def garbage(path: Path) -> Path:
    path.write_bytes(os.urandom(8192))
    return path


def truncated(path: Path) -> Path:
    real_database(path)
    os.truncate(path, path.stat().st_size // 2)
    return path


def foreign(path: Path) -> Path:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE recipes(name TEXT, minutes INTEGER)")
    conn.execute("INSERT INTO recipes VALUES ('bread', 240)")
    conn.commit()
    conn.close()
    return path


def bit_flipped(path: Path) -> Path:
    """A whole-length database with one page in the middle overwritten."""
    real_database(path, images=2000)
    with path.open("r+b") as f:
        f.seek(4096 * 20)
        f.write(b"\xa5" * 4096)
    return path


DAMAGE = {
    "garbage": (garbage, "not an SQLite database"),
    "truncated": (truncated, "damaged"),
    "foreign": (foreign, "not an NViR Agent database (it holds other tables: recipes)"),
    "bit_flipped": (bit_flipped, "damaged"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_database_is_refused_with_the_file_and_the_fix_and_left_untouched(
        tmp_path, kind):
    make, words = DAMAGE[kind]
    db = make(tmp_path / "agent.sqlite3")
    before = db.read_bytes()
    with pytest.raises(DamagedDatabase) as exc:
        Store(db, thorough=True)
    assert str(db) in exc.value.message and words in exc.value.message
    assert "--replace-damaged-database" in exc.value.hint and "backup" in exc.value.hint
    assert db.read_bytes() == before  # never written, never replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.sqlite3"]


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_with_consent_a_damaged_database_is_kept_aside_and_a_new_one_started(tmp_path, kind):
    make, _ = DAMAGE[kind]
    db = make(tmp_path / "agent.sqlite3")
    before = db.read_bytes()
    with Store(db, thorough=True, replace_damaged=True) as store:
        assert store.counts().seen == 0 and store.schema_version() == len(schema.MIGRATIONS)
    aside = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert len(aside) == 1 and aside[0].name.startswith("agent.sqlite3.damaged-20")
    assert aside[0].read_bytes() == before  # kept, byte for byte


def test_consent_leaves_a_healthy_database_in_place(tmp_path):
    db = real_database(tmp_path / "agent.sqlite3", images=5)
    with Store(db, thorough=True, replace_damaged=True) as store:
        assert store.counts().seen == 5
    assert not [p for p in tmp_path.iterdir() if ".damaged-" in p.name]


def agent_toml(tmp_path: Path, db: Path) -> Path:
    watched = tmp_path / "acq"
    watched.mkdir(exist_ok=True)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[watch]\nfolders = ["{watched}"]\n[storage]\ndatabase = "{db}"\n'
                   '[model]\nenabled = false\n[imaging]\nworkers = 1\n', encoding="utf-8")
    return cfg


def run_agent(cfg: Path, *extra: str, stop_after_s: float = 0) -> subprocess.CompletedProcess:
    """`nvir-agent run --headless` in its own process; with ``stop_after_s``, sent
    SIGTERM once its heartbeat is seen (it started) or that time passed."""
    cmd = [sys.executable, "-m", "nvir_agent", "--config", str(cfg), "run", "--headless",
           *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if not stop_after_s:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    db = cfg.parent / "agent.sqlite3"
    deadline = time.monotonic() + stop_after_s
    while time.monotonic() < deadline and proc.poll() is None:
        if db.is_file() and _heartbeat_seen(db):
            break
        time.sleep(0.2)
    proc.terminate()
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _heartbeat_seen(db: Path) -> bool:
    try:
        with StoreReader(db) as reader:
            return reader.heartbeat() is not None
    except StoreError:
        return False


@pytest.mark.slow
def test_run_refuses_a_damaged_database_and_replaces_it_only_with_the_flag(tmp_path):
    db = garbage(tmp_path / "agent.sqlite3")
    before = db.read_bytes()
    cfg = agent_toml(tmp_path, db)
    refused = run_agent(cfg)
    assert refused.returncode == 1, refused.stderr
    assert str(db) in refused.stderr and "--replace-damaged-database" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert db.read_bytes() == before
    started = run_agent(cfg, "--replace-damaged-database", stop_after_s=90)
    assert "Traceback" not in started.stderr, started.stderr
    aside = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == before
    assert "kept aside as" in started.stderr and aside[0].name in started.stderr
    with StoreReader(db) as reader:
        assert reader.schema_version() == len(schema.MIGRATIONS)


def test_status_names_a_damaged_database_as_a_problem(tmp_path, capsys):
    db = truncated(tmp_path / "agent.sqlite3")
    cfg = agent_toml(tmp_path, db)
    assert main(["--config", str(cfg), "status"]) == 1
    out = capsys.readouterr().out
    assert str(db) in out and "damaged" in out


# --- schemas of other versions -------------------------------------------------------------

ROWS_BY_VERSION = {
    # what each version could hold: the rows are written with that version's columns
    1: ["INSERT INTO images(id, path, size, mtime, vendor, plate, well, row, col, field, "
        "channel, z, timepoint, elapsed_s, state, error, attempts, created_at, updated_at) "
        "VALUES (1, '/acq/P1_B03_s1_w1.tif', 10, 1.5, 'imagexpress', 'P1', 'B03', 2, 3, 1, "
        "'1', NULL, 1, 0.0, 'done', NULL, 1, 100.0, 100.0)",
        "INSERT INTO images(id, path, size, mtime, plate, well, state, attempts, created_at, "
        "updated_at) VALUES (2, '/acq/P1_B04_s1_w1.tif', 11, 1.5, 'P1', 'B04', 'pending', 0, "
        "100.0, 100.0)",
        "INSERT INTO measurements(image_id, found, viability, model, qc, features, "
        "created_at) VALUES (1, 1, 0.75, 'm@abc', '[]', '{\"area_px\": 1234}', 101.0)",
        "INSERT INTO plates(plate, first_seen, last_seen, plate_map, meta) VALUES "
        "('P1', 100.0, 100.0, NULL, NULL)",
        "INSERT INTO alerts(id, plate, subject, rule, severity, state, message, value, "
        "timepoint, opened_at, updated_at, closed_at, details) VALUES (1, 'P1', 'well:B03', "
        "'viability_drop', 'warning', 'open', 'B03 dropped', 0.4, 1, 102.0, 102.0, NULL, "
        "'{}')",
        "INSERT INTO alert_events(alert_id, at, action, user, comment) VALUES "
        "(1, 102.0, 'opened', NULL, NULL)"],
    2: ["INSERT INTO agent_status(name, pid, started_at, heartbeat_at, snapshot) VALUES "
        "('engine', 1, 1.0, 2.0, '{}')"],
    3: ["UPDATE measurements SET outline = '[[1,2],[3,4],[5,6]]' WHERE image_id = 1"],
    4: ["UPDATE images SET station = 'scope-1', scope = 'scope-1' WHERE id = 1"],
    5: ["UPDATE alerts SET ack_until = 500.0 WHERE id = 1",
        "INSERT INTO shelves(kind, name, until, user, comment, created_at) VALUES "
        "('plate', 'P1', 900.0, 'ana', 'reimaging', 103.0)"],
}


def old_sqlite(path: Path, version: int) -> Path:
    """A real database of schema ``version`` (its MIGRATIONS run in order), with rows."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    for number in range(1, version + 1):
        conn.executescript(f"BEGIN;\n{schema.MIGRATIONS[number - 1]}\n"
                           f"PRAGMA user_version = {number};\nCOMMIT;")
        for sql in ROWS_BY_VERSION[number]:
            conn.execute(sql)
    conn.close()
    return path


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_an_older_sqlite_database_is_upgraded_keeping_its_data(tmp_path, version, caplog):
    db = old_sqlite(tmp_path / "old.sqlite3", version)
    with caplog.at_level(logging.INFO), Store(db, station="here", thorough=True) as store:
        assert store.schema_version() == len(schema.MIGRATIONS)
        check_upgraded_rows(store, version)
        # the upgraded file works: the pending job is analysed and committed
        assert [r.id for r in store.pending(10)] == [2]
    assert (f"upgraded from schema version {version} to {len(schema.MIGRATIONS)}"
            in caplog.text)


def check_upgraded_rows(store: Store, version: int) -> None:
    rows = {r["path"]: r for r in store.export_rows()}
    done = rows["/acq/P1_B03_s1_w1.tif"]
    assert (done["state"], done["plate"], done["well"], done["timepoint"]) == \
        ("done", "P1", "B03", 1)
    assert done["viability"] == 0.75 and done["area_px"] == 1234
    assert rows["/acq/P1_B04_s1_w1.tif"]["state"] == "pending"
    assert store.counts().seen == 2
    assert [p.plate for p in store.plates()] == ["P1"]
    (alert,) = store.alerts()
    assert (alert.plate, alert.subject, alert.state, alert.value) == \
        ("P1", "well:B03", "open", 0.4)
    assert alert.ack_until == (500.0 if version >= 5 else None)
    assert [e.action for e in store.alert_events(alert.id)] == ["opened"]
    if version >= 3:
        (m,) = [m for m in store.measurements(plate="P1") if m.key.well == "B03"]
        assert m.outline == ((1, 2), (3, 4), (5, 6))
    if version >= 5:
        assert [(s.kind, s.name, s.user) for s in store.shelves()] == [("plate", "P1", "ana")]
    stations = {r["path"]: r.get("station") for r in store.export_rows()}
    assert stations["/acq/P1_B03_s1_w1.tif"] == ("scope-1" if version >= 4 else "here")


def test_an_sqlite_database_from_a_newer_version_is_refused_and_left_unchanged(tmp_path):
    import sqlite3

    db = tmp_path / "newer.sqlite3"
    Store(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {len(schema.MIGRATIONS) + 3}")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(StoreError) as exc:
        Store(db, thorough=True, replace_damaged=True)  # newer is not damaged: never set aside
    assert not isinstance(exc.value, DamagedDatabase)
    assert str(db) in exc.value.message and "newer" in exc.value.message
    assert f"schema version {len(schema.MIGRATIONS) + 3}" in exc.value.message
    assert "Update NViR Agent" in exc.value.hint
    assert db.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".damaged-" in p.name]


def old_postgres(url: str, version: int) -> None:
    from nvir_agent.store import postgres

    conn = postgres.connect(url)
    try:
        postgres.migrate(conn, url, target=version)
        for number in range(1, version + 1):
            for sql in ROWS_BY_VERSION[number]:
                conn.execute(sql.replace("user,", '"user",'))
        conn.execute("UPDATE images SET station = 'scope-1', scope = 'scope-1'")
        # rows written with explicit ids: move the identities on
        conn.execute("SELECT setval(pg_get_serial_sequence('images', 'id'), 10)")
        conn.execute("SELECT setval(pg_get_serial_sequence('alerts', 'id'), 10)")
    finally:
        conn.close()


# The PostgreSQL backend shipped with schema version 4: older servers never existed.
@pytest.mark.parametrize("version", [4, 5])
def test_an_older_postgresql_store_is_upgraded_keeping_its_data(pg_url, version, caplog):
    old_postgres(pg_url, version)
    with caplog.at_level(logging.INFO), Store(pg_url, station="scope-1") as store:
        assert store.schema_version() == len(schema.MIGRATIONS)
        check_upgraded_rows(store, version)
    assert (f"upgraded from schema version {version} to {len(schema.MIGRATIONS)}"
            in caplog.text)


def test_a_postgresql_store_from_a_newer_version_is_refused(pg_url):
    from nvir_agent.store import postgres

    Store(pg_url).close()
    conn = postgres.connect(pg_url)
    conn.execute("INSERT INTO schema_version(version) VALUES (?)",
                 (len(schema.MIGRATIONS) + 1,))
    conn.close()
    with pytest.raises(StoreError) as exc:
        Store(pg_url)
    assert "newer" in exc.value.message and "Update NViR Agent" in exc.value.hint
    conn = postgres.connect(pg_url)
    try:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()").fetchall()}
        assert "images" in tables  # not dropped, not downgraded
        assert postgres.POSTGRES.schema_version(conn) == len(schema.MIGRATIONS) + 1
    finally:
        conn.close()


def test_the_aside_copy_is_never_overwritten_by_a_later_one(tmp_path):
    db = garbage(tmp_path / "agent.sqlite3")
    first = schema.set_aside(db)
    garbage(db)
    second = schema.set_aside(db)
    assert first != second and first.exists() and second.exists()


def test_the_tray_asks_before_replacing_a_damaged_database(qtbot, tmp_path, monkeypatch,
                                                           no_leaked_workers):
    from PySide6.QtWidgets import QMessageBox

    from nvir_agent.config import load_config
    from nvir_agent.gui.tray import TrayAgent

    db = garbage(tmp_path / "agent.sqlite3")
    before = db.read_bytes()
    config = load_config(agent_toml(tmp_path, db))
    questions: list[str] = []
    answers = iter([QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes])

    def question(_parent, _title, text, *_args):
        questions.append(text)
        return next(answers)

    monkeypatch.setattr(QMessageBox, "question", question)
    agent = TrayAgent(config, tray_available=False)
    agent.start()  # answered No: nothing replaced, the tray shows the problem
    qtbot.waitUntil(lambda: agent.error is not None, timeout=30000)
    assert str(db) in questions[0] and "nothing is deleted" in questions[0]
    assert str(db) in agent.error and db.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    agent.start()  # answered Yes: kept aside, a new database, the engine runs
    qtbot.waitUntil(lambda: agent.controller.engine is not None, timeout=60000)
    try:
        (aside,) = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
        assert aside.read_bytes() == before and len(questions) == 2
        assert agent.controller.engine.store.counts().seen == 0
    finally:
        with qtbot.waitSignal(agent.controller.stopped, timeout=60000):
            agent.controller.stop()
        if agent.window is not None:
            agent.window.close()
