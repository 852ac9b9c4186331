"""Helpers for the core tests: a recording stage, configs on temp folders, waiting."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nvir_agent.config import Config, config_from_dict
from nvir_agent.core.engine import Engine
from nvir_agent.pipeline.contract import Analysis


class RecordingStage:
    """A trivial analysis step: remembers each image it saw (path, size, time)."""

    name = "record"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float]] = []
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def run(self, batch: list[Analysis]) -> None:
        with self._lock:
            self.batches.append(len(batch))
            for a in batch:
                self.calls.append((str(a.record.path), a.record.size, time.time()))
                a.image_meta["bytes"] = a.record.size

    def paths(self) -> list[str]:
        with self._lock:
            return [c[0] for c in self.calls]


def make_config(tmp_path: Path, folders: list[Path], **watch: Any) -> Config:
    raw = {
        "watch": {
            "folders": [str(f) for f in folders], "settle_s": 0.2, "rescan_interval_s": 0.0,
            "poll_interval_s": 0.2, **watch,
        },
        "storage": {"database": str(tmp_path / "agent.sqlite3")},
    }
    return config_from_dict(raw, source=tmp_path / "agent.toml", check_folders=False)


@contextlib.contextmanager
def running(config: Config, stage: Any, listeners: list | None = None) -> Iterator[Engine]:
    engine = Engine(config, stages=[stage], listeners=listeners or [])
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def write_file(path: Path, data: bytes = b"II*\x00" + b"\x00" * 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class CrashOrRaiseStage:
    """A stage that can run in a worker process: it ends its process on a path
    with CRASH, raises on one with RAISE and measures the others."""

    name = "crash-or-raise"

    def run(self, batch: list[Analysis]) -> None:
        for a in batch:
            if "CRASH" in str(a.record.path):
                os._exit(3)
            if "RAISE" in str(a.record.path):
                raise ValueError("a bug in a stage")
            a.found = True
            a.image_meta["pid"] = os.getpid()


class BlasThreadsStage:
    """Records, in ``image_meta["blas"]``, the thread count of each BLAS library
    loaded in the process that runs it (threadpoolctl's view)."""

    name = "blas-threads"

    def run(self, batch: list[Analysis]) -> None:
        import cv2  # noqa: F401  (its wheel's own OpenBLAS)
        from threadpoolctl import threadpool_info

        for a in batch:
            a.found = True
            a.image_meta["blas"] = {i["filepath"]: i["num_threads"] for i in threadpool_info()
                                    if i["user_api"] == "blas"}


class SleepStage:
    """A stage for worker processes: sleeps ``seconds`` per image and writes when it
    began and ended into ``folder`` (one file per image)."""

    name = "sleep"

    def __init__(self, seconds: float, folder: Path) -> None:
        self.seconds, self.folder = seconds, folder

    def run(self, batch: list[Analysis]) -> None:
        for a in batch:
            start = time.time()
            time.sleep(self.seconds)
            (self.folder / f"{a.record.id}.span").write_text(f"{start} {time.time()}")
            a.found = True


class SlowStage:
    """Takes ``seconds`` per batch and remembers when (thread name, start, end)."""

    def __init__(self, name: str, seconds: float, own_thread: bool = False) -> None:
        self.name = name
        self.seconds = seconds
        self.own_thread = own_thread
        self.spans: list[tuple[str, float, float]] = []

    def run(self, batch: list[Analysis]) -> None:
        start = time.monotonic()
        time.sleep(self.seconds)
        self.spans.append((threading.current_thread().name, start, time.monotonic()))
