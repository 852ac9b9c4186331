"""Import the NViR paper's PyTorch Lightning checkpoint (``.ckpt``) without
Lightning, without OmegaConf and without executing pickled code.

A ``.ckpt`` is a pickle (torch's zip format: ``<name>/data.pkl`` plus raw
storages under ``<name>/data/``, or torch's legacy single-stream format). The
:class:`RestrictedUnpickler` here resolves only what is needed to rebuild
tensors and plain containers (``collections.OrderedDict``, torch's tensor and
parameter rebuild functions, typed storages, ``_codecs.encode`` for bytes);
every other global — OmegaConf configs, callbacks, and a ``__reduce__``
payload such as ``os.system`` — becomes an inert :class:`Placeholder` that only
records its name and arguments. Nothing from the file is ever called.

Before a pickle is unpickled its opcodes are walked once (``pickletools``):
the extension-registry opcodes (EXT1/2/4) are refused, because pickle looks
their targets up in a process-wide cache that bypasses ``find_class``; a
length field larger than the data left, and a memo index far beyond the
objects built so far, are caught before the C unpickler allocates for them. Tensors may not be larger than their storage allows, zip members
not larger than the archive allows, so a hostile file cannot exhaust memory.
"""

from __future__ import annotations

import codecs
import collections
import hashlib
import io
import logging
import os
import pickle
import pickletools
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nvir_agent.errors import ModelLoadError
from nvir_agent.model.modelfile import check_state_dict, read_bytes, save_model
from nvir_agent.model.network import build_nvir, parameter_count
from nvir_agent.model.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_TEXT_MAGIC = b"L%dL\n" % _LEGACY_MAGIC  # how pickle protocols 0 and 1 write it
# The extension registry (copyreg.add_extension) is process-wide and pickle caches
# what a code resolved to, bypassing find_class; torch never writes these opcodes.
_REFUSED_OPCODES = frozenset({"EXT1", "EXT2", "EXT4"})
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MAX_DIMS = 16
# A tensor may repeat its storage (stride 0) up to this many elements; more is not a
# checkpoint written by torch.save but a request to fill memory.
_MAX_EXPANDED_NUMEL = 1 << 22
_FIX = "Check that the file is the NViR paper's .ckpt (PyTorch Lightning checkpoint)."


