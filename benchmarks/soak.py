"""Load and soak: the watching agent under a backlog and a stream of images.

    .venv/bin/python benchmarks/soak.py --backlog 20000 --stream 10000 [--rate 0]
        [--seconds 3600] [--stand-in] [--idle-seconds 60] [--out soak-results]

What it does, in order:

1. lays out a workspace (``--workdir``, default a temporary folder): an
   acquisition folder, the 96-well demo plate map for every plate ``SOAK-*``
   (so the monitor normalises to vehicle wells and raises alerts) and an
   ``agent.toml`` with the defaults but for the folders, the store, the maps,
   ``settle_s`` (``--settle``) and the stall rule (off: the soak compresses days
   into seconds, so every finished plate would look stalled);
2. renders a few distinct spheroids (``--size`` pixels square, 8-bit PNG, about
   40 kB each at 256²; 8 viabilities × 2 looks) and copies them under
   ImageXpress names, plate after plate, read after read (96 wells × ``--reads``
   per plate), each well showing the viability its compound and dose give on
   that day (``synth.plate.PlateSimulation``), so the files are small and 30,000
   of them take a few seconds and about 1.2 GB;
3. writes ``--backlog`` images, then starts the agent in its own process
   (``app.build_engine``: the real watcher, ingest, segmentation in image worker
   processes, the bundled demo model, the SQLite store and the monitor with
   its notifier; ``--stand-in`` replaces read → segment → score by a light
   stage that gives each image the viability of its well and day without
   reading it), waits until the backlog is analysed;
4. streams ``--stream`` images (or for ``--seconds``) at ``--rate`` images/s (0:
   as fast as the disk takes them; ``--rate-from-backlog 0.9``: 90 % of the rate
   the agent sustained on the backlog), waits until they are analysed;
5. measures the idle watching agent for ``--idle-seconds`` (CPU of the agent
   and its worker processes), stops it (SIGTERM) and reads the store.

``--idle-only --workdir W`` (a workspace kept with ``--workdir`` or ``--keep``)
starts the agent again on it, waits ``--warm-up`` seconds and measures the idle
agent for ``--idle-seconds``: a full store, nothing new.

Throughout, once a second, it samples the agent's resident memory (its own
and its worker processes'), threads, open file descriptors and CPU time from
/proc (Linux only), the analysed count and the load average. It reports
images/s, the latency percentiles from file settled (the pending job written)
to result stored and from result stored to alert raised, whether every image
was analysed exactly once, the memory growth over the second half of the run,
and writes ``soak.json`` and ``soak.png`` (memory, throughput, threads and
descriptors over time) into ``--out``.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

PLATE_GLOB = "SOAK-*"
WELLS_PER_PLATE = 96
LEVELS = (1.05, 0.95, 0.85, 0.75, 0.6, 0.45, 0.3, 0.15)  # viabilities rendered
LOOKS = 2  # distinct renders per viability
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# --------------------------------------------------------------------------- the agent


class StandInStage:
    """Instead of read → segment → score: each image gets the viability its well
    has on that day (from the soak's table), without reading the file. Logs
    every path it analyses (one line each) so that a second analysis shows."""

    name = "stand-in"

    def __init__(self, table: dict[str, float], log_path: str) -> None:
        self.table = table
        self.log_path = log_path

    def run(self, batch: list) -> None:
        with open(self.log_path, "a", encoding="utf-8", errors="surrogateescape") as fh:
            for a in batch:
                k = a.record.key
                a.found = True
                a.viability = self.table.get(f"{k.well}|{k.timepoint}", 1.0)
                a.model = "stand-in"
                fh.write(f"{a.record.path}\n")


def run_agent(config_path: str, stand_in: str | None, ready: str) -> int:
    """The agent process: ``app.build_engine`` until SIGTERM (as `nvir-agent run`)."""
    from nvir_agent.app import build_engine
    from nvir_agent.config import load_config
    from nvir_agent.logsetup import setup_logging

    setup_logging(debug=False, to_file=False, verbose=True)
    config = load_config(config_path)
    stages = None
    if stand_in:
        table = json.loads(Path(stand_in).read_text(encoding="utf-8"))
        stages = [StandInStage(table, str(Path(stand_in).with_suffix(".log")))]
    engine = build_engine(config, stages=stages)
    signal.signal(signal.SIGTERM, lambda *_: engine.request_stop())
    try:
        engine.start()
        Path(ready).write_text(str(os.getpid()), encoding="utf-8")
        while not engine.wait(0.5):
            pass
    finally:
        engine.stop()
    return 1 if engine.error else 0


# --------------------------------------------------------------------------- the images


@dataclass(frozen=True)
class Plan:
    """Which rendered image each (plate, well, read) gets."""

    wells: list[str]
    reads: int
    level_of: dict[tuple[str, int], int]  # (well, read) → index into LEVELS
    table: dict[str, float]  # "well|read" → viability (the stand-in's answer)

    def names(self, start_plate: int) -> Iterator[tuple[str, int]]:
        """(relative path, render index) of every image from plate ``start_plate`` on."""
        for plate in itertools.count(start_plate):
            pid = f"SOAK-{plate:05d}"
            for read in range(1, self.reads + 1):
                for w in self.wells:
                    look = (plate + sum(map(ord, w))) % LOOKS
                    yield (f"{pid}/TimePoint_{read}/{pid}_{w}_s1_w1.png",
                           self.level_of[(w, read)] * LOOKS + look)


def make_plan(reads: int, map_path: Path) -> Plan:
    from nvir_agent.synth.plate import (
        DEFAULT_COMPOUNDS,
        PlateSimulation,
        demo_plate_rows,
        load_plate_maps,
        write_plate_map,
    )

    write_plate_map(map_path, demo_plate_rows(PLATE_GLOB))
    template = map_path.with_name("template.csv")
    write_plate_map(template, demo_plate_rows("SOAK-T"))
    sim = PlateSimulation(load_plate_maps(template), DEFAULT_COMPOUNDS, days=reads, seed=11)
    template.unlink()
    wells = [w for _p, w in sim.wells()]
    level_of, table = {}, {}
    for w in wells:
        for read in range(1, reads + 1):
            v = sim.viability("SOAK-T", w, read)
            level_of[(w, read)] = min(range(len(LEVELS)), key=lambda i: abs(LEVELS[i] - v))
            table[f"{w}|{read}"] = round(v, 4)
    return Plan(wells, reads, level_of, table)


def render_images(size: int) -> list[bytes]:
    import cv2

    from nvir_agent.synth.render import Conditions, render_spheroid

    base = replace(Conditions(), width=size, height=size, bits=8)
    out = []
    for i, v in enumerate(LEVELS):
        for look in range(LOOKS):
            img = render_spheroid(v, 1000 * look + i, base).image
            ok, buf = cv2.imencode(".png", img)
            if not ok:
                raise SystemExit("OpenCV could not encode a PNG")
            out.append(buf.tobytes())
    return out


def write_images(root: Path, names: Iterable[tuple[str, int]], images: list[bytes],
                 count: int, rate: float = 0.0, until: float = math.inf,
                 on_file: Callable[[int], None] | None = None) -> int:
    """Write up to ``count`` files in order, at ``rate`` per second (0: as fast as
    possible), until ``until`` (monotonic); returns how many were written."""
    made: set[Path] = set()
    start = time.monotonic()
    n = 0
    for rel, idx in itertools.islice(names, count):
        now = time.monotonic()
        if now >= until:
            break
        if rate > 0 and start + n / rate > now:
            time.sleep(start + n / rate - now)
        target = root / rel
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        target.write_bytes(images[idx])
        n += 1
        if on_file is not None:
            on_file(n)
    return n


# --------------------------------------------------------------------------- /proc


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def proc_stats(pid: int) -> dict[str, float] | None:
    """Resident memory (MiB), threads, open fds and CPU seconds of one process."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
            rss = int(fh.read().split()[1]) * PAGE / 2**20
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        threads = int(fields[17])
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, IndexError, ValueError):
        return None
    return {"rss_mib": rss, "threads": threads, "fds": fds, "cpu_s": cpu,
            "nice": int(fields[16])}


