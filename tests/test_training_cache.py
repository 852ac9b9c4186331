"""Cached training crops are remade when the code or weights that make them change."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

from nvir_agent.imaging import boundary
from nvir_agent.model import preprocess
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


def test_crop_cache_key_covers_every_module_of_the_imaging_package():
    data._code_version.cache_clear()
    key = data._code_version()
    imaging = Path(boundary.__file__).parent
    expected = hashlib.sha1()
    for file in [*sorted(imaging.glob("*.py")), Path(inspect.getfile(preprocess)),
                 boundary.WEIGHTS]:
        expected.update(file.read_bytes())
    assert key == expected.hexdigest()
    assert {"lobes.py", "segmentation.py", "analyse.py"} <= {p.name for p in imaging.glob("*.py")}
