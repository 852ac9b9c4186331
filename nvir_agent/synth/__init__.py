"""Synthetic bright-field spheroid images with known viability and exact masks."""

from nvir_agent.synth.render import (
    TRAINING,
    WIDE,
    Conditions,
    NuisanceRanges,
    Rendered,
    render_spheroid,
)

__all__ = ["TRAINING", "WIDE", "Conditions", "NuisanceRanges", "Rendered", "render_spheroid"]