def agent_stats(pid: int) -> dict[str, float] | None:
    """The agent's own figures, and its worker processes' summed (``workers_*``)."""
    own = proc_stats(pid)
    if own is None:
        return None
    kids = [s for s in (proc_stats(k) for k in _children(pid)) if s is not None]
    own["workers"] = len(kids)
    own["workers_nice"] = max((k["nice"] for k in kids), default=None)
    own["workers_rss_mib"] = sum(k["rss_mib"] for k in kids)
    own["workers_cpu_s"] = sum(k["cpu_s"] for k in kids)
    own["workers_threads"] = sum(k["threads"] for k in kids)
    own["total_rss_mib"] = own["rss_mib"] + own["workers_rss_mib"]
    own["total_cpu_s"] = own["cpu_s"] + own["workers_cpu_s"]
    return own


@dataclass
class Sampler:
    """Samples the agent once per ``every`` seconds on a thread of its own."""

    pid: int
    database: Path
    every: float = 1.0
    t0: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)
    written: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        from nvir_agent.store import StoreReader

        reader = None
        while not self._stop.is_set():
            s = agent_stats(self.pid)
            if s is not None:
                if reader is None and self.database.exists():
                    reader = StoreReader(self.database)
                c = reader.counts() if reader is not None else None
                s.update(t=time.monotonic() - self.t0, written=self.written,
                         finished=(c.done + c.failed) if c else 0,
                         pending=c.pending if c else 0, load1=os.getloadavg()[0])
                self.samples.append(s)
            self._stop.wait(self.every)
        if reader is not None:
            reader.close()

    def last(self) -> dict[str, Any]:
        return self.samples[-1] if self.samples else {}