class Placeholder:
    """Stands in for any class or function the checkpoint names but we do not trust.

    Calling, constructing or restoring state only records what the pickle
    asked for; no code from the file runs.
    """

    _nvir_module = "?"
    _nvir_name = "?"

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: list[Any]
    mapping: dict[Any, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        # Everything is set here, not in __init__: pickle's NEWOBJ and NEWOBJ_EX
        # (how protocol 2+ rebuilds any class, dict and list subclasses included)
        # call __new__ alone, then fill the object with SETITEMS, APPENDS or BUILD.
        self = object.__new__(cls)
        self.args = args
        self.kwargs = kwargs
        self.state = None
        self.items = []
        self.mapping = {}
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: ``__new__`` recorded the arguments (REDUCE, INST, OBJ)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Placeholder:
        # REDUCE may call an object the pickle built (protocol 2 and 3 rebuild
        # keyword-argument classes as functools.partial(cls.__new__, …)()): the
        # result is one more placeholder, recording what was called with what.
        return type(self)(self, *args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        # BUILD: a dict, or (dict, slots) for classes with __slots__; only recorded
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.mapping[key] = value

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __repr__(self) -> str:
        return f"<placeholder for {self._nvir_module}.{self._nvir_name}>"


@dataclass
class _Storage:
    """A typed storage referenced by the pickle; ``data`` is a flat 1-D tensor."""

    dtype: torch.dtype
    key: str
    numel: int
    data: torch.Tensor | None = None


def _storage_type(dtype: torch.dtype) -> type:
    return type("StorageType", (), {"dtype": dtype})


def _as_storage(obj: Any) -> _Storage:
    if not isinstance(obj, _Storage) or obj.data is None:
        raise pickle.UnpicklingError(f"tensor data refers to an unknown storage ({obj!r})")
    return obj


def _rebuild_tensor(
    storage: Any, storage_offset: int, size: Any, stride: Any, *_: Any, **__: Any
) -> torch.Tensor:
    st = _as_storage(storage)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or len(size) > _MAX_DIMS:
        raise pickle.UnpicklingError(f"tensor has an impossible shape {size!r:.80}")
    if any(n < 0 for n in size) or any(s < 0 for s in stride) or int(storage_offset) < 0:
        raise pickle.UnpicklingError(f"tensor has a negative size, stride or offset {size!r:.80}")
    if size and any(s == 0 for s in size):
        return torch.empty(size, dtype=st.dtype)
    numel = 1
    for n in size:
        numel *= n
    if numel > max(st.data.numel(), _MAX_EXPANDED_NUMEL):
        raise pickle.UnpicklingError(
            f"tensor of size {size!r:.80} is larger than its storage {st.key} allows"
        )
    need = int(storage_offset) + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
    if need > st.data.numel():
        raise pickle.UnpicklingError(
            f"tensor of size {size} reaches past the end of storage {st.key}"
        )
    return torch.as_strided(st.data, size, stride, int(storage_offset)).clone()


def _rebuild_parameter(data: Any, *_: Any, **__: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter data is not a tensor")
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if func not in (_rebuild_tensor, _rebuild_parameter):
        return Placeholder(func, new_type, args, state)
    return func(*args)


def _encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as pickle uses it for bytes (latin-1); no other codec is looked up."""
    name = str(encoding).lower().replace("-", "").replace("_", "")
    if not isinstance(obj, str) or name not in ("latin1", "iso88591", "utf8") or errors != "strict":
        raise pickle.UnpicklingError(f"unsupported byte encoding {encoding!r:.40}")
    return codecs.encode(obj, "latin-1" if name != "utf8" else "utf-8")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("_codecs", "encode"): _encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors and plain containers; every other global is a Placeholder."""

    def __init__(self, file: io.BytesIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.file = file
        self.storages = storages
        self.placeholders: dict[str, type[Placeholder]] = {}

    def load(self) -> Any:
        """Check the opcodes of the pickle at the file's position, then unpickle it."""
        with warnings.catch_warnings():
            # a protocol-0 string with a bad escape makes pickletools warn; the
            # unpickler below refuses such a file with a clear message anyway
            warnings.simplefilter("ignore", DeprecationWarning)
            self._check_opcodes()
        return super().load()

    def _check_opcodes(self) -> None:
        start = self.file.tell()
        for count, (opcode, arg, pos) in enumerate(pickletools.genops(self.file)):
            if opcode.name in _REFUSED_OPCODES:
                raise pickle.UnpicklingError(
                    f"opcode {opcode.name} at byte {pos} (the extension registry) is not "
                    "used by torch and is refused"
                )
            # The C unpickler grows (and zeroes) its memo up to the index a PUT names:
            # one LONG_BINPUT of 2**31 would take 32 GB. A pickler numbers its memo
            # entries in order, so an index is never above the opcodes seen so far.
            if opcode.name in _MEMO_PUTS and int(arg) > count:
                raise pickle.UnpicklingError(
                    f"memo index {int(arg):,} at byte {pos} is out of order (damaged file)"
                )
        self.file.seek(start)

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and name in _STORAGE_DTYPES:
            return _storage_type(_STORAGE_DTYPES[name])
        full = f"{module}.{name}"
        cls = self.placeholders.get(full)
        if cls is None:
            cls = type(
                f"Placeholder[{full}]",
                (Placeholder,),
                {"_nvir_module": module, "_nvir_name": name},
            )
            self.placeholders[full] = cls
        return cls

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage" or len(pid) < 5:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        dtype = getattr(storage_type, "dtype", None)
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"storage {key} has an unsupported type {storage_type!r}")
        st = self.storages.setdefault(key, _Storage(dtype=dtype, key=key, numel=numel))
        if len(pid) > 5 and pid[5] is not None:  # legacy storage view: (view_key, offset, size)
            view_key, offset, size = str(pid[5][0]), int(pid[5][1]), int(pid[5][2])
            view = self.storages.setdefault(
                f"view:{view_key}", _Storage(dtype=dtype, key=view_key, numel=size)
            )
            if st.data is not None:
                view.data = st.data[offset : offset + size]
            return view
        return st


class _ScanUnpickler(RestrictedUnpickler):
    """First pass over a legacy checkpoint: records storages, rebuilds nothing."""

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)
        if found in (_rebuild_tensor, _rebuild_parameter, _rebuild_from_type_v2):
            return lambda *args, **kwargs: None
        return found


@dataclass
class Checkpoint:
    """What a checkpoint holds, tensors rebuilt and everything else inert."""

    path: Path
    content: Any
    placeholders: list[str] = field(default_factory=list)
    sha256: str = ""


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Unpickle a torch checkpoint safely (zip or legacy format)."""
    path = Path(path)
    raw = read_bytes(path, "Checkpoint", _FIX)
    try:
        if zipfile.is_zipfile(io.BytesIO(raw)):
            content, names = _read_zip(raw)
        elif raw[:1] == b"\x80" or raw.startswith(_LEGACY_TEXT_MAGIC):
            content, names = _read_legacy(raw)
        else:
            raise ModelLoadError(
                f"{path} is not a PyTorch checkpoint (neither zip nor pickle).", _FIX
            )
    except ModelLoadError:
        raise
    except MemoryError as exc:
        raise ModelLoadError(
            f"Checkpoint {path} is corrupt: it asks for more memory than this computer has.",
            _FIX,
        ) from exc
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        LookupError,
        ValueError,
        TypeError,
        AttributeError,
        ArithmeticError,
        RuntimeError,
        OSError,
        struct.error,
    ) as exc:
        raise ModelLoadError(
            f"Checkpoint {path} is corrupt or truncated: {_describe(exc)}.", _FIX
        ) from exc
    return Checkpoint(
        path=path, content=content, placeholders=names, sha256=hashlib.sha256(raw).hexdigest()
    )


def _describe(exc: BaseException) -> str:
    """The reason without Python's internals: the message, or the kind of problem."""
    text = str(exc).strip()
    if isinstance(exc, RecursionError):
        return "its objects are nested too deeply"
    if isinstance(exc, LookupError) and not isinstance(exc, UnicodeError):
        return f"it refers to a part that is missing ({text[:80]})"
    return text[:300] or type(exc).__name__


def _read_zip(raw: bytes) -> tuple[Any, list[str]]:
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise pickle.UnpicklingError("zip archive has no data.pkl (not a torch checkpoint)")
        prefix = pkl[: -len("data.pkl")]
        members = _ZipMembers(zf, budget=8 * len(raw) + (1 << 20))
        big_endian = False
        if prefix + "byteorder" in names:
            big_endian = members.read(prefix + "byteorder").strip() == b"big"
        storages = _ZipStorages(members, prefix, big_endian)
        unpickler = RestrictedUnpickler(io.BytesIO(members.read(pkl)), storages)
        content = unpickler.load()
    return content, sorted(unpickler.placeholders)


class _ZipMembers:
    """Reads zip members, never more bytes in all than ``budget`` (torch stores its
    members uncompressed; a compressed member that inflates far beyond the archive
    is a zip bomb, not a checkpoint)."""

    def __init__(self, zf: zipfile.ZipFile, budget: int) -> None:
        self.zf, self.budget = zf, budget

    def read(self, name: str) -> bytes:
        info = self.zf.getinfo(name)
        if info.file_size > self.budget:
            raise pickle.UnpicklingError(
                f"zip member {name} claims {info.file_size:,} bytes, far more than the archive"
            )
        self.budget -= info.file_size
        with self.zf.open(info) as fh:
            return fh.read(info.file_size)  # ZipExtFile inflates at most this much


class _ZipStorages(dict):
    """Storage table that reads ``<prefix>data/<key>`` when a key is first referenced."""

    def __init__(self, members: _ZipMembers, prefix: str, big_endian: bool) -> None:
        super().__init__()
        self.members, self.prefix, self.big_endian = members, prefix, big_endian

    def setdefault(self, key: str, default: _Storage) -> _Storage:  # type: ignore[override]
        st = super().setdefault(key, default)
        if st.data is None and not key.startswith("view:"):
            buf = self.members.read(f"{self.prefix}data/{key}")
            st.data = _frombuffer(buf, st.dtype, self.big_endian)
        return st


def _read_legacy(raw: bytes) -> tuple[Any, list[str]]:
    """torch's pre-1.6 format: magic, protocol, sys info, the object pickle, the
    storage key list, then each storage as an int64 element count and raw bytes."""
    f = io.BytesIO(raw)
    if RestrictedUnpickler(f, {}).load() != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a torch checkpoint (wrong magic number)")
    RestrictedUnpickler(f, {}).load()  # protocol version
    RestrictedUnpickler(f, {}).load()  # system info
    start = f.tell()
    storages: dict[str, _Storage] = {}
    _ScanUnpickler(f, storages).load()
    keys = RestrictedUnpickler(f, {}).load()
    if not isinstance(keys, list):
        raise pickle.UnpicklingError("storage key list missing")
    for key in keys:
        st = storages[str(key)]
        (count,) = struct.unpack("<q", f.read(8))
        nbytes = count * _element_size(st.dtype)
        buf = f.read(nbytes)
        if count < 0 or len(buf) != nbytes:
            raise EOFError(f"storage {key} is cut short")
        st.data = _frombuffer(buf, st.dtype, False)
    filled = {k: v for k, v in storages.items() if not k.startswith("view:")}
    f.seek(start)
    main = RestrictedUnpickler(f, filled)
    return main.load(), sorted(main.placeholders)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _frombuffer(buf: bytes, dtype: torch.dtype, big_endian: bool) -> torch.Tensor:
    if not buf:
        return torch.empty(0, dtype=dtype)
    t = torch.frombuffer(bytearray(buf), dtype=dtype)
    if big_endian and t.element_size() > 1:
        t = torch.frombuffer(
            bytearray(t.view(torch.uint8).view(-1, t.element_size()).flip(1).contiguous().numpy()),
            dtype=dtype,
        )
    return t


@dataclass
class ImportReport:
    """What ``import_checkpoint`` found and wrote."""

    source: Path
    out: Path
    tensors: int
    parameters: int
    prefix_stripped: str
    ignored_keys: list[str]
    placeholders: list[str]
    info: dict[str, Any]


def extract_state_dict(content: Any, source: str) -> tuple[dict[str, torch.Tensor], str]:
    """The network weights of a Lightning checkpoint (or a bare state dict), with
    a shared wrapper prefix such as ``model.`` removed. Returns (weights, prefix)."""
    state = content.get("state_dict", content) if isinstance(content, dict) else None
    if not isinstance(state, dict):
        raise ModelLoadError(
            f"{source} holds no state_dict (found {type(content).__name__}).",
            "Export the checkpoint with Lightning's trainer.save_checkpoint or torch.save(model.state_dict()).",
        )
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(f"{source} has a state_dict without tensors.", _FIX)
    prefix = ""
    if not any(k.startswith(("encoder.", "regression_head.")) for k in tensors):
        heads = {k.split(".", 1)[0] for k in tensors if "." in k}
        if len(heads) == 1:
            prefix = heads.pop() + "."
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors, prefix


def import_checkpoint(
    ckpt: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    spec: PreprocessSpec | None = None,
    dtype: str = "float32",
) -> ImportReport:
    """Convert the paper's ``.ckpt`` into an NViR model file.

    Missing or unexpected keys and shape mismatches are reported by name in a
    ModelLoadError and nothing is written. Optimizer and scheduler states are
    dropped. ``spec`` defaults to the paper's preprocessing.
    """
    checkpoint = read_checkpoint(ckpt)
    source = str(checkpoint.path)
    tensors, prefix = extract_state_dict(checkpoint.content, source)
    net = build_nvir()
    check_state_dict(tensors, net, source=source)
    state = {
        k: v.to(net.state_dict()[k].dtype) if v.is_floating_point() else v.long()
        for k, v in tensors.items()
    }
    net.load_state_dict(state, strict=True)
    net.eval()
    content = checkpoint.content if isinstance(checkpoint.content, dict) else {}
    info = {
        k: content[k]
        for k in ("epoch", "global_step", "pytorch-lightning_version")
        if isinstance(content.get(k), (int, float, str))
    }
    ignored = sorted(str(k) for k in content if k != "state_dict" and k not in info)
    metadata = {
        "provenance": {
            "source": f"PyTorch Lightning checkpoint {checkpoint.path.name}",
            "source_sha256": checkpoint.sha256,
            "imported_from": info,
        },
        "metrics": {},
    }
    written = save_model(out, net, spec or PreprocessSpec(), metadata, dtype=dtype)
    if checkpoint.placeholders:
        log.info(
            "%s: left as inert placeholders (not executed): %s",
            source,
            ", ".join(checkpoint.placeholders),
        )
    return ImportReport(
        source=checkpoint.path,
        out=written,
        tensors=len(tensors),
        parameters=parameter_count(net),
        prefix_stripped=prefix,
        ignored_keys=ignored,
        placeholders=checkpoint.placeholders,
        info=info,
    )
