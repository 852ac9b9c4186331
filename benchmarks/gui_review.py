"""Desktop UI figures: review window open time on 100,000 measurements, the
longest UI-thread block while it loads and while the engine analyses a
384-well read, tray idle CPU, time-course redraws (matplotlib's Qt canvas on
the UI thread vs Agg in a worker, as the review window draws), and how much a
thread holding the GIL (pure Python) or releasing it (OpenCV) delays the UI.

    QT_QPA_PLATFORM=offscreen python benchmarks/gui_review.py [--quick]

The longest block is measured with a 10 ms timer heartbeat on the UI thread.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from nvir_agent.config import Config, StorageConfig, WatchConfig  # noqa: E402
from nvir_agent.monitor.platemap import parse_csv, plate_map_to_dict  # noqa: E402
from nvir_agent.plate import ImageKey  # noqa: E402
from nvir_agent.store import Measurement, Result, Store  # noqa: E402

ROWS, COLS = "ABCDEFGHIJKLMNOP", 24


def wells384() -> list[str]:
    return [f"{r}{c:02d}" for r in ROWS for c in range(1, COLS + 1)]


def build_big_store(db: Path, plates: int, reads: int) -> int:
    """plates × 384 wells × reads measurements (paths need not exist)."""
    rng = np.random.default_rng(1)
    n = 0
    with Store(db) as store:
        for p in range(plates):
            plate = f"BIG-{p + 1:02d}"
            csv = ["plate,well,role,compound,concentration_uM"]
            for w in wells384():
                col = int(w[1:])
                if col in (1, 24):
                    csv.append(f"{plate},{w},vehicle,,")
                else:
                    csv.append(f"{plate},{w},treated,C{col % 6},{0.1 * 2 ** (col % 8):g}")
            jobs = []
            for tp in range(1, reads + 1):
                for w in wells384():
                    key = ImageKey(vendor="bench", plate=plate, well=w, row=ROWS.index(w[0]) + 1,
                                   column=int(w[1:]), field=1, channel="1", timepoint=tp)
                    jobs.append((f"/nonexistent/{plate}/{tp}/{w}.tif", 1000, 1.0 * tp, key))
            store.add_jobs(jobs)
            results = [Result(rec, None, Measurement(
                found=True, viability=float(rng.uniform(0.2, 1.1)), model="bench", qc=[],
                features={"equivalent_diameter_px": 90.0, "circularity": 0.9, "focus": 80.0,
                          "width": 1024, "height": 1024}))
                for rec in store.pending(len(jobs))]
            store.commit_results(results)
            n += len(results)
            with store.transaction() as tx:
                tx.save_plate_map(plate, plate_map_to_dict(
                    parse_csv("\n".join(csv) + "\n", plate_format=384)[0]))
                if p == 0:
                    tx.insert_alert(plate=plate, subject="group:C3 0.8 µM", rule="viability",
                                    severity="critical", message="bench", value=0.2,
                                    timepoint=reads, now=time.time(),
                                    details={"wells": ["A03", "B03"], "compound": "C3",
                                             "concentration_uM": 0.8, "since": 2})
    return n


class Heartbeat:
    """A 10 ms timer on the UI thread; the longest gap between ticks is the block."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.last = time.perf_counter()
        self.worst = 0.0
        self.gaps: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self.tick)

    def tick(self) -> None:
        now = time.perf_counter()
        gap = now - self.last - 0.010
        self.gaps.append(gap)
        self.worst = max(self.worst, gap)
        self.last = now

    def start(self) -> None:
        self.last, self.worst, self.gaps = time.perf_counter(), 0.0, []
        self.timer.start()

    def p99(self) -> float:
        return float(np.percentile(self.gaps, 99)) if self.gaps else 0.0


def spin(app, seconds: float, until=None) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        app.processEvents()
        if until is not None and until():
            break
        time.sleep(0.002)
    return time.perf_counter() - t0


