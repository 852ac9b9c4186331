"""Image workers: the stages before scoring, run on each image in worker processes.

Reading and segmenting an image is Python and numpy work that holds the GIL
much of the time, so threads would take turns; worker processes read and
segment several images at once while the engine's scoring thread runs the
network on the batch before. :class:`ImageWorkers` is a stage that wraps the
stages before scoring (read, segment, thumbnail) and runs them on each image of
a batch in a process pool (spawned, one OpenCV thread each, at the agent's
priority). The pixels stay in the worker: what comes back is the image's
features, QC flags, outline, metadata and the network's small preprocessed
input (``Analysis.network_input``, made with the model's preprocessing spec),
so that the hand-over costs little.

A per-image error fails that image only, as in the stages themselves. A worker
process that dies (a decoder crash, the memory killer) breaks the pool: the
pool is started again and the images it had not finished are tried once more,
one at a time, so that only an image that kills its worker again fails, with a
reason that says so. The engine never stops for it.

Stages that cannot be sent to another process (stand-ins in tests) and a pool
of no processes run in the calling thread, as before.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sys
import threading
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import fields
from typing import Any

import cv2
from threadpoolctl import threadpool_limits

from nvir_agent.config import Config, cpu_cores
from nvir_agent.errors import AgentError, ImageError
from nvir_agent.model.preprocess import PreprocessSpec, preprocess
from nvir_agent.model.typicality import image_statistics
from nvir_agent.pipeline.contract import NOT_SCORED, Analysis, Stage, run_stages, split_stages

log = logging.getLogger(__name__)

__all__ = ["ImageWorkers", "image_workers", "prepare_network_input", "with_image_workers"]

WORKER_DIED = (
    "The process analysing this image stopped unexpectedly twice (the image may be "
    "damaged, or the computer ran short of memory). Check the file, then run "
    "`nvir-agent process --force` on it."
)


def image_workers(config: Config) -> int:
    """Worker processes for reading and segmenting: ``[imaging] workers``, or as
    many as the scoring threads (0 there: all cores but one, the watching agent's
    share; one-shot commands set every core)."""
    if config.imaging.workers > 0:
        return config.imaging.workers
    return config.model.threads if config.model.threads > 0 else max(1, cpu_cores() - 1)


def prepare_network_input(a: Analysis, spec: PreprocessSpec | None,
                          image_stats: bool = False) -> None:
    """Make the scorer's input of an image that will be scored (``spec`` None:
    scoring is off), and with ``image_stats`` the statistics a model that judges
    trust compares. An image the spec cannot use is flagged not scored."""
    if spec is None or a.failed or a.found is False or a.pixels is None:
        return
    try:
        a.network_input = preprocess(a.pixels, spec, bit_depth=a.bit_depth, mask=a.mask)
        a.network_spec = spec
        if image_stats:  # they need the pixels and the mask, which stay in this process
            a.image_stats = image_statistics(a.pixels, a.bit_depth, a.mask)
    except ImageError as exc:
        a.qc.append(NOT_SCORED)
        log.info("%s not scored: %s", a.record.path, exc.message)


def analyse_one(stages: Sequence[Stage], a: Analysis, spec: PreprocessSpec | None,
                image_stats: bool = False) -> None:
    """Run ``stages`` on one image and make its network input; a per-image or
    unexpected error fails this image only, a fatal one propagates."""
    try:
        run_stages(list(stages), [a])
    except ImageError as exc:
        if not a.failed:
            a.fail(exc)
    except AgentError:
        raise
    except Exception as exc:
        log.exception("Analysing %s failed", a.record.path)
        a.fail(f"Internal error during analysis: {exc!r}")
    prepare_network_input(a, spec, image_stats)


# --- in the worker process ----------------------------------------------------------------

_worker: dict[str, Any] = {}


class _Records(logging.Handler):
    """Keeps the worker's log records, sent back with each image's result."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info))
        record.msg, record.args, record.exc_info = record.getMessage(), None, None
        self.records.append(record)


def _lower_priority() -> None:
    """As the watching agent's own process: nice 10 (BELOW_NORMAL on Windows)."""
    try:
        if sys.platform == "win32":
            import ctypes  # Windows only

            kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
            kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), 0x00004000)
        else:
            os.nice(max(0, 10 - os.nice(0)))
    except (OSError, AttributeError):
        pass


