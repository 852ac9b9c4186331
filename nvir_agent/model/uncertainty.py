"""An interval for every viability: the spread of the network's answers, calibrated.

Where the spread comes from (``method``):

- ``mc-dropout`` (one network): NViR's head has dropout (0.3) after each of
  its four linears. With dropout left on, ``passes`` runs of the head over an
  image's encoder features give a spread of viabilities (the encoder runs
  once; the head is tiny, so this costs nothing next to the encoder). The
  image's spread is their standard deviation.
- ``ensemble`` (a deep ensemble of N networks trained from different seeds,
  ``nvir-agent train --ensemble N``): the viability is the members' mean, and
  the spread combines the disagreement of the members with each member's own
  MC-dropout spread: ``sqrt(var_members + mean_i var_dropout,i)`` (the
  variance of the mixture of the members' dropout samples; the members'
  variance with N − 1 degrees of freedom). ``passes`` 0 leaves the dropout
  part out.

The spread is then widened in proportion to how far the image lies beyond
the typical training image (``max(1, distance / widen_from)``, where
``widen_from`` is the 90th percentile of held-out distances; see
:mod:`nvir_agent.model.typicality`), so that intervals grow on images unlike
the training images.

The raw spread is not a calibrated interval. On ``n`` held-out labelled
images, ``scale`` is the split-conformal quantile of
``|label − viability| / spread`` at the nominal level (90 %): the
``ceil((n + 1) × level)``-th smallest of the n ratios, not the plain
empirical quantile, which is what makes the guarantee hold for a finite
calibration set: the interval ``viability ± scale × spread`` then covers the
label of a new image like the held-out ones with probability at least 90 %.
With fewer than ``MIN_CALIBRATION`` labelled held-out images no calibration
is made (a model then gives no interval rather than an overconfident one).
The calibration is stored in the model file (``uncertainty`` in its
metadata); a model without one gets no interval.

Pure numpy; the head passes themselves are in :mod:`nvir_agent.model.heads`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MC_DROPOUT = "mc-dropout"
ENSEMBLE = "ensemble"
METHODS = (MC_DROPOUT, ENSEMBLE)
PASSES = 32
LEVEL = 0.9
MIN_SPREAD = 1e-3
# Fewer labelled held-out images than this give no interval calibration: at 90 %
# the conformal rank needs at least 9, and with under 20 the scale rests on one
# of the two largest ratios, so that a single odd image decides every interval.
MIN_CALIBRATION = 20


@dataclass(frozen=True)
class IntervalCalibration:
    """How to turn a spread into a calibrated interval (stored in the model file)."""

    scale: float
    widen_from: float = math.inf
    level: float = LEVEL
    passes: int = PASSES
    method: str = MC_DROPOUT
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def metadata(self) -> dict[str, Any]:
        return {"method": self.method, "passes": self.passes, "level": self.level,
                "scale": round(float(self.scale), 6),
                "widen_from": None if not math.isfinite(self.widen_from) else
                round(float(self.widen_from), 6), **self.info}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> IntervalCalibration:
        if meta.get("method") not in METHODS:
            raise ValueError(f"interval method {meta.get('method')!r} is unknown")
        widen = meta.get("widen_from")
        info = {k: v for k, v in meta.items()
                if k not in {"method", "passes", "level", "scale", "widen_from"}}
        return cls(scale=float(meta["scale"]),
                   widen_from=math.inf if widen is None else float(widen),
                   level=float(meta.get("level", LEVEL)), passes=int(meta.get("passes", PASSES)),
                   method=str(meta["method"]), info=info)

    def describe(self) -> str:
        """One line for ``model info``."""
        how = (f"{self.method} ({self.passes} passes)" if self.method == MC_DROPOUT else
               "ensemble spread" + (f" with MC dropout ({self.passes} passes)"
                                    if self.passes else ""))
        return (f"{self.level:.0%} by {how}, calibrated on "
                f"{self.info.get('calibrated_on', '?')} held-out images")


def base_spread(outputs: np.ndarray, samples: np.ndarray | None,
                method: str = MC_DROPOUT) -> np.ndarray:
    """Per-image spread before widening, from each member's eval-mode viability
    ``outputs`` (M, N) and its MC-dropout ``samples`` (M, passes, N) (see the
    module doc; ``samples`` may be None or have 0 passes for ``ensemble``)."""
    out = np.asarray(outputs, np.float64)
    has_mc = samples is not None and np.asarray(samples).shape[1] > 0
    within = np.asarray(samples, np.float64).var(axis=1).mean(axis=0) if has_mc else 0.0
    if method == MC_DROPOUT:
        if not has_mc:
            raise ValueError("MC-dropout intervals need at least one pass")
        sd = np.sqrt(within)
    elif method == ENSEMBLE:
        if out.shape[0] < 2:
            raise ValueError("ensemble intervals need at least 2 members")
        sd = np.sqrt(out.var(axis=0, ddof=1) + within)
    else:
        raise ValueError(f"interval method {method!r} is unknown")
    return np.maximum(sd, MIN_SPREAD)


def widen(spread: np.ndarray, distances: np.ndarray | None = None,
          widen_from: float = math.inf) -> np.ndarray:
    """``spread`` widened by ``max(1, distance / widen_from)``."""
    sd = np.asarray(spread, np.float64)
    if distances is None or not math.isfinite(widen_from):
        return sd
    d = np.nan_to_num(np.asarray(distances, np.float64), nan=0.0)
    return sd * np.maximum(1.0, d / widen_from)


def spreads(samples: np.ndarray, distances: np.ndarray | None = None,
            widen_from: float = math.inf) -> np.ndarray:
    """Per-image spread of one network: SD of its (passes, N) MC samples, widened
    beyond ``widen_from``."""
    sd = np.maximum(np.asarray(samples, np.float64).std(axis=0), MIN_SPREAD)
    return widen(sd, distances, widen_from)


def conformal_rank(n: int, level: float = LEVEL) -> int:
    """The finite-sample rank ``ceil((n + 1) × level)`` (1-based) of the split-conformal
    quantile among n calibration ratios; above n when n is too small for ``level``."""
    return int(math.ceil((n + 1) * level - 1e-9))


def conformal_scale(labels: np.ndarray, centre: np.ndarray, spread: np.ndarray,
                    level: float = LEVEL) -> float:
    """The split-conformal quantile of |label − centre| / spread at ``level``: the
    :func:`conformal_rank`-th smallest ratio. ValueError when there are too few
    labels for that rank to exist (the interval would have to be infinite)."""
    r = np.sort(np.abs(np.asarray(labels, float) - np.asarray(centre, float))
                / np.asarray(spread, float))
    n = r.size
    if n == 0:
        raise ValueError("no held-out labels to calibrate intervals on")
    k = conformal_rank(n, level)
    if k > n:
        raise ValueError(f"{n} held-out labels are too few for a {level:.0%} interval "
                         f"(at least {math.ceil(level / (1 - level))} are needed)")
    return float(r[k - 1])


def intervals(centre: np.ndarray, spread: np.ndarray,
              cal: IntervalCalibration) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of each viability's interval at the calibration's level.

    A viability (ATP relative to the plate's reference) cannot be below 0, so
    the interval stops at 0 (clipping can only make it cover more often) — but
    always holds the score itself, even one a network put below 0."""
    half = cal.scale * np.asarray(spread, np.float64)
    c = np.asarray(centre, np.float64)
    return np.maximum(c - half, np.minimum(c, 0.0)), np.maximum(c + half, 0.0)


def coverage(labels: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    y = np.asarray(labels, float)
    return float(np.mean((y >= low) & (y <= high))) if y.size else math.nan
