"""Pick the fastest correct way to run NViR on this machine.

At load time the scorer measures the inference options this machine has —
fp32 eager torch (the reference code's way), bf16 autocast with
channels-last where the CPU has native bf16 (AVX-512 BF16 or AMX), bf16
weights, ONNX Runtime when installed, fp16 autocast on CUDA — on a short
probe batch, and validates each against fp32: an option whose viability
differs by more than ``MAX_DELTA`` anywhere on the probe is rejected, with a
warning. The choice is cached per machine, model and thread count in the user
cache folder so later starts only re-validate it.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nvir_agent.paths import user_cache_dir

log = logging.getLogger(__name__)

MAX_DELTA = 0.01
FAST_PATHS = ("auto", "fp32", "bf16", "onnx", "fp16")
_CACHE_NAME = "fastpath.json"


class Candidate:
    """One way to run the network: ``run(x)`` maps an NCHW float32 batch to viabilities.

    ``make`` builds the runner on first use (copies of the network, an ONNX
    session), so options that are never measured cost nothing.
    """

    def __init__(
        self,
        name: str,
        make: Callable[[], Callable[[torch.Tensor], np.ndarray] | None],
        description: str,
    ) -> None:
        self.name = name
        self.description = description
        self._make = make
        self._run: Callable[[torch.Tensor], np.ndarray] | None = None

    def run(self, x: torch.Tensor) -> np.ndarray:
        if self._run is None:
            runner = self._make()
            if runner is None:
                raise RuntimeError(f"{self.description} is not available")
            self._run = runner
        return self._run(x)

    def __repr__(self) -> str:
        return f"Candidate({self.name!r})"


@dataclass
class FastPathChoice:
    """The option in use, how fast each option was, and how far it is from fp32."""

    chosen: Candidate
    reference: Candidate
    images_per_s: dict[str, float] = field(default_factory=dict)
    max_delta: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    from_cache: bool = False

    def summary(self) -> str:
        speed = self.images_per_s.get(self.chosen.name)
        base = self.images_per_s.get(self.reference.name)
        gain = f", {speed / base:.1f}× fp32" if speed and base else ""
        delta = self.max_delta.get(self.chosen.name, 0.0)
        return f"{self.chosen.description} (max |Δ| vs fp32 {delta:.4f}{gain})"


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX-512 BF16 or AMX)."""
    flags = cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    try:  # no /proc/cpuinfo (Windows, macOS): ask oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and (
            "AVX512" in torch.backends.cpu.get_cpu_capability()
        )
    except (AttributeError, RuntimeError):
        return False


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401  (optional extra)
    except ImportError:
        return False
    return True


