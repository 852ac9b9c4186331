"""Several stations on one PostgreSQL server (a real, throwaway server; no mocks).

Fast tests drive stores directly; the slow ones run whole agents in separate
processes (tests/agent_proc.py) and count, from each agent's log of analyses
and from the store, that every image is recorded exactly once — with two agents
on separate folders and on one shared folder, an agent killed with SIGKILL
mid-burst and restarted, the server restarted mid-burst, and the server stopped
for a while (a few seconds here instead of a minute: the same spool-and-sync
code path, with ``storage.retry_s`` short) and started again.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from core_helpers import write_file
from pg_server import wait_for

from nvir_agent.config import config_from_dict
from nvir_agent.core.status import read_status
from nvir_agent.errors import ConfigError, StoreError
from nvir_agent.monitor.alerts import reconcile
from nvir_agent.monitor.rules import Condition
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.plate import ImageKey
from nvir_agent.store import MIGRATIONS, Measurement, Result, Store, StoreReader, database_url
from nvir_agent.store.postgres import PG_MIGRATIONS

KEY = ImageKey(vendor="imagexpress", plate="P1", well="B03", row=2, column=3, timepoint=1)
AGENT = Path(__file__).with_name("agent_proc.py")


def test_both_backends_have_the_same_schema_versions():
    assert len(PG_MIGRATIONS) == len(MIGRATIONS)


def test_a_server_at_an_older_version_is_upgraded_keeping_its_rows(pg_url):
    from nvir_agent.store import postgres

    conn = postgres.connect(pg_url)
    assert postgres.migrate(conn, pg_url, target=3) == 3
    conn.execute("INSERT INTO images(path, size, mtime, state, attempts) "
                 "VALUES (?, 1, 1.0, 'pending', 0)", (b"/old/x.tif",))
    conn.close()
    with Store(pg_url, station="A") as s:
        assert s.schema_version() == len(MIGRATIONS)
        assert [r.path for r in s.records([1])] == [Path("/old/x.tif")]


def test_an_older_sqlite_file_gets_station_columns_filled_with_its_own_station(tmp_path):
    p = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(p)
    conn.executescript("".join(MIGRATIONS[:3]) + "PRAGMA user_version = 3;")
    conn.execute("INSERT INTO images(path, size, mtime, state, attempts) "
                 "VALUES ('/a/x.tif', 1, 1.0, 'done', 0)")
    conn.commit()
    conn.close()
    with Store(p, station="scope-1") as s:
        assert [r.name for r in s.stations()] == ["scope-1"]
        assert s.measurements()[0].station == "scope-1"


def test_the_same_local_path_on_two_stations_is_two_images_a_shared_folder_one(pg_url):
    with Store(pg_url, station="A", shared_folders=["/share"]) as a, \
            Store(pg_url, station="B", shared_folders=["/share"]) as b:
        assert a.add_jobs([("/data/x.tif", 1, 1.0, KEY)]) == [1]
        assert b.add_jobs([("/data/x.tif", 1, 1.0, KEY)]) == [2]
        assert a.add_jobs([("/share/y.tif", 1, 1.0, KEY)]) == [3]
        assert b.add_jobs([("/share/y.tif", 1, 1.0, KEY)]) == []  # already queued by A
        assert set(a.known_files()) == {"/data/x.tif", "/share/y.tif"}
        assert [r.id for r in b.pending(10)] == [2, 3]  # its own and the shared one
        assert a.pending(10) == [r for r in a.records([1])]  # 3 is claimed by B
        with StoreReader(pg_url) as r:
            assert [s.name for s in r.stations()] == ["A", "B"]
            assert [row.path for row in r.measurements(station="B")] == ["/data/x.tif"]
            assert r.counts().seen == 3 and r.counts(station="A").seen == 2


def test_concurrent_claims_on_a_shared_folder_never_hand_out_a_job_twice(pg_url):
    with Store(pg_url, station="A", shared_folders=["/share"]) as a:
        a.add_jobs([(f"/share/{i}.tif", 1, 1.0, KEY) for i in range(300)])
    claimed: list[list[int]] = [[] for _ in range(4)]

    def claim(n: int) -> None:
        with Store(pg_url, station=f"S{n}", shared_folders=["/share"]) as s:
            while recs := s.pending(7):
                claimed[n] += [r.id for r in recs]
                s.commit_results([Analysis(record=r, viability=1.0).result() for r in recs])

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [i for c in claimed for i in c]
    assert sorted(every) == list(range(1, 301))  # each job once, none lost
    assert sum(1 for c in claimed if c) >= 2  # the work was shared


def test_a_silent_stations_claims_are_taken_over_after_the_claim_timeout(pg_url):
    with Store(pg_url, station="A", shared_folders=["/share"], claim_timeout_s=0.3) as a, \
            Store(pg_url, station="B", shared_folders=["/share"], claim_timeout_s=0.3) as b:
        a.add_jobs([("/share/x.tif", 1, 1.0, KEY)])
        assert len(a.pending(5)) == 1 and b.pending(5) == []
        time.sleep(0.4)
        assert len(b.pending(5)) == 1


def _condition(plate: str) -> Condition:
    return Condition(plate=plate, subject="well:B03", rule="low_viability",
                     severity="warning", message="low", value=0.5, timepoint=1, since=1,
                     details={})


def test_monitors_of_two_stations_evaluating_one_plate_keep_one_open_alert(pg_url):
    errors: list[BaseException] = []

    def evaluate(station: str) -> None:
        try:
            with Store(pg_url, station=station) as s:
                for _ in range(15):
                    with s.transaction() as tx:
                        tx.lock_plate("P1")
                        reconcile(tx, ["P1"], [_condition("P1")])
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=evaluate, args=(n,)) for n in ("A", "B", "C")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with StoreReader(pg_url) as r:
        assert len(r.alerts(include_closed=True)) == 1


def test_a_password_never_shows_in_messages(pg_url, tmp_path):
    secret = "s3cr3t-Pw"
    bad = f"postgresql://nvir:{secret}@127.0.0.1:1/x"  # nothing listens on port 1
    with pytest.raises(StoreError) as exc:
        Store(bad)
    assert secret not in str(exc.value) and "***" in str(exc.value)
    cfg = config_from_dict({"storage": {"url": bad}}, source=tmp_path / "agent.toml")
    with pytest.raises(ConfigError) as exc2:
        database_url(cfg)
    assert secret not in str(exc2.value)


# --------------------------------------------------------------------- agents as processes


def _config(tmp: Path, name: str, url: str, folders: list[Path], shared: list[Path]) -> Path:
    def q(p: object) -> str:
        return '"' + str(p).replace("\\", "\\\\") + '"'

    path = tmp / f"{name}.toml"
    path.write_text(
        "[watch]\n"
        f"folders = [{', '.join(q(f) for f in folders)}]\n"
        "settle_s = 0.2\nrescan_interval_s = 2.0\npoll_interval_s = 0.3\n"
        "[storage]\n"
        f"url = {q(url)}\nstation = {q(name)}\n"
        f"shared_folders = [{', '.join(q(f) for f in shared)}]\n"
        f"spool = {q(tmp / (name + '-spool.sqlite3'))}\nretry_s = 0.5\n"
        "claim_timeout_s = 30\n", encoding="utf-8")
    return path


class Agent:
    def __init__(self, tmp: Path, name: str, url: str, folders: list[Path],
                 shared: list[Path] = (), seconds: float = 0.002) -> None:
        self.config = _config(tmp, name, url, folders, list(shared))
        self.log = tmp / f"{name}.log"
        self.seconds = seconds
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
        with open(self.log.with_suffix(".err"), "a") as err:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, str(AGENT), str(self.config), str(self.log), str(self.seconds)],
                env=env, stdout=subprocess.DEVNULL, stderr=err)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def analysed(self) -> list[str]:
        return self.log.read_text(errors="surrogateescape").splitlines() \
            if self.log.exists() else []


def _burst(folder: Path, n: int, start: int = 0, pause: float = 0.0) -> list[str]:
    paths = []
    for i in range(start, start + n):
        paths.append(str(write_file(folder / f"P{i // 96}_{'ABCDEFGH'[i % 96 // 12]}"
                                             f"{i % 12 + 1:02d}_s1_w1.tif")))
        if pause:
            time.sleep(pause)
    return paths


def _done(url: str) -> dict[str, str]:
    try:
        with StoreReader(url) as r:
            rows = list(r.iter_measurements())
    except StoreError:  # the agents have not created the tables yet; the server restarts
        return {}
    return {row.path: row.state for row in rows}


def _all_done(url: str, expected: list[str]) -> bool:
    done = _done(url)
    return all(done.get(p) == "done" for p in expected)


def _measured_once(url: str, expected: list[str]) -> None:
    with StoreReader(url) as r:
        rows = list(r.iter_measurements())
    paths = Counter(row.path for row in rows)
    assert set(paths) == set(expected)
    assert max(paths.values()) == 1
    assert all(row.state == "done" and row.viability == 1.0 for row in rows)


@pytest.fixture
def agents():
    started: list[Agent] = []
    yield started
    for a in started:
        a.stop()


@pytest.mark.slow
def test_two_agents_on_separate_folders_each_analyse_their_images_once(pg_url, tmp_path,
                                                                        agents):
    fa, fb = tmp_path / "a", tmp_path / "b"
    fa.mkdir(), fb.mkdir()
    agents += [Agent(tmp_path, "A", pg_url, [fa]), Agent(tmp_path, "B", pg_url, [fb])]
    expected = _burst(fa, 60) + _burst(fb, 60)
    assert wait_for(lambda: _all_done(pg_url, expected), 90)
    _measured_once(pg_url, expected)
    a, b = agents[0].analysed(), agents[1].analysed()
    assert sorted(a) == sorted(expected[:60]) and sorted(b) == sorted(expected[60:])
    assert wait_for(lambda: {s.name for s in read_status(config_from_dict(
        {"storage": {"url": pg_url, "station": "A"}})).stations if s.running} == {"A", "B"}, 20)


@pytest.mark.slow
def test_two_agents_on_one_shared_folder_analyse_every_image_exactly_once(pg_url, tmp_path,
                                                                          agents):
    share = tmp_path / "share"
    share.mkdir()
    agents += [Agent(tmp_path, n, pg_url, [share], [share], seconds=0.01) for n in "AB"]
    expected = _burst(share, 150)
    assert wait_for(lambda: _all_done(pg_url, expected), 120)
    _measured_once(pg_url, expected)
    logs = agents[0].analysed() + agents[1].analysed()
    assert sorted(logs) == sorted(expected)  # never analysed twice (how the work is split
    # between the two depends on the machine's load; see the concurrent-claims test)


@pytest.mark.slow
def test_an_agent_killed_mid_burst_and_restarted_loses_nothing_and_records_once(
        pg_url, tmp_path, agents):
    fa, fb = tmp_path / "a", tmp_path / "b"
    fa.mkdir(), fb.mkdir()
    agents += [Agent(tmp_path, "A", pg_url, [fa], seconds=0.02),
               Agent(tmp_path, "B", pg_url, [fb], seconds=0.02)]
    expected = _burst(fa, 40) + _burst(fb, 40)
    assert wait_for(lambda: len(agents[0].analysed()) >= 5, 60)
    agents[0].kill()
    expected += _burst(fa, 40, start=40)  # written while A is down
    agents[0].start()
    assert wait_for(lambda: _all_done(pg_url, expected), 120)
    _measured_once(pg_url, expected)
    counts = Counter(agents[0].analysed() + agents[1].analysed())
    assert set(counts) == set(expected)
    assert sum(n - 1 for n in counts.values()) <= 8  # at most the batch in hand again


def _outage(pg_server, pg_url, tmp_path, agents, down_s: float) -> None:
    fa, fb = tmp_path / "a", tmp_path / "b"
    fa.mkdir(), fb.mkdir()
    agents += [Agent(tmp_path, "A", pg_url, [fa], seconds=0.01),
               Agent(tmp_path, "B", pg_url, [fb], seconds=0.01)]
    expected = _burst(fa, 30) + _burst(fb, 30)
    assert wait_for(lambda: len(agents[0].analysed()) >= 5, 60)
    pg_server.stop()
    expected += _burst(fa, 30, start=30, pause=down_s / 60) + _burst(fb, 30, start=30)
    time.sleep(down_s / 2)
    pg_server.start()
    assert wait_for(lambda: _all_done(pg_url, expected), 120)
    _measured_once(pg_url, expected)
    counts = Counter(agents[0].analysed() + agents[1].analysed())
    assert set(counts) == set(expected)
    assert all(a.proc.poll() is None for a in agents)  # neither agent stopped


@pytest.mark.slow
def test_a_server_restart_mid_burst_loses_nothing_and_records_once(pg_server, pg_url,
                                                                   tmp_path, agents):
    _outage(pg_server, pg_url, tmp_path, agents, down_s=0.5)


@pytest.mark.slow
def test_the_server_away_for_a_while_spools_and_syncs_when_it_returns(pg_server, pg_url,
                                                                      tmp_path, agents):
    _outage(pg_server, pg_url, tmp_path, agents, down_s=6.0)
    assert any("spool" in (tmp_path / f"{n}.err").read_text() for n in "AB")


def test_db_migrate_creates_the_tables_on_the_server(pg_url, capsys):
    from nvir_agent.cli.main import main

    assert main(["db", "migrate", "--to", pg_url]) == 0
    assert f"schema version {len(MIGRATIONS)}" in capsys.readouterr().out


def test_the_cli_reads_alerts_and_exports_from_the_server_not_a_local_file(
        pg_url, tmp_path, capsys):
    import cv2

    from nvir_agent.cli.main import main
    from nvir_agent.synth.render import render_spheroid

    acq = tmp_path / "acq"
    acq.mkdir()
    for i in range(2):
        cv2.imwrite(str(acq / f"P9_B0{i + 1}_s1_w1.png"), render_spheroid(0.8, seed=70 + i).image)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[storage]\nurl = "{pg_url}"\nstation = "scope-1"\n'
                   '[model]\nenabled = false\n', encoding="utf-8")
    assert main(["--config", str(cfg), "process", str(acq)]) == 0
    capsys.readouterr()
    assert main(["--config", str(cfg), "export", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()
            if line.strip() and "provenance" not in line]
    assert sorted(r["well"] for r in rows) == ["B01", "B02"]
    assert all(r["station"] == "scope-1" for r in rows)
    assert main(["--config", str(cfg), "alerts", "--json"]) == 0
    alerts = json.loads(capsys.readouterr().out)
    assert [(a["plate"], a["rule"]) for a in alerts] == [("P9", "no_map")]  # the server's
    assert main(["--config", str(cfg), "ack", str(alerts[0]["id"])]) == 0
    assert "is now acknowledged" in capsys.readouterr().out
    assert main(["--config", str(cfg), "alerts", "--json"]) == 0
    assert [a["state"] for a in json.loads(capsys.readouterr().out)] == ["acknowledged"]
    assert main(["--config", str(cfg), "alerts", "--json", "--station", "scope-1"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert main(["--config", str(cfg), "alerts", "--json", "--station", "elsewhere"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["--config", str(cfg), "export", "--format", "jsonl", "--station", "other"]) == 0
    assert [line for line in capsys.readouterr().out.splitlines()
            if line.strip() and "provenance" not in line] == []
    assert not list(tmp_path.glob("*.sqlite3"))  # nothing went to a local file


def test_db_copy_moves_a_station_history_into_the_server_once(pg_url, tmp_path, capsys):
    from nvir_agent.cli.main import main
    from nvir_agent.monitor import alerts as alert_api
    from nvir_agent.monitor.rules import Condition

    local = tmp_path / "station.sqlite3"
    with Store(local, station="scope-7") as s:
        ids = s.add_jobs([(f"/acq/P5_B0{i}.tif", 10, float(i),
                           ImageKey(plate="P5", well=f"B0{i}", timepoint=1)) for i in (1, 2, 3)])
        recs = s.records(ids)
        s.commit_results([Result(recs[0], None, Measurement(True, 0.8, "m@1", ["ok"], {"a": 1})),
                          Result(recs[1], "unreadable")])
        with s.transaction() as tx:
            alert_api.reconcile(tx, ["P5"], [Condition("P5", "well:B01", "viability",
                                                       "warning", 1, 1, 0.4, "low", {})])
    args = ["db", "copy", "--from", str(local), "--to", pg_url, "--station", "scope-7"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "3 images copied, 0 already there" in first and "1 alerts copied" in first
    assert main(args) == 0  # again: nothing twice
    again = capsys.readouterr().out
    assert "0 images copied, 3 already there" in again and "0 alerts copied" in again
    with StoreReader(pg_url) as r:
        rows = {m.key.well: m for m in r.measurements()}
        assert (rows["B01"].state, rows["B01"].viability) == ("done", 0.8)
        assert rows["B02"].state == "failed" and rows["B03"].state == "pending"
        assert {m.station for m in rows.values()} == {"scope-7"}
        assert [(a.plate, a.subject) for a in r.alerts()] == [("P5", "well:B01")]
