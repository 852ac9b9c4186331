"""Summarise a model's training images into its model file, and calibrate its
intervals: ``nvir-agent model summarise MODEL --images FOLDER [--held-out FOLDER]``
and the last step of ``nvir-agent train``.

Each image is read and segmented as the agent does, preprocessed under the
model's spec and run through the encoder; the summary (embedding mean and
shrunk covariance, image statistics) is fitted on the training images and
its typicality calibrated on held-out images of the same kind — a second
folder, or else every fourth image of the first (which the summary is then
not fitted on). When the held-out images have labels (a ``labels.csv``), the
interval of every score is calibrated on them too (see
:mod:`nvir_agent.model.uncertainty`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nvir_agent.errors import AgentError, DataError
from nvir_agent.imaging.analyse import analyse
from nvir_agent.model.modelfile import add_trust, load_model
from nvir_agent.model.scorer import Scorer
from nvir_agent.model.typicality import fit_summary, held_out_rows, statistics_vector
from nvir_agent.model.uncertainty import (
    ENSEMBLE,
    LEVEL,
    MC_DROPOUT,
    MIN_CALIBRATION,
    PASSES,
    IntervalCalibration,
    base_spread,
    conformal_scale,
    coverage,
    widen,
)
from nvir_agent.training.labels import LabelledImage, read_labels

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
DEFAULT_LIMIT = 400
WIDEN_QUANTILE = 0.9


@dataclass
class Embedded:
    """Images run through a model: features, statistics, viability, each member's
    eval-mode viability and MC-dropout samples."""

    paths: list[Path]
    labels: np.ndarray  # NaN where unlabelled
    features: np.ndarray
    stats: np.ndarray
    centre: np.ndarray  # the members' mean
    outputs: np.ndarray  # (members, N)
    samples: np.ndarray  # (members, passes, N)
    skipped: int = 0

    def take(self, idx: Sequence[int]) -> Embedded:
        i = np.asarray(idx, int)
        return Embedded([self.paths[j] for j in i], self.labels[i], self.features[i],
                        self.stats[i], self.centre[i], self.outputs[:, i],
                        self.samples[..., i])

    @property
    def method(self) -> str:
        """How this model's intervals are made: MC dropout, or the ensemble's spread."""
        return ENSEMBLE if self.outputs.shape[0] > 1 else MC_DROPOUT

    def spread(self, method: str | None = None) -> np.ndarray:
        """Each image's spread before widening (see uncertainty.base_spread)."""
        return base_spread(self.outputs, self.samples, method or self.method)


@dataclass
class SummaryReport:
    out: Path
    fit_images: int
    held_out_images: int
    skipped: int
    threshold: float
    calibrated: bool
    coverage: float | None = None
    mean_width: float | None = None
    labelled: int = 0  # labelled held-out images
    extra: dict[str, Any] = field(default_factory=dict)


def list_images(folder: Path, limit: int = DEFAULT_LIMIT) -> tuple[list[Path], np.ndarray]:
    """Image paths of ``folder`` (its labels.csv when there is one) and their labels (NaN
    without), thinned evenly to at most ``limit``."""
    csv = folder / "labels.csv"
    if csv.is_file():
        ls = read_labels(csv)
        paths = [it.path for it in ls.items]
        labels = np.array([it.viability for it in ls.items], float)
    elif folder.is_dir():
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                       and "mask" not in p.stem.lower())
        labels = np.full(len(paths), math.nan)
    else:
        raise DataError(f"{folder} is not a folder.", "Give the folder of the model's images.")
    if not paths:
        raise DataError(f"{folder} holds no images.",
                        "Give a folder of PNG/TIFF/JPEG images (or one with a labels.csv).")
    if len(paths) > limit:
        pick = np.unique(np.linspace(0, len(paths) - 1, limit).round().astype(int))
        paths, labels = [paths[i] for i in pick], labels[pick]
    return paths, labels


