"""Does int8 keep fp32's accuracy? ONNX Runtime static quantisation of the
paper-size network with trained-like weights, against fp32.

    .venv/bin/python benchmarks/int8_check.py [--calibration 48] [--test 96]

Quantises the ONNX export (``nvir_agent.model.runtimes.onnx_blob``) with
``onnxruntime.quantization.quantize_static`` — per-channel int8 weights,
activations calibrated (min/max) on rendered spheroids preprocessed the
paper's way — in three common formats, then prints images/s at batch 8 (2
threads, best of 3) and the largest and mean |Δ viability| against fp32 eager
torch on other renders. The agent accepts a path only within 0.01.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scoring_fixtures import trained_like_nvir  # noqa: E402

from nvir_agent.model.preprocess import PreprocessSpec, preprocess  # noqa: E402
from nvir_agent.model.runtimes import onnx_blob  # noqa: E402
from nvir_agent.synth.render import Conditions, render_spheroid  # noqa: E402

FORMATS = {
    "int8 QDQ, per-channel (s8 activations)": dict(
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8),
    "int8 QOperator, per-channel (u8 activations)": dict(
        quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8),
    "int8 QDQ, per-channel, reduced range (u8 activations)": dict(
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, reduce_range=True),
}


def renders(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spec = PreprocessSpec()
    return np.stack([
        preprocess(render_spheroid(float(rng.uniform(0.05, 1.2)), seed=seed + i,
                                   conditions=Conditions(width=512, height=512)).image, spec)
        for i in range(n)])


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def measure(sess: ort.InferenceSession, images: np.ndarray) -> tuple[np.ndarray, float]:
    out = np.concatenate([sess.run(None, {"x": images[i:i + 8]})[0].reshape(-1)
                          for i in range(0, len(images), 8)])
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for i in range(0, 64, 8):
            sess.run(None, {"x": images[i % len(images):i % len(images) + 8]})
        best = min(best, time.perf_counter() - t)
    return out, 64 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=int, default=48)
    ap.add_argument("--test", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    net = trained_like_nvir().eval()
    calib, test = renders(args.calibration, 10), renders(args.test, 5000)
    with torch.no_grad():
        ref = net(torch.from_numpy(test)).numpy().reshape(-1)
    tmp = Path(tempfile.mkdtemp())
    fp32 = tmp / "fp32.onnx"
    fp32.write_bytes(onnx_blob(net, 256, None))
    pre = tmp / "pre.onnx"
    quant_pre_process(str(fp32), str(pre))

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": calib[i:i + 8]} for i in range(0, len(calib), 8)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    print(f"viability sd over the test renders {ref.std():.2f}; {args.calibration} calibration "
          f"and {args.test} test renders; {args.threads} threads")
    out, ips = measure(session(fp32, args.threads), test)
    print(f"{'ONNX Runtime fp32':55s} {ips:6.1f} images/s  max |Δ| {np.abs(out - ref).max():.4f}")
    for name, kw in FORMATS.items():
        path = tmp / f"q{len(name)}.onnx"
        quantize_static(str(pre), str(path), Calibration(), per_channel=True,
                        weight_type=QuantType.QInt8, **kw)
        out, ips = measure(session(path, args.threads), test)
        d = np.abs(out - ref)
        print(f"{name:55s} {ips:6.1f} images/s  max |Δ| {d.max():.4f}  mean |Δ| {d.mean():.4f}",
              flush=True)


if __name__ == "__main__":
    main()