# --------------------------------------------------------------------------- the run


def config_text(ws: Path, settle_s: float, batch_size: int, threads: int) -> str:
    return f"""\
[watch]
folders = ["acquisition"]
naming = "imagexpress"
settle_s = {settle_s}

[storage]
database = "soak.sqlite3"

[model]
batch_size = {batch_size}
threads = {threads}

[plates]
maps = "platemaps"

[alerts]
stall_after = 0.0

[notify]
console = false
"""


def wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen,
             step: float = 0.2) -> float:
    start = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise SystemExit(f"The agent ended (exit code {proc.returncode}) while {what}; "
                             "see agent.log in the workspace.")
        if time.monotonic() - start > timeout:
            raise SystemExit(f"Timed out after {timeout:.0f} s while {what}.")
        time.sleep(step)
    return time.monotonic() - start


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    v = sorted(values)

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))], 3)

    return {"n": len(v), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": round(v[-1], 3)}


def rss_growth(samples: list[dict[str, Any]], key: str, t_start: float, t_end: float
               ) -> dict[str, float | None]:
    """Memory at the middle of [t_start, t_end] (median of the samples within 5 %
    of the span around it) against the end (median of the last 5 %) and the
    highest sample of the second half."""
    span = t_end - t_start
    mid_t = t_start + span / 2
    win = max(span * 0.05, 2.0)
    mid = [s[key] for s in samples if abs(s["t"] - mid_t) <= win / 2]
    end = [s[key] for s in samples if t_end - win <= s["t"] <= t_end]
    high = [s[key] for s in samples if mid_t <= s["t"] <= t_end]
    if not mid or not end:
        return {"mid_mib": None, "end_mib": None, "growth": None, "max_growth": None}
    m, e = statistics.median(mid), statistics.median(end)
    return {"mid_mib": round(m, 1), "end_mib": round(e, 1), "growth": round((e - m) / m, 4),
            "max_growth": round((max(high) - m) / m, 4)}


def analyse_store(database: Path, ready_at: float, stream_t0: float | None) -> dict[str, Any]:
    """Exactly-once, states and latencies from the store (wall-clock times).

    Throughput of the backlog: its images over the time from the agent being
    ready to its last result stored; of the stream: from its first file written
    to its last result stored."""
    from nvir_agent.store import StoreReader

    rows = []
    with StoreReader(database) as reader:
        for r in reader.iter_measurements(page=5000):
            rows.append((r.path, r.state, r.attempts, r.mtime, r.queued_at, r.updated_at,
                         r.key.plate))
        alerts = reader.alerts(include_closed=True)
    by_state: dict[str, int] = {}
    for r in rows:
        by_state[r[1]] = by_state.get(r[1], 0) + 1
    attempts: dict[int, int] = {}
    for r in rows:
        attempts[r[2]] = attempts.get(r[2], 0) + 1
    finished = [r for r in rows if r[1] in ("done", "failed")]
    out: dict[str, Any] = {"images": len(rows), "states": by_state,
                           "attempts": {str(k): v for k, v in sorted(attempts.items())}}
    for phase, keep in (("backlog", lambda r: stream_t0 is None or r[4] < stream_t0),
                        ("stream", lambda r: stream_t0 is not None and r[4] >= stream_t0)):
        sel = [r for r in finished if keep(r)]
        if not sel:
            continue
        last_s = max(r[5] for r in sel)
        t0 = ready_at if phase == "backlog" else min(r[3] for r in sel)
        out[phase] = {
            "images": len(sel),
            "written_to_queued_s": percentiles([r[4] - r[3] for r in sel]),
            "settled_to_stored_s": percentiles([r[5] - r[4] for r in sel]),
            "seconds": round(last_s - t0, 2),
            "images_per_s": round(len(sel) / max(last_s - t0, 1e-9), 2),
            "last_stored_at": last_s,
        }
    # stored → alert: from the commit that preceded the alert on its plate
    stored: dict[str, list[float]] = {}
    for r in finished:
        stored.setdefault(r[6], []).append(r[5])
    for v in stored.values():
        v.sort()
    lat, by_rule = [], {}
    for a in alerts:
        by_rule[a.rule] = by_rule.get(a.rule, 0) + 1
        times = stored.get(a.plate, [])
        i = bisect.bisect_right(times, a.opened_at)
        if i:
            lat.append(a.opened_at - times[i - 1])
    out["alerts"] = {"count": len(alerts), "by_rule": by_rule,
                     "plates_with_alerts": len({a.plate for a in alerts}),
                     "stored_to_alert_s": percentiles(lat)}
    return out


def plot(samples: list[dict[str, Any]], marks: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax = axes[0]
    ax.plot(t, [s["rss_mib"] for s in samples], label="agent process")
    ax.plot(t, [s["workers_rss_mib"] for s in samples], label="image worker processes")
    ax.plot(t, [s["total_rss_mib"] for s in samples], label="together")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[1]
    k = 10  # over the last 10 samples (about 10 s)
    smooth = [(s["finished"] - samples[max(0, i - k)]["finished"])
              / max(s["t"] - samples[max(0, i - k)]["t"], 1e-9) for i, s in enumerate(samples)]
    ax.plot(t, smooth, label="analysed per second (over 10 s)")
    ax2 = ax.twinx()
    ax2.plot(t, [s["finished"] for s in samples], color="tab:green", label="analysed")
    ax2.plot(t, [s["written"] for s in samples], color="tab:grey", ls="--", label="written")
    ax.set_ylabel("images/s")
    ax2.set_ylabel("images")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    ax = axes[2]
    ax.plot(t, [s["threads"] for s in samples], label="threads (agent)")
    ax.plot(t, [s["fds"] for s in samples], label="open file descriptors (agent)")
    ax.plot(t, [s["load1"] for s in samples], label="load average (1 min)", color="tab:red")
    ax.set_ylabel("count")
    ax.set_xlabel("seconds since the agent started")
    ax.legend(loc="upper right", fontsize=8)
    for a in axes:
        for name, x in marks.items():
            a.axvline(x, color="k", lw=0.6, ls=":")
            if a is axes[0]:
                a.text(x, a.get_ylim()[1] * 0.03, f" {name}", fontsize=7, va="bottom",
                       rotation=90)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def launch_agent(ws: Path, ready: Path, stand_in: Path | None, log_fh: Any
                 ) -> subprocess.Popen:
    """The agent of workspace ``ws`` in its own process (user folders inside ``ws``)."""
    env = dict(os.environ)
    for var, sub in (("XDG_CACHE_HOME", "cache"), ("XDG_DATA_HOME", "data"),
                     ("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state")):
        env[var] = str(ws / sub)
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).absolute()), "agent", str(ws / "agent.toml"),
           "--ready", str(ready)]
    if stand_in is not None:
        cmd += ["--stand-in", str(stand_in)]
    return subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env, cwd=ws)


