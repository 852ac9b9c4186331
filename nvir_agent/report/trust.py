"""How far the scores can be trusted, in the words the report and the review
window share: a viability with its 90 % interval, a well's or a replicate
group's interval, the images unlike the model's training images per plate
read, and the plain-words explanations and advice.

Pure functions over the store's rows and the monitor's time-course points (no
Qt, no drawing), so the report and the review window say the same thing.

How replicates are combined (the same as the viability alerts of
:mod:`nvir_agent.monitor.rules`): at one time point the group's value ``v`` is
the median of its ``n`` wells, and its 90 % interval is ``v ± 1.645·se`` with
``se² = mean(σᵢ²)/n + s²/n`` — ``σᵢ`` each well's interval half-width / 1.645
(the model's uncertainty about that well), ``s`` the spread of the replicate
wells (0 for one well). A group with a well that has no interval has none.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from nvir_agent.monitor.rules import subject_interval
from nvir_agent.monitor.timecourse import WellTimepoint
from nvir_agent.store.rows import ImageScore, Trust

UNLIKE_LABEL = "unlike the training images"
UNLIKE_MEANING = (
    "Such an image looks unlike the images the model was trained on (another microscope, "
    "magnification, bit depth or exposure), so its score may be wrong: the flag means "
    "unlike, not wrong.")
COMBINED = ("a group's interval combines its wells' intervals with the spread of the "
            "replicates: median ± 1.645·se, se² = mean(σᵢ²)/n + s²/n")


def calibrate_advice(model: str | None) -> str:
    """What to do about images unlike the training images, naming the model file."""
    name = (model or "").split("@")[0] or "MODEL"
    return (f"Calibrate the model on this microscope: `nvir-agent train --init {name}` on a "
            "few wells whose ATP was measured.")


def calibrate_short(model: str | None) -> str:
    """The same advice in a few words (where space is short)."""
    name = (model or "").split("@")[0] or "MODEL"
    return f"calibrate with `nvir-agent train --init {name}` on a few ATP-measured wells"


def not_available(models: Sequence[str]) -> str:
    """The one line said when the model gives no intervals and no typicality."""
    which = ", ".join(models) if models else "this model"
    return (f"Intervals and typicality: not available for this model ({which}). Its file "
            "holds no summary of its training images; `nvir-agent model summarise` adds one.")


def interval_text(value: float | None, low: float | None, high: float | None,
                  digits: int = 2) -> str:
    """'0.62 (0.51–0.73)'; the value alone without an interval; '–' without a value."""
    if value is None:
        return "–"
    if low is None or high is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def score_text(viability: float | None, trust: Trust) -> str:
    """An image's score with its interval, '0.62 (0.51–0.73)'."""
    return interval_text(viability, trust.viability_low, trust.viability_high)


def group_interval(points: Sequence[WellTimepoint], timepoint: int
                   ) -> tuple[float, float, int] | None:
    """(low, high, wells) of the median of these wells at ``timepoint``, replicates
    combined as the module says; None when a well there has no interval."""
    return subject_interval([p for p in points if p.counted], timepoint)


def has_intervals(points: Iterable[WellTimepoint]) -> bool:
    return any(p.rel_control_low is not None for p in points)


@dataclass(frozen=True)
class ReadTrust:
    """One plate read: how many of its scored images the model could judge, how many
    look unlike its training images, and their median typicality."""

    plate: str
    timepoint: int
    scored: int
    judged: int  # images with a typicality (the model carries a training summary)
    unlike: int  # images flagged unlike_training
    typicality: float | None  # median over the judged images
    models: tuple[str, ...] = ()


def read_trust(images: Iterable[ImageScore], timepoints: Mapping[int, int]
               ) -> list[ReadTrust]:
    """Per (plate, time point) image counts; ``timepoints`` maps image id → time point
    (:func:`nvir_agent.monitor.timecourse.assign_timepoints`)."""
    by: dict[tuple[str, int], list[ImageScore]] = defaultdict(list)
    for im in images:
        tp = timepoints.get(im.image_id)
        if tp is not None and im.state == "done" and im.viability is not None:
            by[(im.plate, tp)].append(im)
    out = []
    for (plate, tp), ims in sorted(by.items()):
        judged = [im for im in ims if im.trust.typicality is not None]
        typ = [float(im.trust.typicality) for im in judged]  # type: ignore[arg-type]
        out.append(ReadTrust(
            plate=plate, timepoint=tp, scored=len(ims), judged=len(judged),
            unlike=sum(im.unlike_training for im in judged),
            typicality=float(statistics.median(typ)) if typ else None,
            models=tuple(sorted({im.model for im in ims if im.model}))))
    return out


def concentration_intervals(points: Iterable[WellTimepoint], compound: str
                            ) -> dict[tuple[int, float], tuple[float, float]]:
    """(time point, µM) → 90 % interval of the compound's median at that concentration,
    over the wells a dose-response counts (replicates combined as the module says);
    only where every such well has an interval."""
    groups: dict[tuple[int, float], list[WellTimepoint]] = defaultdict(list)
    for p in points:
        if p.compound != compound or p.role not in ("treated", "positive"):
            continue
        if p.concentration_uM is None or not p.concentration_uM > 0 or not p.counted:
            continue
        groups[(p.timepoint, conc_key(p.concentration_uM))].append(p)
    out = {}
    for (tp, c), pts in groups.items():
        ci = group_interval(pts, tp)
        if ci is not None:
            out[(tp, c)] = (ci[0], ci[1])
    return out


def conc_key(c: float) -> float:
    """One concentration even when written slightly differently (as the fits group)."""
    return float(f"{c:.6g}")
