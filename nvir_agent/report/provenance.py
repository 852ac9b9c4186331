"""Provenance of every output (the report header, the exports' metadata):
which agent version, which model file (name and SHA-256), what the model was
trained on, which models scored the images in the data, and the demo-model
warning when it applies."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvir_agent import __version__
from nvir_agent.errors import AgentError

log = logging.getLogger(__name__)

DEMO_MODEL_WARNING = (
    "Scored with the bundled DEMO model: it was trained on synthetic images only and has "
    "never seen a real spheroid. Do not use these viabilities, IC50s or margins of safety "
    "for decisions."
)


@dataclass(frozen=True)
class Provenance:
    """Where a result comes from, as ordered (key, text) pairs."""

    agent_version: str
    generated_at: float
    database: str
    model_file: str | None = None
    model_sha256: str | None = None
    model_training: str = ""
    model_note: str = ""  # why no model, or that it could not be read
    models_in_data: dict[str, int] = field(default_factory=dict)  # file@hash → images scored
    demo_model: bool = False

    @property
    def warning(self) -> str | None:
        return DEMO_MODEL_WARNING if self.demo_model else None

    def pairs(self) -> list[tuple[str, str]]:
        out = [("agent", f"NViR Agent {self.agent_version}"),
               ("generated", time.strftime("%Y-%m-%d %H:%M:%S",
                                           time.localtime(self.generated_at))),
               ("database", self.database)]
        if self.model_file:
            out.append(("model file", self.model_file))
            out.append(("model sha256", self.model_sha256 or "–"))
        if self.model_note:
            out.append(("model", self.model_note))
        if self.model_training:
            out.append(("model training data", self.model_training))
        if self.models_in_data:
            out.append(("images scored by", "; ".join(
                f"{m} ({n} images)" for m, n in sorted(self.models_in_data.items()))))
        if self.warning:
            out.append(("warning", self.warning))
        return out

    def as_dict(self) -> dict[str, Any]:
        return dict(self.pairs())


def training_summary(meta: dict[str, Any]) -> str:
    """One line on what a model was trained on, from its file's metadata."""
    data = meta.get("data") or {}
    prov = meta.get("provenance") or {}
    parts = []
    if data.get("n_images"):
        parts.append(f"{data['n_images']} images from {data.get('n_plates', '?')} plates")
    if data.get("sites"):
        parts.append("sites " + ", ".join(map(str, data["sites"])))
    if data.get("days"):
        parts.append("days " + ", ".join(map(str, data["days"])))
    if data.get("n_train") and data.get("n_val"):
        parts.append(f"{data['n_train']} training / {data['n_val']} validation images")
    val = (meta.get("metrics") or {}).get("validation") or {}
    if val.get("r2") is not None:
        parts.append(f"validation R² {val['r2']:.3f}, MAE {val.get('mae', float('nan')):.3f}")
    if prov.get("source"):
        parts.append(str(prov["source"]))
    if prov.get("created"):
        parts.append(f"created {prov['created']}")
    return "; ".join(parts) or "not recorded in the model file"


def collect_provenance(config: Any | None, *, database: str,
                       models_in_data: dict[str, int] | None = None) -> Provenance:
    """The provenance for an output made with this config (None: no model known)."""
    from nvir_agent.model.fileheader import file_sha256, read_model_metadata
    from nvir_agent.model.locate import resolve_model

    base = dict(agent_version=__version__, generated_at=time.time(), database=database,
                models_in_data=dict(models_in_data or {}))
    demo_in_data = any(m.startswith("nvir-demo") for m in base["models_in_data"])
    if config is None:
        return Provenance(**base, model_note="not known (no configuration given)",
                          demo_model=demo_in_data)
    src = resolve_model(config)
    if src.path is None:
        return Provenance(**base, model_note=f"none: {src.reason}", demo_model=demo_in_data)
    path = Path(src.path)
    try:
        sha = file_sha256(path)
        training = training_summary(read_model_metadata(path))
        note = ""
    except (OSError, AgentError) as exc:
        log.warning("model file %s: %s", path, exc)
        sha, training = None, ""
        note = f"the model file {path} cannot be read: {getattr(exc, 'message', exc)}"
    if src.demo:
        training = "synthetic images only (bundled demo model); " + training
    return Provenance(**base, model_file=str(path), model_sha256=sha, model_training=training,
                      model_note=note, demo_model=src.demo or demo_in_data)
