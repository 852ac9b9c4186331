"""Load on one PostgreSQL server: N agents (processes) each writing jobs, claiming
them and committing results as fast as they can, for a few seconds.

Measures images per second through the store (add_jobs → pending/claim →
commit_results, 32 images a batch; no image analysis, so this is the store's own
ceiling) and the server's CPU share (utime + stime of every postgres process,
from /proc, over wall time × cores). Starts a throwaway server as the tests do
(needs Debian's postgresql; run as root or as a user who may run it).

    .venv/bin/python benchmarks/store_load.py --agents 1 2 4 --seconds 10
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pg_server import PgServer  # noqa: E402

from nvir_agent.plate import ImageKey  # noqa: E402
from nvir_agent.store import Measurement, Result, Store  # noqa: E402

BATCH = 32


def agent(url: str, station: str, seconds: float, out: mp.Queue) -> None:
    done = 0
    with Store(url, station=station) as store:
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            jobs = [(f"/acq/{station}/P{n // 384}_{n % 384:04d}_{i}.tif", 1000, float(n), ImageKey(
                plate=f"{station}-P{n // 384}", well="B03", timepoint=1)) for i in range(BATCH)]
            n += 1
            store.add_jobs(jobs)
            records = store.pending(BATCH)
            done += len(store.commit_results([
                Result(r, None, Measurement(True, 0.9, "bench@0", [], {"area_px": 1000}))
                for r in records]))
    out.put(done)


def server_cpu_s() -> float:
    """CPU seconds used so far by the server: every postgres process, with the time of
    its finished children (a backend's time joins the postmaster's when it exits)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("postgres"):
            fields = stat.rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15]) / tick
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    server = PgServer()
    try:
        print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
        print("agents  images/s  per agent  server CPU share")
        for n in args.agents:
            url = server.new_database()
            Store(url).close()  # create the tables once
            ctx = mp.get_context("spawn")
            out: mp.Queue = ctx.Queue()
            procs = [ctx.Process(target=agent, args=(url, f"s{i}", args.seconds, out))
                     for i in range(n)]
            cpu0, t0 = server_cpu_s(), time.monotonic()
            for p in procs:
                p.start()
            done = sum(out.get() for _ in procs)
            for p in procs:
                p.join()
            wall, cpu = time.monotonic() - t0, server_cpu_s() - cpu0
            print(f"{n:6d}  {done / wall:8.0f}  {done / wall / n:9.0f}  "
                  f"{cpu / (wall * (os.cpu_count() or 1)):15.0%}")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
