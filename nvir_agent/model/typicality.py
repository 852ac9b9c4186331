"""Is an image like the images a model was trained on? The training summary.

A model file may hold a compact summary of its training images (written when
a model is trained, or later by ``nvir-agent model summarise``):

- **in the network's embedding space** — the mean of the 512-d encoder
  features, the top ``k`` principal directions with their variances, and one
  variance for everything outside them; the variances are shrunk towards
  their average (``SHRINKAGE``) so that few images give a stable inverse.
  The embedding distance of an image is its Mahalanobis distance under that
  covariance;
- **as image statistics** — frame size, effective bit depth, background
  level, spheroid contrast, spheroid size (magnification) and pixel noise:
  their training mean and spread. The image distance is the largest
  ``|x − mean| / spread`` over the statistics (the spread has a floor per
  statistic, so that a training set of one frame size or one bit depth still
  gives a finite distance to another);
- **its calibration** — both distances are divided by their median over
  held-out images of the training distribution (images the summary was not
  fitted on), and the **distance** of an image is the larger of the two. The
  sorted distances of those held-out images are stored: an image's
  **typicality** is the fraction of them that lie farther than it (1: as
  typical as any, 0: farther than every one).

An image is **unlike the training images** when its distance exceeds the
held-out images' 99th percentile (``UNLIKE_QUANTILE``), i.e. when its
typicality is below 0.01: one in a hundred images of the training
distribution is flagged by chance.

Pure numpy; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nvir_agent.store.rows import UNLIKE_TRAINING

__all__ = ["UNLIKE_TRAINING", "TrainingSummary", "Typicality", "fit_summary", "image_statistics"]

SUMMARY_VERSION = 1
TENSOR_PREFIX = "typicality."
SHRINKAGE = 0.1
COMPONENTS = 32
UNLIKE_QUANTILE = 0.99
# the image statistics, and the smallest spread each is given (its unit below)
STATISTICS: dict[str, float] = {
    "frame_side_log2": 0.5,  # log2 of sqrt(width × height) in pixels (a factor 2: 2 spreads)
    "bit_depth": 0.5,  # effective bits of the data
    "background": 0.02,  # median outside the spheroid, fraction of full scale
    "contrast": 0.03,  # 1 − spheroid median / background median
    "spheroid_size_log": 0.05,  # ln of sqrt(spheroid area / frame area)
    "noise": 0.002,  # pixel-to-pixel noise of the background, fraction of full scale
}


def image_statistics(
    pixels: np.ndarray, bit_depth: int | None = None, mask: np.ndarray | None = None
) -> dict[str, float]:
    """The image statistics of one decoded image (NaN where there is no spheroid mask)."""
    img = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
    h, w = img.shape[:2]
    if bit_depth is None:
        bit_depth = 8 if pixels.dtype == np.uint8 else 16
    full = float((1 << int(bit_depth)) - 1)
    step = max(1, int(math.sqrt(h * w) // 512))  # about 512 × 512 samples
    small = img[::step, ::step].astype(np.float32) / full
    out = {
        "frame_side_log2": math.log2(math.sqrt(h * w)),
        "bit_depth": float(bit_depth),
        "background": math.nan,
        "contrast": math.nan,
        "spheroid_size_log": math.nan,
        "noise": math.nan,
    }
    small_mask = None
    if mask is not None and mask.shape[:2] == (h, w):
        small_mask = mask[::step, ::step].astype(bool)
        if not small_mask.any() or small_mask.all():
            small_mask = None
    outside = small[~small_mask] if small_mask is not None else small.ravel()
    bg = float(np.median(outside))
    out["background"] = bg
    if small_mask is not None:
        out["contrast"] = 1.0 - float(np.median(small[small_mask])) / max(bg, 1e-6)
        out["spheroid_size_log"] = math.log(math.sqrt(float(mask.mean())) + 1e-6)
    # noise: robust spread of neighbouring-pixel differences on full-resolution rows
    rows = img[:: max(1, h // 64)].astype(np.float32) / full
    d = np.diff(rows, axis=1)
    if mask is not None and mask.shape[:2] == (h, w):
        keep = ~(mask[:: max(1, h // 64)][:, 1:] | mask[:: max(1, h // 64)][:, :-1])
        d = d[keep]
    d = d.ravel()
    if d.size:
        out["noise"] = float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0))
    return out


def statistics_vector(stats: Mapping[str, float]) -> np.ndarray:
    return np.array([float(stats.get(k, math.nan)) for k in STATISTICS], dtype=np.float64)


@dataclass(frozen=True)
class Typicality:
    """One image's distance from the training images and what it means."""

    distance: float  # max(embedding, image) in held-out-median units
    typicality: float  # fraction of held-out in-distribution images farther
    unlike_training: bool
    embedding_distance: float
    image_distance: float
    farthest_statistic: str  # the image statistic that is most unusual


