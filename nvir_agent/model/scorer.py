"""Batched NViR scoring on CPU, CUDA or Apple MPS.

A :class:`Scorer` owns a loaded model, the device, the thread count and the
fast path chosen for this machine (and, on a CUDA GPU, the batch size that
keeps it busy, measured). It takes decoded images (or preprocessed
tensors), batches them and returns one viability per image.

:meth:`Scorer.assess_tensors` also says how far each image lies from the
model's training images and gives a calibrated interval, when the model file
holds a training summary or an interval calibration. Such a model's fast
path runs the encoder(s) only (:class:`nvir_agent.model.network.Features`)
and gives the 512-d features (per member); the heads then run in fp32 torch
on them (:class:`nvir_agent.model.heads.Heads`): the viability in eval mode,
the MC-dropout passes for the interval. The fast path is checked against fp32
on the viability and on the embedding distance. A model without either is
scored on the fast path of the whole network.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nvir_agent.config import Config
from nvir_agent.errors import ConfigError, ModelLoadError
from nvir_agent.model import runtimes
from nvir_agent.model.fastpath import (
    CPU_BATCHES,
    GPU_BATCHES,
    FastPathChoice,
    choose_fast_path,
)
from nvir_agent.model.heads import Heads
from nvir_agent.model.locate import DEMO_WARNING, GET_A_MODEL, resolve_model
from nvir_agent.model.modelfile import LoadedModel, load_model
from nvir_agent.model.network import Features
from nvir_agent.model.preprocess import preprocess
from nvir_agent.model.typicality import image_statistics, statistics_vector
from nvir_agent.model.uncertainty import base_spread, intervals, widen

log = logging.getLogger(__name__)

_priority_lowered = False


def pick_device(requested: str = "auto") -> torch.device:
    """auto: CUDA, then Apple MPS, then CPU. An explicit device that is absent is a ConfigError."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if requested == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if requested == "cuda" and not cuda:
        raise ConfigError(
            "model.device = 'cuda' but no CUDA GPU is usable on this machine.",
            "Set [model] device = 'auto' or 'cpu' in agent.toml.",
        )
    if requested == "mps" and not mps:
        raise ConfigError(
            "model.device = 'mps' but Apple MPS is not available on this machine.",
            "Set [model] device = 'auto' or 'cpu' in agent.toml.",
        )
    if requested not in ("cpu", "cuda", "mps"):
        raise ConfigError(
            f"model.device = {requested!r} is not allowed.", "Use 'auto', 'cpu', 'cuda' or 'mps'."
        )
    return torch.device(requested)


def default_threads(configured: int = 0) -> int:
    """``configured`` when > 0, else all cores but one (at least one)."""
    if configured > 0:
        return configured
    return max(1, (os.cpu_count() or 2) - 1)


def _nice_every_thread(value: int) -> None:
    """On Linux a nice value belongs to a thread, and a new thread inherits its
    creator's: give every thread the process has now (the watcher, ingest and
    monitor threads, the GUI) at least ``value``, so that the whole agent yields
    to the acquisition software, not only the thread that asked."""
    for entry in os.listdir("/proc/self/task"):
        tid = int(entry)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(value, os.getpriority(os.PRIO_PROCESS, tid)))
        except ProcessLookupError:  # the thread ended meanwhile
            continue


def lower_process_priority() -> bool:
    """Lower this process's CPU priority once (nice +10; BELOW_NORMAL on Windows)."""
    global _priority_lowered
    if _priority_lowered:
        return True
    try:
        if sys.platform == "win32":
            import ctypes  # Windows only

            below_normal = 0x00004000
            kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
            if not kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), below_normal):
                return False
        elif sys.platform.startswith("linux"):
            _nice_every_thread(10)
        else:
            os.nice(10)
    except (OSError, AttributeError) as exc:
        log.info("Could not lower process priority: %s", exc)
        return False
    _priority_lowered = True
    log.info("Process priority lowered so the acquisition software keeps precedence.")
    return True


