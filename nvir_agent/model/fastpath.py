"""Pick the fastest correct way to run NViR on this machine.

At load time the scorer measures the inference options this machine has on
a probe batch of 16 spheroid-like images and validates each against fp32
eager torch (the reference code's way): an option whose viability differs by
more than ``MAX_DELTA`` anywhere on the probe is rejected, with a warning —
a reduced-precision one already at a third of that, because the probe's
largest difference underestimates the largest over many real images.

Options come in two tiers. Reduced-precision ones (bf16 autocast, bf16
weights, mixed bf16/fp32, OpenVINO bf16 on CPUs with native bf16; fp16, bf16
and TF32 on CUDA) are measured first. When none of them passes the check —
as on trained weights, where bf16 rounding moves viabilities by a few
hundredths — the fp32 options are measured: fp32 channels-last and ONNX
Runtime. ``torch.compile`` and OpenVINO (fp32, bf16) are measured by
``bench --all`` and used when asked for by name (see ON_REQUEST).

For a model that judges trust the options run its encoder(s) only and give
features; ``readout`` (the heads, fp32) turns them into viabilities for the
check, and ``distance`` (the embedding distance of the training summary) must
agree within ``MAX_DISTANCE_DELTA`` (relative) too.

The choice (and, on a GPU, the batch size) is cached per machine, model and
thread count in the user cache folder, so later starts only re-validate it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nvir_agent.model import runtimes
from nvir_agent.paths import user_cache_dir

log = logging.getLogger(__name__)

MAX_DELTA = 0.01
# The probe's largest difference underestimates the largest over many real images:
# on trained-like weights, bf16 inner blocks differed by 0.0048 on the 16 probe
# images and by 0.0104 on 64 rendered spheroids. Reduced-precision options must
# therefore stay within MAX_DELTA / REDUCED_MARGIN on the probe.
REDUCED_MARGIN = 3.0
# A path that gives features must also keep each image's embedding distance (in
# held-out-median units) within 2 % of fp32's (0.02 absolute below 1): far less than
# the spread of distances between images like the training ones.
MAX_DISTANCE_DELTA = 0.02
PROBE_IMAGES = 16
# Every option by name ([model] fast_path); "auto" measures and chooses.
FAST_PATHS = (
    "auto",
    "fp32",
    "fp32-cl",
    "onnx",
    "openvino",
    "compile",
    "bf16",
    "bf16-weights",
    "bf16-encoder",
    "bf16-inner",
    "openvino-bf16",
    "fp16",
    "tf32",
)
# Measured only when asked for by name or by `bench --all`: torch.compile compiles
# for tens of seconds at every start; OpenVINO was not faster than ONNX Runtime
# in fp32 nor than torch in bf16 here (README) and starts a telemetry thread on import.
ON_REQUEST = ("compile", "openvino", "openvino-bf16")
GPU_BATCHES = (8, 16, 32, 64, 128)
# On a CPU the best batch depends on the network and the path: the paper-size network on
# ONNX Runtime ran 10-25 % faster in batches of 4 than of 8 (its activations stay in the
# caches), the small demo network on bf16 fastest in the largest. Measured at load, kept.
CPU_BATCHES = (2, 4, 8)
_CACHE_NAME = "fastpath.json"


class Candidate:
    """One way to run the network: ``run(x)`` maps an NCHW float32 batch to viabilities.

    ``make`` builds the runner on first use (copies of the network, an ONNX
    session), so options that are never measured cost nothing. ``exact``:
    computes in fp32 (tried when no reduced-precision option passes).
    """

    def __init__(
        self,
        name: str,
        make: Callable[[], Callable[[torch.Tensor], np.ndarray] | None],
        description: str,
        *,
        exact: bool = False,
    ) -> None:
        self.name = name
        self.description = description
        self.exact = exact
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
    max_distance_delta: dict[str, float] = field(default_factory=dict)  # relative
    rejected: dict[str, str] = field(default_factory=dict)
    from_cache: bool = False
    batch_size: int | None = None  # measured; None: the configured one
    batch_images_per_s: dict[int, float] = field(default_factory=dict)  # when measured

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
    return runtimes.available("onnxruntime") and runtimes.available("onnx")


def openvino_available() -> bool:
    return runtimes.available("openvino") and runtimes.available("onnx")


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
    """The fp32 reference and the other options worth measuring here (``requested``:
    only that one; ``include_all``: every available option, for the benchmark).

    Nothing is built or moved to the device until a candidate first runs."""
    module = module.eval()
    reference = Candidate(
        "fp32", lambda: runtimes.make_eager(module, device), f"fp32 eager torch ({device.type})",
        exact=True,
    )
    if requested == "fp32":
        return reference, []
    options = (
        _cpu_options(module, model_hash, input_size, threads)
        if device.type == "cpu"
        else _gpu_options(module, device)
    )
    if requested == "auto":
        fast = [c for c in options if include_all or c.name not in ON_REQUEST]
    else:
        fast = [c for c in options if c.name == requested]
        if not fast:
            log.warning(
                "Fast path %r is not available on this machine (device %s); using fp32.",
                requested,
                device,
            )
    return reference, fast


def _cpu_options(
    module: torch.nn.Module, model_hash: str, input_size: int, threads: int
) -> list[Candidate]:
    cpu = torch.device("cpu")
    onnx_file = _onnx_path(model_hash) if model_hash else None
    options = []
    if cpu_has_native_bf16():
        options += [
            Candidate(
                "bf16",
                lambda: runtimes.make_eager(module, cpu, torch.bfloat16, channels_last=True),
                "bf16 autocast, channels-last (CPU bf16)",
            ),
            Candidate(
                "bf16-weights",
                lambda: runtimes.make_bf16_weights(module),
                "bf16 weights, channels-last (CPU bf16)",
            ),
            Candidate(
                "bf16-encoder",
                lambda: runtimes.make_mixed(module, runtimes.ENCODER_PARTS),
                "bf16 encoder, fp32 head (CPU bf16)",
            ),
            Candidate(
                "bf16-inner",
                lambda: runtimes.make_mixed(module, ("layer1", "layer2", "layer3")),
                "bf16 inner blocks, fp32 stem, last block and head (CPU bf16)",
            ),
        ]
        if openvino_available():
            options.append(
                Candidate(
                    "openvino-bf16",
                    lambda: runtimes.make_openvino(
                        module, input_size, threads, onnx_file, precision="bf16"
                    ),
                    "OpenVINO bf16 (CPU bf16)",
                )
            )
    options.append(
        Candidate(
            "fp32-cl",
            lambda: runtimes.make_eager(module, cpu, channels_last=True),
            "fp32 eager torch, channels-last",
            exact=True,
        )
    )
    if onnxruntime_available():
        options.append(
            Candidate(
                "onnx",
                lambda: runtimes.make_onnxruntime(module, input_size, threads, onnx_file),
                "ONNX Runtime fp32 (CPU)",
                exact=True,
            )
        )
    if openvino_available():
        options.append(
            Candidate(
                "openvino",
                lambda: runtimes.make_openvino(module, input_size, threads, onnx_file),
                "OpenVINO fp32 (CPU)",
                exact=True,
            )
        )
    options.append(
        Candidate(
            "compile",
            lambda: runtimes.make_compiled(module),
            "torch.compile fp32 with freezing (oneDNN fusion)",
            exact=True,
        )
    )
    return options


def _gpu_options(module: torch.nn.Module, device: torch.device) -> list[Candidate]:
    options = [
        Candidate(
            "fp16",
            lambda: runtimes.make_eager(
                module, device, torch.float16, channels_last=device.type == "cuda"
            ),
            f"fp16 autocast, channels-last on {device}",
        )
    ]
    if device.type == "cuda":
        if gpu_has_bf16():
            options.append(
                Candidate(
                    "bf16",
                    lambda: runtimes.make_eager(module, device, torch.bfloat16, channels_last=True),
                    f"bf16 autocast, channels-last on {device}",
                )
            )
        options.append(
            Candidate(
                "tf32",
                lambda: runtimes.make_eager(module, device, allow_tf32=True, channels_last=True),
                f"TF32 convolutions, channels-last on {device}",
            )
        )
    return options


def gpu_has_bf16() -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported())
    except (AssertionError, RuntimeError):
        return False


def measure(candidate: Candidate, x: torch.Tensor, repeats: int = 2) -> tuple[float, np.ndarray]:
    """(images per second, outputs) for one candidate on batch ``x``; first run is warm-up."""
    out = candidate.run(x)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        candidate.run(x)
        best = min(best, time.perf_counter() - t0)
    return x.shape[0] / best, out


def measure_in_batches(candidate: Candidate, x: torch.Tensor, batch: int,
                       repeats: int = 2) -> float:
    """Images per second of ``candidate`` running all of ``x`` in batches of ``batch``
    (the best of ``repeats`` after a warm-up): every size on the same images."""
    best = float("inf")
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        for start in range(0, x.shape[0], batch):
            candidate.run(x[start:start + batch])
        if i:
            best = min(best, time.perf_counter() - t0)
    return x.shape[0] / best


def choose_fast_path(
    module: torch.nn.Module,
    device: torch.device,
    *,
    requested: str = "auto",
    model_hash: str = "",
    input_size: int = 256,
    threads: int = 1,
    use_cache: bool = True,
    batch_sizes: Sequence[int] = (),
    readout: Callable[[np.ndarray], np.ndarray] | None = None,
    distance: Callable[[np.ndarray], np.ndarray] | None = None,
) -> FastPathChoice:
    """Measure, validate against fp32 and return the fastest option within MAX_DELTA.

    Reduced-precision options are measured first; the fp32 ones only when none
    of those passes. ``batch_sizes``: also measure the chosen option at these
    batch sizes and keep the best (see :func:`pick_batch_size`). When
    ``module`` gives features, ``readout`` maps them to viabilities and
    ``distance`` (optional) to embedding distances, both checked."""
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
    x = probe_batch(input_size, n=PROBE_IMAGES)
    choice = FastPathChoice(chosen=reference, reference=reference)
    speed, ref_out = measure(reference, x, repeats=0 if cached else 1)
    if not cached:
        choice.images_per_s["fp32"] = speed
    repeats = 0 if cached else 2
    check = _Check(ref_out, readout, distance)
    valid = _validate([c for c in fast if not c.exact], x, check, choice, repeats)
    if not valid:
        valid = _validate([c for c in fast if c.exact], x, check, choice, repeats)
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
    batch_measured = False
    if batch_sizes:
        remembered = cached.get("batch_size") if cached else None
        if isinstance(remembered, int) and remembered in batch_sizes:
            choice.batch_size = remembered
        else:
            batch_measured = True
            probe = probe_batch(input_size, n=max(batch_sizes), seed=2)
            choice.batch_images_per_s = {
                b: measure_in_batches(choice.chosen, probe, b) for b in batch_sizes}
            # a GPU: the smallest batch that keeps it busy; a CPU: the fastest
            choice.batch_size = pick_batch_size(
                choice.batch_images_per_s, within=0.95 if device.type == "cuda" else 1.0)
    if use_cache and model_hash and not cached:
        _cache_put(
            key,
            {
                "chosen": choice.chosen.name,
                "images_per_s": choice.images_per_s,
                "rejected": choice.rejected,
                "batch_size": choice.batch_size,
            },
        )
    elif cached and batch_measured and cached.get("chosen") == choice.chosen.name:
        _cache_put(key, {**cached, "batch_size": choice.batch_size})  # a cache of an older version
    elif cached and cached.get("chosen") != choice.chosen.name and model_hash:
        _cache_drop(key)
    log.info("Inference: %s", choice.summary())
    return choice


class _Check:
    """What a candidate's outputs are compared on: viabilities (through ``readout``
    when the outputs are features) and, given ``distance``, embedding distances."""

    def __init__(self, ref_out: np.ndarray, readout: Callable[[np.ndarray], np.ndarray] | None,
                 distance: Callable[[np.ndarray], np.ndarray] | None) -> None:
        self.readout = readout or (lambda out: out)
        self.distance = distance
        self.ref = self.readout(ref_out)
        self.ref_distance = distance(ref_out) if distance is not None else None

    def viability_delta(self, out: np.ndarray) -> float:
        return float(np.max(np.abs(self.readout(out) - self.ref)))

    def distance_delta(self, out: np.ndarray) -> float | None:
        if self.distance is None or self.ref_distance is None:
            return None
        d = np.asarray(self.distance(out), np.float64)
        return float(np.max(np.abs(d - self.ref_distance) / np.maximum(1.0, self.ref_distance)))


def _validate(
    candidates: Iterable[Candidate],
    x: torch.Tensor,
    check: _Check,
    choice: FastPathChoice,
    repeats: int,
) -> list[Candidate]:
    """Measure each candidate; record speed, max |Δ| or why it was rejected in ``choice``;
    return those within MAX_DELTA of fp32 (and MAX_DISTANCE_DELTA, when checked)."""
    valid = []
    for cand in candidates:
        try:
            speed, out = measure(cand, x, repeats=repeats)
            delta = check.viability_delta(out)
            dist_delta = check.distance_delta(out)
        except Exception as exc:  # noqa: BLE001 - an optional backend failing only drops it
            choice.rejected[cand.name] = f"failed: {exc}"
            log.info("Fast path %s failed (%s); not using it.", cand.description, exc)
            continue
        choice.max_delta[cand.name] = delta
        limit = MAX_DELTA if cand.exact else round(MAX_DELTA / REDUCED_MARGIN, 4)
        if not np.isfinite(delta) or delta > limit:
            choice.rejected[cand.name] = f"max |Δ viability| {delta:.4f} > {limit}"
            log.warning(
                "Fast path %s differs from fp32 by %.4f viability on the probe batch "
                "(limit %s); not using it.",
                cand.description,
                delta,
                limit,
            )
            continue
        if dist_delta is not None:
            choice.max_distance_delta[cand.name] = dist_delta
            if not np.isfinite(dist_delta) or dist_delta > MAX_DISTANCE_DELTA:
                choice.rejected[cand.name] = (
                    f"max relative |Δ distance| {dist_delta:.4f} > {MAX_DISTANCE_DELTA}")
                log.warning(
                    "Fast path %s moves the distance from the training images by %.1f %% "
                    "on the probe batch (limit %.0f %%); not using it.",
                    cand.description, 100 * dist_delta, 100 * MAX_DISTANCE_DELTA)
                continue
        if repeats:
            choice.images_per_s[cand.name] = speed
        valid.append(cand)
    return valid


def pick_batch_size(images_per_s: dict[int, float], within: float = 0.95) -> int:
    """The smallest batch size whose throughput is within ``within`` of the best:
    larger batches cost latency and memory for nothing once the device is busy."""
    best = max(images_per_s.values())
    return min(b for b, v in images_per_s.items() if v >= within * best)


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
    runtimes.write_atomic(_cache_file(), json.dumps(data, indent=1).encode())


def _cache_drop(key: str) -> None:
    data = _cache_load()
    if data.pop(key, None) is not None:
        runtimes.write_atomic(_cache_file(), json.dumps(data, indent=1).encode())