@dataclass
class TrainingSummary:
    """A model's training images, summarised (see the module docstring)."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D) orthonormal rows
    variances: np.ndarray  # (k,) shrunk
    residual_variance: float
    stat_mean: np.ndarray  # (S,) over STATISTICS
    stat_spread: np.ndarray  # (S,) with the floors applied
    embedding_scale: float = 1.0
    image_scale: float = 1.0
    held_out: np.ndarray = field(default_factory=lambda: np.zeros(0))  # sorted distances
    threshold: float = math.inf
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ distances
    def embedding_distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each (N, D) feature row, unscaled."""
        x = np.asarray(features, np.float64) - self.mean
        p = x @ self.components.T
        inside = (p**2 / self.variances).sum(axis=1)
        rest = np.maximum((x**2).sum(axis=1) - (p**2).sum(axis=1), 0.0)
        return np.sqrt(inside + rest / self.residual_variance)

    def image_distances(self, stats: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Largest |z| over the statistics of each (N, S) row (NaN statistics skipped)."""
        z = np.abs((np.asarray(stats, np.float64) - self.stat_mean) / self.stat_spread)
        z = np.where(np.isfinite(z), z, 0.0)
        names = list(STATISTICS)
        return z.max(axis=1), [names[i] for i in z.argmax(axis=1)]

    def raw_distances(self, features: np.ndarray, stats: np.ndarray) -> np.ndarray:
        e = self.embedding_distances(features) / self.embedding_scale
        i, _ = self.image_distances(stats)
        return np.maximum(e, i / self.image_scale)

    def assess(self, features: np.ndarray, stats: np.ndarray) -> list[Typicality]:
        """The distance and typicality of each image (rows of features and statistics)."""
        e = self.embedding_distances(features) / self.embedding_scale
        i, names = self.image_distances(stats)
        i = i / self.image_scale
        d = np.maximum(e, i)
        typ = typicality_of(d, self.held_out)
        return [
            Typicality(
                distance=float(d[j]),
                typicality=float(typ[j]),
                unlike_training=bool(d[j] > self.threshold),
                embedding_distance=float(e[j]),
                image_distance=float(i[j]),
                farthest_statistic=names[j],
            )
            for j in range(d.size)
        ]

    # ------------------------------------------------------------------ storage
    def tensors(self) -> dict[str, np.ndarray]:
        """Arrays stored as tensors in the model file (float32)."""
        return {
            TENSOR_PREFIX + "mean": self.mean.astype(np.float32),
            TENSOR_PREFIX + "components": self.components.astype(np.float32),
            TENSOR_PREFIX + "variances": self.variances.astype(np.float32),
        }

    def metadata(self) -> dict[str, Any]:
        """The JSON part of the summary (stored in the model file's metadata)."""
        return {
            "version": SUMMARY_VERSION,
            "residual_variance": float(self.residual_variance),
            "statistics": list(STATISTICS),
            "statistics_mean": [_num(v) for v in self.stat_mean],
            "statistics_spread": [_num(v) for v in self.stat_spread],
            "embedding_scale": float(self.embedding_scale),
            "image_scale": float(self.image_scale),
            "held_out_distances": [round(float(v), 5) for v in self.held_out],
            "threshold": float(self.threshold),
            "unlike_quantile": UNLIKE_QUANTILE,
            **{k: v for k, v in self.info.items()},
        }

    @classmethod
    def from_stored(
        cls, meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray]
    ) -> TrainingSummary:
        """The summary from a model file's metadata and tensors; ValueError when unusable."""
        if int(meta.get("version", 0)) != SUMMARY_VERSION:
            raise ValueError(f"training summary version {meta.get('version')!r} is unknown")
        names = list(meta["statistics"])
        known = dict(zip(names, meta["statistics_mean"], strict=True))
        spread = dict(zip(names, meta["statistics_spread"], strict=True))
        info_keys = {"images", "source", "held_out_images", "components"}
        held = np.sort(np.asarray(meta["held_out_distances"], np.float64))
        return cls(
            mean=np.asarray(tensors[TENSOR_PREFIX + "mean"], np.float64),
            components=np.asarray(tensors[TENSOR_PREFIX + "components"], np.float64),
            variances=np.asarray(tensors[TENSOR_PREFIX + "variances"], np.float64),
            residual_variance=float(meta["residual_variance"]),
            stat_mean=np.array([_nan(known.get(k)) for k in STATISTICS]),
            stat_spread=np.array([_nan(spread.get(k), STATISTICS[k]) for k in STATISTICS]),
            embedding_scale=float(meta["embedding_scale"]),
            image_scale=float(meta["image_scale"]),
            held_out=held,
            threshold=float(meta["threshold"]),
            info={k: meta[k] for k in info_keys if k in meta},
        )


def fit_summary(
    fit_features: np.ndarray,
    fit_stats: np.ndarray,
    held_features: np.ndarray,
    held_stats: np.ndarray,
    *,
    components: int = COMPONENTS,
    info: Mapping[str, Any] | None = None,
) -> TrainingSummary:
    """Fit the summary on one set of training images, calibrate it on held-out ones.

    ``*_features`` are (N, D) encoder features, ``*_stats`` (N, S) rows of
    :func:`statistics_vector`. At least 4 images in each set.
    """
    f = np.asarray(fit_features, np.float64)
    h = np.asarray(held_features, np.float64)
    if f.shape[0] < 4 or h.shape[0] < 4:
        raise ValueError("a training summary needs at least 4 fitting and 4 held-out images")
    n, dim = f.shape
    mean = f.mean(axis=0)
    _, s, vt = np.linalg.svd(f - mean, full_matrices=False)
    eig = np.zeros(dim)
    eig[: s.size] = s**2 / max(1, n - 1)
    avg = max(float(eig.mean()), 1e-12)
    shrunk = (1.0 - SHRINKAGE) * eig + SHRINKAGE * avg
    k = int(min(components, s.size, dim - 1))
    residual = float(shrunk[k:].mean())
    st = np.asarray(fit_stats, np.float64)
    floors = np.array(list(STATISTICS.values()))
    with np.errstate(invalid="ignore"):
        stat_mean = np.nanmean(np.where(np.isfinite(st), st, np.nan), axis=0)
        stat_sd = np.nanstd(np.where(np.isfinite(st), st, np.nan), axis=0)
    stat_spread = np.maximum(np.nan_to_num(stat_sd, nan=0.0), floors)
    summary = TrainingSummary(
        mean=mean, components=vt[:k], variances=shrunk[:k], residual_variance=residual,
        stat_mean=stat_mean, stat_spread=stat_spread,
        info={"components": k, **dict(info or {})},
    )
    e = summary.embedding_distances(h)
    i, _ = summary.image_distances(np.asarray(held_stats, np.float64))
    summary.embedding_scale = max(float(np.median(e)), 1e-9)
    summary.image_scale = max(float(np.median(i)), 1e-9)
    held = np.sort(np.maximum(e / summary.embedding_scale, i / summary.image_scale))
    summary.held_out = held
    summary.threshold = float(np.quantile(held, UNLIKE_QUANTILE))
    return summary


def held_out_rows(n: int, every: int = 4) -> tuple[list[int], list[int]]:
    """Indices (fit, held out) when one folder must serve both: every ``every``-th is held out."""
    held = list(range(every - 1, n, every))
    taken = set(held)
    return [i for i in range(n) if i not in taken], held


def describe(summary: TrainingSummary | None) -> str:
    """One line on what the check can do with this model."""
    if summary is None:
        return ("unavailable: the model file has no training summary "
                "(add one with `nvir-agent model summarise MODEL --images FOLDER`)")
    n = summary.info.get("images", "?")
    m = summary.held_out.size
    return (f"{n} training images summarised, calibrated on {m} held-out images; "
            f"unlike_training above distance {summary.threshold:.2f}")


def describe_metadata(meta: Mapping[str, Any] | None) -> str:
    """:func:`describe` from the summary's JSON part in a model file's metadata (no
    tensors needed: ``model info`` reads only the header)."""
    if meta is None:
        return describe(None)
    try:
        held = len(meta["held_out_distances"])
        threshold = float(meta["threshold"])
    except (KeyError, TypeError, ValueError) as exc:
        return f"unavailable: the model file's training summary is unusable ({exc})"
    return (f"{meta.get('images', '?')} training images summarised, calibrated on {held} "
            f"held-out images; unlike_training above distance {threshold:.2f}")


def _num(v: float) -> float | None:
    return None if not math.isfinite(float(v)) else round(float(v), 6)


def _nan(v: float | None, default: float = math.nan) -> float:
    return default if v is None else float(v)


def typicality_of(distances: Sequence[float], held_out: np.ndarray) -> np.ndarray:
    """Fraction of ``held_out`` (sorted) distances farther than each of ``distances``."""
    d = np.asarray(distances, np.float64)
    return (held_out.size - np.searchsorted(held_out, d, side="right")) / max(1, held_out.size)
