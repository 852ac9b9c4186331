"""The ways to run NViR that :mod:`nvir_agent.model.fastpath` measures.

Each ``make_*`` function builds a runner ``run(x) -> viabilities`` from the
network, or returns None when the runtime is missing or cannot take the
model. They copy the network where they change it (memory layout, dtype),
so the fp32 reference stays untouched.

- torch eager: fp32 (the reference), fp32 channels-last, bf16 autocast,
  bf16 weights, mixed precision (bf16 where it is cheap to be wrong, fp32
  stem and head), TF32/fp16/bf16 on CUDA with pinned host memory;
- ``torch.compile`` with Inductor's freezing (oneDNN weight prepacking and
  fusion), fp32;
- ONNX Runtime and OpenVINO, fp32 (and OpenVINO bf16), from one ONNX
  export cached per model.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

Runner = Callable[[torch.Tensor], np.ndarray]

# The encoder's parts in order; mixed precision runs some of them in bf16.
ENCODER_PARTS = ("stem", "layer1", "layer2", "layer3", "layer4")


def available(module_name: str) -> bool:
    """True when ``module_name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``; to CUDA through pinned host memory, copied asynchronously."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def make_eager(
    module: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    allow_tf32: bool = False,
) -> Runner:
    """torch eager, optionally under autocast to ``dtype``. On CUDA, TF32 is off
    unless asked for, so that "fp32" means fp32."""
    module = module.eval().to(device)
    if channels_last:
        module = copy.deepcopy(module).to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> np.ndarray:
        x = to_device(x, device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), _cuda_tf32(device, allow_tf32):
            if dtype is None:
                y = module(x)
            else:
                with torch.autocast(device.type, dtype=dtype):
                    y = module(x)
        return y.float().reshape(-1).cpu().numpy()

    return run


def _cuda_tf32(device: torch.device, allow: bool):  # noqa: ANN202 - a context manager
    if device.type != "cuda":
        return _Nothing()
    return torch.backends.cudnn.flags(enabled=True, allow_tf32=allow)


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def make_bf16_weights(module: torch.nn.Module) -> Runner:
    module = copy.deepcopy(module).to(torch.bfloat16).to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> np.ndarray:
        x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return module(x).float().reshape(-1).numpy()

    return run


def make_mixed(module: torch.nn.Module, bf16_parts: Sequence[str]) -> Runner:
    """bf16 autocast for the encoder parts named in ``bf16_parts`` (of
    ENCODER_PARTS), fp32 for the others and for the head; channels-last."""
    net = copy.deepcopy(module).eval().to(memory_format=torch.channels_last)
    resnet = net.encoder[0]
    head = net.regression_head

    def stem(h: torch.Tensor) -> torch.Tensor:
        return resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(h))))

    parts = [("stem", stem)] + [(n, getattr(resnet, n)) for n in ENCODER_PARTS[1:]]

    def run(x: torch.Tensor) -> np.ndarray:
        h = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            for name, part in parts:
                if name in bf16_parts:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        h = part(h)
                    h = h.float()
                else:
                    h = part(h)
            h = torch.flatten(resnet.avgpool(h), 1)
            return head(h).float().reshape(-1).numpy()

    return run


def make_compiled(module: torch.nn.Module) -> Runner | None:
    """``torch.compile`` (Inductor) with freezing: weights folded and prepacked for
    oneDNN, convolution + BatchNorm + ReLU fused. Compiles on the first batch
    of each shape (tens of seconds on a small CPU) and needs a C++ compiler."""
    try:
        import torch._inductor.config as inductor_config  # heavy; only when asked for

        inductor_config.freezing = True
        net = copy.deepcopy(module).eval().to(memory_format=torch.channels_last)
        compiled = torch.compile(net, dynamic=False)
    except Exception as exc:  # noqa: BLE001 - a compiler stack failing only drops the option
        log.info("torch.compile unavailable (%s); not using it.", exc)
        return None

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            y = compiled(x.contiguous(memory_format=torch.channels_last))
        return y.float().reshape(-1).numpy()

    return run


def onnx_blob(module: torch.nn.Module, input_size: int, cache_path: Path | None) -> bytes:
    """The network as ONNX (dynamic batch), read from ``cache_path`` or exported and
    written there."""
    if cache_path is not None and cache_path.is_file():
        return cache_path.read_bytes()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            copy.deepcopy(module).cpu().eval(),
            torch.zeros(1, 1, input_size, input_size),
            buf,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
            opset_version=17,
        )
    blob = buf.getvalue()
    if cache_path is not None:
        write_atomic(cache_path, blob)
    return blob


def make_onnxruntime(
    module: torch.nn.Module, input_size: int, threads: int, cache_path: Path | None
) -> Runner | None:
    """ONNX Runtime on the CPU, fp32, all graph optimisations."""
    try:
        import onnxruntime as ort  # imported only when this option is measured or used

        blob = onnx_blob(module, input_size, cache_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        # threads that spin while waiting for work steal the cores the image
        # workers and the other stages need; they sleep instead
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any exporter/runtime failure just drops the option
        log.info("ONNX Runtime path unavailable (%s); not using it.", exc)
        return None

    def run(x: torch.Tensor) -> np.ndarray:
        out = session.run(None, {"x": x.detach().cpu().numpy().astype(np.float32, copy=False)})
        return np.asarray(out[0], dtype=np.float32).reshape(-1)

    return run


def make_openvino(
    module: torch.nn.Module,
    input_size: int,
    threads: int,
    cache_path: Path | None,
    precision: str = "f32",
) -> Runner | None:
    """OpenVINO on the CPU from the same ONNX export; ``precision`` "f32" or "bf16"."""
    try:
        import openvino as ov  # imported only when this option is measured or used

        blob = onnx_blob(module, input_size, cache_path)
        core = ov.Core()
        if cache_path is not None:
            model = core.read_model(str(cache_path))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "nvir.onnx"
                path.write_bytes(blob)
                model = core.read_model(str(path))
        compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": precision,
                "INFERENCE_NUM_THREADS": max(1, threads),
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        request = compiled.create_infer_request()
    except Exception as exc:  # noqa: BLE001 - any runtime failure just drops the option
        log.info("OpenVINO path unavailable (%s); not using it.", exc)
        return None

    def run(x: torch.Tensor) -> np.ndarray:
        out = request.infer({0: x.detach().cpu().numpy().astype(np.float32, copy=False)})
        return np.array(out[0], dtype=np.float32).reshape(-1)

    return run


def write_atomic(path: Path, blob: bytes) -> None:
    """Best effort: a cache that cannot be written only costs time at the next start."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot write cache file %s: %s", path, exc)
