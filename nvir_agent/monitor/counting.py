"""Which images and wells count: the one rule behind time courses, heatmaps,
tables, dose-response fits, exports and alerts.

Segmentation raises QC flags of two kinds, and they mean different things:

- **imaging failures** — the picture itself is poor (:data:`IMAGING_FAILURE_FLAGS`:
  out of focus, under- or overexposed, spheroid cut by the image border), or
  the file could not be read at all. Such an image says nothing about the
  spheroid: it is **excluded** wherever the well sits on the plate.
- **drug-effect findings** — the spheroid looks damaged
  (:data:`DRUG_EFFECT_FLAGS`: fragmented, too small, too large, several
  pieces, no compact body found). In **treated and positive-control wells**
  (and on plates without a map, where any well may hold a drug) this is what
  toxicity looks like: the image **counts**. Dropping it would hide the very
  wells that died and bias IC50s upwards. A treated well in which no spheroid
  is left counts with viability 0 (the network scores only a spheroid it can
  see; no body means no living cells to score).
- In **vehicle and untreated wells** any QC flag excludes the image: those
  wells are the reference, and a damaged control is not a reference.
- **caveats** (:data:`CAVEAT_FLAGS`: ``unlike_training``, the image is unlike
  the model's training images) say nothing about the spheroid or the picture:
  they never exclude an image; the alerts carry them instead.

A well at one read counts when at least one of its images counts; its value is
the median of the counting images. A well that does not count keeps its raw
score for the record (exports) but has no viability relative to control or
baseline, so no figure, fit, table or alert uses it. Its exclusion reason says
why, in words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nvir_agent.store.rows import AWAITING_MODEL, UNLIKE_TRAINING, ImageScore

IMAGING_FAILURE_FLAGS = frozenset({"out_of_focus", "underexposed", "saturated",
                                   "touches_border"})
"""QC flags that mean the picture is poor: the image never counts."""
DRUG_EFFECT_FLAGS = frozenset({"fragmented", "too_small", "too_large", "multiple_objects",
                               "no_spheroid"})
"""QC flags that can be the drug's effect: data in treated and positive wells."""
CAVEAT_FLAGS = frozenset({UNLIKE_TRAINING, AWAITING_MODEL})
"""Flags about the model's view of the image, not the image: never exclude (an image
awaiting the model has no score, so it does not count for that reason alone)."""
DRUG_ROLES = frozenset({"treated", "positive"})
CONTROL_ROLES = frozenset({"vehicle", "untreated"})

# Why an image or well does not count (the first words of the reason)
UNREADABLE = "unreadable"
IMAGING = "imaging failure"
CONTROL_QC = "control well QC"
NOT_SCORED = "not scored"
PENDING = "not analysed yet"
NOT_TESTED = "not a tested well"

NO_SPHEROID_VIABILITY = 0.0
"""The value a treated well with no spheroid left counts with."""


@dataclass(frozen=True)
class Verdict:
    """Does one image count, with which value, and if not, why."""

    counts: bool
    value: float | None = None
    reason: str = ""  # empty when it counts

    @property
    def kind(self) -> str:
        """The reason's category: '' (counts), unreadable, imaging failure, …"""
        return self.reason.split(":", 1)[0]


def drug_may_act(role: str | None) -> bool:
    """Treated and positive wells, and wells of a plate without a map."""
    return role is None or role in DRUG_ROLES


def image_verdict(im: ImageScore, role: str | None, qc_ignore: Iterable[str] = ()) -> Verdict:
    """Apply the rule to one image of a well with this plate-map role (None: no map).

    ``qc_ignore`` (``alerts.qc_ignore``) lists flags to disregard entirely."""
    if im.state == "failed":
        return Verdict(False, None, f"{UNREADABLE}: the image could not be read or analysed")
    if im.state != "done":
        return Verdict(False, None, PENDING)
    if role in ("empty", "ignore"):
        return Verdict(False, im.viability, f"{NOT_TESTED}: plate map role {role}")
    flags = set(im.qc) - set(qc_ignore) - CAVEAT_FLAGS
    if im.found is False:
        flags.add("no_spheroid")
    imaging = flags & IMAGING_FAILURE_FLAGS
    if imaging:
        return Verdict(False, im.viability, f"{IMAGING}: {', '.join(sorted(imaging))}")
    if drug_may_act(role):
        if "no_spheroid" in flags:
            return Verdict(True, NO_SPHEROID_VIABILITY)
        if im.viability is None:
            return Verdict(False, None, _not_scored(im))
        return Verdict(True, float(im.viability))
    if flags:
        return Verdict(False, im.viability, f"{CONTROL_QC}: {', '.join(sorted(flags))}")
    if im.viability is None:
        return Verdict(False, None, _not_scored(im))
    return Verdict(True, float(im.viability))


def _not_scored(im: ImageScore) -> str:
    if AWAITING_MODEL in im.qc:
        return f"{NOT_SCORED}: waiting for a usable model file"
    return f"{NOT_SCORED}: no model scored this image"


def well_reason(verdicts: Iterable[Verdict]) -> str:
    """Why a well (all of whose images were excluded) does not count: the
    distinct reasons of its images, most telling first."""
    order = (IMAGING, CONTROL_QC, UNREADABLE, NOT_SCORED, NOT_TESTED, PENDING)
    reasons = sorted({v.reason for v in verdicts if not v.counts},
                     key=lambda r: (order.index(r.split(":", 1)[0])
                                    if r.split(":", 1)[0] in order else len(order), r))
    return "; ".join(reasons)


def counts_as_qc_failure(reason: str) -> bool:
    """Does a well excluded for this reason count toward the plate's QC-failure
    rule? Imaging failures and damaged control wells do; unreadable files are
    counted apart (they were never segmented), and drug effects never fail QC."""
    kind = reason.split(";")[0].split(":", 1)[0]
    return kind in (IMAGING, CONTROL_QC)


def is_unreadable(reason: str) -> bool:
    return reason.split(";")[0].split(":", 1)[0] == UNREADABLE