def probe_batch(size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Spheroid-like test inputs (dark disc on a lighter, noisy, uneven background)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for i in range(n):
        cx, cy = 0.5 + rng.uniform(-0.1, 0.1, 2)
        r = 0.15 + 0.05 * i / max(n - 1, 1)
        d = np.hypot(xx - cx, yy - cy)
        img = 0.65 - 0.5 * (d < r) * (1 - 0.5 * d / r) + 0.1 * (xx - 0.5)
        img = img + rng.normal(0, 0.03, img.shape)
        images.append(np.clip(img, 0, 1))
    arr = (np.stack(images)[:, None].astype(np.float32) - 0.5) / 0.5
    return torch.from_numpy(arr)


def build_candidates(
    module: torch.nn.Module,
    device: torch.device,
    *,
    requested: str = "auto",
    model_hash: str = "",
    input_size: int = 256,
    threads: int = 1,
    include_all: bool = False,
) -> tuple[Candidate, list[Candidate]]:
    """The fp32 reference and the faster options worth measuring here
    (``include_all``: every available option, for the benchmark)."""
    module = module.eval().to(device)
    reference = Candidate("fp32", lambda: _eager(module, device, None, False), "fp32 eager torch")
    if requested == "fp32":
        return reference, []
    fast: list[Candidate] = []
    if device.type == "cpu":
        if requested in ("auto", "bf16") and cpu_has_native_bf16():
            fast.append(
                Candidate(
                    "bf16",
                    lambda: _eager(
                        copy.deepcopy(module).to(memory_format=torch.channels_last),
                        device,
                        torch.bfloat16,
                        True,
                    ),
                    "bf16 autocast, channels-last (CPU bf16)",
                )
            )
            fast.append(
                Candidate(
                    "bf16-weights",
                    lambda: _bf16_weights(copy.deepcopy(module)),
                    "bf16 weights, channels-last (CPU bf16)",
                )
            )
        # ONNX export costs seconds: in auto mode it is tried only where the CPU
        # lacks native bf16 (which is faster there) or an export is already cached.
        onnx_worth_it = (
            include_all
            or requested == "onnx"
            or not fast
            or (bool(model_hash) and _onnx_path(model_hash).is_file())
        )
        if requested in ("auto", "onnx") and onnx_worth_it and onnxruntime_available():
            fast.append(
                Candidate(
                    "onnx",
                    lambda: _onnx_runner(module, model_hash, input_size, threads),
                    "ONNX Runtime fp32 (CPU)",
                )
            )
    elif device.type in ("cuda", "mps") and requested in ("auto", "fp16"):
        fast.append(
            Candidate(
                "fp16",
                lambda: _eager(module, device, torch.float16, False),
                f"fp16 autocast on {device}",
            )
        )
    if requested not in ("auto", "fp32") and not fast:
        log.warning(
            "Fast path %r is not available on this machine (device %s); using fp32.",
            requested,
            device,
        )
    return reference, fast


def _eager(
    module: torch.nn.Module, device: torch.device, dtype: torch.dtype | None, channels_last: bool
) -> Callable[[torch.Tensor], np.ndarray]:
    def run(x: torch.Tensor) -> np.ndarray:
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if dtype is None:
                y = module(x)
            else:
                with torch.autocast(device.type, dtype=dtype):
                    y = module(x)
        return y.float().reshape(-1).cpu().numpy()

    return run


def _bf16_weights(module: torch.nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
    module = module.to(torch.bfloat16).to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> np.ndarray:
        x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return module(x).float().reshape(-1).numpy()

    return run


def _onnx_runner(
    module: torch.nn.Module, model_hash: str, input_size: int, threads: int
) -> Callable[[torch.Tensor], np.ndarray] | None:
    import onnxruntime as ort  # optional extra; imported only when present

    path = _onnx_path(model_hash) if model_hash else None
    try:
        if path is not None and path.is_file():
            blob = path.read_bytes()
        else:
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    copy.deepcopy(module).cpu(),
                    torch.zeros(1, 1, input_size, input_size),
                    buf,
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                    dynamo=False,
                    opset_version=17,
                )
            blob = buf.getvalue()
            if path is not None:
                _write_atomic(path, blob)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any exporter/runtime failure just drops the option
        log.info("ONNX Runtime path unavailable (%s); not using it.", exc)
        return None

    def run(x: torch.Tensor) -> np.ndarray:
        out = session.run(None, {"x": x.detach().cpu().numpy().astype(np.float32, copy=False)})
        return np.asarray(out[0], dtype=np.float32).reshape(-1)

    return run


def measure(candidate: Candidate, x: torch.Tensor, repeats: int = 2) -> tuple[float, np.ndarray]:
    """(images per second, outputs) for one candidate on batch ``x``; first run is warm-up."""
    out = candidate.run(x)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        candidate.run(x)
        best = min(best, time.perf_counter() - t0)
    return x.shape[0] / best, out


def choose_fast_path(
    module: torch.nn.Module,
    device: torch.device,
    *,
    requested: str = "auto",
    model_hash: str = "",
    input_size: int = 256,
    threads: int = 1,
    use_cache: bool = True,
) -> FastPathChoice:
    """Measure, validate against fp32 and return the fastest option within MAX_DELTA."""
    reference, fast = build_candidates(
        module,
        device,
        requested=requested,
        model_hash=model_hash,
        input_size=input_size,
        threads=threads,
    )
    key = _cache_key(model_hash, device, requested, threads, input_size)
    cached = _cache_get(key) if (use_cache and model_hash) else None
    if cached and cached.get("chosen") == "fp32":
        fast = []
        if cached.get("rejected"):
            log.warning(
                "Using fp32 eager: on this machine the fast paths did not match fp32 within "
                "%s viability (%s).",
                MAX_DELTA,
                "; ".join(f"{k}: {v}" for k, v in cached["rejected"].items()),
            )
    elif cached and cached.get("chosen") in {c.name for c in fast}:
        fast = [c for c in fast if c.name == cached["chosen"]]
    else:
        cached = None
    x = probe_batch(input_size, n=4)
    choice = FastPathChoice(chosen=reference, reference=reference)
    speed, ref_out = measure(reference, x, repeats=0 if cached else 1)
    if not cached:
        choice.images_per_s["fp32"] = speed
    for cand in fast:
        try:
            speed, out = measure(cand, x, repeats=0 if cached else 2)
        except Exception as exc:  # noqa: BLE001 - an optional backend failing only drops it
            choice.rejected[cand.name] = f"failed: {exc}"
            log.info("Fast path %s failed (%s); not using it.", cand.description, exc)
            continue
        delta = float(np.max(np.abs(out - ref_out)))
        choice.max_delta[cand.name] = delta
        if not np.isfinite(delta) or delta > MAX_DELTA:
            choice.rejected[cand.name] = f"max |Δ viability| {delta:.4f} > {MAX_DELTA}"
            log.warning(
                "Fast path %s differs from fp32 by %.4f viability on the probe batch "
                "(limit %s); not using it.",
                cand.description,
                delta,
                MAX_DELTA,
            )
            continue
        if not cached:
            choice.images_per_s[cand.name] = speed
    valid = [c for c in fast if c.name not in choice.rejected]
    if cached:
        choice.images_per_s.update(cached.get("images_per_s", {}))
        choice.from_cache = True
    if valid:
        best = max(valid, key=lambda c: choice.images_per_s.get(c.name, 0.0))
        if choice.images_per_s.get(best.name, 0.0) > choice.images_per_s.get("fp32", 0.0):
            choice.chosen = best
    elif fast:
        log.warning(
            "No fast path matched fp32 within %s viability; falling back to fp32 eager.",
            MAX_DELTA,
        )
    if use_cache and model_hash and not cached:
        _cache_put(
            key,
            {
                "chosen": choice.chosen.name,
                "images_per_s": choice.images_per_s,
                "rejected": choice.rejected,
            },
        )
    elif cached and cached.get("chosen") != choice.chosen.name and model_hash:
        _cache_drop(key)
    log.info("Inference: %s", choice.summary())
    return choice


def _cache_key(
    model_hash: str, device: torch.device, requested: str, threads: int, size: int
) -> str:
    machine = "|".join(
        (
            platform.node(),
            platform.machine(),
            platform.processor(),
            torch.__version__,
            ",".join(sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "avx512f", "avx2"})),
        )
    )
    raw = f"{machine}|{model_hash}|{device}|{requested}|{threads}|{size}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _cache_file() -> Path:
    return user_cache_dir() / _CACHE_NAME


def _onnx_path(model_hash: str) -> Path:
    return user_cache_dir() / "onnx" / f"{model_hash[:16]}-{torch.__version__}.onnx"


def _cache_load() -> dict[str, Any]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _cache_get(key: str) -> dict[str, Any] | None:
    entry = _cache_load().get(key)
    return entry if isinstance(entry, dict) else None


def _cache_put(key: str, entry: dict[str, Any]) -> None:
    data = _cache_load()
    data[key] = entry
    _write_atomic(_cache_file(), json.dumps(data, indent=1).encode())


def _cache_drop(key: str) -> None:
    data = _cache_load()
    if data.pop(key, None) is not None:
        _write_atomic(_cache_file(), json.dumps(data, indent=1).encode())


def _write_atomic(path: Path, blob: bytes) -> None:
    """Best effort: a cache that cannot be written only costs time at the next start."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot write cache file %s: %s", path, exc)
