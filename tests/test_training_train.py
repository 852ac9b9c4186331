"""A tiny training run end to end: a loadable model file with the right
metadata, resume after interruption, initialisation errors, and the train /
evaluate commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nvir_agent.cli.main import main
from nvir_agent.errors import ConfigError, DataError, ModelLoadError
from nvir_agent.model.modelfile import load_model
from nvir_agent.model.network import build_nvir
from nvir_agent.synth.render import Conditions, render_spheroid
from nvir_agent.training.train import (
    TrainOptions,
    fold_calibration,
    imagenet_weights_path,
    output_calibration,
    resolve_spec,
    resume_path,
    train,
)

N_IMAGES = 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """12 rendered 128 px spheroids on 3 plates × 2 days with raw ATP and vehicle wells."""
    root = tmp_path_factory.mktemp("tiny")
    rows = []
    for i in range(N_IMAGES):
        plate, day = f"P{i // 4 + 1}", 1 + (i // 2) % 2
        vehicle = i % 2 == 0
        v = 1.0 if vehicle else 0.2 + 0.1 * i
        r = render_spheroid(v, 500 + i, Conditions(width=128, height=128))
        name = f"{plate}/w{i:02d}.png"
        (root / plate).mkdir(exist_ok=True)
        cv2.imwrite(str(root / name), r.image)
        rows.append({"image": name, "plate": plate, "day": day, "site": "lab",
                     "role": "vehicle" if vehicle else "treated",
                     "atp_raw": round(v * 1000 * (1 + 0.1 * (i // 4)), 3)})
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def options(dataset: Path, out: Path, **kw) -> TrainOptions:
    base = dict(labels=dataset / "labels.csv", out=out, epochs=1, batch_size=4, size=32,
                init="none", precision="fp32", seed=3)
    base.update(kw)
    return TrainOptions(**base)


def test_tiny_training_run_writes_a_loadable_model_whose_metadata_describes_it(dataset, tmp_path):
    events = []
    result = train(options(dataset, tmp_path / "m.safetensors", epochs=2), progress=events.append)
    assert result.path == tmp_path / "m.safetensors" and result.epochs_run == 2
    loaded = load_model(result.path)
    meta = loaded.metadata
    assert loaded.spec.size == 32 and loaded.spec.crop == "center-square"
    assert meta["data"]["n_images"] == N_IMAGES and meta["data"]["n_plates"] == 3
    assert meta["data"]["label_source"] == "atp" and meta["data"]["days"] == ["1", "2"]
    # chronological: the latest of 3 plates (P3, 4 images) is held out
    assert meta["split"]["val_batches"] == {"lab": ["P3"]}
    assert meta["data"]["n_train"] == 8 and meta["data"]["n_val"] == 4
    assert meta["recipe"]["lr"] == 1e-4 and meta["recipe"]["weight_decay"] == 5e-4
    assert meta["recipe"]["lr_patience"] == 15 and meta["recipe"]["batch_size"] == 4
    assert meta["provenance"]["trained_from"] == "random initialisation"
    assert meta["recipe"]["calibrate"] is True and "output_scale" in meta["history"][0]
    assert meta["provenance"]["hardware"]["device"] == "cpu"
    assert meta["metrics"]["validation"]["n"] == 4
    assert set(meta["metrics"]["validation"]) >= {"r2", "mae", "per_site", "per_day"}
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    phases = {e.phase for e in events}
    assert phases == {"prepare", "batch", "epoch"}
    assert not resume_path(result.path).exists()
    with torch.inference_mode():
        out = loaded.module(torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, 1)


@pytest.mark.slow
def test_keep_last_saves_the_final_epoch_and_says_so(dataset, tmp_path):
    best = train(options(dataset, tmp_path / "best.safetensors", epochs=3, lr=3e-3))
    last = train(options(dataset, tmp_path / "last.safetensors", epochs=3, lr=3e-3, keep="last"))
    assert [h["val_loss"] for h in best.history] == [h["val_loss"] for h in last.history]
    meta_best = load_model(best.path).metadata["metrics"]
    meta_last = load_model(last.path).metadata["metrics"]
    assert meta_best["kept"] == "best" and meta_best["saved_epoch"] == best.best_epoch
    assert meta_last["kept"] == "last" and meta_last["saved_epoch"] == 3
    assert meta_last["validation"]["mae"] == last.history[-1]["val_mae"]
    assert meta_best["validation"]["mae"] == best.history[best.best_epoch - 1]["val_mae"]
    a = load_model(best.path).module.state_dict()
    b = load_model(last.path).module.state_dict()
    same = all(torch.equal(a[k], b[k]) for k in a)
    assert same == (best.best_epoch == 3), best.best_epoch


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_model_as_an_uninterrupted_one(dataset, tmp_path):
    full = train(options(dataset, tmp_path / "full.safetensors", epochs=2))
    out = tmp_path / "part.safetensors"
    paused = train(options(dataset, out, epochs=2, stop_after=1))
    assert paused.path is None and paused.stopped == "paused" and resume_path(out).is_file()
    with pytest.raises(ConfigError, match="interrupted training run"):
        train(options(dataset, out, epochs=2))
    with pytest.raises(ConfigError, match="different settings.*lr"):
        train(options(dataset, out, epochs=2, lr=1e-3, resume=True))
    resumed = train(options(dataset, out, epochs=2, resume=True))
    assert resumed.epochs_run == 2 and not resume_path(out).exists()
    a = load_model(full.path).module.state_dict()
    b = load_model(out).module.state_dict()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key
    assert [h["val_loss"] for h in full.history] == [h["val_loss"] for h in resumed.history]


def test_imagenet_initialisation_without_offline_weights_names_the_file_to_get(dataset, tmp_path):
    assert not imagenet_weights_path().exists()  # the test home has an empty torch cache
    with pytest.raises(ModelLoadError) as exc:
        train(options(dataset, tmp_path / "m.safetensors", init="imagenet"))
    assert str(imagenet_weights_path()) in exc.value.message
    assert "resnet18-f37072fd.pth" in exc.value.hint and "--init none" in exc.value.hint


def test_fine_tuning_starts_from_a_model_file_and_keeps_its_preprocessing(dataset, tmp_path):
    first = train(options(dataset, tmp_path / "a.safetensors", intensity="percentile"))
    tuned = train(options(dataset, tmp_path / "b.safetensors", init=str(first.path),
                          size=None))
    meta = load_model(tuned.path).metadata
    assert meta["preprocessing"]["size"] == 32 and meta["preprocessing"]["intensity"] == "percentile"
    # a new percentile model ranks its crop reduced to 64²; fine-tuning keeps the original's
    assert load_model(first.path).spec.percentile_side == 64
    assert meta["preprocessing"]["percentile_side"] == 64
    assert resolve_spec(options(dataset, tmp_path / "d.safetensors", intensity="percentile",
                                percentile_side=0), None).percentile_side == 0
    assert resolve_spec(options(dataset, tmp_path / "d.safetensors", intensity="bitdepth"),
                        None).percentile_side == 0
    assert meta["provenance"]["trained_from"].startswith("fine-tuned from a.safetensors@")
    with pytest.raises(DataError, match="no such file"):
        train(options(dataset, tmp_path / "c.safetensors", init=str(tmp_path / "none.pth")))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(ModelLoadError, match="not usable as ResNet18 ImageNet weights"):
        train(options(dataset, tmp_path / "c.safetensors", init=str(junk)))


def test_a_split_with_nothing_to_validate_is_refused_clearly(dataset, tmp_path):
    with pytest.raises(DataError, match="site 'other' is not in the labels"):
        train(options(dataset, tmp_path / "m.safetensors", split="site:other"))
    with pytest.raises(ConfigError, match="--batch-size 1"):
        train(options(dataset, tmp_path / "m.safetensors", batch_size=1))


def test_train_and_evaluate_commands_end_to_end(dataset, tmp_path, capsys):
    model = tmp_path / "cli.safetensors"
    rc = main(["train", "--labels", str(dataset / "labels.csv"), "--out", str(model),
               "--epochs", "1", "--batch-size", "4", "--size", "32", "--init", "none",
               "--split", "random", "--precision", "fp32", "--crop", "spheroid"])
    captured = capsys.readouterr()
    assert rc == 0 and model.is_file(), captured.err
    assert f"wrote {model}" in captured.out and "epoch 1/1" in captured.err
    assert load_model(model).spec.crop == "spheroid"

    plot = tmp_path / "scatter.png"
    rc = main(["evaluate", "--model", str(model), "--labels", str(dataset / "labels.csv"),
               "--json", "--plot", str(plot), "--baseline"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    assert {"n", "r2", "mae", "per_site", "per_day"} <= set(report)
    assert report["n"] + report["skipped"] == N_IMAGES and list(report["per_site"]) == ["lab"]
    assert report["baseline"]["n"] > 0 and report["baseline"]["n_train"] > 0
    assert plot.is_file() and plot.stat().st_size > 1000

    preds = tmp_path / "out" / "predictions.csv"
    rc = main(["evaluate", "--model", str(model), "--labels", str(dataset / "labels.csv"),
               "--predictions", str(preds)])
    captured = capsys.readouterr()
    assert rc == 0 and "overall" in captured.out and "day 2" in captured.out
    assert f"predictions: {preds}" in captured.out
    with preds.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == report["n"] and rows[0]["site"] == "lab"
    errors = [float(r["predicted"]) - float(r["viability"]) for r in rows]
    assert errors == pytest.approx([float(r["error"]) for r in rows], abs=2e-6)
    assert np.mean(np.abs(errors)) == pytest.approx(report["mae"], abs=1e-5)

    rc = main(["evaluate", "--model", str(tmp_path / "missing.safetensors"), "--labels",
               str(dataset / "labels.csv")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    rc = main(["train", "--labels", str(tmp_path / "none.csv"), "--out", str(model)])
    assert rc == 2 and "labels file" in capsys.readouterr().err



def test_output_calibration_is_the_least_squares_line_and_folds_into_the_output_layer():
    assert output_calibration(np.array([0.1, 0.2, 0.3]), np.array([0.3, 0.5, 0.7])) == (
        pytest.approx(2.0), pytest.approx(0.1))
    assert output_calibration(np.array([0.5, 0.5]), np.array([0.0, 1.0])) == (1.0, 0.0)
    torch.manual_seed(0)
    net = build_nvir().eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.inference_mode():
        before = net(x)
    net.load_state_dict(fold_calibration(net.state_dict(), 1.7, -0.2))
    with torch.inference_mode():
        after = net(x)
    assert torch.allclose(after, 1.7 * before - 0.2, atol=1e-5)
