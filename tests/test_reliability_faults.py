"""Faults of the file system and the disk, on the real engine and temporary folders.

Each test breaks something the agent depends on while it runs — the watched
folder deleted, renamed, replaced, unreachable or unreadable; an image it may
not open; the observer thread dying; the database's disk full — and checks
three things: the agent says so in plain words (its log and the status
snapshot the tray and ``nvir-agent status`` show), it keeps what it has (no
job lost; images that arrived meanwhile are analysed later, once each), and
it recovers by itself when the condition clears.

The tests run as root in CI, where permissions do not stop reads: a folder or
file "without permission" is made so at the boundary the agent uses (``os``
calls and ``open`` raise ``PermissionError`` for those paths, as they do for
an ordinary user), and a share that is unreachable raises ``EHOSTDOWN`` there.
The disk filling up is SQLite's own error (``SQLITE_FULL``), reached by
capping the database's page count.
"""

from __future__ import annotations

import builtins
import errno
import getpass
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from core_helpers import RecordingStage, make_config, running, wait_until, write_file

from nvir_agent.app import build_engine
from nvir_agent.cli.main import main
from nvir_agent.config import config_from_dict, load_config
from nvir_agent.core.engine import Engine
from nvir_agent.core.status import read_status
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.pipeline.image_stages import ReadStage
from nvir_agent.store import StoreReader, database_path

try:
    import pwd  # POSIX only: the user the permission tests run the agent as
except ImportError:  # pragma: no cover - Windows
    pwd = None

OBSERVERS = ["native", "polling"]


def folder_status(engine):
    [folder] = engine.status().folders
    return folder


def analysed_once(stage: RecordingStage, files: list[Path]) -> None:
    counts = Counter(stage.paths())
    assert {p: n for p, n in counts.items() if n != 1} == {}, "analysed more than once"
    assert sorted(counts) == sorted(map(str, files))


# --- the watched folder goes away, comes back, or is replaced -------------------------


