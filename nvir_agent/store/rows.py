"""The store's typed rows: what every reader and writer of the store exchanges.

Plain frozen dataclasses, no SQL: a second backend returns the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nvir_agent.plate import ImageKey

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
ACTIVE_STATES = ("open", "acknowledged")
CLOSED_STATES = ("resolved", "dismissed")

Key = tuple[str, str, str]  # (plate, subject, rule): at most one active alert each


def _flat(features: dict[str, Any], found: bool | None, qc: Sequence[str],
          viability: float | None, model: str | None, trust: Trust | None = None
          ) -> dict[str, Any]:
    """A measurement's flat keys: its features, then found, qc, viability, its interval,
    typicality and distance from the training images, and model."""
    t = trust or Trust()
    return {**features, "found": found, "qc": list(qc), "viability": viability,
            "viability_low": t.viability_low, "viability_high": t.viability_high,
            "typicality": t.typicality, "ood_distance": t.ood_distance,
            "unlike_training": UNLIKE_TRAINING in qc, "model": model}


UNLIKE_TRAINING = "unlike_training"  # QC flag: the image is unlike the model's training images
# QC flag: the image has no score yet because the model file could not be used when it was
# analysed; it is analysed again once a usable model file is in place
AWAITING_MODEL = "awaiting_model"


@dataclass(frozen=True)
class Trust:
    """How far a viability can be trusted (None: the model cannot say).

    ``viability_low``/``viability_high``: its calibrated 90 % interval;
    ``typicality``: the fraction of held-out training-like images farther from
    the training images than this one; ``ood_distance``: that distance (the
    QC flag ``unlike_training`` is set above the model's documented level).
    """

    viability_low: float | None = None
    viability_high: float | None = None
    typicality: float | None = None
    ood_distance: float | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One image file the store knows about (a row of the images table)."""

    id: int
    path: Path
    key: ImageKey
    size: int
    mtime: float


@dataclass(frozen=True)
class Measurement:
    """What is stored for a successfully analysed image."""

    found: bool | None = None
    viability: float | None = None
    model: str | None = None
    qc: list[str] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)
    image_meta: dict[str, Any] = field(default_factory=dict)
    outline: tuple[tuple[int, int], ...] = ()  # simplified polygon, full-image pixels
    trust: Trust = field(default_factory=Trust)

    def as_dict(self) -> dict[str, Any]:
        """Flat keys as `process --json` and `export` print them (no outline)."""
        return _flat({**self.image_meta, **self.features}, self.found, self.qc,
                     self.viability, self.model, self.trust)


@dataclass(frozen=True)
class Result:
    """The outcome of one job: ``error`` for a failed image, else its measurement."""

    record: ImageRecord
    error: str | None = None
    measurement: Measurement | None = None

    @classmethod
    def checked(cls, record: ImageRecord, error: str | None,
                measurement: Measurement | None) -> Result:
        """A result whose viability is a finite number or None (else the image fails)."""
        if error is None and measurement is not None and measurement.viability is not None:
            try:
                value = float(measurement.viability)
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                return cls(record, "The analysis gave a viability that is not a number: "
                                   f"{measurement.viability!r}.")
            measurement = replace(measurement, viability=value, qc=list(measurement.qc),
                                  features=dict(measurement.features),
                                  image_meta=dict(measurement.image_meta))
        return cls(record, error, None if error is not None else measurement)


@dataclass(frozen=True)
class Counts:
    """How many images the store knows, by state."""

    seen: int = 0
    pending: int = 0
    done: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Heartbeat:
    """The running agent's last snapshot (``status`` in another process reads it)."""

    name: str
    pid: int | None
    started_at: float | None
    heartbeat_at: float | None
    snapshot: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "started_at": self.started_at,
                "heartbeat_at": self.heartbeat_at, "snapshot": self.snapshot}


@dataclass(frozen=True)
class StationRow:
    """One station of the store: its agent's last heartbeat and its images by state."""

    name: str
    host: str | None
    heartbeat: Heartbeat | None
    counts: Counts = field(default_factory=Counts)

    def running(self, now: float, stale_after_s: float) -> bool:
        """True while its agent runs and beats."""
        b = self.heartbeat
        return bool(b and b.snapshot.get("running")
                    and now - (b.heartbeat_at or 0) < stale_after_s)


