"""The acquisition-stalled rule: a followed plate whose next read is overdue.

A plate imaged at a steady rhythm (at least two time points, at least 15
minutes apart) has an expected interval: the median gap between the starts of
its time points. When no image of
the plate has arrived for more than ``stall_after`` intervals since the last
one, the plate's acquisition has stalled (imager stopped, share unreachable,
plate left in the incubator) and a warning holds. A plate silent for more than
``stall_give_up`` intervals is taken as finished and no longer followed, so a
finished experiment does not alert for ever. The next read clears it; an
operator who dismisses it is not told again until the plate has a new read.

Pure: the time is passed in, so the monitor evaluates it on a timer while the
worker is idle (a stall is exactly when no results arrive).
"""

from __future__ import annotations

import statistics
import time

from nvir_agent.config import AlertsConfig
from nvir_agent.monitor.rules import Condition
from nvir_agent.monitor.timecourse import PlateTimecourse

RULE = "acquisition_stalled"
# Plates read more often than this are not followed: such a rhythm is a burst (a
# quick re-read, a demo) rather than a schedule, and a few minutes' delay is normal.
MIN_INTERVAL_S = 900.0


def _hours(seconds: float) -> str:
    hours = seconds / 3600.0
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _rhythm(tc: PlateTimecourse, cfg: AlertsConfig) -> tuple[float, int, float] | None:
    """(interval, last time point, its last image's time) of a plate the rule
    follows, or None (the rule is off, fewer than two reads, no steady rhythm)."""
    if cfg.stall_after <= 0:
        return None
    reads = sorted((r for r in tc.reads if r.acquired_at), key=lambda r: r.timepoint)
    if len(reads) < 2:
        return None
    starts = [r.acquired_at for r in reads]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False) if b > a]
    if not gaps:
        return None
    interval = statistics.median(gaps)
    if interval < MIN_INTERVAL_S:
        return None
    last_tp = reads[-1].timepoint
    last_image = max([p.acquired_at for p in tc.points if p.timepoint == last_tp]
                     + [reads[-1].acquired_at])
    return interval, last_tp, last_image


def stall_condition(tc: PlateTimecourse, cfg: AlertsConfig, now: float | None = None
                    ) -> Condition | None:
    """The stalled-acquisition condition of this plate at ``now``, or None."""
    rhythm = _rhythm(tc, cfg)
    if rhythm is None:
        return None
    interval, last_tp, last_image = rhythm
    now = time.time() if now is None else now
    silent = now - last_image
    if not (cfg.stall_after * interval < silent <= max(cfg.stall_give_up, cfg.stall_after)
            * interval):
        return None
    return Condition(
        tc.plate, "plate", RULE, "warning", last_tp, last_tp, silent / 3600.0,
        f"{tc.plate}: no new image for {_hours(silent)}; this plate has been read every "
        f"{_hours(interval)} (last: time point {last_tp}). Check the imager's schedule, "
        "the plate and the acquisition folder or share.",
        {"since": last_tp, "interval_s": interval, "silent_s": silent,
         "last_image_at": last_image})


def stall_due(tc: PlateTimecourse, cfg: AlertsConfig, now: float) -> float | None:
    """When time alone, with no new image, next changes this plate's stall
    condition: ``now`` while it holds or is about to end (its message counts the
    hours), the moment it would begin, or None when it never can (the rule is
    off, the plate has no steady rhythm, or it is taken as finished)."""
    rhythm = _rhythm(tc, cfg)
    if rhythm is None:
        return None
    interval, _, last_image = rhythm
    if now - last_image > max(cfg.stall_give_up, cfg.stall_after) * interval:
        return None
    return max(now, last_image + cfg.stall_after * interval)