def bench_open(app, root: Path, plates: int, reads: int) -> None:
    from nvir_agent.gui import workers
    from nvir_agent.gui.review.window import ReviewWindow

    db = root / "big.sqlite3"
    t0 = time.perf_counter()
    n = build_big_store(db, plates, reads)
    print(f"store: {n} measurements on {plates} 384-well plates × {reads} reads "
          f"(built in {time.perf_counter() - t0:.1f} s)")
    beat = Heartbeat()
    beat.start()
    t0 = time.perf_counter()
    w = ReviewWindow(db, Config(storage=StorageConfig(database=str(db))))
    w.show()
    grid = w.plate_view.grid
    spin(app, 30, lambda: w.loaded and w.plate in w.plates and grid.data is not None
         and grid.is_drawn)
    opened = time.perf_counter() - t0
    print(f"review window open, alerts listed and first plate drawn: {opened:.2f} s; "
          f"longest UI-thread block meanwhile {beat.worst * 1000:.0f} ms")
    spin(app, 60, lambda: w.plates[w.plate].details is not None and w.well_view.pending == 0
         and not w.well_view.timecourse.pending and workers.jobs_in_flight() == 0)
    print(f"… features, images, thumbnails and plots of the first well: "
          f"{time.perf_counter() - t0:.2f} s; longest UI-thread block from the start "
          f"{beat.worst * 1000:.0f} ms (99th percentile {beat.p99() * 1000:.0f} ms)")
    data = w.plates[w.plate]
    beat.start()
    t0 = time.perf_counter()
    for well in ("C05", "D07", "E09"):
        w.select_well(data.plate, well)
        spin(app, 30, lambda: not w.well_view.timecourse.pending
             and workers.jobs_in_flight() == 0)
    print(f"three wells picked one after the other, plots and thumbnails drawn: "
          f"{(time.perf_counter() - t0) / 3 * 1000:.0f} ms each; longest UI-thread block "
          f"{beat.worst * 1000:.0f} ms")
    w.close()


