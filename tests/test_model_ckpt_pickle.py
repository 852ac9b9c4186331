"""Every way a pickle builds an object stays inert in the checkpoint importer.

The classes below are pickled under the name of a module that does not exist
when the checkpoint is read (as Lightning's and OmegaConf's on a user's
machine); payloads that would run ``os.system``, ``eval`` or ``subprocess``
under plain pickle are shown to be live first, then never to run on import.
"""

from __future__ import annotations

import codecs
import contextlib
import copyreg
import io
import os
import pickle
import subprocess
import sys
import types
from collections.abc import Iterator

import pytest
import torch

from nvir_agent.errors import ModelLoadError
from nvir_agent.model.ckpt_import import (
    Placeholder,
    RestrictedUnpickler,
    extract_state_dict,
    read_checkpoint,
)

ABSENT = "lightning_like.utilities"  # the module the classes claim to live in


class AttributeDict(dict):
    """Lightning's hyper-parameter container: a dict subclass with attribute access."""


class Items(list):
    """A list subclass (APPEND/APPENDS onto a non-list)."""


class Slotted:
    """State as (dict, slots) in BUILD."""

    __slots__ = ("lr", "__dict__")

    def __init__(self) -> None:
        self.lr = 3e-4
        self.name = "adamw"


class WithKeywords:
    """Rebuilt from keyword arguments: NEWOBJ_EX (protocol 4+)."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, depth: int = 0, width: int = 0) -> None:
        self.depth, self.width = depth, width

    def __getnewargs_ex__(self):
        return (), {"depth": self.depth, "width": self.width}


class Plain:
    """An ordinary object: NEWOBJ then BUILD with its __dict__."""

    def __init__(self) -> None:
        self.patience = 15
        self.mode = "min"


class Payload:
    """``callable(*args)`` at load time under plain pickle (REDUCE)."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@contextlib.contextmanager
def classes_in_absent_module() -> Iterator[None]:
    """Pickle the test classes as ``lightning_like.utilities.<Name>``; the module is
    gone again when the checkpoint is read."""
    mod = types.ModuleType(ABSENT)
    originals = {}
    for cls in (AttributeDict, Items, Slotted, WithKeywords, Plain):
        originals[cls] = (cls.__module__, cls.__qualname__)
        cls.__module__ = ABSENT
        setattr(mod, cls.__name__, cls)
    parent = ABSENT.split(".")[0]
    sys.modules[parent] = types.ModuleType(parent)
    sys.modules[ABSENT] = mod
    try:
        yield
    finally:
        del sys.modules[ABSENT], sys.modules[parent]
        for cls, (module, qualname) in originals.items():
            cls.__module__, cls.__qualname__ = module, qualname


def hostile_payloads(sentinel) -> dict:
    return {
        "system": Payload(os.system, f"touch {sentinel}"),
        "eval": Payload(eval, f"open({str(sentinel)!r}, 'w')"),
        "subprocess": Payload(subprocess.call, ["touch", str(sentinel)]),
        "open": Payload(open, str(sentinel), "w"),
    }


def hyper_parameters(protocol: int) -> AttributeDict:
    hp = AttributeDict(lr=1e-4, batch_size=32)
    hp["layers"] = Items([64, 128, 256])
    if protocol >= 2:  # copyreg cannot pickle __slots__ without __getstate__ below 2
        hp["optimizer"] = Slotted()
    hp["encoder"] = WithKeywords(depth=18, width=64)
    hp["scheduler"] = Plain()
    hp["nested"] = AttributeDict(inner=Items([AttributeDict(k=1)]))
    return hp


def lightning_checkpoint(sentinel, protocol: int) -> dict:
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "1.9.4",
        "state_dict": {"model.encoder.w": torch.arange(6.0).reshape(2, 3),
                       "model.regression_head.b": torch.ones(1)},
        "hyper_parameters": hyper_parameters(protocol),
        "callbacks": hostile_payloads(sentinel),
        "loops": Items([Plain()]),
    }


def restricted_loads(data: bytes):
    return RestrictedUnpickler(io.BytesIO(data), {}).load()