@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_watched_folder_renamed_away_and_back_is_watched_again_and_loses_nothing(
        tmp_path, observer, caplog):
    caplog.set_level(logging.INFO, logger="nvir_agent")
    acq, away = tmp_path / "acq", tmp_path / "acq-renamed"
    acq.mkdir()
    cfg = make_config(tmp_path, [acq], observer=observer)
    stage = RecordingStage()
    with running(cfg, stage) as engine:
        first = write_file(acq / "P_A01_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)
        acq.rename(away)
        assert wait_until(lambda: folder_status(engine).health == "missing")
        assert "does not exist" in folder_status(engine).detail or \
            "disappeared" in folder_status(engine).detail
        # what `nvir-agent status` shows, from the heartbeat
        assert wait_until(lambda: read_status(cfg).folders[0].health == "missing")
        write_file(away / "P_A02_s1_w1.tif")  # written while the folder is elsewhere
        away.rename(acq)
        assert wait_until(lambda: engine.status().done == 2)
        later = write_file(acq / "P_A03_s1_w1.tif")  # and events flow again
        assert wait_until(lambda: engine.status().done == 3)
        folder = folder_status(engine)
    assert (folder.health, folder.restarts) == ("watching", 1)
    analysed_once(stage, [first, acq / "P_A02_s1_w1.tif", later])
    assert f"Watched folder {acq} disappeared" in caplog.text
    assert f"Watching {acq} again" in caplog.text


@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_watched_folder_replaced_by_a_new_one_of_the_same_name_is_watched(
        tmp_path, observer, caplog):
    # An imager's software that renames the run folder away and makes a fresh one,
    # or a folder deleted and made again between two checks: a native observer
    # keeps watching the old folder, wherever it went.
    caplog.set_level(logging.INFO, logger="nvir_agent")
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq], observer=observer), stage) as engine:
        first = write_file(acq / "P_B01_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)
        acq.rename(tmp_path / "acq-old")
        acq.mkdir()
        new = write_file(acq / "P_B02_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 2), engine.status().folders
        later = write_file(acq / "P_B03_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 3)
        old_one = write_file(tmp_path / "acq-old" / "P_B04_s1_w1.tif")  # no longer watched
        assert not wait_until(lambda: engine.status().seen == 4, 2)
        assert wait_until(lambda: folder_status(engine).health == "watching")
    analysed_once(stage, [first, new, later])
    assert str(old_one) not in stage.paths()


@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_watched_folder_deleted_and_made_again_keeps_what_was_analysed(
        tmp_path, observer, caplog):
    caplog.set_level(logging.INFO, logger="nvir_agent")
    acq = tmp_path / "acq"
    acq.mkdir()
    cfg = make_config(tmp_path, [acq], observer=observer)
    stage = RecordingStage()
    with running(cfg, stage) as engine:
        before = [write_file(acq / f"P_C{c:02d}_s1_w1.tif") for c in (1, 2)]
        assert wait_until(lambda: engine.status().done == 2)
        shutil.rmtree(acq)
        assert wait_until(lambda: folder_status(engine).health == "missing")
        acq.mkdir()
        after = [write_file(acq / f"P_C{c:02d}_s1_w1.tif") for c in (3, 4)]
        assert wait_until(lambda: engine.status().done == 4)
        assert wait_until(lambda: folder_status(engine).health == "watching")
    analysed_once(stage, before + after)
    with StoreReader(database_path(cfg)) as r:
        assert r.counts().done == 4  # the results of the deleted images are kept


def test_a_share_that_stops_answering_is_reported_and_rescanned_when_it_answers(
        tmp_path, monkeypatch, caplog):
    # A polled network share whose server is away: listing it fails with
    # EHOSTDOWN (the mount point itself is still there).
    caplog.set_level(logging.INFO, logger="nvir_agent")
    acq = tmp_path / "share"
    acq.mkdir()
    down = threading.Event()
    real_scandir = os.scandir

    def scandir(path="."):
        if down.is_set() and os.fspath(path).startswith(str(acq)):
            raise OSError(errno.EHOSTDOWN, os.strerror(errno.EHOSTDOWN), os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    cfg = make_config(tmp_path, [acq], observer="polling")
    stage = RecordingStage()
    with running(cfg, stage) as engine:
        first = write_file(acq / "P_D01_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)
        down.set()
        assert wait_until(lambda: folder_status(engine).health == "unreadable")
        detail = folder_status(engine).detail
        assert "cannot be read" in detail and "share" in detail
        assert any(str(acq) in p and "share" in p for p in engine.status().problems)
        assert wait_until(lambda: any(str(acq) in p for p in read_status(cfg).problems))
        meanwhile = write_file(acq / "P_D02_s1_w1.tif")  # written on the server side
        down.clear()
        assert wait_until(lambda: engine.status().done == 2)
        assert wait_until(lambda: folder_status(engine).health == "watching")
        assert engine.status().problems == []
    analysed_once(stage, [first, meanwhile])
    assert f"Cannot read the watched folder {acq}" in caplog.text
    assert f"The watched folder {acq} can be read again; rescanning it." in caplog.text


# --- permission denied -----------------------------------------------------------------


class Denied:
    """Paths this process "may not" read: listing or entering a denied folder, and
    looking at or opening anything below it or a denied file, raise
    PermissionError, as they do for a user without the permission."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folders: set[str] = set()
        self.files: set[str] = set()
        self._lock = threading.Lock()
        real = {"scandir": os.scandir, "stat": os.stat, "lstat": os.lstat,
                "open": builtins.open}

        def below(path) -> bool:
            p = os.path.abspath(os.fspath(path)) if isinstance(path, (str, os.PathLike)) \
                else ""
            with self._lock:
                return p in self.files or any(p.startswith(f + os.sep) for f in self.folders)

        def refuse(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

        def scandir(path="."):
            p = os.path.abspath(os.fspath(path))
            with self._lock:
                denied = p in self.folders
            if denied or below(path):
                refuse(path)
            return real["scandir"](path)

        def stat(path, *args, **kwargs):
            if below(path):
                refuse(path)
            return real["stat"](path, *args, **kwargs)

        def lstat(path, *args, **kwargs):
            if below(path):
                refuse(path)
            return real["lstat"](path, *args, **kwargs)

        def open_(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and below(file):
                refuse(file)
            return real["open"](file, *args, **kwargs)

        monkeypatch.setattr(os, "scandir", scandir)
        monkeypatch.setattr(os, "stat", stat)
        monkeypatch.setattr(os, "lstat", lstat)
        monkeypatch.setattr(builtins, "open", open_)

    def deny(self, path: Path, folder: bool = True) -> None:
        with self._lock:
            (self.folders if folder else self.files).add(str(path))

    def allow(self, path: Path) -> None:
        with self._lock:
            self.folders.discard(str(path))
            self.files.discard(str(path))


@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_watched_folder_without_read_permission_is_reported_and_analysed_once_readable(
        tmp_path, monkeypatch, observer, caplog):
    caplog.set_level(logging.INFO, logger="nvir_agent")
    acq = tmp_path / "acq"
    acq.mkdir()
    denied = Denied(monkeypatch)
    cfg = make_config(tmp_path, [acq], observer=observer)
    stage = RecordingStage()
    with running(cfg, stage) as engine:
        first = write_file(acq / "P_E01_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)
        denied.deny(acq)
        assert wait_until(lambda: folder_status(engine).health == "unreadable")
        detail = folder_status(engine).detail
        assert "may not read the folder" in detail and "permission" in detail
        assert wait_until(lambda: any("permission" in p for p in read_status(cfg).problems))
        meanwhile = [write_file(acq / f"P_E{c:02d}_s1_w1.tif") for c in (2, 3)]
        denied.allow(acq)
        assert wait_until(lambda: engine.status().done == 3)
        assert wait_until(lambda: folder_status(engine).health == "watching")
        assert wait_until(lambda: engine.status().problems == [])
    analysed_once(stage, [first, *meanwhile])
    assert f"Cannot read the watched folder {acq}" in caplog.text


def test_a_watched_folder_unreadable_at_start_is_watched_once_readable(
        tmp_path, monkeypatch):
    acq = tmp_path / "acq"
    waiting = write_file(acq / "P_E04_s1_w1.tif")
    denied = Denied(monkeypatch)
    denied.deny(acq)
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        assert folder_status(engine).health == "unreadable"
        denied.allow(acq)
        assert wait_until(lambda: engine.status().done == 1)
        assert wait_until(lambda: folder_status(engine).health == "watching")
    analysed_once(stage, [waiting])


def test_an_image_the_agent_may_not_open_waits_is_reported_and_is_analysed_once_readable(
        tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="nvir_agent")
    acq = tmp_path / "acq"
    acq.mkdir()
    denied = Denied(monkeypatch)
    cfg = make_config(tmp_path, [acq])
    stage = RecordingStage()
    locked = acq / "P_F01_s1_w1.tif"
    denied.deny(locked, folder=False)
    with running(cfg, stage) as engine:
        engine.held_report_s = 1.0
        write_file(locked)
        other = write_file(acq / "P_F02_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)  # the others carry on
        assert wait_until(lambda: any("cannot be opened" in p for p in engine.status().problems))
        [problem] = engine.status().problems
        assert "P_F01_s1_w1.tif (Permission denied)" in problem and "permissions" in problem
        assert wait_until(lambda: any("P_F01" in p for p in read_status(cfg).problems))
        assert engine.status().settling == 1 and engine.status().failed == 0
        denied.allow(locked)
        assert wait_until(lambda: engine.status().done == 2)
        assert wait_until(lambda: engine.status().problems == [])
    analysed_once(stage, [other, locked])
    assert f"Cannot open {locked}: Permission denied" in caplog.text


def test_an_image_in_a_subfolder_the_agent_may_not_enter_is_analysed_once_it_may(
        tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="nvir_agent")
    acq = tmp_path / "acq"
    (acq / "TimePoint_1").mkdir(parents=True)
    denied = Denied(monkeypatch)
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        engine.held_report_s = 1.0
        denied.deny(acq / "TimePoint_1")
        image = write_file(acq / "TimePoint_1" / "P_F03_s1_w1.tif")
        assert wait_until(lambda: any("P_F03" in p for p in engine.status().problems))
        denied.allow(acq / "TimePoint_1")
        assert wait_until(lambda: engine.status().done == 1)
        assert wait_until(lambda: engine.status().problems == [])
    analysed_once(stage, [image])
    assert "Cannot look at" in caplog.text


def unprivileged() -> list[str]:
    """The command prefix that runs the agent as a user permissions apply to:
    nothing for an ordinary user; ``setpriv`` to the user nobody for root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    if pwd is None:
        pytest.skip("running as root without the pwd module to find the user 'nobody'")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no user 'nobody' to run the agent as")
    prefix = [shutil.which("setpriv") or "setpriv", f"--reuid={nobody.pw_uid}",
              f"--regid={nobody.pw_gid}", "--clear-groups", "--"]
    try:
        probe = subprocess.run([*prefix, sys.executable, "-c", "import nvir_agent"],
                               capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"running as root and cannot run the agent as nobody with setpriv: {exc}")
    if probe.returncode != 0:
        pytest.skip("running as root and cannot run the agent as nobody with setpriv: "
                    + probe.stderr.decode(errors="replace")[-300:])
    return prefix


@pytest.fixture
def open_tmp():
    """A temporary folder every user may enter (pytest's own is its user's only)."""
    base = Path(tempfile.mkdtemp(prefix="nvir-perm-"))
    base.chmod(0o777)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_folder_whose_permissions_deny_the_agent_is_reported_and_analysed_once_allowed(
        observer, capsys, open_tmp):
    # Real permissions: the agent runs as a user chmod applies to (as nobody when the
    # tests run as root), in its own process, on a folder that user may not read.
    prefix = unprivileged()
    base = open_tmp
    acq = base / "acq"
    acq.mkdir()
    acq.chmod(0o777)
    home = base / "home"
    home.mkdir()
    home.chmod(0o777)
    cfg_file = base / "agent.toml"
    cfg_file.write_text(
        f'[watch]\nfolders = ["{acq}"]\nsettle_s = 0.2\nrescan_interval_s = 0.0\n'
        f'observer = "{observer}"\npoll_interval_s = 0.3\n'
        f'[storage]\ndatabase = "{base / "agent.sqlite3"}"\n', encoding="utf-8")
    cfg = load_config(cfg_file, check_folders=False)
    user = "nobody" if prefix else None
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "c"),
           "XDG_DATA_HOME": str(home / "d"), "XDG_STATE_HOME": str(home / "s"),
           "XDG_CACHE_HOME": str(home / "k"), **({"USER": user, "LOGNAME": user}
                                                  if user else {})}
    log, err = base / "analysed.log", base / "agent.err"
    agent = Path(__file__).with_name("agent_proc.py")
    first = write_file(acq / "P_H01_s1_w1.tif")
    with open(err, "w") as fh:
        proc = subprocess.Popen([*prefix, sys.executable, str(agent), str(cfg_file), str(log)],
                                stdout=subprocess.DEVNULL, stderr=fh, env=env)
    try:
        def analysed() -> list[str]:
            return log.read_text().splitlines() if log.exists() else []

        assert wait_until(lambda: analysed() == [str(first)], 120), err.read_text()
        acq.chmod(0o000)  # nobody may list or enter it now
        assert wait_until(lambda: read_status(cfg).folders[0].health == "unreadable", 60), \
            err.read_text()
        st = read_status(cfg)
        assert "may not read the folder" in st.folders[0].detail
        assert any(str(acq) in p and "permissions" in p for p in st.problems)
        capsys.readouterr()
        assert main(["--config", str(cfg_file), "status"]) == 1  # problems: exit 1
        out = capsys.readouterr().out
        user = user or getpass.getuser()
        assert f"unreadable — this user ({user}) may not read the folder: Permission denied; " \
            "check its permissions" in out, out
        meanwhile = [write_file(acq / f"P_H{c:02d}_s1_w1.tif") for c in (2, 3)]
        acq.chmod(0o755)
        assert wait_until(lambda: len(analysed()) == 3, 60), err.read_text()
        assert wait_until(lambda: read_status(cfg).folders[0].health == "watching", 30)
    finally:
        acq.chmod(0o755)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    stderr = err.read_text()
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert Counter(analysed()) == Counter(map(str, [first, *meanwhile]))
    assert f"Cannot read the watched folder {acq}" in stderr
    assert f"The watched folder {acq} can be read again; rescanning it." in stderr


# --- queued images whose file cannot be reached when their turn comes -----------------


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((16, 16), 128, np.uint8))
    return path


@pytest.mark.parametrize("how", ["folder renamed", "permission denied"])
def test_queued_images_that_cannot_be_read_for_now_wait_and_are_analysed_later(
        tmp_path, monkeypatch, how, caplog):
    # The real read stage: a share that drops, a folder renamed, or a permission
    # taken away between queueing and analysis must not fail the images for good
    # (their size and mtime do not change, so nothing would queue them again).
    caplog.set_level(logging.INFO, logger="nvir_agent")
    acq = tmp_path / "acq"
    run = acq / "TimePoint_1"
    denied = Denied(monkeypatch)
    cfg = make_config(tmp_path, [acq])
    stage = RecordingStage()
    engine = Engine(cfg, stages=[ReadStage(cfg), stage])
    engine.start()
    try:
        engine.pause()
        files = [png(run / f"P_J{c:02d}_s1_w1.png") for c in range(1, 5)]
        assert wait_until(lambda: engine.status().pending == 4)
        if how == "folder renamed":
            acq.rename(tmp_path / "acq-away")
        else:
            denied.deny(run)
        engine.resume()
        assert wait_until(lambda: any("cannot be reached now" in p
                                      for p in engine.status().problems))
        st = engine.status()
        assert (st.pending, st.failed, st.done) == (4, 0, 0)
        assert wait_until(lambda: any("cannot be reached now" in p
                                      for p in read_status(cfg).problems))
        if how == "folder renamed":
            (tmp_path / "acq-away").rename(acq)
        else:
            denied.allow(run)
        assert wait_until(lambda: engine.status().done == 4, 30)
        assert wait_until(lambda: engine.status().problems == [])
        assert engine.status().failed == 0
        with StoreReader(database_path(cfg)) as r:
            attempts = {m.path: m.attempts for m in r.iter_measurements()}
    finally:
        engine.stop()
    analysed_once(stage, files)
    assert set(attempts.values()) == {1}  # the waits did not count as attempts
    assert "queued image(s) cannot be reached now" in caplog.text


def mount(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_share_unmounted_from_the_watched_folder_is_missing_and_loses_nothing(
        tmp_path, observer, caplog):
    # The share is mounted on the watched folder itself; unmounted (the server away),
    # it leaves an empty folder behind, which must not pass for an empty share, and
    # the images queued from it must wait, not fail.
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a folder needs root")
    caplog.set_level(logging.INFO, logger="nvir_agent")
    server, acq = tmp_path / "server", tmp_path / "acq"
    server.mkdir()
    acq.mkdir()
    done = mount(["-t", "tmpfs", "-o", "size=8m", "tmpfs", str(server)])  # the server's disk
    if done.returncode != 0:
        pytest.skip(f"cannot mount a file system here: {done.stderr.strip()}")
    done = mount(["--bind", str(server), str(acq)])  # and the share, mounted on the folder
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(server)], check=False)
        pytest.skip(f"cannot bind-mount a folder here: {done.stderr.strip()}")
    mounted = True
    cfg = make_config(tmp_path, [acq], observer=observer)
    stage = RecordingStage()
    engine = Engine(cfg, stages=[ReadStage(cfg), stage])
    engine.start()
    try:
        first = png(acq / "P_N01_s1_w1.png")
        assert wait_until(lambda: engine.status().done == 1)
        engine.pause()
        queued = [png(acq / f"P_N{c:02d}_s1_w1.png") for c in (2, 3)]
        assert wait_until(lambda: engine.status().pending == 2)
        assert subprocess.run(["umount", str(acq)]).returncode == 0
        mounted = False
        assert wait_until(lambda: folder_status(engine).health == "missing")
        assert "unmounted" in folder_status(engine).detail
        engine.resume()
        assert wait_until(lambda: any("cannot be reached now" in p
                                      for p in engine.status().problems))
        assert (engine.status().failed, engine.status().pending) == (0, 2)
        meanwhile = png(server / "P_N04_s1_w1.png")  # written on the server meanwhile
        assert mount(["--bind", str(server), str(acq)]).returncode == 0
        mounted = True
        assert wait_until(lambda: engine.status().done == 4, 30)
        assert wait_until(lambda: folder_status(engine).health == "watching")
        assert wait_until(lambda: engine.status().problems == [])
        assert engine.status().failed == 0
        analysed_once(stage, [first, *queued, acq / meanwhile.name])
    finally:
        engine.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(acq)], check=False)
        subprocess.run(["umount", "-l", str(server)], check=False)
    assert f"Watched folder {acq} disappeared" in caplog.text


