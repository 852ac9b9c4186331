"""Folder watching on real temp folders with the real observers and SQLite store."""

from __future__ import annotations

import os
import shutil
import time

from core_helpers import RecordingStage, make_config, running, wait_until, write_file

from nvir_agent.ingest.watch import SettleTracker, is_network_path, mount_fstype, observer_mode

MOUNTS = """\
/dev/sda1 / ext4 rw 0 0
//nas/lab /mnt/lab cifs rw,vers=3.0 0 0
nas:/export/imaging /mnt/imaging nfs4 rw 0 0
/dev/sdb1 /mnt/lab/local\\040disk ext4 rw 0 0
"""


# --- network detection and mode --------------------------------------------------------


def test_smb_and_nfs_mounts_are_network_paths():
    assert is_network_path("/mnt/lab/plate1/x.tif", mounts_text=MOUNTS)
    assert is_network_path("/mnt/imaging", mounts_text=MOUNTS)
    assert not is_network_path("/home/user/acq", mounts_text=MOUNTS)
    assert not is_network_path("/mnt/labx", mounts_text=MOUNTS)


def test_longest_mount_wins_and_escaped_spaces_are_read():
    assert mount_fstype("/mnt/lab/local disk/p1", MOUNTS) == "ext4"
    assert not is_network_path("/mnt/lab/local disk/p1", mounts_text=MOUNTS)


def test_unc_paths_are_network_paths_on_every_platform():
    assert is_network_path("\\\\server\\share\\plates", platform="win32")
    assert is_network_path("//server/share/plates", platform="linux")


def test_observer_mode_polls_network_folders_unless_configured():
    assert observer_mode("auto", network=True) == "polling"
    assert observer_mode("auto", network=False) == "native"
    assert observer_mode("native", network=True) == "native"
    assert observer_mode("polling", network=False) == "polling"


# --- settle tracker --------------------------------------------------------------------


def test_settle_tracker_waits_for_quiet_and_for_the_file_to_open(tmp_path):
    f = write_file(tmp_path / "a.tif")
    locked = {str(f)}
    tracker = SettleTracker(1.0, can_open=lambda p: p not in locked)
    st = os.stat(f)
    tracker.observe(str(f), st.st_size, st.st_mtime, now=0.0)
    assert tracker.poll(now=0.5) == []  # not quiet long enough
    assert tracker.poll(now=1.1) == []  # quiet, but still locked by the writer
    locked.clear()
    assert tracker.poll(now=1.5) == []  # locked resets the wait
    assert tracker.poll(now=2.2) == [(str(f), st.st_size, st.st_mtime)]
    assert len(tracker) == 0


def test_settle_tracker_restarts_the_wait_when_the_file_grows(tmp_path):
    f = write_file(tmp_path / "a.tif", b"x" * 10)
    tracker = SettleTracker(1.0)
    st = os.stat(f)
    tracker.observe(str(f), st.st_size, st.st_mtime, now=0.0)
    f.write_bytes(b"x" * 20)
    assert tracker.poll(now=1.5) == []
    assert tracker.poll(now=2.0) == []
    assert [s for _p, s, _m in tracker.poll(now=2.6)] == [20]


def test_settle_tracker_forgets_deleted_files_and_waits_longer_for_empty_ones(tmp_path):
    gone = write_file(tmp_path / "gone.tif")
    empty = write_file(tmp_path / "empty.tif", b"")
    tracker = SettleTracker(0.5, empty_wait_s=5.0)
    for f in (gone, empty):
        st = os.stat(f)
        tracker.observe(str(f), st.st_size, st.st_mtime, now=0.0)
    gone.unlink()
    assert tracker.poll(now=1.0) == []
    assert len(tracker) == 1
    assert [p for p, _s, _m in tracker.poll(now=5.5)] == [str(empty)]


# --- the engine watching real folders ----------------------------------------------------


def test_file_written_in_chunks_is_processed_once_after_it_is_complete(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq], settle_s=1.0), stage) as engine:
        path = acq / "PLATE1_B03_s1_w1.tif"
        with open(path, "wb") as fh:
            for _ in range(6):  # ~2.4 s of writing
                fh.write(b"\x00" * 50_000)
                fh.flush()
                os.fsync(fh.fileno())
                time.sleep(0.4)
        finished = time.time()
        assert wait_until(lambda: engine.status().done == 1, 10)
        assert engine.wait_idle(5)
    assert [(p, s) for p, s, _t in stage.calls] == [(str(path), 300_000)]
    assert stage.calls[0][2] >= finished