@dataclass(frozen=True)
class Assessment:
    """One image's viability, its interval and how like the training images it is.

    ``low``/``high`` are None without an interval calibration; ``distance`` and
    ``typicality`` None without a training summary (the check is unavailable).
    """

    viability: float
    low: float | None = None
    high: float | None = None
    distance: float | None = None
    typicality: float | None = None
    unlike_training: bool = False
    farthest_statistic: str | None = None


class Scorer:
    """Scores images with one NViR model; thread-compatible, not thread-safe."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        device: str = "auto",
        threads: int = 0,
        batch_size: int = 8,
        fast_path: str = "auto",
        low_priority: bool = False,
        use_cache: bool = True,
    ) -> None:
        self.model = model
        self.spec = model.spec
        self.device = pick_device(device)
        self.threads = default_threads(threads)
        self.batch_size = max(1, batch_size)
        # also with a GPU: the trust heads, their dropout passes and any CPU fallback run here
        torch.set_num_threads(self.threads)
        if low_priority:
            lower_process_priority()
        # copied before any path moves the network to the device: they run on the CPU
        self.heads = Heads(model.module)
        self._eager_features: runtimes.Runner | None = None
        summary = model.summary
        self.choice: FastPathChoice = choose_fast_path(
            self.runtime_module,
            self.device,
            requested=fast_path,
            model_hash=self.runtime_key,
            input_size=self.spec.size,
            threads=self.threads,
            use_cache=use_cache,
            batch_sizes=GPU_BATCHES if self.device.type == "cuda" else CPU_BATCHES,
            readout=self.heads.viability if self.judges_trust else None,
            distance=(lambda f: summary.embedding_distances(f) / summary.embedding_scale)
            if summary is not None else None,
        )
        if self.choice.batch_size:  # measured for the chosen path
            self.batch_size = self.choice.batch_size

    @property
    def runtime_module(self) -> torch.nn.Module:
        """What the fast path runs: the encoder(s) alone for a model that judges
        trust (the heads run on the features), else the whole network."""
        return Features(self.model.module) if self.judges_trust else self.model.module

    @property
    def runtime_key(self) -> str:
        """The model's hash, or for its encoder-only module one derived from it (the
        fast-path choice and the ONNX export are cached under it)."""
        if not self.judges_trust or not self.model.sha256:
            return self.model.sha256
        return hashlib.sha256(f"{self.model.sha256}:features".encode()).hexdigest()

    @classmethod
    def from_config(cls, cfg: Config, *, low_priority: bool | None = None) -> Scorer:
        """The scorer for agent.toml's ``[model]``; ModelLoadError when there is no usable model."""
        source = resolve_model(cfg)
        if source.path is None:
            raise ModelLoadError(f"No model to score with: {source.reason}.", GET_A_MODEL)
        if source.demo:
            log.warning(DEMO_WARNING.format(path=source.path))
        return cls.from_path(
            source.path,
            device=cfg.model.device,
            threads=cfg.model.threads,
            batch_size=cfg.model.batch_size,
            fast_path=cfg.model.fast_path,
            low_priority=cfg.model.low_priority if low_priority is None else low_priority,
        )

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], **kwargs: object) -> Scorer:
        return cls(load_model(Path(path)), **kwargs)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        """Model file name and short hash, as recorded with each measurement."""
        return self.model.name

    @property
    def fast_path(self) -> str:
        return self.choice.chosen.name

    def preprocess(
        self, image: np.ndarray, *, bit_depth: int | None = None, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """The network input (1, S, S) for one image under this model's spec."""
        return preprocess(image, self.spec, bit_depth=bit_depth, mask=mask)

    def score_tensors(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Viability per item of an (N, 1, S, S) float32 batch of preprocessed images."""
        x = torch.as_tensor(batch, dtype=torch.float32)
        if x.ndim == 3:
            x = x[:, None]
        s = self.spec.size
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, s, s):
            raise ValueError(f"expected a batch of shape (N, 1, {s}, {s}), got {tuple(x.shape)}")
        if self.judges_trust:
            return self.heads.viability(self._run_features(x)).astype(np.float32)
        out = np.empty(x.shape[0], dtype=np.float32)
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start : start + self.batch_size]
            out[start : start + chunk.shape[0]] = self._run(self.choice.chosen.run, chunk)
        return out

    def _run(self, runner: runtimes.Runner, chunk: torch.Tensor) -> np.ndarray:
        try:
            return runner(chunk)
        except RuntimeError as exc:
            raise ModelLoadError(
                f"Scoring with {self.name} on {self.device} failed: {exc}.",
                "Try [model] device = 'cpu' and fast_path = 'fp32' in agent.toml.",
            ) from exc

    def _run_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 512 × members) features of a checked (N, 1, S, S) batch: on the fast path
        for a model that judges trust, else in fp32 eager torch."""
        if self.judges_trust:
            runner = self.choice.chosen.run
        else:
            if self._eager_features is None:
                self._eager_features = runtimes.make_eager(Features(self.model.module),
                                                           self.device)
            runner = self._eager_features
        out = [torch.from_numpy(np.asarray(self._run(runner, x[s : s + self.batch_size]),
                                           dtype=np.float32)).reshape(-1, self.heads.features)
               for s in range(0, x.shape[0], self.batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.heads.features)

    @property
    def judges_trust(self) -> bool:
        """Whether this model gives typicality or intervals (else assess = score)."""
        return self.model.summary is not None or self.model.intervals is not None

    def image_statistics(self, image: np.ndarray, *, bit_depth: int | None = None,
                         mask: np.ndarray | None = None) -> dict[str, float]:
        """The statistics the training summary compares (frame, bit depth, levels …)."""
        return image_statistics(image, bit_depth, mask)

    def features(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, 512 × members) encoder features of a preprocessed batch, on the CPU:
        from the fast path for a model that judges trust, else fp32 eager."""
        x = torch.as_tensor(batch, dtype=torch.float32)
        if x.ndim == 3:
            x = x[:, None]
        return self._run_features(x)

    def assess_tensors(
        self, batch: np.ndarray | torch.Tensor, stats: Sequence[Mapping[str, float]] | None = None
    ) -> list[Assessment]:
        """Viability, interval and typicality per item of a preprocessed batch.

        ``stats`` are each image's :meth:`image_statistics` (needed for the
        typicality; without them only the embedding is compared).
        """
        if not self.judges_trust:
            return [Assessment(float(v)) for v in self.score_tensors(batch)]
        feats = self.features(batch)
        outputs = self.heads.outputs(feats)
        centre = outputs.mean(axis=0)
        n = centre.size
        summary, cal = self.model.summary, self.model.intervals
        dist = typ = None
        judged = []
        if summary is not None:
            rows = np.stack([statistics_vector(s) for s in stats]) if stats is not None else (
                np.full((n, len(summary.stat_mean)), math.nan))
            judged = summary.assess(feats.double().numpy(), rows)
            dist = np.array([j.distance for j in judged])
            typ = np.array([j.typicality for j in judged])
        low = high = None
        if cal is not None:
            sd = base_spread(outputs, self.heads.samples(feats, cal.passes), cal.method)
            low, high = intervals(centre, widen(sd, dist, cal.widen_from), cal)
        return [
            Assessment(
                viability=float(centre[i]),
                low=None if low is None else float(low[i]),
                high=None if high is None else float(high[i]),
                distance=None if dist is None else float(dist[i]),
                typicality=None if typ is None else float(typ[i]),
                unlike_training=bool(judged and judged[i].unlike_training),
                farthest_statistic=judged[i].farthest_statistic if judged and
                judged[i].image_distance >= judged[i].embedding_distance else
                ("embedding" if judged else None),
            )
            for i in range(n)
        ]

    def score(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None] | None = None,
        bit_depths: Sequence[int | None] | None = None,
    ) -> np.ndarray:
        """Viability per decoded image. An image the spec cannot use raises AnalysisError."""
        if not len(images):
            return np.empty(0, dtype=np.float32)
        masks = masks if masks is not None else [None] * len(images)
        depths = bit_depths if bit_depths is not None else [None] * len(images)
        batch = np.stack(
            [
                self.preprocess(img, bit_depth=d, mask=m)
                for img, m, d in zip(images, masks, depths, strict=True)
            ]
        )
        return self.score_tensors(batch)
