"""NViR model files: one ``.safetensors`` file (tensors, no pickle) whose
metadata holds a JSON object under the key ``nvir``:

``format_version``, ``architecture`` (``nvir-resnet18-mlp``), ``preprocessing``
(a PreprocessSpec), ``output`` (what the number means), ``provenance``
(``source``, ``created``, ``by``), ``metrics`` (validation numbers) and any
further keys the writer adds (training data summary, split, recipe …).

Optional, since the out-of-distribution check: ``typicality`` (the JSON part
of the training-image summary, whose arrays are the tensors named
``typicality.*``; see :mod:`nvir_agent.model.typicality`) and ``uncertainty``
(the interval calibration, :mod:`nvir_agent.model.uncertainty`). A file
without them loads as before; its scores have no typicality and no interval.

A deep ensemble (``nvir-agent train --ensemble N``) is one file too: its
tensors are the members' under ``members.<i>.``, and ``ensemble`` in the
metadata says ``{"members": N, "seeds": [...], ...}``. A file without
``ensemble`` holds one network, as every file written before ensembles.

Reading the header and metadata alone needs no torch
(:mod:`nvir_agent.model.fileheader`).

:func:`load_model` checks everything and turns each problem into a
``ModelLoadError`` that names the file and the fix.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from nvir_agent import __version__
from nvir_agent.errors import ModelLoadError, listing
from nvir_agent.model.fileheader import (  # noqa: F401 - re-exported for callers
    ARCHITECTURE,
    FORMAT_VERSION,
    META_KEY,
    check_metadata,
    ensemble_members,
    file_sha256,
    parse_header,
    read_bytes,
    read_model_metadata,
)
from nvir_agent.model.fileheader import FIX_GET as _FIX_GET
from nvir_agent.model.network import NViR, NViREnsemble, build_network, members
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.model.typicality import TENSOR_PREFIX, TrainingSummary
from nvir_agent.model.uncertainty import ENSEMBLE, IntervalCalibration

log = logging.getLogger(__name__)

OUTPUT_MEANING = (
    "viability: ATP of the well divided by the median ATP of the vehicle-control wells "
    "on the same plate and day (1.0 = like control)"
)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A network ready for inference (eval mode, float32, CPU) and what its file says."""

    module: NViR | NViREnsemble
    spec: PreprocessSpec
    metadata: dict[str, Any]
    path: Path | None = None
    sha256: str = ""
    file_size: int = 0
    stored_dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)
    summary: TrainingSummary | None = None  # None: the OOD check is unavailable
    intervals: IntervalCalibration | None = None  # None: no calibrated interval

    @property
    def name(self) -> str:
        """File name plus short hash, as stored with each measurement."""
        stem = self.path.name if self.path else "in-memory"
        return f"{stem}@{self.sha256[:8]}" if self.sha256 else stem

    @property
    def members(self) -> int:
        """Networks in the file: N for an ensemble of N, else 1."""
        return len(members(self.module))


