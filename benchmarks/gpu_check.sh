#!/usr/bin/env bash
# The CUDA check, one short run on a machine with an NVIDIA GPU:
#   bash benchmarks/gpu_check.sh            (from the repository root; about a minute on an H200)
# Prints the GPU, then `nvir-agent bench` on CUDA for trained-like weights (where
# bf16 on a CPU fails the 0.01 check) and the demo weights at 256²: the fast path
# chosen among fp16 / bf16 / TF32, each checked against true fp32 (TF32 off), its
# max |Δ viability|, images/s at batch 1/8/32 and the batch size measured for it.
set -euo pipefail
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XDG_CACHE_HOME="${TMPDIR:-/tmp}/nvir-gpu-check-cache"   # measure afresh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY - <<'PY'
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
import torch
from scoring_fixtures import DEMO_MODEL, write_trained_like_model
from nvir_agent.model.bench import run_benchmark
from nvir_agent.model.modelfile import load_model
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.model.modelfile import save_model
from nvir_agent.model.scorer import Scorer

assert torch.cuda.is_available(), "no CUDA GPU visible to torch"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
tmp = Path(tempfile.mkdtemp())
models = {
    "trained-like": write_trained_like_model(tmp / "trained_like.safetensors"),
    "demo@256": save_model(tmp / "demo256.safetensors", load_model(DEMO_MODEL).module,
                           PreprocessSpec()),
}
for label, path in models.items():
    t0 = time.perf_counter()
    scorer = Scorer.from_path(path, device="cuda", use_cache=False)
    print(f"\n== {label}: chose {scorer.choice.summary()}, batch {scorer.batch_size}, "
          f"in {time.perf_counter() - t0:.1f} s; rejected {scorer.choice.rejected}")
    print("   measured images/s:", {k: round(v, 1) for k, v in scorer.choice.images_per_s.items()})
    result = run_benchmark(path, images=256, device="cuda", rounds=3)
    print(result.table())
    print(json.dumps(result.as_dict()))
PY