def embed(scorer: Scorer, paths: Sequence[Path], labels: np.ndarray, *,
          passes: int = PASSES, progress: Callable[[int, int], None] | None = None) -> Embedded:
    """Read, segment, preprocess and encode each image (those that fail are skipped)."""
    inputs, stats, keep = [], [], []
    for n, p in enumerate(paths, start=1):
        try:
            seg = analyse(p)
            mask = seg.segmentation.mask if seg.segmentation.found else None
            inputs.append(scorer.preprocess(seg.pixels, bit_depth=seg.bit_depth, mask=mask))
            stats.append(statistics_vector(scorer.image_statistics(
                seg.pixels, bit_depth=seg.bit_depth, mask=mask)))
            keep.append(n - 1)
        except AgentError as exc:
            log.info("%s skipped: %s", p, exc)
        if progress is not None:
            progress(n, len(paths))
    if not keep:
        raise DataError("None of the images could be read and segmented.",
                        "Check that the folder holds bright-field spheroid images.")
    feats = scorer.features(np.stack(inputs))
    outputs = scorer.heads.outputs(feats)
    samples = scorer.heads.samples(feats, passes)
    return Embedded([Path(paths[i]) for i in keep], np.asarray(labels, float)[keep],
                    feats.double().numpy(), np.stack(stats), outputs.mean(axis=0), outputs,
                    samples, skipped=len(paths) - len(keep))


def summarise_model(
    model: Path, images: Path, *, held_out: Path | None = None, out: Path | None = None,
    limit: int = DEFAULT_LIMIT, source: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SummaryReport:
    """Write ``model`` (or ``out``) with the summary of ``images`` (see module doc)."""
    scorer = Scorer(load_model(model), fast_path="fp32", threads=0, use_cache=False)
    paths, labels = list_images(images, limit)
    fit_e = embed(scorer, paths, labels, progress=progress)
    if held_out is not None:
        hp, hl = list_images(held_out, limit)
        held_e = embed(scorer, hp, hl, progress=progress)
    else:
        fit_idx, held_idx = held_out_rows(len(fit_e.paths))
        fit_e, held_e = fit_e.take(fit_idx), fit_e.take(held_idx)
    info = {"images": len(fit_e.paths), "held_out_images": len(held_e.paths),
            "source": source or str(images)}
    return write_summary(model, out or model, fit_e, held_e, info)


def write_summary(model: Path, out: Path, fit: Embedded, held: Embedded,
                  info: dict[str, Any]) -> SummaryReport:
    """Fit, calibrate and write; the network's tensors are copied unchanged."""
    summary = fit_summary(fit.features, fit.stats, held.features, held.stats, info=info)
    judged = summary.assess(held.features, held.stats)
    dist = np.array([j.distance for j in judged])
    labelled = np.isfinite(held.labels)
    cal = None
    cov = width = None
    n_labelled = int(labelled.sum())
    if n_labelled >= MIN_CALIBRATION:
        widen_from = float(np.quantile(dist, WIDEN_QUANTILE))
        spread = widen(held.spread(), dist, widen_from)
        scale = conformal_scale(held.labels[labelled], held.centre[labelled], spread[labelled])
        lo, hi = held.centre - scale * spread, held.centre + scale * spread
        cov = coverage(held.labels[labelled], lo[labelled], hi[labelled])
        width = float(np.mean(hi - lo))
        cal = IntervalCalibration(scale=scale, widen_from=widen_from, method=held.method,
                                  info={"calibrated_on": n_labelled, "coverage": round(cov, 4),
                                        "mean_width": round(width, 4), "nominal": LEVEL})
    else:
        log.warning("Only %d labelled held-out images (at least %d are needed to calibrate "
                    "a %.0f %% interval): scores of this model will have no interval. "
                    "Give a held-out folder with a labels.csv of at least %d images "
                    "(with `nvir-agent train`: more validation images).",
                    n_labelled, MIN_CALIBRATION, 100 * LEVEL, MIN_CALIBRATION)
    path = add_trust(model, out, summary, cal)
    return SummaryReport(path, len(fit.paths), len(held.paths), fit.skipped + held.skipped,
                         summary.threshold, cal is not None, cov, width, n_labelled)


def summarise_trained(model: Path, train_items: Sequence[LabelledImage],
                      val_items: Sequence[LabelledImage], *,
                      limit: int = DEFAULT_LIMIT) -> SummaryReport:
    """After training: summarise (up to ``limit`` of) the training images into the
    model file and calibrate on the validation images (labelled)."""
    scorer = Scorer(load_model(model), fast_path="fp32", threads=0, use_cache=False)

    def pick(items: Sequence[LabelledImage]) -> tuple[list[Path], np.ndarray]:
        idx = np.unique(np.linspace(0, len(items) - 1, min(limit, len(items))).round()
                        .astype(int)) if items else np.zeros(0, int)
        return [items[i].path for i in idx], np.array([items[i].viability for i in idx], float)

    fit_e = embed(scorer, *pick(train_items))
    held_e = embed(scorer, *pick(val_items))
    info = {"images": len(fit_e.paths), "held_out_images": len(held_e.paths),
            "source": "training split (validation split held out)"}
    return write_summary(model, model, fit_e, held_e, info)
