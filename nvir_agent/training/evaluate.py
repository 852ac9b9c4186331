"""How well a model's viability matches the assay: R² and MAE overall, per site
and per day, and a predicted-vs-true scatter plot.

R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)² (undefined, reported as None, when every true
value is the same); MAE = mean |y − ŷ|. Images the model cannot use (not
readable, no spheroid for a spheroid-crop model) are left out and counted.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nvir_agent.errors import DataError
from nvir_agent.model.modelfile import LoadedModel, load_model
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.training.data import normalise, prepare_crops
from nvir_agent.training.hardware import autocast, pick_device
from nvir_agent.training.labels import LabelledImage, LabelSet, day_label

log = logging.getLogger(__name__)


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, Any]:
    """``{"n", "r2", "mae"}`` of predictions against true values."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true values but {p.size} predictions")
    n = int(t.size)
    if n == 0:
        return {"n": 0, "r2": None, "mae": None}
    ss_res = float(np.sum((t - p) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else None
    return {"n": n, "r2": _round(r2), "mae": _round(float(np.mean(np.abs(t - p))))}


def metrics_report(items: Sequence[LabelledImage], y_true: Sequence[float],
                   y_pred: Sequence[float]) -> dict[str, Any]:
    """Overall metrics plus ``per_site`` and ``per_day`` (keyed by name / day)."""
    report = regression_metrics(y_true, y_pred)
    report["per_site"] = _grouped([it.site for it in items], y_true, y_pred)
    days = [day_label(it.day) for it in items]
    report["per_day"] = _grouped(days, y_true, y_pred,
                                 order=lambda d: (d == "?", float(d) if d != "?" else 0.0))
    return report


def _grouped(keys: Sequence[str], y_true: Sequence[float], y_pred: Sequence[float],
             order: Any = None) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    return {k: regression_metrics(t[groups[k]], p[groups[k]])
            for k in sorted(groups, key=order)}


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def predict(module: torch.nn.Module, crops: np.ndarray, spec: PreprocessSpec, *,
            batch_size: int = 32, device: torch.device | None = None,
            bf16: bool = False) -> np.ndarray:
    """Viability for 8-bit crops (N, S, S) — the network in eval mode, no augmentation."""
    device = device or torch.device("cpu")
    was_training = module.training
    module.eval()
    out = []
    with torch.inference_mode(), autocast(device, bf16):
        for start in range(0, len(crops), batch_size):
            x = torch.from_numpy(normalise(crops[start : start + batch_size], spec)).to(device)
            if bf16:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(module(x).float().reshape(-1).cpu().numpy())
    module.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


@dataclass
class Evaluation:
    """Predictions of one model on a LabelSet, and the metrics."""

    model: str
    items: list[LabelledImage]
    y_true: np.ndarray
    y_pred: np.ndarray
    report: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)


def evaluate_model(
    model: LoadedModel | str | Path,
    labels: LabelSet,
    *,
    batch_size: int = 32,
    device: str = "auto",
    cache_dir: Path | None = None,
    workers: int = 1,
) -> Evaluation:
    """Score every labelled image with the model and compare with the labels."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    crops = prepare_crops(labels, loaded.spec, cache_dir=cache_dir, workers=workers)
    dev = pick_device(device)
    module = loaded.module.to(dev)
    y_pred = predict(module, crops.images, loaded.spec, batch_size=batch_size, device=dev)
    items = [labels.items[i] for i in crops.indices]
    y_true = np.array([it.viability for it in items], dtype=np.float64)
    report = metrics_report(items, y_true, y_pred)
    report["skipped"] = len(crops.skipped)
    log.info("evaluated %s on %d images: R² %s, MAE %s", loaded.name, report["n"],
             report["r2"], report["mae"])
    return Evaluation(loaded.name, items, y_true, y_pred.astype(np.float64), report,
                      crops.skipped)


def write_predictions(path: str | Path, ev: Evaluation) -> Path:
    """One CSV row per scored image: where it came from, its label, the prediction and
    the error (predicted − true), so outliers can be looked at image by image."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "site", "plate", "well", "day", "role", "compound",
                             "concentration_uM", "viability", "predicted", "error"])
            for item, t, p in zip(ev.items, ev.y_true, ev.y_pred, strict=True):
                writer.writerow([item.name, item.site, item.plate, item.well,
                                 "" if item.day is None else f"{item.day:g}", item.role,
                                 item.compound,
                                 "" if item.concentration_uM is None else f"{item.concentration_uM:g}",
                                 f"{t:.6f}", f"{p:.6f}", f"{p - t:.6f}"])
    except OSError as exc:
        raise DataError(f"Cannot write the predictions file {path}: {exc.strerror or exc}.",
                        "Choose a folder you may write to.") from exc
    return path


def plot_predictions(path: str | Path, y_true: Sequence[float], y_pred: Sequence[float], *,
                     title: str, baseline: Sequence[float] | None = None,
                     baseline_true: Sequence[float] | None = None) -> Path:
    """Write a predicted-vs-true scatter plot (PNG) with the identity line and R²/MAE."""
    path = Path(path)
    fig = Figure(figsize=(5.5, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    m = regression_metrics(y_true, y_pred)
    ax.scatter(y_true, y_pred, s=8, alpha=0.5, label=f"NViR  R² {_fmt(m['r2'])}  "
               f"MAE {_fmt(m['mae'])}")
    values = list(y_true) + list(y_pred)
    if baseline is not None and baseline_true is not None:
        b = regression_metrics(baseline_true, baseline)
        ax.scatter(baseline_true, baseline, s=8, alpha=0.4, marker="x",
                   label=f"classic features  R² {_fmt(b['r2'])}  MAE {_fmt(b['mae'])}")
        values += list(baseline)
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], color="0.3", linewidth=1, linestyle="--")
    ax.set_xlabel("true viability (ATP / vehicle median)")
    ax.set_ylabel("predicted viability")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    except OSError as exc:
        raise DataError(f"cannot write plot {path}: {exc.strerror or exc}",
                        "choose a folder you may write to") from exc
    return path


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
