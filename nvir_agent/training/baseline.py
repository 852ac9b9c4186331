"""The NViR paper's classic-feature baseline: viability regressed on the
segmented spheroid's morphology.

Features (from :func:`nvir_agent.imaging.segmentation.segment`): the perimeter over
the circumference of the circle of equal area, the mean boundary curvature,
the brightness ratio (core over local background) and the area (as a fraction
of the frame, so frames of different sizes compare). The regressor is a
ridge regression on the standardised features, their squares and pairwise
products (a quadratic surface fitted by numpy least squares), its predictions
clipped to the range of the training labels so that a quadratic never
extrapolates wildly: simple, deterministic and with no dependency beyond numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations_with_replacement
from typing import Any

import numpy as np

from nvir_agent.errors import AgentError, DataError
from nvir_agent.imaging.analyse import SegmentedImage, analyse
from nvir_agent.training.data import split_labels
from nvir_agent.training.evaluate import metrics_report
from nvir_agent.training.labels import LabelSet, read_labels

log = logging.getLogger(__name__)

FEATURES = ("perimeter_circumference_ratio", "mean_boundary_curvature", "brightness_ratio",
            "area_fraction")
RIDGE = 1e-3


@dataclass
class FeatureTable:
    """Baseline features (N, 4) of the images of a LabelSet that have a spheroid."""

    values: np.ndarray
    indices: list[int]
    skipped: dict[str, str]


def image_features(pixels: np.ndarray, *, bit_depth: int | None = None) -> list[float]:
    """The four baseline features of one image; AnalysisError-like DataError when
    no spheroid is found."""
    return _features(analyse(pixels, bit_depth=bit_depth))


def _features(image: SegmentedImage) -> list[float]:
    seg, (h, w) = image.segmentation, image.pixels.shape[:2]
    if not seg.found:
        raise DataError("no spheroid found")
    f = dict(seg.features)
    f["area_fraction"] = float(f["area_px"]) / float(h * w)
    missing = [k for k in FEATURES if f.get(k) is None]
    if missing:
        raise DataError(f"segmentation gave no {', '.join(missing)}")
    return [float(f[k]) for k in FEATURES]


def extract_features(labels: LabelSet, *, workers: int = 1,
                     progress: Callable[[int, int], None] | None = None) -> FeatureTable:
    """Segment every labelled image; images without a spheroid are left out."""
    n = len(labels)

    def work(i: int) -> tuple[int, list[float] | None, str | None]:
        try:
            return i, _features(analyse(labels.items[i].path)), None
        except AgentError as exc:
            return i, None, exc.message

    rows: dict[int, list[float]] = {}
    skipped: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, (i, feats, error) in enumerate(pool.map(work, range(n)), start=1):
            if feats is None:
                skipped[labels.items[i].name] = error or "unusable"
            else:
                rows[i] = feats
            if progress is not None:
                progress(done, n)
    if skipped:
        log.warning("baseline: left out %d of %d images without a usable spheroid",
                    len(skipped), n)
    indices = sorted(rows)
    values = np.array([rows[i] for i in indices], dtype=np.float64).reshape(-1, len(FEATURES))
    return FeatureTable(values, indices, skipped)


@dataclass
class Baseline:
    """A fitted quadratic ridge regression from baseline features to viability."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    low: float = -np.inf
    high: float = np.inf

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, *, ridge: float = RIDGE) -> Baseline:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if len(x) < 2 or len(x) != len(y):
            raise DataError(f"the baseline needs at least 2 training images with a spheroid; "
                            f"got {len(x)}", "label more images")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale == 0] = 1.0
        design = _design((x - mean) / scale)
        penalty = np.sqrt(ridge * len(x)) * np.eye(design.shape[1])
        penalty[0, 0] = 0.0  # the intercept is not penalised
        coef, *_ = np.linalg.lstsq(np.vstack([design, penalty]),
                                   np.concatenate([y, np.zeros(design.shape[1])]), rcond=None)
        return cls(mean, scale, coef, float(y.min()), float(y.max()))

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1, len(self.mean))
        return np.clip(_design((x - self.mean) / self.scale) @ self.coef, self.low, self.high)

    def describe(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "regressor": "quadratic ridge regression",
                "ridge": RIDGE}


def _design(z: np.ndarray) -> np.ndarray:
    cols = [np.ones(len(z))] + [z[:, j] for j in range(z.shape[1])]
    cols += [z[:, a] * z[:, b] for a, b in combinations_with_replacement(range(z.shape[1]), 2)]
    return np.stack(cols, axis=1)


@dataclass
class BaselineResult:
    """The baseline's predictions on evaluation images and its metrics."""

    report: dict[str, Any]
    y_true: np.ndarray
    y_pred: np.ndarray
    n_train: int


def baseline_for_model(metadata: dict[str, Any], labels: LabelSet, *,
                       train_labels: Any = None, train_images: Any = None,
                       workers: int = 1) -> BaselineResult:
    """Fit the baseline on the training split a model records (or on
    ``train_labels`` when given, all of it) and evaluate it on ``labels``."""
    recipe = metadata.get("recipe", {})
    if train_labels is not None:
        train_set = read_labels(train_labels, train_images)
        train_idx = list(range(len(train_set)))
    else:
        csv = metadata.get("data", {}).get("labels_csv")
        if not csv:
            raise DataError("the model does not record its training labels",
                            "give them with --train-labels CSV [--train-images DIR]")
        try:
            train_set = read_labels(csv, train_images or metadata["data"].get("image_root"),
                                    label_source=recipe.get("label_source", "auto"))
        except DataError as exc:
            raise DataError(f"cannot use the training labels the model records: {exc.message}",
                            "give them with --train-labels CSV [--train-images DIR]") from exc
        split = split_labels(train_set, recipe.get("split", "chronological"),
                             val_fraction=recipe.get("val_fraction", 0.2),
                             seed=recipe.get("seed", 42))
        train_idx = split.train
    fit_table = extract_features(train_set.subset(train_idx), workers=workers)
    y_fit = np.array([train_set.items[train_idx[i]].viability for i in fit_table.indices])
    model = Baseline.fit(fit_table.values, y_fit)
    table = extract_features(labels, workers=workers)
    items = [labels.items[i] for i in table.indices]
    y_true = np.array([it.viability for it in items], dtype=np.float64)
    y_pred = model.predict(table.values) if len(items) else np.zeros(0)
    report = metrics_report(items, y_true, y_pred)
    report.update(skipped=len(table.skipped), n_train=len(fit_table.indices), **model.describe())
    log.info("baseline on %d images: R² %s, MAE %s", report["n"], report["r2"], report["mae"])
    return BaselineResult(report, y_true, y_pred, len(fit_table.indices))
