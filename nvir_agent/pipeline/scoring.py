"""The engine's scoring step: NViR viability for every image with a spheroid.

Runs after segmentation. Images where segmentation found no spheroid
(``found is False``) are not scored. Without a model, scoring is off: the
stage says so once in the log (with how to get a model) and the agent still
ingests and segments. A configured model that cannot be loaded is fatal and
stops the engine with the file and the fix.

When the model file holds a training summary, each scored image also gets
its typicality and distance from the training images (and the QC flag
``unlike_training`` beyond the model's level); with an interval calibration,
a 90 % interval around its viability (see ``nvir_agent.model.typicality`` and
``nvir_agent.model.uncertainty``). A model without them scores as before.

The network is loaded on the first batch that needs it and shared by every
stage in the process that uses the same file and settings.

The model file while the agent runs: before each batch (and while the agent is
idle, once a model was loaded or found unusable) the stage looks at the file
again. A file that was replaced (new size or time) is loaded, and scores come
from it from then on. A file that goes missing or cannot be loaded (corrupt,
half copied) does not stop the agent: images are still read and measured and
recorded with no score and the QC flag ``awaiting_model`` (they do not count
in time courses and alerts until scored); the stage's ``problem`` says so in
the status snapshot, the log says it once, and ``tell`` (the notifier, wired by
``app.build_engine``) tells the operator. Once a usable file is in place the
stage says so and calls ``on_model_back`` (the store's
``requeue_awaiting_model``): the images that waited are analysed again and
scored. Only at start is a configured model that cannot load fatal. The stage runs in
the engine's scoring thread (``own_thread``); an image whose network input the
image workers already made (``Analysis.network_input``, made with ``spec``) is
scored from it, so its pixels need not cross from the worker process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nvir_agent.config import Config
from nvir_agent.errors import AgentError, ImageError, ModelLoadError
from nvir_agent.imaging.reading import read_image
from nvir_agent.model.locate import DEMO_WARNING, GET_A_MODEL, ModelSource, resolve_model
from nvir_agent.model.modelfile import read_model_metadata
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.model.scorer import Scorer, default_threads
from nvir_agent.pipeline.contract import NOT_SCORED, Analysis
from nvir_agent.store.rows import AWAITING_MODEL, UNLIKE_TRAINING, Trust

log = logging.getLogger(__name__)

__all__ = ["NOT_SCORED", "ScoreStage", "shared_scorer", "threads_beside_workers"]

_scorers: dict[tuple, Scorer] = {}
_scorers_lock = threading.Lock()


def threads_beside_workers(threads: int, workers: int) -> int:
    """Scoring threads when ``workers`` image worker processes share the ``threads``
    cores given to the engine (``[model] threads``): a third of them, at least one.

    A worker spends about twice on an image what the network does, and the network's
    threads, which wait for each other at every layer, lose most when a worker takes
    their core. Measured with the paper-size network on 2 cores, 2 workers, 1024² PNG
    (benchmarks/end_to_end.py --threads): 1 scoring thread 18.0–18.5 images/s at 101
    CPU ms per image, 2 threads 16.5–17.1 images/s at 114–118 ms."""
    if workers <= 0:
        return threads
    return max(1, default_threads(threads) // 3)


def shared_scorer(source: ModelSource, cfg: Config, threads: int | None = None) -> Scorer:
    """One Scorer per model file (path, size, mtime) and settings in this process;
    ``threads`` instead of ``[model] threads`` when given."""
    assert source.path is not None
    st = source.path.stat()
    m = cfg.model
    threads = m.threads if threads is None else threads
    key = (
        str(source.path),
        st.st_size,
        st.st_mtime_ns,
        m.device,
        threads,
        m.batch_size,
        m.fast_path,
    )
    with _scorers_lock:
        scorer = _scorers.get(key)
        if scorer is None:
            for old in [k for k in _scorers if k[0] == key[0]]:
                del _scorers[old]  # the file was replaced: its old network is not kept
            if source.demo:
                log.warning(DEMO_WARNING.format(path=source.path))
            scorer = Scorer.from_path(
                source.path,
                device=m.device,
                threads=threads,
                batch_size=m.batch_size,
                fast_path=m.fast_path,
                low_priority=m.low_priority,
            )
            _scorers[key] = scorer
        return scorer


class ScoreStage:
    """Sets ``viability`` and ``model`` (file name @ short hash) on each scored image."""

    name = "score"
    own_thread = True

    def __init__(self, config: Config, scorer: Scorer | None = None) -> None:
        self.config = config
        self._scorer = scorer
        self._given = scorer is not None  # a scorer handed in: no file to look at
        self._loaded: tuple[int, int] | None = None  # (size, mtime_ns) of the file loaded
        self._refused: tuple[int, int] | None = None  # the same, of a file that failed
        self._file_lock = threading.RLock()
        self.problem: str | None = None  # why scores wait, for the status snapshot
        self.on_model_back: Callable[[], int] | None = None  # queue the waiting images
        self.tell: Callable[[str, str, str], None] | None = None  # title, body, severity
        self.source = resolve_model(config)
        # images left waiting for a score by an earlier run are queued again at start
        self._requeue_due = scorer is None and self.source.path is not None
        self.spec: PreprocessSpec | None = scorer.spec if scorer is not None else None
        # whether the model judges trust: the image workers then also send each
        # image's statistics (they need the pixels and the mask, which stay there)
        self.needs_image_stats = scorer.judges_trust if scorer is not None else False
        self.workers_beside = 0  # image worker processes sharing the cores (set by them)
        # told the preprocessing of a replaced model file (the image workers, set by them)
        self.on_spec_change: Callable[[PreprocessSpec | None, bool], None] | None = None
        if scorer is None and self.source.path is not None:
            # fail at start, not on the first image: check the file now, load it later
            meta = read_model_metadata(self.source.path)
            self.needs_image_stats = "typicality" in meta or "uncertainty" in meta
            try:
                self.spec = PreprocessSpec.from_dict(meta["preprocessing"])
            except (KeyError, TypeError, ValueError):
                self.spec = None  # loading the model says what is wrong
        if scorer is None and self.source.path is None:
            if config.model.enabled:
                log.warning("Scoring is off: %s. %s", self.source.reason, GET_A_MODEL)
            else:
                log.info("Scoring is off: %s.", self.source.reason)

    @property
    def enabled(self) -> bool:
        return self._scorer is not None or self.source.path is not None

    @property
    def scorer(self) -> Scorer | None:
        """The scorer of the model file as it is now (loaded when it changed); None
        while the file is missing or cannot be loaded (``problem`` says why)."""
        if self._given or self.source.path is None:
            return self._scorer
        with self._file_lock:
            return self._current()

    def _current(self) -> Scorer | None:
        path = self.source.path
        assert path is not None
        try:
            st = path.stat()
            key = (st.st_size, st.st_mtime_ns)
        except OSError as exc:
            self._unusable(f"model file {path} cannot be found ({exc.strerror or exc})")
            return None
        if self._scorer is not None and key == self._loaded:
            self._requeue_waiting()  # due only after a store that could not be written
            return self._scorer
        if key == self._refused:
            return None  # the same unusable file: not tried again until it changes
        try:
            scorer = shared_scorer(self.source, self.config, threads_beside_workers(
                self.config.model.threads, self.workers_beside))
        except (ModelLoadError, OSError) as exc:
            self._refused = key
            if isinstance(exc, AgentError):  # it names the file and what is wrong
                self._unusable(exc.message.rstrip("."))
            else:
                self._unusable(f"model file {path} cannot be read ({exc.strerror or exc})")
            return None
        replaced = self._scorer is not None and self._scorer is not scorer
        self._scorer, self._loaded, self._refused = scorer, key, None
        if (scorer.spec, scorer.judges_trust) != (self.spec, self.needs_image_stats):
            self.spec, self.needs_image_stats = scorer.spec, scorer.judges_trust
            if self.on_spec_change is not None:
                self.on_spec_change(self.spec, self.needs_image_stats)
        if self.problem is not None:
            log.warning("Model file %s can be used again (%s): scoring resumes, and the "
                        "images that waited for a score are analysed again", path,
                        scorer.name)
            self.problem = None
            self._requeue_due = True
            if self.tell is not None:
                self.tell("NViR Agent: scoring resumed",
                          f"The model file {path} can be used again ({scorer.name}); the "
                          "images that waited for a score are being scored.", "info")
        elif replaced:
            log.warning("Model file %s was replaced: scoring with %s from now on", path,
                        scorer.name)
        self._requeue_waiting()
        return scorer

    def _unusable(self, why: str) -> None:
        """The configured model file cannot score now: say so once, keep no old network."""
        self._scorer, self._loaded = None, None
        problem = (f"{why}: images are still read and measured and wait for a score; put a "
                   "usable model file there and they are scored")
        if problem == self.problem:
            return
        self.problem = problem
        log.error("Scoring waits: %s.", problem)
        if self.tell is not None:
            self.tell("NViR Agent: viability is not scored", f"{problem}.", "warning")

    def _requeue_waiting(self) -> None:
        """Hand the images that waited for the model back for analysis (again on the
        next look while the store cannot be written)."""
        if not self._requeue_due or self.on_model_back is None:
            return
        try:
            n = self.on_model_back()
        except AgentError as exc:
            log.warning("The images waiting for a score are queued later: %s", exc.message)
            return
        self._requeue_due = False
        if n:
            log.warning("%d image(s) that waited for a score are analysed again", n)

    def on_idle(self) -> None:
        """While nothing waits for analysis: look at the model file again once one was
        loaded or found unusable (a file put back is used, and the waiting images are
        queued, without waiting for a new image)."""
        if self._given or self.source.path is None:
            return
        if self._scorer is None and self.problem is None:
            self._requeue_waiting()  # the file loaded at start: the waiting images go
            return  # the network itself loads with the first image to score
        _ = self.scorer

    def run(self, batch: list[Analysis]) -> None:
        todo = [a for a in batch if a.found is not False and not a.failed]
        if not todo or not self.enabled:
            return
        scorer = self.scorer
        if scorer is None:  # the model file cannot be used now: measured, score later
            for a in todo:
                if AWAITING_MODEL not in a.qc:
                    a.qc.append(AWAITING_MODEL)
                a.network_input = a.image_stats = None
            return
        inputs: list[np.ndarray] = []
        stats: list[dict[str, float]] = []
        scored: list[Analysis] = []
        trust = scorer.judges_trust
        for a in todo:
            # an input made for another model's preprocessing (the file was replaced
            # meanwhile) is made again here
            if a.network_input is not None and a.network_spec == scorer.spec and (
                    not trust or a.image_stats is not None):
                inputs.append(a.network_input)
                if trust:
                    stats.append(a.image_stats)
                scored.append(a)
                continue
            if NOT_SCORED in a.qc:  # the image workers could not make its input
                continue
            try:
                pixels, bit_depth = self._pixels(a)
                inputs.append(scorer.preprocess(pixels, bit_depth=bit_depth, mask=a.mask))
                if trust:
                    stats.append(scorer.image_statistics(pixels, bit_depth=bit_depth,
                                                         mask=a.mask))
            except ImageError as exc:
                if a.pixels is None and a.found is None:
                    a.fail(exc)  # nothing else could read it either
                else:
                    a.qc.append(NOT_SCORED)
                    log.info("%s not scored: %s", a.record.path, exc.message)
                continue
            scored.append(a)
        if not scored:
            return
        if not trust:
            values = scorer.score_tensors(np.stack(inputs))
            for a, v in zip(scored, values, strict=True):
                a.viability = round(float(v), 6)
                a.model = scorer.name
            return
        for a, s in zip(scored, scorer.assess_tensors(np.stack(inputs), stats), strict=True):
            a.viability = round(s.viability, 6)
            a.model = scorer.name
            a.network_input = a.image_stats = None
            a.trust = Trust(_round(s.low), _round(s.high), _round(s.typicality),
                            _round(s.distance))
            if s.unlike_training:
                a.qc.append(UNLIKE_TRAINING)

    def _pixels(self, a: Analysis) -> tuple[np.ndarray, int | None]:
        if a.pixels is not None:
            return a.pixels, a.bit_depth
        img = read_image(
            Path(a.record.path),
            max_side=self.config.imaging.max_pixels_side,
            page=self.config.imaging.page,
        )
        return img.pixels, img.bit_depth


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)
