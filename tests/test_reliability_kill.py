"""The agent killed (SIGKILL) at random moments during a burst of 300 images,
restarted, five times in a row: every image is analysed to completion once,
no measurement or alert is lost or doubled.

The agent runs in its own process (tests/agent_proc_monitored.py) with the
real ingest, jobs, store and monitor (plate maps, alert rules) and a light
stand-in for reading and scoring. The images arrive while it runs and while it
is down. The randomness (when to kill, how fast images arrive) comes from one
seed, printed with every failure; ``NVIR_KILL_SEED=<seed>`` repeats those (the
threads' own timing still varies).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from core_helpers import wait_until, write_file

from nvir_agent.config import load_config
from nvir_agent.core.status import read_status
from nvir_agent.monitor.listener import Monitor
from nvir_agent.monitor.notify import Notifier
from nvir_agent.store import Store, StoreReader

AGENT = Path(__file__).with_name("agent_proc_monitored.py")
PLATES = ("P1", "P2")
TIMEPOINTS = (1, 2, 3, 4, 5)
WELLS = ([f"A{c:02d}" for c in range(1, 7)] + [f"B{c:02d}" for c in range(1, 13)]
         + [f"C{c:02d}" for c in range(1, 13)])  # 30 wells × 2 plates × 5 reads = 300
KILLS = 5
BATCH = 4
SECONDS_PER_IMAGE = 0.03  # the stand-in's work: the kills find batches in hand


def agent_toml(tmp_path: Path, acq: Path, db: Path, more: str) -> Path:
    """agent.toml watching ``acq`` (quick settle, no rescans) into ``db``, plus ``more``."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[watch]\nfolders = ["{acq}"]\nsettle_s = 0.2\nrescan_interval_s = 0.0\n'
        f'[storage]\ndatabase = "{db}"\n' + more, encoding="utf-8")
    return cfg


def plate_maps(folder: Path) -> None:
    folder.mkdir()
    for plate in PLATES:
        (folder / f"{plate}.csv").write_text(
            "plate,well,role,compound,concentration_uM\n"
            f"{plate},A01:A06,vehicle,,\n{plate},B01:B12,treated,Tox,10\n"
            f"{plate},C01:C12,treated,Safe,10\n", encoding="utf-8")


def images(acq: Path) -> list[Path]:
    return [acq / f"TimePoint_{tp}" / f"{plate}_{well}_s1_w1.tif"
            for tp in TIMEPOINTS for plate in PLATES for well in WELLS]


def rows(db: Path) -> dict[str, tuple]:
    try:
        with StoreReader(db) as r:
            return {m.path: (m.state, m.attempts, m.measured_at, m.viability)
                    for m in r.iter_measurements()}
    except Exception:  # not created yet
        return {}


def finished(db: Path) -> int:
    try:
        with StoreReader(db) as r:
            c = r.counts()
    except Exception:  # not created yet
        return 0
    return c.done + c.failed