def make_read(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, w in enumerate(wells384()[:n]):
        img = np.full((512, 512), 190, np.uint8)
        cv2.circle(img, (256 + i % 7, 256), 90 - i % 30, 50, -1)
        p = folder / f"READ_{w}_s1_w1.tif"
        cv2.imwrite(str(p), img)
        out.append(str(p))
    return out


def bench_engine(app, root: Path, n_images: int) -> None:
    """The review window open on the store while the engine analyses a read."""
    from nvir_agent.core.engine import Engine
    from nvir_agent.gui.review.window import ReviewWindow

    db = root / "live.sqlite3"
    config = Config(storage=StorageConfig(database=str(db)),
                    watch=WatchConfig(naming="imagexpress"))
    paths = make_read(root / "read", n_images)
    engine = Engine(config)
    engine.process_paths(paths[:8])  # store exists, model loaded
    w = ReviewWindow(db, config)
    w.show()
    spin(app, 20, lambda: w.loaded)
    beat = Heartbeat()
    done = threading.Event()

    def analyse() -> None:
        try:
            engine.process_paths(paths[8:])
        finally:
            done.set()

    beat.start()
    t0 = time.perf_counter()
    worker = threading.Thread(target=analyse, name="bench-engine")
    worker.start()
    n = 0
    while not done.is_set():
        spin(app, 1.0, done.is_set)
        w.refresh()  # the window re-reads the store as it would on each committed batch
        n += 1
    worker.join()
    spin(app, 1.0)
    engine.close()
    print(f"engine analysed {len(paths) - 8} images in {time.perf_counter() - t0:.1f} s with "
          f"the review window open ({n} refreshes): longest UI-thread block "
          f"{beat.worst * 1000:.0f} ms")
    w.close()


def bench_idle(app, root: Path, seconds: float) -> None:
    from nvir_agent.gui.tray import TrayAgent

    folder = root / "watched"
    folder.mkdir()
    config = Config(storage=StorageConfig(database=str(root / "idle.sqlite3")),
                    watch=WatchConfig(folders=[str(folder)]))
    agent = TrayAgent(config, tray_available=False)
    agent.start()
    spin(app, 15, lambda: agent.controller.engine is not None)
    spin(app, 3)
    c0, t0 = time.process_time(), time.perf_counter()
    spin_idle(app, seconds)
    cpu = (time.process_time() - c0) / (time.perf_counter() - t0) * 100
    print(f"tray agent idle (engine watching an empty folder, status poll every 3 s): "
          f"{cpu:.2f} % of one core over {seconds:.0f} s")
    agent.controller.stop()
    spin(app, 15, lambda: agent.controller.engine is None)
    agent.window.close()


def spin_idle(app, seconds: float) -> None:
    """Like app.exec() for a while: wait for events instead of polling."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def curves_on(fig: Any) -> Any:
    """12 curves × 26 reads on a new axes of ``fig`` (the redraw measured)."""
    tps = list(range(1, 27))
    ax = fig.add_subplot()
    for i in range(12):
        ax.plot(tps, np.random.default_rng(i).uniform(0.2, 1.1, len(tps)), marker="o", ms=3)
    return ax


def bench_plots(app, repeats: int) -> None:
    """12 curves × 26 reads at 600×300 px: matplotlib's Qt canvas drawing on the UI
    thread, and Agg rendering in a worker with the UI thread painting the image."""
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    from nvir_agent.gui import workers
    from nvir_agent.gui.review.plots import PlotView

    fig = Figure(figsize=(6, 3))
    canvas = FigureCanvasQTAgg(fig)
    canvas.resize(600, 300)
    canvas.show()
    view = PlotView("")
    view.resize(600, 300)
    view.show()
    spin(app, 0.5)

    def qtagg_draw() -> None:
        fig.clear()
        curves_on(fig)
        canvas.draw()
        canvas.repaint()

    def worker_draw() -> None:
        view.show_figure(curves_on)
        spin(app, 30, lambda: not view.pending and workers.jobs_in_flight() == 0)
        view.repaint()

    beat = Heartbeat()
    for name, fn in (("matplotlib QtAgg canvas (UI thread)", qtagg_draw),
                     ("matplotlib Agg in a worker (the review window)", worker_draw)):
        fn()
        beat.start()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
            app.processEvents()
        print(f"time-course redraw (12 curves × 26 reads, 600×300 px), {name}: "
              f"{(time.perf_counter() - t0) / repeats * 1000:.0f} ms; longest UI-thread "
              f"block {beat.worst * 1000:.0f} ms")
    beat.timer.stop()
    view.close()
    canvas.close()


def plots_loop(stop: Any) -> None:
    """Render the review window's kind of plot with Agg until told to stop."""
    from nvir_agent.gui.review.plots import render

    def draw(fig: Any) -> None:
        ax = curves_on(fig)
        ax.set_title("Time course of BIG-01 A03 — C3 0.8 µM (treated)")
        ax.legend([f"well {i}" for i in range(12)], fontsize=7)

    while not stop.is_set():
        render(draw, 600, 300)


def bench_gil(app, seconds: float) -> None:
    """The UI heartbeat alone, next to a thread of pure Python (holds the GIL), and next
    to a thread of OpenCV and numpy work (releases it): what the engine's threads cost
    the UI in one process, whatever the UI itself does."""
    def pure_python(stop: threading.Event) -> None:
        while not stop.is_set():
            sum(i * i for i in range(20000))

    big = np.random.default_rng(0).integers(0, 255, (2048, 2048), dtype=np.uint8)

    def opencv(stop: threading.Event) -> None:
        while not stop.is_set():
            cv2.GaussianBlur(big, (31, 31), 5)

    cases = (("nothing else", None, threading.Thread), ("a pure-Python thread", pure_python,
             threading.Thread), ("an OpenCV thread", opencv, threading.Thread),
             ("a thread rendering plots", plots_loop, threading.Thread),
             ("a child process rendering plots", plots_loop, mp.get_context("spawn").Process))
    for name, fn, kind in cases:
        stop = mp.get_context("spawn").Event() if kind is not threading.Thread \
            else threading.Event()
        worker = kind(target=fn, args=(stop,)) if fn else None
        if worker:
            worker.start()
            time.sleep(2.0 if kind is not threading.Thread else 0.0)  # the child imports
        beat = Heartbeat()
        beat.start()
        spin(app, seconds)
        beat.timer.stop()
        stop.set()
        if worker:
            worker.join()
        print(f"UI heartbeat next to {name}: longest gap {beat.worst * 1000:.0f} ms, "
              f"99th percentile {beat.p99() * 1000:.0f} ms (load {os.getloadavg()[0]:.1f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    args = ap.parse_args()
    from nvir_agent.gui.app import application

    app = application()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(figures are noisy on a shared machine)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.quick:
            bench_open(app, root, 2, 3)
        else:
            bench_open(app, root, 10, 26)  # 99,840 measurements
        bench_plots(app, 10 if args.quick else 30)
        bench_gil(app, 3 if args.quick else 10)
        bench_engine(app, root, 40 if args.quick else 384)
        bench_idle(app, root, 10 if args.quick else 60)
    from nvir_agent.gui import workers

    workers.wait_for_workers()
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
