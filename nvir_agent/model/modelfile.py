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

:func:`load_model` checks everything and turns each problem into a
``ModelLoadError`` that names the file and the fix.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import struct
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
from nvir_agent.model.network import ARCHITECTURE, NViR, build_nvir
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.model.typicality import TENSOR_PREFIX, TrainingSummary
from nvir_agent.model.uncertainty import IntervalCalibration

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_KEY = "nvir"
OUTPUT_MEANING = (
    "viability: ATP of the well divided by the median ATP of the vehicle-control wells "
    "on the same plate and day (1.0 = like control)"
)
_MAX_HEADER = 100_000_000
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

_FIX_GET = (
    "Re-import the checkpoint with `nvir-agent model import`, train one with "
    "`nvir-agent train`, or point [model] path in agent.toml at a valid NViR model file."
)


@dataclass
class LoadedModel:
    """A network ready for inference (eval mode, float32, CPU) and what its file says."""

    module: NViR
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
    header, _ = _parse_header(path, raw)
    meta = _check_metadata(path, header.get("__metadata__"))
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


def read_model_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The NViR metadata of a model file, checked, without building the network."""
    path = Path(path)
    raw = read_bytes(path)
    header, _ = _parse_header(path, raw)
    return _check_metadata(path, header.get("__metadata__"))


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Load and check an NViR model file; ModelLoadError names the file and the fix."""
    path = Path(path)
    raw = read_bytes(path)
    header, _ = _parse_header(path, raw)
    meta = _check_metadata(path, header.get("__metadata__"))
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
    module = build_nvir()
    check_state_dict(tensors, module, source=str(path))
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


def read_bytes(path: Path, what: str = "Model file", fix: str = _FIX_GET) -> bytes:
    """The whole file, or ModelLoadError saying it is missing, a folder, unreadable or
    empty; ``what`` names the kind of file in the message, ``fix`` says how to get a good one."""
    try:
        if path.is_dir():
            raise ModelLoadError(f"{what} path {path} is a folder, not a file.", fix)
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{what} {path} does not exist.", f"Check the path. {fix}") from exc
    except OSError as exc:
        raise ModelLoadError(
            f"Cannot read {what.lower()} {path}: {exc.strerror or exc}.",
            "Check that the file exists and that you may read it.",
        ) from exc
    if not raw:
        raise ModelLoadError(
            f"{what} {path} is empty (0 bytes).",
            "The copy or download was cut short. " + fix,
        )
    return raw


def _parse_header(path: Path, raw: bytes) -> tuple[dict[str, Any], int]:
    pickled = ModelLoadError(
        f"{path} is a pickled PyTorch file, not an NViR model file (.safetensors).",
        f"Convert it first: nvir-agent model import {path} --out model.safetensors",
    )
    if raw[:4] == b"PK\x03\x04":
        raise pickled
    if len(raw) < 8:
        raise ModelLoadError(f"Model file {path} is truncated ({len(raw)} bytes).", _FIX_GET)
    (n,) = struct.unpack("<Q", raw[:8])
    if n == 0 or n > _MAX_HEADER:
        if raw[:1] == b"\x80":
            raise pickled
        raise ModelLoadError(f"{path} is not a safetensors model file (no valid header).", _FIX_GET)
    if len(raw) > 8 and raw[8:9] != b"{":
        raise ModelLoadError(f"{path} is not a safetensors model file (no valid header).", _FIX_GET)
    if 8 + n > len(raw):
        raise ModelLoadError(
            f"Model file {path} is truncated: its header needs {n} bytes, the file has {len(raw) - 8}.",
            "The copy or download was cut short. " + _FIX_GET,
        )
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Model file {path} has a corrupt header ({exc}).", _FIX_GET) from exc
    if not isinstance(header, dict):
        raise ModelLoadError(f"Model file {path} has a corrupt header (not an object).", _FIX_GET)
    data_len = len(raw) - 8 - n
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            raise ModelLoadError(
                f"Model file {path} has a corrupt header (entry {key!r}).", _FIX_GET
            ) from exc
    if end > data_len:
        raise ModelLoadError(
            f"Model file {path} is truncated: tensors need {end} bytes, the file holds {data_len}.",
            "The copy or download was cut short. " + _FIX_GET,
        )
    return header, n


def _check_metadata(path: Path, raw_meta: Any) -> dict[str, Any]:
    if not isinstance(raw_meta, dict) or META_KEY not in raw_meta:
        raise ModelLoadError(
            f"{path} is a safetensors file but not an NViR model (it has no NViR metadata).",
            "Only files written by nvir-agent (import, train) can be used. " + _FIX_GET,
        )
    try:
        meta = json.loads(raw_meta[META_KEY])
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"Model file {path} has corrupt NViR metadata ({exc}).", _FIX_GET
        ) from exc
    if not isinstance(meta, dict):
        raise ModelLoadError(
            f"Model file {path} has corrupt NViR metadata (not an object).", _FIX_GET
        )
    arch = meta.get("architecture")
    if arch != ARCHITECTURE:
        raise ModelLoadError(
            f"{path} holds a {arch!r} network, not {ARCHITECTURE!r}.",
            "This version of nvir-agent scores only NViR ResNet18 models. " + _FIX_GET,
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelLoadError(
            f"Model file {path} has no valid format version ({version!r}).", _FIX_GET
        )
    if version > FORMAT_VERSION:
        raise ModelLoadError(
            f"Model file {path} has format version {version}; this nvir-agent reads up to {FORMAT_VERSION}.",
            "Update nvir-agent to use this model.",
        )
    if version < 1:
        raise ModelLoadError(
            f"Model file {path} has an unknown format version {version}.", _FIX_GET
        )
    if "preprocessing" not in meta:
        raise ModelLoadError(f"Model file {path} does not declare its preprocessing.", _FIX_GET)
    return meta


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
