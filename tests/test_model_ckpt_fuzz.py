"""Fuzzing the checkpoint importer: a mutated checkpoint gives ModelLoadError with a
clear message or a result, never another exception, a hang or executed code.

Each test runs ``NVIR_FUZZ_EXAMPLES`` examples (default 150, a second or two);
the slow-marked test runs ten times as many over all three targets.
"""

from __future__ import annotations

import io
import os
import resource
import subprocess
import zipfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvir_agent.errors import ModelLoadError
from nvir_agent.model.ckpt_import import extract_state_dict, read_checkpoint

EXAMPLES = int(os.environ.get("NVIR_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=5000,  # ms per example (~2 ms typical): a hang fails the test
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run; raise EXAMPLES to explore more
    database=None,
)


class Payload:
    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class AttributeDict(dict):
    pass


def seed_checkpoint(sentinel, *, legacy: bool) -> bytes:
    """A small Lightning-layout checkpoint with hostile payloads, as bytes."""
    ckpt = {
        "epoch": 1,
        "state_dict": {"model.encoder.w": torch.arange(12.0).reshape(3, 4),
                       "model.regression_head.b": torch.ones(2, dtype=torch.float64),
                       "model.encoder.n": torch.tensor(7)},
        "hyper_parameters": AttributeDict(lr=1e-3, layers=[1, 2], cfg=AttributeDict(a="b")),
        "callbacks": {"system": Payload(os.system, f"touch {sentinel}"),
                      "eval": Payload(eval, f"open({str(sentinel)!r}, 'w')"),
                      "popen": Payload(subprocess.Popen, ["touch", str(sentinel)])},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0)}}}],
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat"]),
        st.floats(0, 1, exclude_max=True),  # where, as a fraction of the length
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1, max_size=6,
)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, where, blob in ops:
        if not b:
            break
        i = int(where * len(b))
        if kind == "flip":
            b[i] ^= 1 << (blob[0] % 8)
        elif kind == "set":
            b[i:i + len(blob)] = blob
        elif kind == "insert":
            b[i:i] = blob
        elif kind == "delete":
            del b[i:i + 1 + blob[0] % 16]
        elif kind == "truncate":
            del b[i:]
        elif kind == "repeat":
            b[i:i] = b[i:i + 1 + blob[0] % 32] * (1 + blob[-1] % 4)
    return bytes(b)


def rezip_with(raw: bytes, pkl_mutations) -> bytes:
    """The zip checkpoint with only its data.pkl mutated (CRCs recomputed), so the
    mutation reaches the unpickler instead of failing the zip's checksum."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("/data.pkl"):
                body = mutate(body, pkl_mutations)
            dst.writestr(info.filename, body)
    return out.getvalue()


@pytest.fixture
def armed(tmp_path, monkeypatch):
    """A checkpoint path to write to, the sentinel, and functions that must never run."""
    calls: list[str] = []
    sentinel = tmp_path / "PAYLOAD_RAN"

    def trip(name, original):
        def tripped(*a, **k):
            if str(sentinel) not in repr(a):  # the test's own machinery (namedtuple …)
                return original(*a, **k)
            calls.append(name)
            raise AssertionError(f"{name} called with the payload")
        return tripped

    seeds = {legacy: seed_checkpoint(sentinel, legacy=legacy) for legacy in (False, True)}
    monkeypatch.setattr(os, "system", trip("os.system", os.system))
    monkeypatch.setattr(subprocess.Popen, "__init__",
                        trip("subprocess.Popen", subprocess.Popen.__init__))
    monkeypatch.setattr("builtins.eval", trip("eval", eval))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield Armed(tmp_path / "fuzzed.ckpt", sentinel, seeds, calls)
    assert not calls and not sentinel.exists()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 300, f"the peak memory grew by {grown_mb:.0f} MB while fuzzing"


class Armed:
    """What the fuzz tests share (a short repr for hypothesis' reports)."""

    def __init__(self, path, sentinel, seeds, calls) -> None:
        self.path, self.sentinel, self.seeds, self.calls = path, sentinel, seeds, calls

    def __iter__(self):
        return iter((self.path, self.sentinel, self.seeds, self.calls))

    def __repr__(self) -> str:
        return "armed"


def read_only_load_errors(path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        ckpt = read_checkpoint(path)
    except ModelLoadError as exc:
        assert_clear(exc, path)
        return
    try:
        extract_state_dict(ckpt.content, str(path))
    except ModelLoadError as exc:
        assert_clear(exc, path)


def assert_clear(exc: ModelLoadError, path) -> None:
    text = str(exc)
    assert str(path) in text, text
    assert "Traceback" not in text
    assert not any(name in text for name in ("KeyError", "IndexError", "AttributeError(",
                                             "TypeError(", "struct.error")), text


@FUZZ
@given(ops=mutations)
def test_mutated_legacy_checkpoints_only_give_model_load_errors(armed, ops):
    path, sentinel, seeds, calls = armed
    read_only_load_errors(path, mutate(seeds[True], ops))
    assert not calls and not sentinel.exists()


@FUZZ
@given(ops=mutations)
def test_mutated_data_pkl_in_zip_checkpoints_only_gives_model_load_errors(armed, ops):
    path, sentinel, seeds, calls = armed
    read_only_load_errors(path, rezip_with(seeds[False], ops))
    assert not calls and not sentinel.exists()


@FUZZ
@given(ops=mutations)
def test_mutated_zip_checkpoints_only_give_model_load_errors(armed, ops):
    path, sentinel, seeds, calls = armed
    read_only_load_errors(path, mutate(seeds[False], ops))
    assert not calls and not sentinel.exists()


@pytest.mark.slow
@settings(FUZZ, max_examples=10 * EXAMPLES)
@given(target=st.sampled_from(["legacy", "pkl", "zip"]), ops=mutations)
def test_long_fuzz_of_all_targets_only_gives_model_load_errors(armed, target, ops):
    path, sentinel, seeds, calls = armed
    data = {"legacy": lambda: mutate(seeds[True], ops),
            "pkl": lambda: rezip_with(seeds[False], ops),
            "zip": lambda: mutate(seeds[False], ops)}[target]()
    read_only_load_errors(path, data)
    assert not calls and not sentinel.exists()