@dataclass(frozen=True)
class PlateRow:
    """A plate the store has seen, with the plate map the monitor recorded for it."""

    plate: str
    first_seen: float | None
    last_seen: float | None
    plate_map: dict[str, Any] | None = None


@dataclass(frozen=True)
class ImageScore:
    """One image's result as the store has it (input of the time-course maths)."""

    image_id: int
    plate: str
    well: str
    timepoint: int | None = None
    elapsed_s: float | None = None
    mtime: float = 0.0
    field: int | None = None
    channel: str | None = None
    z: int | None = None
    state: str = "done"  # done | failed | pending
    found: bool | None = True
    viability: float | None = None
    qc: tuple[str, ...] = ()
    trust: Trust = Trust()  # frozen, so one shared default is safe
    model: str | None = None

    @property
    def unlike_training(self) -> bool:
        return UNLIKE_TRAINING in self.qc


@dataclass(frozen=True)
class MeasurementRow:
    """One image with its job state and, once analysed, its measurement (a page row)."""

    id: int
    path: str
    key: ImageKey
    size: int
    mtime: float
    state: str
    error: str | None
    attempts: int
    updated_at: float | None
    found: bool | None = None
    viability: float | None = None
    model: str | None = None
    qc: tuple[str, ...] = ()
    features: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    measured_at: float | None = None
    outline: tuple[tuple[int, int], ...] | None = None  # None: not stored (older rows)
    station: str | None = None  # the station that queued the image
    trust: Trust = field(default_factory=Trust)
    queued_at: float | None = None  # when the settled file became a pending job

    @property
    def unlike_training(self) -> bool:
        return UNLIKE_TRAINING in self.qc

    def as_dict(self) -> dict[str, Any]:
        """Flat keys as `export` prints them (features only for analysed images)."""
        k = self.key
        out: dict[str, Any] = {
            "id": self.id, "path": self.path, "vendor": k.vendor, "plate": k.plate,
            "well": k.well, "row": k.row, "column": k.column, "field": k.field,
            "channel": k.channel, "z": k.z, "timepoint": k.timepoint,
            "elapsed_s": k.elapsed_s, "size": self.size, "mtime": self.mtime,
            "state": self.state, "error": self.error, "attempts": self.attempts,
            "updated_at": self.updated_at, "station": self.station,
        }
        if self.state == "done":
            out.update(_flat(self.features, self.found, self.qc, self.viability, self.model,
                             self.trust))
        return out


@dataclass(frozen=True)
class Alert:
    """One alert as stored."""

    id: int
    plate: str
    subject: str
    rule: str
    severity: str
    state: str
    message: str
    value: float | None
    timepoint: int | None
    opened_at: float
    updated_at: float
    closed_at: float | None
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    ack_until: float | None = None  # an acknowledgement that expires: open again after it

    @property
    def key(self) -> Key:
        return (self.plate, self.subject, self.rule)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "plate": self.plate, "subject": self.subject, "rule": self.rule,
            "severity": self.severity, "state": self.state, "message": self.message,
            "value": self.value, "timepoint": self.timepoint, "opened_at": self.opened_at,
            "updated_at": self.updated_at, "closed_at": self.closed_at, "details": self.details,
            "ack_until": self.ack_until,
        }


@dataclass(frozen=True)
class Shelf:
    """A plate or compound the operator shelved: no notifications for it until ``until``."""

    id: int
    kind: str  # plate | compound
    name: str
    until: float
    user: str | None
    comment: str | None
    created_at: float


@dataclass(frozen=True)
class AlertEvent:
    """One entry of an alert's history."""

    id: int
    alert_id: int
    at: float
    action: str  # opened | escalated | acknowledged | resolved | dismissed | recovered | rolled_up
    user: str | None
    comment: str | None


@dataclass(frozen=True)
class ImageStateSummary:
    """What happened to the images of a plate (or all plates): the report's QC table."""

    by_state: dict[str, int]
    failures: list[tuple[str, str]]        # (path, error) of failed images
    done_found_qc: list[tuple[bool | None, tuple[str, ...]]]  # per analysed image
