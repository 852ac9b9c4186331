"""An interval for every viability: Monte Carlo dropout on the head, calibrated.

NViR's head has dropout (0.3) after each of its four linears. With dropout
left on, ``PASSES`` runs of the head over an image's encoder features give a
spread of viabilities (the encoder runs once; the head is tiny, so this costs
nothing next to the encoder). The image's **spread** is their standard
deviation, widened in proportion to how far the image lies beyond the
typical training image (``max(1, distance / widen_from)``, where
``widen_from`` is the 90th percentile of held-out distances; see
:mod:`nvir_agent.model.typicality`), so that intervals grow on images unlike
the training images.

The raw spread is not a calibrated interval. On held-out labelled images,
``scale`` is the split-conformal quantile of ``|label − viability| / spread``
at the nominal level (90 %): the interval ``viability ± scale × spread``
covers the label for 90 % of images like the held-out ones. The
calibration is stored in the model file (``uncertainty`` in its metadata); a
model without one gets no interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

METHOD = "mc-dropout"
PASSES = 32
LEVEL = 0.9
MIN_SPREAD = 1e-3


@dataclass(frozen=True)
class IntervalCalibration:
    """How to turn a spread into a calibrated interval (stored in the model file)."""

    scale: float
    widen_from: float = math.inf
    level: float = LEVEL
    passes: int = PASSES
    method: str = METHOD
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def metadata(self) -> dict[str, Any]:
        return {"method": self.method, "passes": self.passes, "level": self.level,
                "scale": round(float(self.scale), 6),
                "widen_from": None if not math.isfinite(self.widen_from) else
                round(float(self.widen_from), 6), **self.info}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> IntervalCalibration:
        if meta.get("method") != METHOD:
            raise ValueError(f"interval method {meta.get('method')!r} is unknown")
        widen = meta.get("widen_from")
        info = {k: v for k, v in meta.items()
                if k not in {"method", "passes", "level", "scale", "widen_from"}}
        return cls(scale=float(meta["scale"]),
                   widen_from=math.inf if widen is None else float(widen),
                   level=float(meta.get("level", LEVEL)), passes=int(meta.get("passes", PASSES)),
                   info=info)


def mc_dropout(head: nn.Module, features: torch.Tensor, passes: int = PASSES,
               seed: int = 0) -> np.ndarray:
    """(passes, N) viabilities of NViR's head with dropout on, from (N, D) features.

    Deterministic for ``seed`` (the dropout masks come from their own generator;
    torch's global random state is untouched).
    """
    gen = torch.Generator().manual_seed(int(seed))
    n = features.shape[0]
    x = features.detach().float().cpu().repeat(passes, 1)
    with torch.no_grad():
        for m in _flat(head):
            if isinstance(m, nn.Dropout):
                if m.p > 0:
                    keep = torch.rand(x.shape, generator=gen) >= m.p
                    x = x * keep / (1.0 - m.p)
            else:
                x = m(x)
    return x.reshape(passes, n).numpy()


def _flat(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        out: list[nn.Module] = []
        for m in module:
            out += _flat(m)
        return out
    return [module]


def spreads(samples: np.ndarray, distances: np.ndarray | None = None,
            widen_from: float = math.inf) -> np.ndarray:
    """Per-image spread: SD of the MC samples, widened beyond ``widen_from``."""
    sd = np.maximum(np.asarray(samples, np.float64).std(axis=0), MIN_SPREAD)
    if distances is None or not math.isfinite(widen_from):
        return sd
    d = np.nan_to_num(np.asarray(distances, np.float64), nan=0.0)
    return sd * np.maximum(1.0, d / widen_from)


def conformal_scale(labels: np.ndarray, centre: np.ndarray, spread: np.ndarray,
                    level: float = LEVEL) -> float:
    """The split-conformal quantile of |label − centre| / spread at ``level``."""
    r = np.sort(np.abs(np.asarray(labels, float) - np.asarray(centre, float))
                / np.asarray(spread, float))
    n = r.size
    if n == 0:
        raise ValueError("no held-out labels to calibrate intervals on")
    k = min(n, int(math.ceil((n + 1) * level)))
    return float(r[k - 1])


def intervals(centre: np.ndarray, spread: np.ndarray,
              cal: IntervalCalibration) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of each viability's interval at the calibration's level."""
    half = cal.scale * np.asarray(spread, np.float64)
    c = np.asarray(centre, np.float64)
    return c - half, c + half


def coverage(labels: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    y = np.asarray(labels, float)
    return float(np.mean((y >= low) & (y <= high))) if y.size else math.nan