def idle_only(args: argparse.Namespace) -> dict[str, Any]:
    """Start the agent again on a kept workspace (its store full, nothing new to
    analyse), let it settle for ``--warm-up`` seconds (the start-up scan, one
    evaluation of every plate), then measure its CPU for ``--idle-seconds``."""
    ws = Path(args.workdir).absolute()
    if not (ws / "agent.toml").is_file():
        raise SystemExit(f"{ws} has no agent.toml: give --workdir a kept soak workspace.")
    stand_in = ws / "stand-in.json" if args.stand_in else None
    with (ws / "agent-idle.log").open("wb") as log_fh:
        proc = launch_agent(ws, ws / "ready", stand_in, log_fh)
        try:
            start_s = wait_for((ws / "ready").exists, 600, "starting", proc)
            time.sleep(args.warm_up)
            a = agent_stats(proc.pid) or {}
            t = time.monotonic()
            time.sleep(args.idle_seconds)
            b = agent_stats(proc.pid) or {}
            wall = time.monotonic() - t
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {"agent_start_s": round(start_s, 1), "warm_up_s": args.warm_up,
            "idle_s": round(wall, 1),
            "cpu_percent_of_one_core": round(
                100 * (b.get("total_cpu_s", 0) - a.get("total_cpu_s", 0)) / wall, 3),
            "rss_mib": round(b.get("rss_mib", 0), 1),
            "total_rss_mib": round(b.get("total_rss_mib", 0), 1),
            "threads": b.get("threads"), "fds": b.get("fds"), "nice": b.get("nice"),
            "workers": b.get("workers"), "workers_nice": b.get("workers_nice"),
            "exit_code": rc, "uptime": _uptime()}


