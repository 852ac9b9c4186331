"""Weights and images for the scoring benchmarks.

``trained_like_nvir`` gives NViR weights whose viabilities behave like a
trained model's: the BatchNorm statistics are measured on spheroid-like
images (so activations keep a trained network's scale through all 18
layers) and the output layer is rescaled so the viabilities centre on 1.0
and spread about 0.2 across images. On such weights bf16 rounding moves the
viability by a few hundredths, as it does on the paper's checkpoint layout;
on freshly initialised weights every image scores nearly the same and any
precision looks accurate.

``write_images`` renders spheroid images with the project's synthetic
renderer (1024², 8-bit PNG) so that decoding costs what it costs on real
acquisitions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from nvir_agent.model.fastpath import probe_batch
from nvir_agent.model.modelfile import add_trust, save_model
from nvir_agent.model.network import NViR, build_nvir
from nvir_agent.model.preprocess import PreprocessSpec

DEMO_MODEL = Path(__file__).resolve().parents[1] / "nvir_agent" / "assets" / "models" / "nvir-demo.safetensors"


def trained_like_nvir(
    seed: int = 7, spread: float = 0.2, calibration: torch.Tensor | None = None
) -> NViR:
    """NViR with BatchNorm statistics measured on ``calibration`` (N, 1, S, S)
    (default: 32 spheroid-like probe images at 256²) and viabilities centred on
    1.0 with standard deviation ``spread`` on those images."""
    torch.manual_seed(seed)
    net = build_nvir()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    if calibration is None:
        calibration = probe_batch(256, n=32, seed=seed + 100)
    n = calibration.shape[0]
    net.train()
    with torch.no_grad():
        for i in range(0, n, 8):
            net.encoder(calibration[i : i + 8])
    net.eval()
    with torch.no_grad():
        h = net(calibration).reshape(-1)
        mu, sd = h.mean(), h.std()
        last = net.regression_head[1]
        last.weight.mul_(spread / sd)
        last.bias.copy_((last.bias - mu) * spread / sd + 1.0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    return net


def write_trained_like_model(path: Path, seed: int = 7) -> Path:
    """A model file in the paper's layout and preprocessing (centre square, 256², 8-bit)."""
    return save_model(
        path,
        trained_like_nvir(seed),
        PreprocessSpec(),
        {"provenance": {"source": "benchmark: trained-like random weights"}},
    )


def write_images(folder: Path, n: int, *, size: int = 1024, distinct: int = 16) -> list[Path]:
    """``n`` 8-bit PNG files of ``size``² (``distinct`` renders, copied round-robin)."""
    from nvir_agent.synth.dataset import write_dataset

    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "rendered"
    if not (src / "labels.csv").is_file():
        write_dataset(src, distinct, seed=3, size=size, bits=8)
    rendered = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".png", ".tif", ".tiff"))
    out = []
    for i in range(n):
        target = folder / f"img{i:04d}{rendered[i % len(rendered)].suffix}"
        if not target.is_file():
            shutil.copyfile(rendered[i % len(rendered)], target)
        out.append(target)
    return out


def write_trust_model(folder: Path) -> Path:
    """The 256² network with random weights, a summary of 16 probe images (8 held out)
    and an interval calibration: a model that judges trust (``trust.safetensors``)."""
    from nvir_agent.model.scorer import Scorer
    from nvir_agent.model.typicality import fit_summary
    from nvir_agent.model.uncertainty import IntervalCalibration

    torch.manual_seed(0)
    plain = save_model(folder / "plain.safetensors", build_nvir().eval(), PreprocessSpec(), {})
    scorer = Scorer.from_path(plain, fast_path="fp32", use_cache=False, threads=1)
    feats = scorer.features(probe_batch(256, n=24, seed=5)).double().numpy()
    rows = np.tile([10.0, 8.0, 0.65, 0.6, -1.3, 0.005], (24, 1))
    summary = fit_summary(feats[:16], rows[:16], feats[16:], rows[16:], info={"images": 16})
    return add_trust(plain, folder / "trust.safetensors", summary,
                     IntervalCalibration(scale=1.6, widen_from=2.0))