def test_a_queued_image_deleted_before_its_analysis_is_failed_with_the_reason(tmp_path):
    acq = tmp_path / "acq"
    cfg = make_config(tmp_path, [acq])
    engine = Engine(cfg, stages=[ReadStage(cfg), RecordingStage()])
    engine.start()
    try:
        engine.pause()
        gone, kept = png(acq / "P_K01_s1_w1.png"), png(acq / "P_K02_s1_w1.png")
        assert wait_until(lambda: engine.status().pending == 2)
        gone.unlink()  # deleted for good: its folder is still there
        engine.resume()
        assert wait_until(lambda: engine.status().pending == 0)
        with StoreReader(database_path(cfg)) as r:
            states = {m.path: (m.state, m.error) for m in r.iter_measurements()}
    finally:
        engine.stop()
    assert states[str(kept)] == ("done", None)
    state, error = states[str(gone)]
    assert state == "failed" and "P_K01_s1_w1.png" in error and "No such file" in error


def test_a_link_loop_named_like_an_image_is_not_waited_for(tmp_path, caplog):
    # Only what may pass (no permission, a share away) is waited for; a loop of
    # links is the path's own problem: said once, as before.
    caplog.set_level(logging.INFO, logger="nvir_agent")
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        engine.held_report_s = 0.5
        loop = acq / "P_Z01_s1_w1.tif"
        os.symlink(loop, loop)
        good = write_file(acq / "P_Z02_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)
        assert not wait_until(lambda: engine.status().problems or engine.status().settling, 3)
    analysed_once(stage, [good])
    assert caplog.text.count("Cannot look at") <= 2  # one per event, never a retry loop


# --- the observer thread dies ----------------------------------------------------------


def test_an_observer_thread_that_dies_of_an_error_is_restarted_each_time(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nvir_agent")
    acq = tmp_path / "acq"
    acq.mkdir()
    cfg = make_config(tmp_path, [acq])
    stage = RecordingStage()
    files = []
    hook = threading.excepthook
    threading.excepthook = lambda args: None  # the dying thread's traceback, not ours
    try:
        with running(cfg, stage) as engine:
            for round_ in range(1, 3):
                observer = engine._watcher.observer_of(acq)
                [emitter] = list(observer.emitters)

                def broken(timeout):
                    raise OSError(errno.EIO, "the watch stopped")

                emitter.queue_events = broken  # the emitter thread dies at its next turn
                assert wait_until(lambda: folder_status(engine).health == "restarting", 10,
                                  step=0.01)
                assert folder_status(engine).detail == "the observer stopped unexpectedly"
                files.append(write_file(acq / f"P_G{round_:02d}_s1_w1.tif"))
                assert wait_until(lambda n=round_: engine.status().done == n, 30)
                assert wait_until(lambda n=round_: folder_status(engine).restarts == n)
                assert folder_status(engine).health == "watching"
    finally:
        threading.excepthook = hook
    analysed_once(stage, files)
    assert f"The native observer of {acq} stopped; restarting it" in caplog.text


# --- the disk holding the database is full ---------------------------------------------


MAP_CSV = ("plate,well,role,compound,concentration_uM\n"
           "P1,A01:A04,vehicle,,\nP1,B01:B03,treated,Tox,10\n")


class ScoreByWell:
    """Stands in for reading and scoring: the treated wells (row B) lose viability."""

    name = "score-by-well"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def run(self, batch: list[Analysis]) -> None:
        for a in batch:
            self.seen.append(str(a.record.path))
            a.found = True
            a.image_meta["note"] = "x" * 1500  # a row about as large as a real one
            tp = a.record.key.timepoint or 1
            a.viability = 1.0 if a.record.key.well[0] != "B" else max(1.0 - 0.25 * tp, 0.2)


def limit_database_growth(engine, extra_pages: int) -> None:
    """SQLite's own "database or disk is full" from now on, once the file has grown
    by ``extra_pages`` (a page limit on the engine's connection; 0 lifts it)."""
    conn = engine.store._conn  # the engine's one writer connection
    with engine.store._lock:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        limit = pages + extra_pages if extra_pages >= 0 else 2 ** 30
        conn.execute(f"PRAGMA max_page_count = {int(limit)}")


WELLS = ["A01", "A02", "A03", "A04", "B01", "B02", "B03"]


def write_read(acq: Path, tp: int) -> list[Path]:
    return [write_file(acq / f"TimePoint_{tp}" / f"P1_{w}_s1_w1.tif") for w in WELLS]


def test_a_full_disk_pauses_the_agent_which_says_so_and_carries_on_when_there_is_room(
        tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nvir_agent")
    name = ("acquisition of a long-running plate " * 4).strip()
    acq = tmp_path / name / name  # long paths: rows that fill pages
    acq.mkdir(parents=True)
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "p1.csv").write_text(MAP_CSV, encoding="utf-8")
    cfg = config_from_dict({
        "watch": {"folders": [str(acq)], "settle_s": 0.2, "rescan_interval_s": 0.0},
        "storage": {"database": str(tmp_path / "agent.sqlite3")},
        "plates": {"maps": str(tmp_path / "maps")},
        "model": {"batch_size": 4},
        "notify": {"console": False},
    }, source=tmp_path / "agent.toml", check_folders=False)
    stage = ScoreByWell()
    engine = build_engine(cfg, stages=[stage])
    files = write_read(acq, 1)
    engine.start()
    try:
        assert wait_until(lambda: engine.status().done == 7)
        # 1. images already queued when the disk fills: their results cannot be written
        engine.pause()
        files += write_read(acq, 2)
        assert wait_until(lambda: engine.status().pending == 7)
        limit_database_growth(engine, 0)
        engine.resume()
        assert wait_until(lambda: any("cannot grow" in p for p in engine.status().problems))
        [problem] = engine.status().problems
        assert "the disk that holds it is full" in problem and "Free some space" in problem
        # what `nvir-agent status` shows, from the heartbeat (rewritten in place)
        assert wait_until(lambda: any("cannot grow" in p for p in read_status(cfg).problems))
        # 2. new images while it is full: found, kept, and not yet queued
        for tp in (3, 4, 5):
            files += write_read(acq, tp)
        assert wait_until(lambda: engine.status().settling == 21)
        assert engine.status().running and engine.error is None
        assert engine.status().pending == 7 and engine.status().done == 7
        limit_database_growth(engine, -1)  # space freed
        assert wait_until(lambda: engine.status().done == 35, 30)
        assert wait_until(lambda: engine.status().problems == [])
        with StoreReader(database_path(cfg)) as r:
            counts = r.counts()
            attempts = {m.path: m.attempts for m in r.iter_measurements()}
            alerts = [(a.plate, a.subject, a.rule) for a in r.alerts()]
    finally:
        engine.stop()
    assert engine.error is None
    assert (counts.done, counts.failed, counts.pending) == (35, 0, 0)
    assert Counter(stage.seen) == Counter(map(str, files))  # each image once
    assert set(attempts.values()) == {1}
    assert alerts == [("P1", "group:Tox 10 µM", "viability")]  # evaluated after the wait
    assert "cannot grow: the disk that holds it is full" in caplog.text
    assert "can be written again; carrying on" in caplog.text
    assert "Traceback" not in caplog.text


@pytest.fixture
def small_disk(tmp_path):
    """A file system of its own, 8 MiB (tmpfs), for a disk that really fills up."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small file system needs root; the full disk is also tested "
                    "with SQLite's page limit")
    folder = tmp_path / "small-disk"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_disk_that_really_fills_up_under_the_database_is_survived(
        tmp_path, small_disk, caplog):
    caplog.set_level(logging.INFO, logger="nvir_agent")
    acq = tmp_path / "acq"
    acq.mkdir()
    cfg = config_from_dict({
        "watch": {"folders": [str(acq)], "settle_s": 0.2, "rescan_interval_s": 0.0},
        "storage": {"database": str(small_disk / "agent.sqlite3")},
    }, source=tmp_path / "agent.toml", check_folders=False)
    stage = RecordingStage()
    with running(cfg, stage) as engine:
        files = [write_file(acq / f"P_L{c:02d}_s1_w1.tif") for c in range(1, 6)]
        assert wait_until(lambda: engine.status().done == 5)
        filler = fill(small_disk)
        files += [write_file(acq / f"P_M{c:02d}_s1_w1.tif") for c in range(1, 21)]
        assert wait_until(lambda: any("cannot grow" in p for p in engine.status().problems))
        assert engine.status().running and engine.error is None
        # another process (`nvir-agent status`) sees the full disk, heartbeat or not
        assert any("is full" in p for p in read_status(cfg).problems)
        filler.unlink()
        assert wait_until(lambda: engine.status().done == 25, 30)
        assert wait_until(lambda: engine.status().problems == [])
        assert engine.status().failed == 0
    analysed_once(stage, files)
    assert "can be written again; carrying on" in caplog.text
