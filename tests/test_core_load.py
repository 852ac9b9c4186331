"""Load: thousands of small files through the real engine, as a backlog at start-up
and streamed while it watches, with a light stand-in for read → segment → score
(benchmarks/soak.py runs the same at full scale, with the real scoring too).

Each image must be analysed exactly once, the queue must drain, the agent's
threads and open files must come back to what they were, its memory must stay
flat once warm, and the idle watching agent must use under 1 % of a core.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from core_helpers import make_config, wait_until

from nvir_agent.app import build_engine

ROOT = Path(__file__).resolve().parents[1]
SOAK = ROOT / "benchmarks" / "soak.py"
linux_only = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(),
                                reason="reads the agent's figures from /proc")


class ViabilityStandIn:
    """Gives every image a viability without reading it (the engine's work around
    the scoring is what is under test here)."""

    name = "stand-in"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def run(self, batch: list) -> None:
        for a in batch:
            self.seen.append(str(a.record.path))
            a.found, a.viability = True, 1.0


def _open_fds() -> set[str]:
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor os.listdir itself used
            fds.add(os.readlink(f"/proc/self/fd/{fd}"))
    return fds


@linux_only
def test_engine_gives_back_every_thread_and_file_after_a_load(tmp_path):
    """Start, analyse 1,500 files streamed into the watched folder, stop: no file
    (database, watch descriptor, log) stays open in this process, no image is
    analysed twice (the leaked-thread check is the autouse fixture)."""
    acq = tmp_path / "acq"
    acq.mkdir()
    config = make_config(tmp_path, [acq])
    fds_before = _open_fds()
    stage = ViabilityStandIn()
    engine = build_engine(config, stages=[stage])
    engine.start()
    try:
        for plate in range(5):
            folder = acq / f"LOAD{plate}" / "TimePoint_1"
            folder.mkdir(parents=True)
            for i in range(300):
                (folder / f"LOAD{plate}_{chr(65 + i % 16)}{i % 24 + 1:02d}_s{i // 384 + 1}"
                 f"_w{i // 24 % 16 + 1}.png").write_bytes(b"\x89PNG" + bytes(60))
        assert wait_until(lambda: engine.status().done == 1500, timeout=120), engine.status()
        assert engine.wait_idle(timeout=60)
    finally:
        engine.stop()
    assert engine.error is None
    assert len(stage.seen) == len(set(stage.seen)) == 1500
    leaked = _open_fds() - fds_before
    assert not leaked, f"files left open after stop: {sorted(leaked)}"


@linux_only
@pytest.mark.slow
def test_soak_backlog_and_stream_are_analysed_once_with_flat_memory(tmp_path):
    """benchmarks/soak.py, scaled down: 2,000 files waiting at start-up and 3,000
    streamed at 300/s into the agent's process (real watcher, store and monitor
    with a plate map; stand-in scoring)."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--stand-in", "--backlog", "2000", "--stream", "3000",
         "--rate", "300", "--settle", "0.5", "--idle-seconds", "20",
         "--workdir", str(tmp_path / "ws"), "--out", str(out)],
        capture_output=True, text=True, timeout=540, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "soak.json").read_text(encoding="utf-8"))
    assert (out / "soak.png").stat().st_size > 10_000

    # every file analysed, exactly once, and nothing left waiting
    assert r["written"] == 5000
    assert r["store"]["states"] == {"done": 5000}
    assert r["store"]["attempts"] == {"1": 5000}
    assert r["stand_in_analyses"] == {"lines": 5000, "distinct": 5000}
    assert r["samples"][-1]["pending"] == 0
    assert r["store"]["backlog"]["images"] == 2000
    assert r["store"]["stream"]["images"] == 3000
    # the plate map makes the monitor raise alerts, soon after the results
    assert r["store"]["alerts"]["by_rule"].get("viability", 0) > 0
    assert r["store"]["alerts"]["stored_to_alert_s"]["p99"] < 30

    # threads and open files back to what the idle agent had before the stream
    assert r["end"]["threads"] == r["baseline"]["threads"], (r["baseline"], r["end"])
    assert r["end"]["fds"] == r["baseline"]["fds"], (r["baseline"], r["end"])
    # memory flat once warm: under 10 % growth over the second half
    growth = r["rss"]["second_half"]["total_rss_mib"]
    assert growth["growth"] is not None and growth["growth"] < 0.10, r["rss"]
    # idle: the watching agent's own CPU time (not the machine's load) over 20 s
    assert r["idle"]["cpu_percent_of_one_core"] < 1.0, r["idle"]
    assert r["exit_code"] == 0
    assert r["stop_s"] < 60