def _exit_with_parent() -> None:
    """Wait for the agent's process to end, however it ends (kill -9 included),
    then end this worker: an orphaned worker would hold memory for ever."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(0)


def _start_worker(payload: bytes, spec: PreprocessSpec | None, image_stats: bool,
                  low_priority: bool, level: int) -> None:
    threading.Thread(target=_exit_with_parent, name="nvir-worker-parent", daemon=True).start()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cv2.setNumThreads(1)
    # One thread for the BLAS libraries already loaded too: OpenCV's wheel bundles its own
    # OpenBLAS (cv2.gemm, in the boundary classifier), which cv2.setNumThreads does not
    # govern. With a thread per core in every worker, each product woke them all, and they
    # spun: on 16 cores the workers used about 5× the CPU per image (316 ms, 64 after).
    threadpool_limits(limits=1)
    if low_priority:
        _lower_priority()
    handler = _Records()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _worker.update(stages=pickle.loads(payload), spec=spec, image_stats=image_stats,
                   log=handler)


def _analyse_in_worker(a: Analysis) -> tuple[Analysis, list[logging.LogRecord]]:
    handler: _Records = _worker["log"]
    handler.records = []
    analyse_one(_worker["stages"], a, _worker["spec"], _worker["image_stats"])
    a.pixels = None  # stays here: the features and the network input go back
    a.mask = None
    return a, handler.records


# --- in the agent -------------------------------------------------------------------------


class ImageWorkers:
    """A stage that runs ``stages`` on each image of a batch in ``processes``
    worker processes (0, or stages that cannot be pickled: in this thread)."""

    def __init__(self, stages: Sequence[Stage], *, processes: int,
                 spec: PreprocessSpec | None = None, image_stats: bool = False,
                 low_priority: bool = False) -> None:
        self.stages = list(stages)
        self.name = "+".join(s.name for s in self.stages) or "prepare"
        self.spec = spec
        self.image_stats = image_stats  # for a model that judges trust
        self.low_priority = low_priority
        self._payload: bytes | None = None
        if processes > 0:
            try:
                self._payload = pickle.dumps(self.stages)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                log.debug("Stages %s stay in this process: %s", self.name, exc)
        self.processes = processes if self._payload is not None else 0
        self._pool: ProcessPoolExecutor | None = None
        self._respawn = False  # the spec changed: the pool is replaced before the next batch
        self._lock = threading.Lock()
        self._worked = False  # some worker process has analysed an image

    def use_spec(self, spec: PreprocessSpec | None, image_stats: bool) -> None:
        """The model file was replaced by one that wants its input made otherwise:
        images prepared from now on are (worker processes are started anew before
        the next batch; inputs made the old way are made again by the scorer)."""
        with self._lock:
            if (spec, image_stats) == (self.spec, self.image_stats):
                return
            self.spec, self.image_stats = spec, image_stats
            self._respawn = self._pool is not None

    def run(self, batch: list[Analysis]) -> None:
        if self.processes == 0:
            for a in batch:
                analyse_one(self.stages, a, self.spec, self.image_stats)
            return
        left = self._run_in_pool(batch)
        if left and not self._worked:
            # the processes cannot start here at all (a frozen app, no resources)
            log.warning("Image worker processes cannot start; images are read and "
                        "segmented in the agent's own process")
            self.processes = 0
            self.run(left)
            return
        if left:
            log.warning("An image worker process stopped; trying its %d images again one "
                        "at a time", len(left))
        for a in left:
            if self._run_in_pool([a]):
                a.fail(WORKER_DIED)

    def _run_in_pool(self, batch: list[Analysis]) -> list[Analysis]:
        """Analyse ``batch`` in the pool; returns the images a dying worker left."""
        pool = self._executor()
        try:
            futures = [pool.submit(_analyse_in_worker, a) for a in batch]
        except BrokenProcessPool:
            self._restart(pool)
            return list(batch)
        left = []
        for a, future in zip(batch, futures, strict=True):
            if not self._take(a, future):
                left.append(a)
        if left:
            self._restart(pool)
        return left

    def _take(self, a: Analysis, future: Future) -> bool:
        """Copy a worker's result into ``a``; False when its worker died."""
        try:
            done, records = future.result()
        except BrokenProcessPool:
            return False
        except AgentError:
            raise
        except Exception as exc:  # the result could not come back (pickling …)
            log.error("Analysing %s in a worker process failed: %r", a.record.path, exc)
            a.fail(f"Internal error during analysis: {exc!r}")
            return True
        for record in records:
            logging.getLogger(record.name).handle(record)
        self._worked = True
        for f in fields(Analysis):
            if f.name != "record":
                setattr(a, f.name, getattr(done, f.name))
        return True

    def _executor(self) -> ProcessPoolExecutor:
        old = None
        with self._lock:
            if self._respawn:
                old, self._pool, self._respawn = self._pool, None, False
        if old is not None:
            old.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(self._payload, self.spec, self.image_stats, self.low_priority,
                              logging.getLogger().getEffectiveLevel()),
                )
            return self._pool

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Stop the worker processes (the engine calls it when it stops)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def with_image_workers(config: Config, stages: Sequence[Stage],
                       processes: int | None = None) -> list[Stage]:
    """``stages`` with the ones before scoring wrapped in :class:`ImageWorkers`
    (``processes``: default :func:`image_workers`); the network input is made
    with the spec of the scoring stage (its ``spec``), when it has one."""
    prepare, score = split_stages(stages)
    if not prepare:
        return list(stages)
    spec = getattr(score[0], "spec", None) if score else None
    image_stats = bool(getattr(score[0], "needs_image_stats", False)) if score else False
    n = image_workers(config) if processes is None else processes
    workers = ImageWorkers(prepare, processes=n, spec=spec, image_stats=image_stats,
                           low_priority=config.model.low_priority)
    if score and hasattr(score[0], "workers_beside"):
        score[0].workers_beside = workers.processes  # it scores with fewer threads then
        score[0].on_spec_change = workers.use_spec  # a replaced model file's preprocessing
    return [workers, *score]