def soak(args: argparse.Namespace) -> dict[str, Any]:
    if not Path("/proc/self/stat").exists():
        raise SystemExit("soak.py reads /proc: run it on Linux.")
    out_dir = Path(args.out).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    ws = Path(args.workdir).absolute() if args.workdir else Path(tempfile.mkdtemp(prefix="soak-"))
    if ws.exists() and any(ws.iterdir()):
        raise SystemExit(f"{ws} is not empty; give --workdir a new or empty folder.")
    acq = ws / "acquisition"
    acq.mkdir(parents=True)
    plan = make_plan(args.reads, ws / "platemaps" / "soak.csv")
    images = render_images(args.size)
    (ws / "agent.toml").write_text(config_text(ws, args.settle, args.batch_size, args.threads),
                                   encoding="utf-8")
    table = ws / "stand-in.json"
    table.write_text(json.dumps(plan.table), encoding="utf-8")
    per_plate = WELLS_PER_PLATE * args.reads
    stream_start_plate = 1 + math.ceil(args.backlog / per_plate)
    result: dict[str, Any] = {
        "args": vars(args), "workspace": str(ws), "image_bytes": [len(b) for b in images],
        "cpus": os.cpu_count(), "load_at_start": os.getloadavg(),
        "uptime_at_start": _uptime(),
    }
    t = time.monotonic()
    backlog = write_images(acq, plan.names(1), images, args.backlog)
    result["backlog_write_s"] = round(time.monotonic() - t, 2)

    ready = ws / "ready"
    log_fh = (ws / "agent.log").open("wb")
    t_launch = time.monotonic()
    proc = launch_agent(ws, ready, table if args.stand_in else None, log_fh)
    sampler = Sampler(proc.pid, ws / "soak.sqlite3", t0=t_launch)
    marks: dict[str, float] = {}
    stream_t0_wall: float | None = None
    try:
        sampler.written = backlog
        sampler.start()
        result["agent_start_s"] = round(wait_for(ready.exists, 600, "starting", proc), 2)
        ready_at = time.time()
        marks["started"] = time.monotonic() - t_launch
        total = backlog

        def finished() -> bool:
            s = sampler.last()
            return s.get("finished", 0) >= total and s.get("pending", 1) == 0

        if backlog:
            wait_for(finished, args.timeout, "analysing the backlog", proc)
            marks["backlog analysed"] = time.monotonic() - t_launch
        time.sleep(3.0)  # the monitor's last evaluation, a quiet agent
        base = agent_stats(proc.pid) or {}
        result["baseline"] = {k: base.get(k) for k in ("rss_mib", "workers_rss_mib",
                                                        "total_rss_mib", "threads", "fds",
                                                        "workers", "workers_threads",
                                                        "nice", "workers_nice")}
        rate = args.rate
        if args.rate_from_backlog and backlog:
            s0 = next(s for s in sampler.samples if s["t"] >= marks["started"])
            sb = [s for s in sampler.samples if s["finished"] >= total][0]
            rate = args.rate_from_backlog * total / max(sb["t"] - s0["t"], 1e-9)
        result["stream_rate"] = rate
        if args.stream or args.seconds:
            marks["stream"] = time.monotonic() - t_launch
            stream_t0_wall = time.time()
            until = time.monotonic() + (args.seconds or math.inf)

            def on_file(n: int) -> None:
                sampler.written = backlog + n

            n = write_images(acq, plan.names(stream_start_plate), images,
                             args.stream if args.stream > 0 else 10**9, rate, until, on_file)
            marks["stream written"] = time.monotonic() - t_launch
            result["stream_written"] = n
            result["stream_write_s"] = round(marks["stream written"] - marks["stream"], 2)
            total += n
            wait_for(finished, args.timeout, "analysing the stream", proc)
            marks["stream analysed"] = time.monotonic() - t_launch
        time.sleep(3.0)
        # idle: the agent only watches
        i0 = agent_stats(proc.pid) or {}
        t_idle = time.monotonic()
        marks["idle"] = t_idle - t_launch
        time.sleep(args.idle_seconds)
        i1 = agent_stats(proc.pid) or {}
        idle_wall = time.monotonic() - t_idle
        result["idle"] = {
            "seconds": round(idle_wall, 1),
            "cpu_percent_of_one_core": round(
                100 * (i1.get("total_cpu_s", 0) - i0.get("total_cpu_s", 0)) / idle_wall, 3),
            "agent_cpu_percent": round(
                100 * (i1.get("cpu_s", 0) - i0.get("cpu_s", 0)) / idle_wall, 3),
            "load_at_end": os.getloadavg(),
        }
        end = agent_stats(proc.pid) or {}
        result["end"] = {k: end.get(k) for k in result["baseline"]}
        marks["stop"] = time.monotonic() - t_launch
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        result["stop_s"] = round(time.monotonic() - t, 2)
        result["exit_code"] = rc
    finally:
        sampler.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_fh.close()
    samples = sampler.samples
    result["samples"] = samples
    result["marks"] = {k: round(v, 2) for k, v in marks.items()}
    result["written"] = total
    result["store"] = analyse_store(ws / "soak.sqlite3", ready_at, stream_t0_wall)
    first = next((s for s in samples if s["t"] >= marks["started"]), samples[0])
    t_end = marks.get("stream analysed", marks.get("backlog analysed", first["t"]))
    warm = next((s for s in samples if s["finished"] >= min(500, total // 10)), first)
    running = [s for s in samples if s["t"] < marks.get("stop", math.inf)]  # not its exit
    result["rss"] = {
        "at_start_mib": {k: round(first[k], 1) for k in ("rss_mib", "total_rss_mib")},
        "after_warm_up_mib": {k: round(warm[k], 1) for k in ("rss_mib", "total_rss_mib")},
        "warm_up_images": warm["finished"],
        "peak_mib": {k: round(max(s[k] for s in running), 1)
                     for k in ("rss_mib", "total_rss_mib")},
        "end_mib": {k: round(running[-1][k], 1) for k in ("rss_mib", "total_rss_mib")},
        "second_half": {k: rss_growth(samples, k, warm["t"], t_end)
                        for k in ("rss_mib", "total_rss_mib")},
    }
    result["load_during"] = {
        "min": round(min(s["load1"] for s in samples), 2),
        "median": round(statistics.median(s["load1"] for s in samples), 2),
        "max": round(max(s["load1"] for s in samples), 2)}
    if args.stand_in:
        lines = (table.with_suffix(".log")).read_text(encoding="utf-8",
                                                       errors="surrogateescape").splitlines()
        result["stand_in_analyses"] = {"lines": len(lines), "distinct": len(set(lines))}
    result["uptime_at_end"] = _uptime()
    (out_dir / "soak.json").write_text(json.dumps(result, indent=1, default=str),
                                       encoding="utf-8")
    scoring = "stand-in scoring" if args.stand_in else "demo model"
    plot(samples, marks, out_dir / "soak.png",
         f"soak: {backlog} backlog + {result.get('stream_written', 0)} streamed "
         f"{args.size}² PNG, {scoring}; load {result['load_during']['min']}–"
         f"{result['load_during']['max']} on {os.cpu_count()} CPUs")
    if not args.keep and not args.workdir:
        shutil.rmtree(ws, ignore_errors=True)
    return result


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5
                              ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def summary(r: dict[str, Any]) -> str:
    lines = [f"workspace {r['workspace']}; {r['written']} images "
             f"({r['args']['size']}² PNG, {min(r['image_bytes']) // 1024}–"
             f"{max(r['image_bytes']) // 1024} kB)"]
    st = r["store"]
    lines.append(f"states {st['states']}; attempts per image {st['attempts']}")
    for phase in ("backlog", "stream"):
        p = st.get(phase)
        if p:
            lines.append(
                f"{phase}: {p['images']} images, {p['images_per_s']} images/s; settled→stored "
                f"p50 {p['settled_to_stored_s']['p50']} p90 {p['settled_to_stored_s']['p90']} "
                f"p99 {p['settled_to_stored_s']['p99']} s; written→settled p50 "
                f"{p['written_to_queued_s']['p50']} s")
    a = st["alerts"]
    lines.append(f"alerts {a['count']} {a['by_rule']} on {a['plates_with_alerts']} plates; "
                 f"stored→alert p50 {a['stored_to_alert_s']['p50']} p90 "
                 f"{a['stored_to_alert_s']['p90']} p99 {a['stored_to_alert_s']['p99']} s")
    m = r["rss"]
    lines.append(f"RSS agent/with workers MiB: start {m['at_start_mib']}, after warm-up "
                 f"({m['warm_up_images']} images) {m['after_warm_up_mib']}, peak "
                 f"{m['peak_mib']}, end (before the stop) {m['end_mib']}")
    for k, g in m["second_half"].items():
        lines.append(f"  {k}: second half {g['mid_mib']} → {g['end_mib']} MiB "
                     f"(growth {g['growth']}, highest {g['max_growth']})")
    lines.append(f"threads/fds baseline {r['baseline']} end {r['end']}")
    lines.append(f"idle {r['idle']}")
    lines.append(f"stop {r.get('stop_s')} s, exit code {r.get('exit_code')}; load during "
                 f"{r['load_during']}; {r['uptime_at_end']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        ap = argparse.ArgumentParser(prog="soak.py agent")
        ap.add_argument("config")
        ap.add_argument("--ready", required=True)
        ap.add_argument("--stand-in")
        a = ap.parse_args(argv[1:])
        return run_agent(a.config, a.stand_in, a.ready)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backlog", type=int, default=0, help="images written before the agent starts")
    ap.add_argument("--stream", type=int, default=0, help="images streamed while it watches")
    ap.add_argument("--seconds", type=float, default=0.0,
                    help="stream for this long (with --stream: whichever ends first)")
    ap.add_argument("--rate", type=float, default=0.0, help="images/s streamed (0: at once)")
    ap.add_argument("--rate-from-backlog", type=float, default=0.0,
                    help="stream at this fraction of the rate measured on the backlog")
    ap.add_argument("--reads", type=int, default=6, help="reads (time points) per plate")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--settle", type=float, default=2.0, help="watch.settle_s")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="model.threads (0: all cores but one)")
    ap.add_argument("--stand-in", action="store_true",
                    help="a light stand-in instead of read → segment → score")
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--idle-only", action="store_true",
                    help="only measure the idle agent again on a kept --workdir")
    ap.add_argument("--warm-up", type=float, default=90.0,
                    help="with --idle-only: seconds after the start before measuring")
    ap.add_argument("--timeout", type=float, default=7200.0,
                    help="longest wait for the agent to catch up, per phase")
    ap.add_argument("--workdir", help="workspace (default: a temporary folder, deleted)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    ap.add_argument("--out", default="soak-results", help="where soak.json and soak.png go")
    args = ap.parse_args(argv)
    if args.idle_only:
        if not args.workdir:
            ap.error("--idle-only needs the --workdir of a kept soak")
        print(json.dumps(idle_only(args)))
        return 0
    if args.backlog <= 0 and args.stream <= 0 and args.seconds <= 0:
        ap.error("give --backlog, --stream or --seconds")
    r = soak(args)
    print(summary(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
