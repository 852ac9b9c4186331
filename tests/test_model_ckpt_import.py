"""The paper's Lightning checkpoint imports without Lightning/OmegaConf and without running pickled code."""

from __future__ import annotations

import collections
import pickle
import sys

import numpy as np
import pytest
import torch
import torchvision

from nvir_agent.errors import ModelLoadError
from nvir_agent.model.ckpt_import import Placeholder, import_checkpoint, read_checkpoint
from nvir_agent.model.modelfile import load_model
from nvir_agent.model.preprocess import PreprocessSpec, preprocess


class FakeDictConfig:
    """Stands in for OmegaConf's DictConfig; removed from this module before loading."""

    def __init__(self, content):
        self._content = content


class AttributeDict(dict):
    """Like Lightning's AttributeDict: a dict subclass; removed before loading."""


class MarkerPayload:
    """Unpickling this with plain pickle creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def reference_parts(seed: int = 7):
    """NViR assembled independently from torchvision, with random weights and BN statistics."""
    torch.manual_seed(seed)
    resnet = torchvision.models.resnet18(weights=None)
    resnet.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    resnet.fc = torch.nn.Identity()
    mlp = torchvision.ops.MLP(512, [32, 32, 32, 32], dropout=0.3)
    out = torch.nn.Linear(32, 1)
    with torch.no_grad():
        for name, buf in resnet.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.2)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(1234)
        for p in list(mlp.parameters()) + list(out.parameters()):
            p.normal_(0, 0.2)
    for m in (resnet, mlp, out):
        m.eval()
    return resnet, mlp, out


def reference_score(parts, x: torch.Tensor) -> torch.Tensor:
    resnet, mlp, out = parts
    with torch.no_grad():
        return out(mlp(torch.flatten(resnet(x), 1))).squeeze(1)


def paper_state_dict(parts) -> collections.OrderedDict:
    resnet, mlp, out = parts
    sd = collections.OrderedDict()
    for k, v in resnet.state_dict().items():
        sd[f"encoder.0.{k}"] = v.clone()
    for k, v in mlp.state_dict().items():
        sd[f"regression_head.0.{k}"] = v.clone()
    for k, v in out.state_dict().items():
        sd[f"regression_head.1.{k}"] = v.clone()
    return sd


def write_paper_ckpt(path, state_dict, marker, *, legacy=False, monkeypatch=None):
    params = [torch.nn.Parameter(v) for k, v in state_dict.items() if v.is_floating_point()][:3]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=5e-4)
    ckpt = {
        "epoch": 41,
        "global_step": 4242,
        "pytorch-lightning_version": "1.9.4",
        "state_dict": state_dict,
        "hyper_parameters": FakeDictConfig({"lr": 1e-4, "model": {"name": "resnet18"}}),
        "datamodule_hyper_parameters": AttributeDict(batch_size=32, crop=224),
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [{"factor": 0.5, "patience": 15, "best": 0.01}],
        "callbacks": {"payload": MarkerPayload(marker)},
    }
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)


@pytest.fixture
def paper_ckpt(tmp_path, monkeypatch):
    parts = reference_parts()
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "epoch=41-step=4242.ckpt"
    write_paper_ckpt(path, paper_state_dict(parts), marker)
    # the classes no longer exist when the checkpoint is read, as on a user's machine
    monkeypatch.delattr(sys.modules[__name__], "FakeDictConfig")
    monkeypatch.delattr(sys.modules[__name__], "MarkerPayload")
    monkeypatch.delattr(sys.modules[__name__], "AttributeDict")
    return path, parts, marker


def test_payload_is_live_with_plain_pickle(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(MarkerPayload(marker)))
    assert marker.exists()  # so the import tests below can really fail


def test_import_never_runs_the_reduce_payload_and_keeps_unknown_classes_inert(paper_ckpt):
    path, _, marker = paper_ckpt
    ckpt = read_checkpoint(path)
    assert not marker.exists()
    payload = ckpt.content["callbacks"]["payload"]
    assert isinstance(payload, Placeholder)
    assert payload._nvir_name == "open" and payload.args[0] == str(marker)
    hp = ckpt.content["hyper_parameters"]
    assert isinstance(hp, Placeholder) and hp._nvir_name == "FakeDictConfig"
    assert hp.state == {"_content": {"lr": 1e-4, "model": {"name": "resnet18"}}}
    dm = ckpt.content["datamodule_hyper_parameters"]  # a dict subclass: NEWOBJ, then SETITEMS
    assert isinstance(dm, Placeholder) and dm.mapping == {"batch_size": 32, "crop": 224}
    assert "io.open" in ckpt.placeholders  # how pickle names builtins.open
    assert ckpt.content["epoch"] == 41
    assert ckpt.content["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-4


@pytest.mark.parametrize("legacy", [False, True])
def test_imported_scores_equal_an_independent_torchvision_model(tmp_path, monkeypatch, legacy):
    parts = reference_parts(seed=3 if legacy else 5)
    marker = tmp_path / "PAYLOAD_RAN"
    ckpt = tmp_path / "paper.ckpt"
    write_paper_ckpt(ckpt, paper_state_dict(parts), marker, legacy=legacy)
    monkeypatch.delattr(sys.modules[__name__], "FakeDictConfig")
    monkeypatch.delattr(sys.modules[__name__], "MarkerPayload")
    monkeypatch.delattr(sys.modules[__name__], "AttributeDict")

    report = import_checkpoint(ckpt, tmp_path / "paper.safetensors")
    assert not marker.exists()
    assert report.tensors == 120 + 10  # encoder incl. 20 BatchNorm counters, head
    assert report.info == {"epoch": 41, "global_step": 4242, "pytorch-lightning_version": "1.9.4"}
    assert "optimizer_states" in report.ignored_keys

    loaded = load_model(report.out)
    assert loaded.spec == PreprocessSpec()  # the paper's preprocessing
    assert loaded.metadata["provenance"]["imported_from"]["epoch"] == 41
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (300, 400), dtype=np.uint8) for _ in range(3)]
    x = torch.from_numpy(np.stack([preprocess(im, loaded.spec) for im in images]))
    with torch.no_grad():
        ours = loaded.module(x).squeeze(1)
    ref = reference_score(parts, x)
    assert ref.abs().max() > 1e-3  # not trivially zero
    assert (ours - ref).abs().max().item() <= 1e-5
    assert int(loaded.module.state_dict()["encoder.0.bn1.num_batches_tracked"]) == 1234


def test_lightning_module_prefix_is_stripped(tmp_path):
    parts = reference_parts()
    sd = collections.OrderedDict((f"model.{k}", v) for k, v in paper_state_dict(parts).items())
    torch.save({"state_dict": sd, "epoch": 1}, tmp_path / "p.ckpt")
    report = import_checkpoint(tmp_path / "p.ckpt", tmp_path / "p.safetensors")
    assert report.prefix_stripped == "model."


def test_missing_unexpected_and_mismatched_keys_are_named_and_nothing_is_written(tmp_path):
    sd = paper_state_dict(reference_parts())
    del sd["regression_head.1.bias"]
    sd["encoder.0.fc.weight"] = torch.zeros(1000, 512)
    sd["encoder.0.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    torch.save({"state_dict": sd}, tmp_path / "bad.ckpt")
    out = tmp_path / "bad.safetensors"
    with pytest.raises(ModelLoadError) as info:
        import_checkpoint(tmp_path / "bad.ckpt", out)
    text = str(info.value)
    assert "missing keys: regression_head.1.bias" in text
    assert "unexpected keys: encoder.0.fc.weight" in text
    assert "shape mismatches: encoder.0.conv1.weight (64, 3, 7, 7) (expected (64, 1, 7, 7))" in text
    assert not out.exists()


@pytest.mark.parametrize(
    "content, fragment",
    [(b"", "empty"), (b"hello, not a checkpoint", "not a PyTorch checkpoint")],
)
def test_unreadable_checkpoints_get_a_clear_error(tmp_path, content, fragment):
    p = tmp_path / "x.ckpt"
    p.write_bytes(content)
    with pytest.raises(ModelLoadError, match=fragment):
        read_checkpoint(p)


def test_truncated_checkpoint_is_reported_as_corrupt_or_truncated(tmp_path):
    torch.save({"state_dict": paper_state_dict(reference_parts())}, tmp_path / "full.ckpt")
    raw = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated|not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "cut.ckpt")


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_checkpoint(tmp_path / "none.ckpt")
