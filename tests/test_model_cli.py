"""model import / model info / score / bench through the command line."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from nvir_agent.cli.main import main
from nvir_agent.model import locate
from nvir_agent.model.modelfile import save_model
from nvir_agent.model.network import build_nvir
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.synth.render import Conditions, render_spheroid


def cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(autouse=True)
def no_demo_model(monkeypatch, tmp_path):
    monkeypatch.setattr(locate, "demo_model_path", lambda: tmp_path / "no-demo.safetensors")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    save_model(path, build_nvir(), PreprocessSpec(size=64), {"metrics": {"r2": 0.42}})
    return path


def test_model_import_then_info_describes_the_converted_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    sd = collections.OrderedDict(build_nvir().state_dict())
    ckpt = tmp_path / "paper.ckpt"
    torch.save({"state_dict": sd, "epoch": 12, "optimizer_states": []}, ckpt)
    out_model = tmp_path / "paper.safetensors"
    rc, out, err = cli(capsys, "model", "import", str(ckpt), "--out", str(out_model), "--fp16")
    assert rc == 0, err
    assert "imported 130 tensors" in out and "epoch 12" in out and f"wrote {out_model}" in out
    assert "optimizer_states" in out
    rc, out, _ = cli(capsys, "model", "info", str(out_model), "--json")
    info = json.loads(out)
    assert info["architecture"] == "nvir-resnet18-mlp"
    assert info["dtype"] == "float16"
    assert info["parameters"] == 11_189_857
    assert info["preprocessing"]["crop"] == "center-square"
    assert info["provenance"]["imported_from"] == {"epoch": 12}
    rc, out, _ = cli(capsys, "model", "info", str(out_model))
    assert "center-square crop, uint8 intensity, 256×256 INTER_LINEAR_EXACT" in out


def test_model_info_of_a_broken_file_is_a_clear_error_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"")
    rc, out, err = cli(capsys, "model", "info", str(bad))
    assert rc == 2
    assert f"nvir-agent: error: Model file {bad} is empty" in err
    assert "Traceback" not in err


def test_model_import_of_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    rc, _, err = cli(
        capsys,
        "model",
        "import",
        str(tmp_path / "no.ckpt"),
        "--out",
        str(tmp_path / "x.safetensors"),
    )
    assert rc == 2 and "does not exist" in err


def test_score_prints_path_and_viability_per_image(tiny_model, tmp_path, capsys):
    paths = []
    for i in range(2):
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), np.random.default_rng(i).integers(0, 255, (60, 80), dtype=np.uint8))
        paths.append(p)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"garbage")
    rc, out, err = cli(
        capsys, "score", *map(str, paths), str(broken), "--model", str(tiny_model), "--json"
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in [*paths, broken]]
    assert all(isinstance(r["viability"], float) for r in rows[:2])
    assert rows[2]["viability"] is None and "broken.png" in rows[2]["error"]
    assert rows[0]["model"].startswith("tiny.safetensors@")
    rc, out, _ = cli(capsys, "score", str(paths[0]), "--model", str(tiny_model))
    path, value = out.strip().split(", ")
    assert path == str(paths[0]) and float(value) == pytest.approx(rows[0]["viability"], abs=0.011)


def test_score_without_any_model_says_how_to_get_one(tmp_path, capsys):
    p = tmp_path / "img.png"
    cv2.imwrite(str(p), np.zeros((20, 20), dtype=np.uint8))
    rc, _, err = cli(capsys, "score", str(p))
    assert rc == 2
    assert "No model to score with" in err and "nvir-agent model import" in err


@pytest.mark.slow  # measures every inference option, ONNX export included
def test_bench_json_reports_throughput_preprocessing_and_memory(tiny_model, capsys):
    rc, out, err = cli(
        capsys, "bench", "--json", "--images", "2", "--rounds", "1", "--model", str(tiny_model)
    )
    assert rc == 0, err
    r = json.loads(out)
    assert r["fp32_batch8"] > 0
    assert set(r["fast"]) == {"1", "8", "32"} and all(v > 0 for v in r["fast"].values())
    assert r["max_delta"] <= 0.01
    assert any(k.startswith("2048² 16-bit") for k in r["preprocess_ms"])
    assert r["peak_rss_mb"] > 50
    rc, out, _ = cli(capsys, "bench", "--images", "1", "--rounds", "1", "--model", str(tiny_model))
    assert "fp32 eager, batch 8" in out and "peak RSS, scorer only" in out


def test_bench_rejects_zero_images(capsys):
    rc, _, err = cli(capsys, "bench", "--images", "0")
    assert rc == 2 and "--images must be at least 1" in err


def test_model_info_without_a_file_says_which_model_the_agent_uses(tiny_model, tmp_path, capsys):
    rc, out, _ = cli(capsys, "model", "info")
    assert rc == 0
    assert "scoring off" in out and "nvir-agent model import" in out
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[model]\npath = "{tiny_model}"\n')
    rc, out, _ = cli(capsys, "--config", str(cfg), "model", "info")
    assert rc == 0 and f"model {tiny_model}" in out and "metrics:       r2 0.42" in out


def test_score_with_a_spheroid_crop_model_segments_first(tmp_path, capsys):
    torch.manual_seed(0)
    model = save_model(
        tmp_path / "sph.safetensors", build_nvir(), PreprocessSpec(size=64, crop="spheroid")
    )
    good = tmp_path / "spheroid.png"
    cv2.imwrite(str(good), render_spheroid(0.9, 1, Conditions(width=320, height=240, bits=8)).image)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320), 160, dtype=np.uint8))
    rc, out, _ = cli(capsys, "score", str(good), str(blank), "--model", str(model), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rc == 0
    assert isinstance(rows[0]["viability"], float)
    assert rows[1]["viability"] is None and "no spheroid found" in rows[1]["error"]


def test_model_info_reads_only_the_header_and_never_imports_torch(tmp_path):
    """`model info` answers from the safetensors header and metadata: a subprocess
    that runs it has neither torch nor torchvision in sys.modules afterwards."""
    demo = locate.resources.files("nvir_agent") / "assets" / "models" / "nvir-demo.safetensors"
    code = (
        "import sys\n"
        "from nvir_agent.cli.main import main\n"
        f"rc = main(['model', 'info', {str(demo)!r}])\n"
        "print('HEAVY', [m for m in ('torch', 'torchvision') if m in sys.modules], rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True, cwd=tmp_path)
    assert "HEAVY [] 0" in out.stdout, out.stdout + out.stderr
    assert "11,189,857 parameters, float16" in out.stdout
    assert "training images summarised" in out.stdout and "90% by mc-dropout" in out.stdout
