"""`nvir-agent train` stores the trust data by default, and `train --ensemble N`:
one file holding N networks whose first is the single network of the same seed,
calibrated intervals from the members' spread, scoring through the fast paths,
model info, and the refusals (resume, an ensemble to fine-tune with another N)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nvir_agent.cli.main import main
from nvir_agent.errors import ConfigError
from nvir_agent.model.fastpath import probe_batch
from nvir_agent.model.modelfile import load_model
from nvir_agent.model.network import NViREnsemble, members
from nvir_agent.model.scorer import Scorer
from nvir_agent.model.uncertainty import ENSEMBLE, MC_DROPOUT
from nvir_agent.synth.render import Conditions, render_spheroid
from nvir_agent.training.ensemble import train_model
from nvir_agent.training.train import TrainOptions

N_IMAGES = 48  # a random half held out: 24 labelled validation images (≥ 20) calibrate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """48 rendered 128 px spheroids with viability labels on 6 plates."""
    root = tmp_path_factory.mktemp("ens-data")
    rows = []
    for i in range(N_IMAGES):
        plate = f"P{i // 8 + 1}"
        v = 0.2 + 0.8 * ((i * 37) % N_IMAGES) / N_IMAGES
        r = render_spheroid(v, 900 + i, Conditions(width=128, height=128))
        name = f"{plate}/w{i:02d}.png"
        (root / plate).mkdir(exist_ok=True)
        cv2.imwrite(str(root / name), r.image)
        rows.append({"image": name, "plate": plate, "day": 1, "site": "lab",
                     "viability": round(v, 4)})
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


TINY = ["--epochs", "1", "--batch-size", "8", "--size", "32", "--init", "none",
        "--split", "random", "--val-fraction", "0.5", "--precision", "fp32", "--seed", "5"]


def train_cli(dataset: Path, out: Path, *extra: str) -> None:
    rc = main(["train", "--labels", str(dataset / "labels.csv"), "--out", str(out),
               "--cache-dir", str(out.parent / "cache"), *TINY, *extra])
    assert rc == 0 and out.is_file()


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "one.safetensors"
    train_cli(dataset, out)
    return out


@pytest.fixture(scope="module")
def ensemble(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ens") / "two.safetensors"
    train_cli(dataset, out, "--ensemble", "2")
    return out


def test_train_with_default_options_stores_the_summary_and_the_interval_calibration(
        single, capsys):
    loaded = load_model(single)
    assert loaded.summary is not None and loaded.summary.info["held_out_images"] == 24
    cal = loaded.intervals
    assert cal is not None and cal.method == MC_DROPOUT and cal.info["calibrated_on"] == 24
    assert cal.scale > 0 and np.isfinite(cal.widen_from)
    capsys.readouterr()
    assert main(["model", "info", str(single)]) == 0
    out = capsys.readouterr().out
    assert "typicality:    24 training images summarised, calibrated on 24 held-out" in out
    assert "intervals:     90% by mc-dropout (32 passes), calibrated on 24 held-out" in out
    assert "ensemble" not in out.split("provenance:")[0]


def test_an_ensemble_is_one_file_whose_first_network_is_the_single_network_of_its_seed(
        single, ensemble):
    one, two = load_model(single), load_model(ensemble)
    assert isinstance(two.module, NViREnsemble) and two.members == 2
    assert two.metadata["ensemble"]["seeds"] == [5, 6]
    first = members(two.module)[0].state_dict()
    for key, value in one.module.state_dict().items():
        assert torch.allclose(value.float(), first[key].float(), atol=1e-6), key
    second = members(two.module)[1].state_dict()
    assert not torch.equal(first["regression_head.1.weight"], second["regression_head.1.weight"])
    runs = two.metadata["metrics"]["members"]
    assert [r["seed"] for r in runs] == [5, 6]
    assert runs[0]["validation"]["mae"] == one.metadata["metrics"]["validation"]["mae"]
    assert two.metadata["metrics"]["validation"]["n"] == 24
    assert two.summary is not None and two.summary.mean.shape == (2 * 512,)
    assert two.intervals.method == ENSEMBLE and two.intervals.info["calibrated_on"] == 24


def test_model_info_says_ensemble_of_n(ensemble, capsys):
    capsys.readouterr()
    assert main(["model", "info", str(ensemble)]) == 0
    out = capsys.readouterr().out
    assert "ensemble of 2 (seeds 5, 6), 22,379,714 parameters" in out
    assert "90% by ensemble spread with MC dropout (32 passes)" in out
    assert "network 2 (seed 6) 1 epochs" in out


@pytest.mark.slow
def test_an_ensemble_scores_the_mean_of_its_networks_on_every_fast_path(ensemble,
                                                                         fp32_measured_slowest):
    x = probe_batch(32, n=5, seed=4)
    loaded = load_model(ensemble)
    with torch.inference_mode():
        each = torch.stack([m(x).reshape(-1) for m in members(loaded.module)])
    reference = Scorer(loaded, fast_path="fp32", use_cache=False, threads=1)
    ref = reference.assess_tensors(x.numpy())
    assert np.allclose([a.viability for a in ref], each.mean(0).numpy(), atol=1e-5)
    assert all(a.low <= a.viability <= a.high and a.low < a.high and a.typicality is not None
               for a in ref)
    for path in ("fp32-cl", "onnx", "bf16-inner"):
        s = Scorer(load_model(ensemble), fast_path=path, use_cache=False, threads=1)
        if path not in s.choice.max_delta:  # not on this machine (no ONNX Runtime, CPU bf16)
            continue
        assert s.fast_path == path
        got = s.assess_tensors(x.numpy())
        tol = 1e-4 if path != "bf16-inner" else 0.01
        assert np.allclose([a.viability for a in got], [a.viability for a in ref], atol=tol)
        assert np.allclose([a.distance for a in got], [a.distance for a in ref], rtol=0.02)
        assert np.allclose(s.score_tensors(x.numpy()), [a.viability for a in got], atol=1e-6)


@pytest.mark.slow
def test_an_ensemble_without_trust_data_runs_as_one_module_on_the_fast_path(
        dataset, tmp_path, fp32_measured_slowest):
    out = tmp_path / "plain.safetensors"
    train_cli(dataset, out, "--ensemble", "2", "--no-summary", "--epochs", "1")
    loaded = load_model(out)
    assert loaded.members == 2 and loaded.summary is None and loaded.intervals is None
    x = probe_batch(32, n=4, seed=6)
    s = Scorer(loaded, fast_path="fp32-cl", use_cache=False, threads=1)
    assert s.fast_path == "fp32-cl" and not s.judges_trust
    with torch.inference_mode():
        mean = loaded.module(x).reshape(-1).numpy()
    assert np.allclose(s.score_tensors(x.numpy()), mean, atol=1e-5)


def test_resuming_an_ensemble_is_refused_clearly(dataset, tmp_path):
    base = dict(labels=dataset / "labels.csv", out=tmp_path / "e.safetensors", epochs=1,
                batch_size=8, size=32, init="none", precision="fp32", ensemble=2)
    with pytest.raises(ConfigError, match="--resume and --stop-after are not available"):
        train_model(TrainOptions(**base, resume=True))
    with pytest.raises(ConfigError, match="--resume and --stop-after are not available"):
        train_model(TrainOptions(**base, stop_after=1))
    (tmp_path / "e.safetensors.resume").write_bytes(b"an interrupted single run")
    with pytest.raises(ConfigError, match="interrupted training run of one network"):
        train_model(TrainOptions(**base))
    assert not (tmp_path / "e.safetensors").exists()
    with pytest.raises(ConfigError, match="--ensemble 0 must be between 1 and 16"):
        train_model(TrainOptions(**{**base, "ensemble": 0}))


def test_fine_tuning_an_ensemble_needs_the_same_number_of_networks(ensemble, dataset, tmp_path):
    with pytest.raises(ConfigError, match="ensemble of 2 networks; fine-tuning it needs "
                                          "--ensemble 2, not 3") as exc:
        train_model(TrainOptions(labels=dataset / "labels.csv", out=tmp_path / "t.safetensors",
                                 init=str(ensemble), epochs=1, batch_size=8, ensemble=3))
    assert "add --ensemble 2" in exc.value.hint
    with pytest.raises(ConfigError, match="needs --ensemble 2"):
        train_model(TrainOptions(labels=dataset / "labels.csv", out=tmp_path / "t.safetensors",
                                 init=str(ensemble), epochs=1, batch_size=8))


def test_too_few_labelled_validation_images_give_no_interval_and_say_why(dataset, tmp_path,
                                                                         capsys):
    out = tmp_path / "few.safetensors"
    capsys.readouterr()
    train_cli(dataset, out, "--val-fraction", "0.3")  # 14 validation images
    loaded = load_model(out)
    assert loaded.summary is not None and loaded.intervals is None
    err = capsys.readouterr().err
    assert "Only 14 labelled held-out images (at least 20 are needed to calibrate a 90 % " \
           "interval): scores of this model will have no interval." in err
