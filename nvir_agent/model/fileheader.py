"""What an NViR model file says, read from its safetensors header alone: no
torch, so that ``nvir-agent model info``, the engine's start-up check and the
report's provenance answer in a fraction of a second.

A model file is one ``.safetensors`` file: an 8-byte header length, a JSON
header (each tensor's dtype, shape and byte range, and ``__metadata__``, whose
key ``nvir`` holds the model's metadata as JSON), then the tensors. See
:mod:`nvir_agent.model.modelfile` for the metadata and for loading the network.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvir_agent.errors import ModelLoadError

ARCHITECTURE = "nvir-resnet18-mlp"
FORMAT_VERSION = 1
META_KEY = "nvir"
TRUST_PREFIX = "typicality."  # tensors of the training-image summary, not of the network
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm state
_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
_MAX_HEADER = 100_000_000

FIX_GET = (
    "Re-import the checkpoint with `nvir-agent model import`, train one with "
    "`nvir-agent train`, or point [model] path in agent.toml at a valid NViR model file."
)
_FIX_GET = FIX_GET


@dataclass
class ModelFileInfo:
    """A model file's metadata and what its header tells about its tensors."""

    path: Path
    metadata: dict[str, Any]
    sha256: str
    file_size: int
    stored_dtype: str  # of the network's floating-point weights
    parameters: int  # learnable parameters of the network (BatchNorm statistics excluded)

    @property
    def name(self) -> str:
        """File name plus short hash, as stored with each measurement."""
        return f"{self.path.name}@{self.sha256[:8]}"

    @property
    def members(self) -> int:
        """Networks in the file: N for an ensemble of N, else 1."""
        return ensemble_members(self.metadata)


def ensemble_members(meta: dict[str, Any]) -> int:
    """How many networks a model file's metadata says it holds (1 unless an ensemble)."""
    ens = meta.get("ensemble")
    if ens is None:
        return 1
    n = ens.get("members") if isinstance(ens, dict) else None
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"its ensemble metadata is unusable ({ens!r})")
    return n


def read_model_info(path: str | os.PathLike[str]) -> ModelFileInfo:
    """The checked metadata, hash, size, weight dtype and parameter count of a model
    file, from its header (the tensors are hashed, not decoded)."""
    path = Path(path)
    raw = read_bytes(path)
    header, _ = parse_header(path, raw)
    meta = check_metadata(path, header.get("__metadata__"))
    params, dtype = 0, None
    for key, entry in header.items():
        if key == "__metadata__" or key.startswith(TRUST_PREFIX):
            continue
        if dtype is None and entry.get("dtype") in _DTYPE_NAMES:
            dtype = _DTYPE_NAMES[entry["dtype"]]
        if not key.endswith(_BUFFERS):
            params += math.prod(int(d) for d in entry.get("shape", []))
    return ModelFileInfo(path, meta, hashlib.sha256(raw).hexdigest(), len(raw),
                         dtype or "float32", params)


def read_model_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The NViR metadata of a model file, checked, without building the network."""
    path = Path(path)
    raw = read_bytes(path)
    header, _ = parse_header(path, raw)
    return check_metadata(path, header.get("__metadata__"))


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


def parse_header(path: Path, raw: bytes) -> tuple[dict[str, Any], int]:
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


def check_metadata(path: Path, raw_meta: Any) -> dict[str, Any]:
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