def save_model(
    path: str | os.PathLike[str],
    module: torch.nn.Module,
    spec: PreprocessSpec,
    metadata: dict[str, Any] | None = None,
    *,
    dtype: torch.dtype | str = torch.float32,
    summary: TrainingSummary | None = None,
    intervals: IntervalCalibration | None = None,
) -> Path:
    """Write ``module``'s weights and the metadata to ``path`` atomically.

    ``metadata`` may hold ``output``, ``provenance`` (``source`` …), ``metrics``
    and any JSON-serialisable extras; ``created`` and ``by`` are filled in.
    ``dtype`` float16 halves the file; BatchNorm step counters stay int64.
    ``summary`` and ``intervals`` add the training-image summary and the
    interval calibration.
    """
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
        dtype = _DTYPES[dtype]
    meta = dict(metadata or {})
    provenance = dict(meta.get("provenance") or {})
    provenance.setdefault("source", "unknown")
    provenance.setdefault(
        "created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    provenance.setdefault("by", f"nvir-agent {__version__}")
    meta.update(
        format_version=FORMAT_VERSION,
        architecture=ARCHITECTURE,
        preprocessing=spec.to_dict(),
        provenance=provenance,
    )
    meta.setdefault("output", OUTPUT_MEANING)
    meta.setdefault("metrics", {})
    meta["dtype"] = str(dtype).removeprefix("torch.")
    n_members = len(members(module))
    if n_members > 1:
        meta["ensemble"] = {**dict(meta.get("ensemble") or {}), "members": n_members}
    else:
        meta.pop("ensemble", None)
    tensors = {}
    for key, value in module.state_dict().items():
        t = value.detach().cpu()
        if t.is_floating_point():
            t = t.to(dtype)
        tensors[key] = t.contiguous()
    _add_trust(meta, tensors, summary, intervals)
    return _write(path, tensors, meta)


def _add_trust(meta: dict[str, Any], tensors: dict[str, torch.Tensor],
               summary: TrainingSummary | None, intervals: IntervalCalibration | None) -> None:
    if summary is not None:
        meta["typicality"] = summary.metadata()
        for key, arr in summary.tensors().items():
            tensors[key] = torch.from_numpy(arr.copy()).contiguous()
    if intervals is not None:
        meta["uncertainty"] = intervals.metadata()


def add_trust(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    summary: TrainingSummary | None,
    intervals: IntervalCalibration | None = None,
) -> Path:
    """Rewrite the model file ``path`` to ``out`` with a training summary and
    interval calibration; the network's tensors are copied byte for byte."""
    path = Path(path)
    raw = read_bytes(path)
    header, _ = parse_header(path, raw)
    meta = check_metadata(path, header.get("__metadata__"))
    try:
        tensors = {k: v for k, v in st_load(raw).items() if not k.startswith(TENSOR_PREFIX)}
    except (SafetensorError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"Model file {path} is corrupt: its tensors cannot be read ({exc}).", _FIX_GET
        ) from exc
    meta.pop("typicality", None)
    meta.pop("uncertainty", None)
    _add_trust(meta, tensors, summary, intervals)
    return _write(Path(out), tensors, meta)


def _write(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor],
           meta: dict[str, Any]) -> Path:
    try:
        text = json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model metadata is not plain JSON: {exc}") from exc
    blob = st_save(tensors, metadata={"format": "pt", META_KEY: text})
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.chmod(tmp, 0o644)  # mkstemp creates it private (0600); a model is shared
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ModelLoadError(
            f"Cannot write model file {path}: {exc.strerror or exc}.",
            "Choose a folder you may write to, with enough free space.",
        ) from exc
    return path


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Load and check an NViR model file; ModelLoadError names the file and the fix."""
    path = Path(path)
    raw = read_bytes(path)
    header, _ = parse_header(path, raw)
    meta = check_metadata(path, header.get("__metadata__"))
    try:
        spec = PreprocessSpec.from_dict(meta["preprocessing"])
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"Model file {path} has an unusable preprocessing spec: {exc}.", _FIX_GET
        ) from exc
    try:
        tensors = st_load(raw)
    except (SafetensorError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"Model file {path} is corrupt: its tensors cannot be read ({exc}).", _FIX_GET
        ) from exc
    trust = {k: tensors.pop(k) for k in list(tensors) if k.startswith(TENSOR_PREFIX)}
    summary, intervals = _read_trust(path, meta, trust)
    try:
        module = build_network(ensemble_members(meta))
    except ValueError as exc:
        raise ModelLoadError(f"Model file {path} is corrupt: {exc}.", _FIX_GET) from exc
    check_state_dict(tensors, module, source=str(path))
    if intervals is not None and intervals.method == ENSEMBLE and len(members(module)) < 2:
        log.warning("Model file %s: its intervals are calibrated for an ensemble but it holds "
                    "one network; scores have no interval.", path)
        intervals = None
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    module.load_state_dict(state, strict=True)
    module.eval()
    stored = next(
        (str(v.dtype).removeprefix("torch.") for v in tensors.values() if v.is_floating_point()),
        "float32",
    )
    return LoadedModel(
        module=module,
        spec=spec,
        metadata=meta,
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        file_size=len(raw),
        stored_dtype=stored,
        summary=summary,
        intervals=intervals,
    )


def _read_trust(
    path: Path, meta: dict[str, Any], trust: dict[str, torch.Tensor]
) -> tuple[TrainingSummary | None, IntervalCalibration | None]:
    """The stored summary and calibration; an unusable one is logged and ignored
    (the model still scores, without the check)."""
    summary = intervals = None
    if "typicality" in meta:
        try:
            arrays = {k: v.float().numpy() for k, v in trust.items()}
            summary = TrainingSummary.from_stored(meta["typicality"], arrays)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("Model file %s: its training summary is unusable (%s); "
                        "the out-of-distribution check is off.", path, exc)
    if "uncertainty" in meta:
        try:
            intervals = IntervalCalibration.from_metadata(meta["uncertainty"])
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("Model file %s: its interval calibration is unusable (%s); "
                        "scores have no interval.", path, exc)
    return summary, intervals


def check_state_dict(
    tensors: dict[str, torch.Tensor], module: torch.nn.Module, *, source: str
) -> None:
    """ModelLoadError listing missing and unexpected keys and shape mismatches by name."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{k} {tuple(tensors[k].shape)} (expected {expected[k]})"
        for k in sorted(set(expected) & set(tensors))
        if tuple(tensors[k].shape) != expected[k]
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"missing keys: {listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {listing(unexpected)}")
    if mismatched:
        parts.append(f"shape mismatches: {listing(mismatched)}")
    raise ModelLoadError(
        f"{source} does not match the {ARCHITECTURE} network — " + "; ".join(parts) + ".",
        "The file holds a different network. " + _FIX_GET,
    )


