"""Which model file the agent scores with: ``[model] path`` from agent.toml, else
the bundled demo model (trained on synthetic images only), else none — then
scoring is off and the agent still ingests and segments."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from nvir_agent.config import Config

log = logging.getLogger(__name__)

DEMO_MODEL_NAME = "nvir-demo.safetensors"
GET_A_MODEL = (
    "Set [model] path in agent.toml to an NViR model file: convert the paper's checkpoint "
    "with `nvir-agent model import CKPT --out MODEL.safetensors`, or train one on your own "
    "plates with `nvir-agent train`."
)
DEMO_WARNING = (
    "Scoring with the bundled DEMO model {path}: it was trained on synthetic images only "
    "and has never seen a real spheroid — do not use its scores for decisions. " + GET_A_MODEL
)


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from; ``path`` None means scoring is off (``reason`` says why)."""

    path: Path | None
    demo: bool
    reason: str


def demo_model_path() -> Path:
    """The bundled demo model: package data ``nvir_agent/assets/models/nvir-demo.safetensors``,
    installed with the package (editable or not)."""
    return Path(str(resources.files("nvir_agent").joinpath("assets", "models", DEMO_MODEL_NAME)))


def resolve_model(cfg: Config) -> ModelSource:
    """Decide which model file to use; does not open it."""
    if not cfg.model.enabled:
        return ModelSource(None, False, "scoring is switched off ([model] enabled = false)")
    if cfg.model.path:
        return ModelSource(cfg.resolve(cfg.model.path), False, "configured in [model] path")
    demo = demo_model_path()
    if demo.is_file():
        return ModelSource(demo, True, "no [model] path configured: bundled demo model")
    return ModelSource(None, False, "no [model] path configured and no bundled demo model")


def describe_model_source(cfg: Config) -> str:
    """One line for `status` and the log."""
    src = resolve_model(cfg)
    if src.path is None:
        return f"scoring off: {src.reason}. {GET_A_MODEL}" if cfg.model.enabled else src.reason
    if src.demo:
        return f"DEMO model {src.path} (synthetic training data only; not for decisions)"
    return f"model {src.path}"
