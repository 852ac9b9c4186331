"""Model files round-trip, and every broken file gets a ModelLoadError naming it and the fix."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from nvir_agent.errors import ModelLoadError
from nvir_agent.model.modelfile import load_model, read_model_metadata, save_model
from nvir_agent.model.network import build_nvir
from nvir_agent.model.preprocess import PreprocessSpec

SPEC = PreprocessSpec(size=64, intensity="bitdepth")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    n = build_nvir()
    # non-trivial BatchNorm statistics so that they matter for the output
    for k, v in n.state_dict().items():
        if k.endswith("running_var"):
            v.uniform_(0.5, 2.0)
        elif k.endswith("running_mean"):
            v.normal_(0, 0.1)
    return n.eval()


@pytest.fixture(scope="module")
def good_file(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "good.safetensors"
    save_model(path, net, SPEC, {"provenance": {"source": "unit test"}, "metrics": {"r2": 0.5}})
    return path


@pytest.mark.parametrize("dtype, tol", [("float32", 0.0), ("float16", 5e-3)])
def test_round_trip_keeps_weights_spec_and_metadata(net, tmp_path, dtype, tol):
    path = save_model(tmp_path / "m.safetensors", net, SPEC, {"metrics": {"r2": 0.9}}, dtype=dtype)
    loaded = load_model(path)
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (loaded.module(x) - net(x)).abs().max().item()
    assert diff <= tol
    assert loaded.spec == SPEC
    assert loaded.stored_dtype == dtype
    assert loaded.metadata["metrics"] == {"r2": 0.9}
    assert loaded.metadata["architecture"] == "nvir-resnet18-mlp"
    assert loaded.metadata["provenance"]["by"].startswith("nvir-agent ")
    assert "vehicle" in loaded.metadata["output"]
    assert (
        loaded.name.startswith("m.safetensors@") and len(loaded.name) == len("m.safetensors@") + 8
    )
    assert not loaded.module.training


def test_fp16_file_is_half_the_size(net, tmp_path):
    a = save_model(tmp_path / "a.safetensors", net, SPEC, dtype="float32").stat().st_size
    b = save_model(tmp_path / "b.safetensors", net, SPEC, dtype="float16").stat().st_size
    assert b < 0.55 * a


def test_metadata_can_be_read_without_building_the_network(good_file):
    meta = read_model_metadata(good_file)
    assert meta["provenance"]["source"] == "unit test"
    assert meta["preprocessing"]["intensity"] == "bitdepth"


def _expect(path, *fragments):
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    text = str(info.value)
    assert str(path) in text
    for f in fragments:
        assert f in text, text
    assert info.value.hint
    return info.value


def test_missing_file(tmp_path):
    err = _expect(tmp_path / "nope.safetensors", "does not exist")
    assert "model import" in err.hint


def test_folder_instead_of_file(tmp_path):
    _expect(tmp_path, "is a folder")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    _expect(p, "empty")


@pytest.mark.parametrize("keep", [5, 200, 0.5])
def test_truncated_file(good_file, tmp_path, keep):
    raw = good_file.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else keep
    p = tmp_path / "cut.safetensors"
    p.write_bytes(raw[:n])
    _expect(p, "truncated")


def test_corrupt_header(good_file, tmp_path):
    raw = bytearray(good_file.read_bytes())
    raw[12:24] = b"#" * 12  # keeps the opening brace, breaks the JSON
    p = tmp_path / "bad.safetensors"
    p.write_bytes(bytes(raw))
    _expect(p, "corrupt header")


def test_text_file_is_not_a_safetensors_file(tmp_path):
    p = tmp_path / "notes.safetensors"
    p.write_text("this is a text file, certainly not a model " * 10)
    _expect(p, "not a safetensors")


def test_pickled_torch_file_points_to_import(net, tmp_path):
    p = tmp_path / "weights.safetensors"
    torch.save({"state_dict": {"a": torch.zeros(1)}}, p)
    err = _expect(p, "pickled PyTorch file")
    assert "nvir-agent model import" in err.hint


def test_foreign_safetensors_without_nvir_metadata(tmp_path):
    p = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, p)
    _expect(p, "not an NViR model")


def _rewrite_meta(good_file, tmp_path, change):
    raw = good_file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["nvir"])
    change(meta)
    header["__metadata__"]["nvir"] = json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    p = tmp_path / "changed.safetensors"
    p.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    return p


def test_other_architecture(good_file, tmp_path):
    p = _rewrite_meta(good_file, tmp_path, lambda m: m.update(architecture="unet"))
    _expect(p, "'unet'", "nvir-resnet18-mlp")


def test_newer_format_version_asks_for_an_update(good_file, tmp_path):
    p = _rewrite_meta(good_file, tmp_path, lambda m: m.update(format_version=99))
    err = _expect(p, "format version 99")
    assert "Update nvir-agent" in err.hint


def test_bad_preprocessing_spec(good_file, tmp_path):
    p = _rewrite_meta(good_file, tmp_path, lambda m: m["preprocessing"].update(crop="round"))
    _expect(p, "preprocessing", "round")


def _nvir_file_with(tmp_path, net, edit):
    state = {k: v.clone().contiguous() for k, v in net.state_dict().items()}
    edit(state)
    good = save_model(tmp_path / "tmp.safetensors", net, SPEC)
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + n])["__metadata__"]
    p = tmp_path / "edited.safetensors"
    save_file(state, p, metadata=meta)
    return p


def test_missing_keys_are_named(net, tmp_path):
    p = _nvir_file_with(tmp_path, net, lambda s: s.pop("regression_head.1.bias"))
    _expect(p, "missing keys: regression_head.1.bias")


def test_unexpected_keys_are_named(net, tmp_path):
    p = _nvir_file_with(
        tmp_path, net, lambda s: s.update({"encoder.0.fc.weight": torch.zeros(1, 512)})
    )
    _expect(p, "unexpected keys: encoder.0.fc.weight")


def test_shape_mismatches_are_named(net, tmp_path):
    p = _nvir_file_with(
        tmp_path, net, lambda s: s.update({"encoder.0.conv1.weight": torch.zeros(64, 3, 7, 7)})
    )
    _expect(p, "shape mismatches: encoder.0.conv1.weight (64, 3, 7, 7) (expected (64, 1, 7, 7))")


def test_saved_model_is_readable_by_other_users(net, tmp_path):
    path = save_model(tmp_path / "shared.safetensors", net, SPEC, {})
    assert path.stat().st_mode & 0o777 == 0o644
