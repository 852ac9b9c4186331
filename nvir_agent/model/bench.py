"""`nvir-agent bench`: how fast this machine scores and preprocesses.

Measures images per second for fp32 eager torch at batch 8 (the reference
code's way) and for the fast path chosen on this machine at batch 1, 8 and
32, every other available option at batch 8, the largest viability
difference between the fast path and fp32 on the benchmark images,
preprocessing time per image (1024² 8-bit, 2048² 16-bit) and peak memory.

For a model that judges trust (a training summary or an interval calibration)
the options run its encoder(s) and the viability is read by the heads in
fp32, as the agent scores it; the whole assessment (viability, typicality
and the MC-dropout interval) is timed at batch 8 too.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nvir_agent.model.fastpath import Candidate, build_candidates, probe_batch
from nvir_agent.model.modelfile import LoadedModel, load_model
from nvir_agent.model.network import build_nvir
from nvir_agent.model.preprocess import PreprocessSpec, preprocess
from nvir_agent.model.scorer import Scorer

log = logging.getLogger(__name__)

FAST_BATCHES = (1, 8, 32)


@dataclass
class BenchResult:
    model: str
    device: str
    threads: int
    images: int
    fast_path: str
    fp32_batch8: float
    fast: dict[str, float]
    options_batch8: dict[str, float]
    speedup: float
    max_delta: float
    preprocess_ms: dict[str, float]
    peak_rss_mb: float | None
    peak_rss_scoring_mb: float | None = None
    choose_s: float | None = None
    load_avg: list[float] | None = None
    options_max_delta: dict[str, float] = field(default_factory=dict)
    assess_batch8: float | None = None  # images/s with typicality and interval (trust models)
    max_distance_delta: float | None = None  # relative, fast path vs fp32 (trust models)
    notes: list[str] = field(default_factory=list)
    batch_size: int | None = None  # the batch the scorer measured for its path and uses

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("model", self.model),
            ("device / threads", f"{self.device} / {self.threads}"),
            ("fast path", self.fast_path),
            ("measuring and choosing it", f"{self.choose_s:.1f} s" if self.choose_s else "n/a"),
            ("batch size measured for it", str(self.batch_size) if self.batch_size else "n/a"),
            ("fp32 eager, batch 8", f"{self.fp32_batch8:.1f} images/s"),
        ]
        rows += [(f"fast path, batch {b}", f"{v:.1f} images/s") for b, v in self.fast.items()]
        rows.append(("speed-up at batch 8", f"{self.speedup:.2f}×"))
        if self.assess_batch8:
            rows.append(("with typicality and interval, batch 8",
                         f"{self.assess_batch8:.1f} images/s"))
        rows.append(("max |Δ viability| vs fp32", f"{self.max_delta:.4f}"))
        if self.max_distance_delta is not None:
            rows.append(("max relative |Δ distance| vs fp32", f"{self.max_distance_delta:.4f}"))
        rows += [
            (
                f"option {k}, batch 8",
                f"{v:.1f} images/s, max |Δ| {self.options_max_delta.get(k, float('nan')):.4f}",
            )
            for k, v in self.options_batch8.items()
            if k not in ("fp32", self.fast_path)
        ]
        rows += [(f"preprocess {k}", f"{v:.2f} ms/image") for k, v in self.preprocess_ms.items()]
        if self.peak_rss_scoring_mb:
            rows.append(("peak RSS, scorer only", f"{self.peak_rss_scoring_mb:.0f} MB"))
        whole = f"{self.peak_rss_mb:.0f} MB" if self.peak_rss_mb else "n/a"
        rows.append(("peak RSS, whole benchmark", whole))
        if self.load_avg:
            rows.append(("load average (1 min)", f"{self.load_avg[0]:.2f}"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MB (None where unknown)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def images_per_s(candidate: Candidate, x: torch.Tensor, batch: int, n_images: int) -> float:
    """Throughput over ``n_images`` (at least one batch) after one warm-up batch."""
    candidate.run(x[:batch])
    n_batches = max(1, -(-n_images // batch))
    done = 0
    t0 = time.perf_counter()
    for i in range(n_batches):
        start = (i * batch) % max(1, x.shape[0] - batch + 1)
        chunk = x[start : start + batch]
        candidate.run(chunk)
        done += chunk.shape[0]
    return done / (time.perf_counter() - t0)


def preprocess_ms(spec: PreprocessSpec, repeats: int = 10) -> dict[str, float]:
    """Best time per image for a 1024² 8-bit and a 2048² 12-in-16-bit frame."""
    rng = np.random.default_rng(0)
    cases = {
        "1024² 8-bit": (rng.integers(0, 256, (1024, 1024), dtype=np.uint8), 8),
        "2048² 16-bit": (rng.integers(0, 4096, (2048, 2048), dtype=np.uint16), 12),
    }
    label = spec.intensity if spec.crop == "center-square" else f"{spec.crop}, {spec.intensity}"
    out = {}
    for name, (img, depth) in cases.items():
        side = img.shape[0]
        yy, xx = np.ogrid[:side, :side]
        mask = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (0.15 * side) ** 2
        preprocess(img, spec, bit_depth=depth, mask=mask)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            preprocess(img, spec, bit_depth=depth, mask=mask)
            best = min(best, time.perf_counter() - t0)
        out[f"{name} ({label})"] = best * 1000
    return out


def run_benchmark(
    model_path: str | os.PathLike[str] | None = None,
    *,
    images: int = 32,
    threads: int = 0,
    device: str = "auto",
    fast_path: str = "auto",
    rounds: int = 3,
    include_all: bool = False,
) -> BenchResult:
    """Measure; a missing ``model_path`` benchmarks random weights (same speed, same shapes).

    Each throughput is the best of ``rounds`` rounds, the options taking turns
    within a round, so that other work on the machine skews them alike.
    """
    notes = []
    if model_path is not None:
        loaded = load_model(Path(model_path))
    else:
        loaded = LoadedModel(
            module=build_nvir().eval(), spec=PreprocessSpec(), metadata={}, path=Path("random")
        )
        notes.append("no model file given: random weights at 256×256 (speed is the same)")
    t0 = time.perf_counter()
    scorer = Scorer(loaded, device=device, threads=threads, fast_path=fast_path, use_cache=False)
    choose_s = time.perf_counter() - t0
    size = loaded.spec.size
    n = max(1, images)
    chosen = scorer.choice.chosen
    batches = sorted({*FAST_BATCHES, scorer.batch_size})
    x = probe_batch(size, n=max(n, max(batches)), seed=1)
    fast = {str(b): images_per_s(chosen, x, b, n) for b in batches}
    scoring_rss = peak_rss_mb()
    reference, options = build_candidates(
        scorer.runtime_module,
        scorer.device,
        requested="auto" if fast_path == "auto" else fast_path,
        model_hash=scorer.runtime_key,
        input_size=size,
        threads=scorer.threads,
        include_all=include_all,
    )
    others = [c for c in options if c.name != chosen.name]
    per_option = {"fp32": 0.0, **{c.name: 0.0 for c in others}}
    for _ in range(max(1, rounds)):
        per_option["fp32"] = max(per_option["fp32"], images_per_s(reference, x, 8, n))
        for b in batches:
            fast[str(b)] = max(fast[str(b)], images_per_s(chosen, x, b, n))
        for cand in others:
            if cand.name not in per_option:
                continue
            try:
                per_option[cand.name] = max(per_option[cand.name], images_per_s(cand, x, 8, n))
            except Exception as exc:  # noqa: BLE001 - an optional backend failing is reported
                notes.append(f"option {cand.name} failed: {exc}")
                per_option.pop(cand.name)
    per_option[chosen.name] = fast["8"]
    fp32_8 = per_option["fp32"]
    assess = None
    if scorer.judges_trust:
        assess = max(assess_per_s(scorer, x, n) for _ in range(max(1, rounds)))

    def viabilities(cand: Candidate) -> np.ndarray:
        out = np.concatenate([cand.run(x[i : i + 8]) for i in range(0, n, 8)])
        return scorer.heads.viability(out) if scorer.judges_trust else out

    ref_out = viabilities(reference)
    fast_out = viabilities(chosen)
    distance_delta = None
    summary = scorer.model.summary
    if summary is not None:
        ref_d, fast_d = (summary.embedding_distances(
            np.concatenate([c.run(x[i : i + 8]) for i in range(0, n, 8)]))
            for c in (reference, chosen))
        distance_delta = float(np.max(np.abs(fast_d - ref_d) / np.maximum(1.0, ref_d
                                                                          / summary.embedding_scale)
                                      / summary.embedding_scale))
    deltas = {}
    for cand in others:
        if cand.name in per_option:
            deltas[cand.name] = float(np.max(np.abs(ref_out - viabilities(cand))))
    for name, reason in scorer.choice.rejected.items():
        notes.append(f"{name} rejected at load time: {reason}")
    return BenchResult(
        model=loaded.name,
        device=str(scorer.device),
        threads=scorer.threads,
        images=n,
        fast_path=chosen.name,
        fp32_batch8=fp32_8,
        fast=fast,
        options_batch8=per_option,
        speedup=fast["8"] / fp32_8,
        max_delta=float(np.max(np.abs(ref_out - fast_out))),
        preprocess_ms={
            **preprocess_ms(PreprocessSpec(size=size)),
            **preprocess_ms(PreprocessSpec(size=size, intensity="bitdepth")),
            **preprocess_ms(loaded.spec),
        },
        peak_rss_mb=peak_rss_mb(),
        peak_rss_scoring_mb=scoring_rss,
        choose_s=choose_s,
        load_avg=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        notes=notes,
        options_max_delta=deltas,
        assess_batch8=assess,
        max_distance_delta=distance_delta,
        batch_size=scorer.batch_size,
    )


def assess_per_s(scorer: Scorer, x: torch.Tensor, n_images: int) -> float:
    """Images/s of :meth:`Scorer.assess_tensors` at batch 8 (after one warm-up batch)."""
    scorer.assess_tensors(x[:8])
    n_batches = max(1, -(-n_images // 8))
    done = 0
    t0 = time.perf_counter()
    for i in range(n_batches):
        start = (i * 8) % max(1, x.shape[0] - 8 + 1)
        chunk = x[start : start + 8]
        scorer.assess_tensors(chunk)
        done += chunk.shape[0]
    return done / (time.perf_counter() - t0)
