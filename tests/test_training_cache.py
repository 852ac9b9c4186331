"""Cached training crops are remade when the code or weights that make them change."""

from __future__ import annotations

from nvir_agent.imaging import boundary
from nvir_agent.training import data


def test_crop_cache_key_changes_when_the_border_classifier_weights_change(tmp_path, monkeypatch):
    weights = tmp_path / "boundary_mlp.npz"
    weights.write_bytes(boundary.WEIGHTS.read_bytes())
    monkeypatch.setattr(boundary, "WEIGHTS", weights)
    data._code_version.cache_clear()
    before = data._code_version()
    weights.write_bytes(weights.read_bytes() + b"\0")
    data._code_version.cache_clear()
    after = data._code_version()
    data._code_version.cache_clear()
    assert before != after
