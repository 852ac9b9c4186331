"""Hostile and odd files through the real engine (model off): each is recorded as
failed with a reason a user understands, or analysed; the agent carries on.

The corpus is built per test under tmp_path; nothing large is written (the
100,000 × 100,000 images are tiny files with lying headers).
"""

from __future__ import annotations

import os
import re
import struct
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from nvir_agent.app import build_engine
from nvir_agent.config import config_from_dict
from nvir_agent.errors import AgentError
from nvir_agent.ingest.pathnames import readable

PYTHON_NAMES = re.compile(r"Traceback|Error\(|KeyError|IndexError|AttributeError|TypeError|"
                          r"ValueError|struct\.error|Exception|0x[0-9a-f]{6,}")


def spheroid(h: int = 160, w: int = 200) -> np.ndarray:
    img = np.full((h, w), 200, np.uint8)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, 60, -1)
    return img


def png_bytes(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def lying_tiff(width: int, height: int) -> bytes:
    """A 100-byte little-endian TIFF whose header claims width × height 8-bit pixels."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height),
               (279, 4, 1, min(width * height, 2**32 - 1))]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, typ, count, value) for tag, typ, count, value in entries
    ) + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8 + 8) + b"\0" * 8 + ifd


def lying_png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(
        ">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\0\0\0\0IEND\xaeB`\x82"


# name → (how to build it, expected state, fragment the error must contain)
# state "done" means analysed; the error is then None.
def build_corpus(root: Path) -> dict[str, tuple[str, str | None]]:
    rng = np.random.default_rng(20)
    img = spheroid()
    good_png = png_bytes(img)
    good_jpg = cv2.imencode(".jpg", img)[1].tobytes()
    tif = root / "_tmp.tif"
    tifffile.imwrite(tif, img)
    good_tif = tif.read_bytes()
    tif.unlink()
    files: dict[str, tuple[bytes | None, str, str | None]] = {
        "zero.tif": (b"", "failed", "empty (0 bytes)"),
        "zero.png": (b"", "failed", "empty (0 bytes)"),
        "truncated.tif": (good_tif[: len(good_tif) // 2], "failed", "truncated"),
        "truncated.png": (good_png[: len(good_png) // 2], "failed", "truncated"),
        "truncated.jpg": (good_jpg[: len(good_jpg) // 2], "failed", "truncated"),
        "noise.tif": (rng.bytes(5000), "failed", "is not a TIFF, PNG, JPEG or BMP image"),
        "noise.png": (rng.bytes(5000), "failed", "is not a TIFF, PNG, JPEG or BMP image"),
        "noise.jpg": (rng.bytes(5000), "failed", "is not a TIFF, PNG, JPEG or BMP image"),
        "huge-header.tif": (lying_tiff(100_000, 100_000), "failed", "above the limit"),
        "huge-header.png": (lying_png(100_000, 100_000), "failed", "above the limit"),
        "one-pixel.png": (png_bytes(np.full((1, 1), 128, np.uint8)), "failed",
                          "is only 1 × 1 pixels"),
        "one-pixel.tif": (None, "failed", "is only 1 × 1 pixels"),
        "float32.tif": (None, "failed", "only 8- and 16-bit"),
        "float64.tif": (None, "failed", "only 8- and 16-bit"),
        "uint64.tif": (None, "failed", "only 8- and 16-bit"),
        "multipage.tif": (None, "done", None),
        "rgb.tif": (None, "done", None),
        "planar-rgb.tif": (None, "done", None),
        "rgba.png": (png_bytes(cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA)), "done", None),
        "bigtiff.tif": (None, "done", None),
        "ome.tif": (None, "done", None),
        "A" * 240 + ".png": (good_png, "done", None),
        "..\\..\\windows\\system32.png": (good_png, "done", None),
        "x'; DROP TABLE images; --.png": (good_png, "done", None),
        'quote" OR "1"="1.png': (good_png, "done", None),
    }
    for name, (data, _, _) in files.items():
        if data is not None:
            (root / name).write_bytes(data)
    tifffile.imwrite(root / "one-pixel.tif", np.full((1, 1), 7, np.uint8))
    tifffile.imwrite(root / "float32.tif", img.astype(np.float32))
    tifffile.imwrite(root / "float64.tif", img.astype(np.float64))
    tifffile.imwrite(root / "uint64.tif", img.astype(np.uint64))
    with tifffile.TiffWriter(root / "multipage.tif") as tw:
        for page in (img, 255 - img, img):
            tw.write(page)
    tifffile.imwrite(root / "planar-rgb.tif", np.stack([img, img, img]), photometric="rgb",
                     planarconfig="separate")
    tifffile.imwrite(root / "rgb.tif", np.dstack([img, img, img]), photometric="rgb")
    tifffile.imwrite(root / "bigtiff.tif", img, bigtiff=True)
    tifffile.imwrite(root / "ome.tif", img[None, None, None], ome=True,
                     metadata={"PhysicalSizeX": 1.2, "PhysicalSizeXUnit": "µm"})
    # a name that is not UTF-8 (Latin-1 é), as a Windows share can give
    bad = os.fsencode(root) + b"/caf\xe9.png"
    with open(bad, "wb") as fh:
        fh.write(good_png)
    files[os.fsdecode(bad)[len(str(root)) + 1:]] = (None, "done", None)
    # a folder named like an image, holding an image
    (root / "folder.tif").mkdir()
    (root / "folder.tif" / "inside.png").write_bytes(good_png)
    files[os.path.join("folder.tif", "inside.png")] = (None, "done", None)
    # symlink loops: a folder linking to itself and two files linking to each other
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "ping.png").symlink_to(root / "pong.png")
    (root / "pong.png").symlink_to(root / "ping.png")
    return {name: (state, fragment) for name, (_, state, fragment) in files.items()}


def engine_config(tmp_path: Path, folder: Path, **watch):
    raw = {
        "watch": {"folders": [str(folder)], "settle_s": 0.3, "rescan_interval_s": 0.0,
                  "poll_interval_s": 0.2, **watch},
        "storage": {"database": str(tmp_path / "agent.sqlite3")},
        "model": {"enabled": False},
        "imaging": {"thumbnails": True},
    }
    return config_from_dict(raw, source=tmp_path / "agent.toml", check_folders=False)


def assert_outcomes(rows: dict[str, dict], root: Path, corpus: dict) -> None:
    for name, (state, fragment) in corpus.items():
        key = readable(str(root / name))
        assert key in rows, f"{name!r} was not recorded"
        row = rows[key]
        assert row["state"] == state, (name, row["state"], row["error"])
        if state == "failed":
            error = row["error"]
            shown = readable(name).split(os.sep)[-1]
            assert shown in error or os.path.basename(name) in error, (name, error)
            assert fragment in error, (name, error)
            assert not PYTHON_NAMES.search(error), (name, error)
        else:
            assert row["error"] is None


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Names, sizes and mtimes of everything under root (links not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            out[os.fsdecode(os.path.join(dirpath, n))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "acquisition"
    root.mkdir()
    return root, build_corpus(root)


def test_process_records_every_odd_file_as_failed_with_a_reason_or_analyses_it(tmp_path,
                                                                                corpus):
    root, expected = corpus
    engine = build_engine(engine_config(tmp_path, root))
    try:
        rows = {r["path"]: r for r in engine.process_paths([root])}
        assert engine.store.counts().pending == 0
    finally:
        engine.close()
    assert_outcomes(rows, root, expected)
    assert not any("ping" in p or "pong" in p or "/loop/" in p for p in rows)


@pytest.mark.slow  # the empty files wait 10 s before they count as written
def test_watching_a_hostile_folder_records_everything_and_never_writes_to_it(tmp_path,
                                                                             corpus):
    root, expected = corpus
    before = snapshot(root)
    engine = build_engine(engine_config(tmp_path, root))
    engine.start()
    try:
        assert engine.wait_idle(timeout=60, quiet_s=0.5)
        assert engine.error is None and engine.status().running
        rows = {r["path"]: r for r in engine.store.export_rows()}
        sockets = listening_sockets()
    finally:
        engine.stop()
    assert_outcomes(rows, root, expected)
    assert snapshot(root) == before  # read, never written, renamed or deleted
    assert sockets == set(), f"the agent listens on {sockets}"


def listening_sockets() -> set[str]:
    """TCP/UDP ports this process listens on (from /proc: sockets whose inode is
    one of our file descriptors)."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            listening = state == "0A" if table.startswith("tcp") else state == "07"
            if listening and inode in ours:
                found.add(f"{table} {local}")
    return found


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
def test_the_socket_check_sees_a_listening_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert any(x.startswith("tcp ") for x in listening_sockets())


def test_a_file_that_keeps_growing_is_analysed_once_it_has_settled(tmp_path):
    root = tmp_path / "acquisition"
    root.mkdir()
    path = root / "growing.png"
    data = png_bytes(spheroid(400, 400))
    stop = threading.Event()

    def write_slowly():  # an imager writing a frame for ~3 s
        with open(path, "wb") as fh:
            step = max(1, len(data) // 30)
            for i in range(0, len(data), step):
                fh.write(data[i:i + step])
                fh.flush()
                if stop.wait(0.1):
                    return

    class ResultTimes:
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_results(self, ids) -> None:
            self.times.append(time.monotonic())

    results = ResultTimes()
    writer = threading.Thread(target=write_slowly, name="test-writer")
    engine = build_engine(engine_config(tmp_path, root, settle_s=0.5), listeners=[results])
    engine.start()
    try:
        writer.start()
        writer.join(10)
        written_at = time.monotonic()
        assert engine.wait_idle(timeout=30, quiet_s=0.5)
        rows = list(engine.store.export_rows())
    finally:
        stop.set()
        writer.join()
        engine.stop()
    assert len(rows) == 1
    assert rows[0]["state"] == "done", rows[0]["error"]
    assert rows[0]["size"] == len(data) and rows[0]["attempts"] == 1
    assert len(results.times) == 1 and results.times[0] >= written_at  # not while growing


def test_a_hostile_agent_toml_is_a_config_error_not_a_crash(tmp_path):
    from nvir_agent.config import load_config

    cases = [
        b"\xff\xfe\x00garbage\x00",
        b"[watch]\nfolders = 5\n",
        b"[watch]\nsettle_s = -1e308\n",
        b"[model]\nbatch_size = 99999999999999999999999\n",
        b"[imaging]\nmax_pixels_side = 'x'\n",
        b"[storage]\ndatabase = \"x'; DROP TABLE images; --\"\n[watch]\nregex = '(((('\n",
        b"[" * 5000,
        b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n",
        b"[notify]\nurls = [{a = 1}]\n",
    ]
    for i, raw in enumerate(cases):
        p = tmp_path / f"agent{i}.toml"
        p.write_bytes(raw)
        try:
            load_config(p)
        except AgentError as exc:
            assert str(p) in str(exc) or p.name in str(exc), (raw[:40], str(exc))
            assert not PYTHON_NAMES.search(exc.message), (raw[:40], exc.message)


def test_hostile_plate_maps_are_refused_with_a_reason(tmp_path):
    from nvir_agent.monitor.platemap import read_plate_maps

    cases = {
        "binary.csv": b"\x00\xff\xfe" * 100,
        "formula.csv": b"well,role,compound,concentration\nA1,=cmd|' /C calc'!A0,x,1\n",
        "deep.toml": b"a = " + b"[" * 5000 + b"]" * 5000,
        "huge-conc.csv": b"well,role,compound,concentration\nA1,treated,x,1e999\n",
        "traversal.csv": b"well,role,compound,concentration\n../../etc/passwd,treated,x,1\n",
    }
    for name, raw in cases.items():
        p = tmp_path / name
        p.write_bytes(raw)
        try:
            read_plate_maps(p)
        except AgentError as exc:
            assert name in str(exc), (name, str(exc))
            assert not PYTHON_NAMES.search(exc.message), (name, exc.message)