def test_burst_of_500_files_is_processed_exactly_once_each(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        expected = {str(write_file(acq / f"P{i:03d}_A01_s1_w1.tif")) for i in range(500)}
        assert wait_until(lambda: engine.status().done == 500, 60)
        assert engine.wait_idle(5)
        st = engine.status()
    assert sorted(stage.paths()) == sorted(expected)
    assert (st.seen, st.pending, st.failed) == (500, 0, 0)
    assert max(stage.batches) <= engine.config.model.batch_size


def test_images_in_new_subfolders_are_found_with_plate_and_timepoint(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        f = write_file(acq / "LiverTox" / "2024-05-01" / "4431" / "TimePoint_3" / "B03_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)
        row = engine.store.image(str(f))
    assert (row["plate"], row["well"], row["timepoint"]) == ("LiverTox", "B03", 3)


def test_partial_copy_renamed_into_place_is_processed_once_under_its_final_name(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        part = write_file(acq / "PLATE1_C04_s1_w1.tif.part")
        time.sleep(0.5)
        final = part.with_name("PLATE1_C04_s1_w1.tif")
        part.rename(final)
        assert wait_until(lambda: engine.status().done == 1)
        assert engine.wait_idle(3)
    assert stage.paths() == [str(final)]


def test_renamed_image_is_analysed_under_its_new_name(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        old = write_file(acq / "PLATE1_D01_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)
        new = old.with_name("PLATE1_D02_s1_w1.tif")
        old.rename(new)
        assert wait_until(lambda: engine.status().done == 2)
        assert engine.store.image(str(new))["well"] == "D02"
    assert stage.paths() == [str(old), str(new)]


def test_folder_moved_in_from_outside_is_scanned(tmp_path):
    acq, outside = tmp_path / "acq", tmp_path / "outside"
    acq.mkdir()
    files = [write_file(outside / "P9" / f"P9_E{c:02d}_s1_w1.tif") for c in range(1, 6)]
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        time.sleep(0.3)
        shutil.move(str(outside / "P9"), str(acq / "P9"))
        assert wait_until(lambda: engine.status().done == 5)
    assert sorted(stage.paths()) == sorted(str(acq / "P9" / f.name) for f in files)


def test_previews_and_temporary_files_are_ignored(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        for name in ("P_A01_s1_w1_thumb1234.tif", "~$P_A01.tif", "P_A01.tmp", "x.txt",
                     "P_A01.tif.part"):
            write_file(acq / name)
        real = write_file(acq / "P_A02_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)
        assert engine.wait_idle(3)
    assert stage.paths() == [str(real)]


def test_polling_mode_sees_new_files_and_reports_polling(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq], observer="polling"), stage) as engine:
        f = write_file(acq / "sub" / "P_A03_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1)
        [folder] = engine.status().folders
    assert stage.paths() == [str(f)]
    assert (folder.mode, folder.health) == ("polling", "watching")


def test_periodic_rescan_finds_files_the_observer_missed(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    # A polling observer that would look only after 100 s: only the rescan can find it.
    cfg = make_config(tmp_path, [acq], observer="polling", poll_interval_s=100.0,
                      rescan_interval_s=1.0)
    with running(cfg, stage) as engine:
        f = write_file(acq / "P_A04_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1, 10)
    assert stage.paths() == [str(f)]


def test_dead_observer_is_restarted_and_files_written_meanwhile_are_found(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        engine._watcher.observer_of(acq).stop()  # the observer thread dies
        f = write_file(acq / "P_B01_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1, 10)
        [folder] = engine.status().folders
    assert stage.paths() == [str(f)]
    assert (folder.health, folder.restarts) == ("watching", 1)


def test_vanished_folder_is_watched_again_when_it_returns(tmp_path):
    acq = tmp_path / "acq"
    acq.mkdir()
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        shutil.rmtree(acq)
        assert wait_until(lambda: engine.status().folders[0].health == "missing", 5)
        acq.mkdir()
        f = write_file(acq / "P_B02_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1, 10)
        later = write_file(acq / "P_B03_s1_w1.tif")  # and events flow again
        assert wait_until(lambda: engine.status().done == 2, 10)
        [folder] = engine.status().folders
    assert stage.paths() == [str(f), str(later)]
    assert folder.health == "watching" and folder.restarts == 1


def test_folder_missing_at_start_is_watched_once_it_appears(tmp_path):
    acq = tmp_path / "later"
    stage = RecordingStage()
    with running(make_config(tmp_path, [acq]), stage) as engine:
        assert engine.status().folders[0].health == "missing"
        f = write_file(acq / "P_B04_s1_w1.tif")
        assert wait_until(lambda: engine.status().done == 1, 10)
    assert stage.paths() == [str(f)]


def test_watchdogs_duplicate_watch_warning_stays_out_of_the_console():
    import warnings

    from nvir_agent.ingest.watch import quiet_duplicate_watch_warning

    def warn(message):
        warnings.warn_explicit(message, RuntimeWarning, "inotify.py", 365,
                               module="watchdog.observers.inotify", registry={})

    with warnings.catch_warnings(record=True) as caught:
        quiet_duplicate_watch_warning()  # as every native observer the watcher starts
        quiet_duplicate_watch_warning()  # twice: one filter, not two
        warn("Callback with id '1' already exists for watch <Watch wd=4>. It will be Overwritten.")
        warn("inotify watch limit reached")  # anything else still shows
        duplicates = [f for f in warnings.filters if f[1] and "Callback with id" in f[1].pattern]
    assert [str(w.message) for w in caught] == ["inotify watch limit reached"]
    assert len(duplicates) == 1
