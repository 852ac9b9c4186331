"""The engine's analysis pipeline: the stages run on every image, in order.

read (imaging/reading) → segment (mask, features, QC flags) → thumbnail → score (NViR);
the first three, which need no torch, live in image_stages.py so that the
image workers (workers.py) can run them in processes of their own.
A stage marks one image failed with a per-image error and carries on; an image
in which no spheroid is found is not a failure: it is recorded with
``found = False`` and the ``no_spheroid`` flag, and scoring skips it.
"""

from __future__ import annotations

from nvir_agent.config import Config
from nvir_agent.pipeline.contract import Stage
from nvir_agent.pipeline.image_stages import ReadStage, SegmentStage, ThumbnailStage
from nvir_agent.pipeline.scoring import ScoreStage

__all__ = ["ReadStage", "ScoreStage", "SegmentStage", "ThumbnailStage", "build_stages",
           "scoring_stages"]


def scoring_stages(config: Config) -> list[Stage]:
    """The NViR scoring step: skips images with ``found is False``; without a model
    it logs that scoring is off (and how to get a model) and scores nothing."""
    return [ScoreStage(config)]


def build_stages(config: Config) -> list[Stage]:
    """The stages the engine runs on every image, in order."""
    return [ReadStage(config), SegmentStage(config), ThumbnailStage(config),
            *scoring_stages(config)]
