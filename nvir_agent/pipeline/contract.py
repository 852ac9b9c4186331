"""The analysis pipeline: the contract between the engine and the steps that
look at an image (reading, segmentation, NViR scoring).

The engine hands a batch of :class:`Analysis` objects to each :class:`Stage`
in order. A stage fills in what it knows (``pixels``, ``features``,
``viability`` …) or marks one analysis failed with a per-image error; it never
raises for a single bad image. A stage raises only for a fatal problem that
stops the engine (an ``AgentError`` that is not an ``ImageError``).

A stage with a true ``own_thread`` attribute (scoring) starts the second half
of the pipeline: the engine runs it, and the stages after it, in a thread of
their own on the batches the first half prepared, so that the next batch is
read and segmented while this one is scored (:func:`split_stages`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from nvir_agent.errors import ImageError
from nvir_agent.store.rows import ImageRecord, Measurement, Result, Trust

NOT_SCORED = "not_scored"  # QC flag: the image could not be turned into the network's input


@dataclass
class Analysis:
    """What the stages learn about one image; flattened into a Measurement."""

    record: ImageRecord
    pixels: np.ndarray | None = None
    bit_depth: int | None = None
    image_meta: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = None
    found: bool | None = None
    features: dict[str, Any] = field(default_factory=dict)
    qc: list[str] = field(default_factory=list)
    viability: float | None = None
    model: str | None = None
    error: str | None = None
    outline: tuple[tuple[int, int], ...] = ()
    network_input: np.ndarray | None = None  # the scorer's (1, S, S) input, when prepared
    network_spec: Any = None  # the PreprocessSpec it was made with
    image_stats: dict[str, float] | None = None  # what the training summary compares, ditto
    trust: Trust = field(default_factory=Trust)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def fail(self, err: ImageError | str) -> None:
        """Record a per-image problem; later stages skip this image."""
        self.error = err.message if isinstance(err, ImageError) else str(err)
        self.pixels = None
        self.mask = None
        self.network_input = None
        self.image_stats = None

    def result(self) -> Result:
        """What the store records for this image (a viability that is not a finite
        number fails the image)."""
        return Result.checked(self.record, self.error,
                              None if self.failed else self.measurement())

    def measurement(self) -> Measurement:
        return Measurement(
            found=self.found,
            viability=self.viability,
            model=self.model,
            qc=list(self.qc),
            features=dict(self.features),
            image_meta=dict(self.image_meta),
            outline=tuple(self.outline),
            trust=self.trust,
        )


@runtime_checkable
class Stage(Protocol):
    """One step of the analysis. ``run`` mutates the analyses in place."""

    name: str

    def run(self, batch: list[Analysis]) -> None: ...


@runtime_checkable
class ResultListener(Protocol):
    """Told after a batch of results is committed (the monitor is one). A listener
    may also have ``on_idle()``, called from the worker while nothing waits for
    analysis (time-driven rules), and ``close()``, called at shutdown."""

    def on_results(self, image_ids: list[int]) -> None: ...


def split_stages(stages: Sequence[Stage]) -> tuple[list[Stage], list[Stage]]:
    """The stages before the first one with ``own_thread`` (read, segment …) and
    that stage with the ones after it (score); the second list is empty when no
    stage asks for its own thread."""
    for i, stage in enumerate(stages):
        if getattr(stage, "own_thread", False):
            return list(stages[:i]), list(stages[i:])
    return list(stages), []


def run_stages(stages: list[Stage], batch: list[Analysis]) -> None:
    """Run each stage over the images that have not failed so far."""
    for stage in stages:
        alive = [a for a in batch if not a.failed]
        if not alive:
            return
        stage.run(alive)