@pytest.fixture
def tripwires(tmp_path, monkeypatch):
    """os.system, eval, exec, subprocess and open raise if called from here on."""
    calls: list[str] = []

    def trip(name):
        def tripped(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called while reading a checkpoint")
        return tripped

    sentinel = tmp_path / "PAYLOAD_RAN"
    yield sentinel, calls, monkeypatch, trip


def arm(tripwires) -> None:
    _, _, monkeypatch, trip = tripwires
    # The codecs pickle's text opcodes use are stdlib modules imported on first use
    # (which runs exec); import them before exec is a tripwire.
    for codec in ("unicode_escape", "raw_unicode_escape", "latin-1", "ascii", "utf-8"):
        codecs.lookup(codec)
    monkeypatch.setattr(os, "system", trip("os.system"))
    monkeypatch.setattr(subprocess, "call", trip("subprocess.call"))
    monkeypatch.setattr(subprocess.Popen, "__init__", trip("subprocess.Popen"))
    monkeypatch.setattr("builtins.eval", trip("eval"))
    monkeypatch.setattr("builtins.exec", trip("exec"))


def assert_inert_hyper_parameters(hp, protocol: int) -> None:
    """The hyper-parameters came back as placeholders holding all their data."""
    mapping = contents(hp)
    assert mapping["lr"] == 1e-4 and mapping["batch_size"] == 32
    assert contents(mapping["layers"]) == [64, 128, 256]
    assert contents(contents(contents(mapping["nested"])["inner"])[0]) == {"k": 1}
    if protocol >= 2:
        assert _flat_state(mapping["optimizer"]) == {"lr": 3e-4, "name": "adamw"}
    enc = mapping["encoder"]
    assert isinstance(enc, Placeholder)
    assert enc.kwargs == {"depth": 18, "width": 64} or _flat_state(enc) == {"depth": 18,
                                                                          "width": 64}
    assert _flat_state(mapping["scheduler"]) == {"patience": 15, "mode": "min"}


def contents(p):
    """What a placeholder for a dict or list subclass holds. Protocols 0 and 1 rebuild
    those with copyreg._reconstructor(cls, base, items): the items are its third argument."""
    assert isinstance(p, Placeholder), p
    if p._nvir_name == "_reconstructor":
        cls = p.args[0]
        assert issubclass(cls, Placeholder) and cls._nvir_module == ABSENT
        return p.args[2]
    assert p._nvir_module == ABSENT
    return p.mapping or p.items


def _flat_state(p: Placeholder) -> dict:
    state = p.state
    if isinstance(state, tuple):  # (dict, slots)
        merged = {}
        for part in state:
            merged.update(part or {})
        return merged
    return state


# ------------------------------------------------------------------ the bug and its cause


def test_a_dict_subclass_from_an_absent_module_is_rebuilt_with_newobj_and_setitems():
    with classes_in_absent_module():
        data = pickle.dumps(AttributeDict(lr=1e-4, model={"name": "resnet18"}), protocol=2)
    ops = {op.name for op, _, _ in __import__("pickletools").genops(data)}
    assert {"NEWOBJ", "SETITEMS"} <= ops
    hp = restricted_loads(data)
    assert hp.mapping == {"lr": 1e-4, "model": {"name": "resnet18"}}


# ------------------------------------------------------------------ every protocol, both formats


def test_the_payloads_are_live_under_plain_pickle(tmp_path):
    sentinel = tmp_path / "ran"
    for name, payload in hostile_payloads(sentinel).items():
        if name == "open":
            continue
        pickle.loads(pickle.dumps(payload))
        assert sentinel.exists(), name  # so the tests below could fail
        sentinel.unlink()


@pytest.mark.parametrize("protocol", range(6))
def test_hyper_parameters_in_every_protocol_come_back_as_inert_placeholders(protocol, tripwires):
    sentinel, calls, *_ = tripwires
    with classes_in_absent_module():
        data = pickle.dumps({"hp": hyper_parameters(protocol), **hostile_payloads(sentinel)},
                            protocol=protocol)
    arm(tripwires)
    content = restricted_loads(data)
    assert_inert_hyper_parameters(content["hp"], protocol)
    assert content["system"]._nvir_name == "system" and content["system"].args[0].startswith(
        "touch")
    assert not sentinel.exists() and not calls


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("protocol", range(6))
def test_lightning_checkpoint_in_every_protocol_and_format_imports_inertly(
    tmp_path, tripwires, protocol, legacy
):
    sentinel, calls, *_ = tripwires
    path = tmp_path / "epoch=3-step=120.ckpt"
    checkpoint = lightning_checkpoint(sentinel, protocol)
    if protocol == 0:  # tensors need tuple persistent ids, which protocol 0 cannot hold
        checkpoint["state_dict"] = {}  # (torch.load cannot read it either)
    with classes_in_absent_module():
        torch.save(checkpoint, path, pickle_protocol=protocol,
                   _use_new_zipfile_serialization=not legacy)
    arm(tripwires)
    ckpt = read_checkpoint(path)
    content = ckpt.content
    assert_inert_hyper_parameters(content["hyper_parameters"], protocol)
    loops = content["loops"]
    assert isinstance(loops, Placeholder)
    assert {f"{ABSENT}.AttributeDict", "posix.system"} <= set(ckpt.placeholders)
    assert not sentinel.exists() and not calls
    if protocol == 0:
        with pytest.raises(ModelLoadError, match="without tensors"):
            extract_state_dict(content, str(path))
        return
    tensors, prefix = extract_state_dict(content, str(path))
    assert prefix == "model."
    assert torch.equal(tensors["encoder.w"], torch.arange(6.0).reshape(2, 3))


# ------------------------------------------------------------------ opcodes pickle writes rarely


def test_inst_and_obj_opcodes_build_placeholders_without_calling_anything(tripwires):
    sentinel, calls, *_ = tripwires
    arm(tripwires)
    inst = b"(S'touch x'\nios\nsystem\n."  # INST: os.system('touch x') under plain pickle
    obj = b"(cos\nsystem\nS'touch x'\no."  # OBJ
    for data in (inst, obj):
        p = restricted_loads(data)
        assert isinstance(p, Placeholder) and p._nvir_name == "system"
        assert p.args == ("touch x",)
    assert not calls


def test_build_with_dict_and_slots_state_is_recorded_not_applied():
    data = b"\x80\x02cmod\nC\n)\x81}U\x01aK\x01s}U\x01bK\x02s\x86b."
    p = restricted_loads(data)
    assert p.state == ({"a": 1}, {"b": 2})


def test_appends_and_setitems_on_placeholders_are_recorded():
    # NEWOBJ of an unknown list subclass, APPENDS; an unknown dict subclass, SETITEMS
    lst = b"\x80\x02cmod\nL\n)\x81(K\x01K\x02e."
    dct = b"\x80\x02cmod\nD\n)\x81(U\x01aK\x01U\x01bK\x02u."
    assert restricted_loads(lst).items == [1, 2]
    assert restricted_loads(dct).mapping == {"a": 1, "b": 2}
    # protocol 0: APPEND and SETITEM one at a time
    assert restricted_loads(b"cmod\nL\n(tRI1\naI2\na.").items == [1, 2]
    assert restricted_loads(b"cmod\nD\n(tRS'a'\nI1\ns.").mapping == {"a": 1}


def test_newobj_ex_keyword_arguments_are_recorded():
    with classes_in_absent_module():
        data = pickle.dumps(WithKeywords(depth=50, width=2), protocol=4)
    assert "NEWOBJ_EX" in {op.name for op, _, _ in __import__("pickletools").genops(data)}
    assert restricted_loads(data).kwargs == {"depth": 50, "width": 2}


@pytest.mark.parametrize("data", [b"Pfoo\n.", b"\x80\x02U\x03fooQ.", b"\x80\x02K\x01\x85Q."])
def test_persistent_ids_other_than_torch_storages_are_refused(data):
    with pytest.raises(pickle.UnpicklingError, match="persistent id"):
        restricted_loads(data)


@pytest.fixture
def extension_code():
    """Extension code 240 → os.system, resolved once by plain pickle, so that pickle's
    process-wide cache maps the code to the (patched) function itself."""
    copyreg.add_extension("os", "system", 240)
    yield 240
    copyreg.remove_extension("os", "system", 240)
    copyreg.clear_extension_cache()


@pytest.mark.parametrize("opcode", [b"\x82\xf0", b"\x83\xf0\x00", b"\x84\xf0\x00\x00\x00"])
def test_extension_codes_are_refused_even_when_cached_by_plain_pickle(
    tmp_path, tripwires, extension_code, opcode
):
    sentinel, calls, *_ = tripwires
    arm(tripwires)
    data = b"\x80\x02" + opcode + b"X\x07\x00\x00\x00touch x\x85R."
    with pytest.raises(AssertionError, match="os.system was called"):
        pickle.loads(data)  # plain pickle: the cached code calls os.system
    assert calls == ["os.system"]
    with pytest.raises(pickle.UnpicklingError, match="EXT"):
        restricted_loads(data)
    torch.save({"state_dict": {"w": torch.ones(1)}}, tmp_path / "c.ckpt")
    raw = (tmp_path / "c.ckpt").read_bytes()
    with pytest.raises(ModelLoadError, match="extension registry"):
        read_checkpoint(_with_data_pkl(tmp_path, raw, data))
    assert calls == ["os.system"]


def _with_data_pkl(tmp_path, raw: bytes, data_pkl: bytes):
    """The zip checkpoint ``raw`` with its data.pkl replaced (CRCs recomputed)."""
    import zipfile

    out = tmp_path / "swapped.ckpt"
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = data_pkl if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(info.filename, body)
    return out


def test_a_class_from_an_importable_module_is_never_imported(tmp_path, monkeypatch):
    """Even a module on sys.path whose import would run code is not imported."""
    sentinel = tmp_path / "IMPORTED"
    (tmp_path / "nvir_evil_mod.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n"
                                                "class Config(dict): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = b"\x80\x02cnvir_evil_mod\nConfig\n)\x81."
    p = restricted_loads(data)
    assert isinstance(p, Placeholder)
    assert not sentinel.exists() and "nvir_evil_mod" not in sys.modules


@pytest.mark.parametrize(
    "data, fragment",
    [
        # a bytes field claiming 2**60 bytes: caught before the unpickler allocates it
        (b"\x80\x04\x8e" + (1 << 60).to_bytes(8, "little") + b"xx.", "bytes8"),
        # a memo index of 2**31: the C unpickler would zero a 32 GB memo first
        (b"\x80\x02K\x01r\x00\x00\x00\x80.", "memo index"),
        # _codecs.encode asked for another codec than pickle's latin-1
        (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.",
         "encoding"),
    ],
)
def test_oversized_fields_and_other_codecs_are_refused(data, fragment):
    with pytest.raises((pickle.UnpicklingError, ValueError), match=fragment):
        restricted_loads(data)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_tensor_repeating_its_storage_beyond_reason_is_refused(tmp_path, legacy):
    # torch.save keeps views: one stored element, size 2**40, stride 0 (4 TiB if cloned)
    w = torch.ones(1).expand(1 << 40)
    torch.save({"state_dict": {"w": w}}, tmp_path / "c.ckpt",
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ModelLoadError, match="larger than its storage"):
        read_checkpoint(tmp_path / "c.ckpt")


def test_a_zip_bomb_member_is_refused_without_inflating_it(tmp_path):
    import zipfile

    torch.save({"state_dict": {"w": torch.ones(4)}}, tmp_path / "c.ckpt")
    raw = (tmp_path / "c.ckpt").read_bytes()
    out = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(
        out, "w", compression=zipfile.ZIP_DEFLATED
    ) as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("/data/0"):
                body = bytes(20_000_000)  # 20 MB of zeros deflate to ~20 kB
            dst.writestr(info.filename, body)
    assert out.stat().st_size < 1_000_000
    with pytest.raises(ModelLoadError, match="far more than the archive"):
        read_checkpoint(out)