@pytest.mark.slow
def test_killing_the_agent_five_times_during_a_burst_loses_and_doubles_nothing(tmp_path):
    seed = int(os.environ.get("NVIR_KILL_SEED") or random.SystemRandom().randrange(2 ** 32))
    rng = random.Random(seed)
    print(f"NVIR_KILL_SEED={seed}")
    why = f"(NVIR_KILL_SEED={seed} repeats this run)"

    acq = tmp_path / "acq"
    acq.mkdir()
    plate_maps(tmp_path / "maps")
    db = tmp_path / "agent.sqlite3"
    cfg = agent_toml(tmp_path, acq, db, f'[plates]\nmaps = "{tmp_path / "maps"}"\n'
                     f'[model]\nbatch_size = {BATCH}\n')
    log = tmp_path / "analysed.log"
    files = images(acq)
    chunk = len(files) // KILLS  # arrive around each run: half while down, half during it

    def arrive(batch: list[Path], pauses: list[float]) -> None:
        for f, pause in zip(batch, pauses, strict=True):
            write_file(f)
            time.sleep(pause)

    def start(n: int) -> tuple[subprocess.Popen, Path]:
        err = tmp_path / f"agent-{n}.err"
        with open(err, "w") as fh:
            proc = subprocess.Popen(
                [sys.executable, str(AGENT), str(cfg), str(log), str(SECONDS_PER_IMAGE)],
                stdout=subprocess.DEVNULL, stderr=fh)
        return proc, err

    snapshots: list[dict[str, tuple]] = []
    in_flight_at_kill: list[int] = []
    for n in range(KILLS):
        mine = files[n * chunk:(n + 1) * chunk]
        arrive(mine[:chunk // 2], [0.0] * (chunk // 2))  # while the agent is down
        later = mine[chunk // 2:]
        writer = threading.Thread(target=arrive, name="imager", args=(
            later, [rng.uniform(0.02, 0.12) for _ in later]))
        before = finished(db)
        proc, err = start(n)
        try:
            progressed = wait_until(lambda b=before: finished(db) > b, 120, step=0.02)
            writer.start()  # the rest arrive while it analyses
            time.sleep(rng.uniform(0.0, 2.0))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            if writer.is_alive() or writer.ident is not None:
                writer.join()
        assert progressed, f"run {n} analysed nothing {why}\n{err.read_text()[-3000:]}"
        snap = rows(db)
        snapshots.append(snap)
        in_flight_at_kill.append(sum(v[0] == "pending" for v in snap.values()))

    config = load_config(cfg)
    proc, err = start(KILLS)  # the last run is left to finish and is stopped politely
    try:
        up = wait_until(lambda: read_status(config).pid == proc.pid, 120)
        done = up and wait_until(lambda: finished(db) == len(files)
                                 and not any(v[0] == "pending" for v in rows(db).values()), 180)
        time.sleep(1.0)  # the monitor's evaluation after the last batch
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    stderr = err.read_text()
    assert done, f"not every image was analysed {why}\n{stderr[-3000:]}"
    assert proc.returncode == 0 and "Traceback" not in stderr, f"{why}\n{stderr[-3000:]}"

    # 1. Every image has one measurement, done, with the score its name gives.
    final = rows(db)
    assert sorted(final) == sorted(map(str, files)), why
    assert {v[0] for v in final.values()} == {"done"}, why
    assert all(v[2] is not None and v[3] is not None for v in final.values()), why
    # 2. A result committed before a kill is never analysed again.
    for snap in snapshots:
        for path, (state, attempts, measured_at, _) in snap.items():
            if state == "done":
                assert final[path][:3] == (state, attempts, measured_at), f"{path} {why}"
    # 3. Analysed again only what was in hand at a kill: at most the batches in flight.
    analysed = Counter(log.read_text(encoding="utf-8").splitlines())
    assert set(analysed) == set(final), why
    again = {p: n for p, n in analysed.items() if n > 1}
    assert sum(n - 1 for n in again.values()) <= KILLS * 3 * BATCH, f"{again} {why}"
    assert all(analysed[p] <= final[p][1] for p in final), why  # each began with an attempt
    assert any(in_flight_at_kill), f"no kill came while images waited {why}"

    # 4. Alerts: one per plate for the toxic compound, opened once, and a fresh
    #    evaluation of the final data changes nothing (none lost, none extra).
    with StoreReader(db) as r:
        active = sorted((a.plate, a.subject, a.rule, a.severity) for a in r.alerts())
        opened = {a.id: [e.action for e in r.alert_events(a.id)].count("opened")
                  for a in r.alerts(include_closed=True)}
    assert active == [(p, "group:Tox 10 µM", "viability", "critical") for p in PLATES], why
    assert set(opened.values()) == {1}, why
    with Store(db) as store:
        monitor = Monitor(config, store, Notifier([], min_interval_s=0))
        try:
            result = monitor.evaluate()
        finally:
            monitor.close()
    assert result.changes == (), f"{result.changes} {why}"
    print(f"kills left {in_flight_at_kill} images waiting; {len(again)} images analysed "
          f"twice or more ({sum(n - 1 for n in again.values())} extra analyses)")


def children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            if fields.get("PPid", "").strip() == str(pid) and \
                    not fields.get("State", "").startswith(("Z", "X")):
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state and "\nState:\tX" not in state


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux /proc")
def test_the_image_worker_processes_end_when_the_agent_is_killed(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    for i in range(12):
        cv2.imwrite(str(acq / f"W{i:02d}_A01_s1_w1.png"), np.full((64, 64), 100, np.uint8))
    db = tmp_path / "agent.sqlite3"
    cfg = agent_toml(tmp_path, acq, db, '[imaging]\nworkers = 2\nthumbnails = false\n'
                     '[model]\nenabled = false\nbatch_size = 2\n')
    err = tmp_path / "agent.err"
    with open(err, "w") as fh:
        agent = subprocess.Popen(
            [sys.executable, "-m", "nvir_agent", "--config", str(cfg), "run", "--headless"],
            stdout=subprocess.DEVNULL, stderr=fh)
    try:
        assert wait_until(lambda: finished(db) >= 1, 180), err.read_text()[-3000:]
        workers = children(agent.pid)
        assert len(workers) >= 2, workers  # the two image workers (and any helper)
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(30)
    assert wait_until(lambda: not any(alive(p) for p in workers), 60), \
        f"worker processes left behind: {[p for p in workers if alive(p)]}"
