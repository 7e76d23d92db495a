"""What a checkpoint says about its model, read without importing torch or loading tensors.

Planning a job needs a checkpoint's metadata (architecture, class names, normalisation, the
classifier's shape), not its weights. ``torch.load`` would import torch on the driver
(seconds, while Ray starts on the same cores) and read every tensor, only for the replicas
to load them again. ``torch.save`` writes a zip archive whose
``<name>/data.pkl`` is a pickle of the containers, with each tensor a call to
``torch._utils._rebuild_tensor_v2`` over a storage kept in ``<name>/data/<key>``. Unpickling
that with only those few names allowed gives the containers and, for each tensor, its shape;
each storage's file is checked for presence and size, not read.

Anything else (an older format, another global: what ``weights_only=True`` might still
accept, or refuse) returns ``None``, and the caller falls back to ``torch.load``.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

# bytes per element of the storage classes torch.save names
_ELEMENT_BYTES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2,
                  "BFloat16Storage": 2, "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2,
                  "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1}


@dataclass(frozen=True)
class TensorInfo:
    """A tensor of the checkpoint, known by its shape only."""

    shape: tuple[int, ...]


# A checkpoint's pickle holds its containers only (each tensor's bytes are a file of their
# own): even a large model's is a few hundred KB. Unpickling allocates many times the
# pickle's size, and a compressed pickle can expand a thousandfold, so a far larger one is
# refused from the archive's directory, before a byte of it is read.
MAX_PICKLE_BYTES = 32 * 2**20


class OversizedCheckpoint(Exception):
    """The archive's pickle is larger than any checkpoint's (:data:`MAX_PICKLE_BYTES`)."""


class _Unsupported(Exception):
    pass


def check_pickle_size(z: zipfile.ZipFile) -> None:
    """Raise :class:`OversizedCheckpoint` when a pickle in the archive declares more than
    :data:`MAX_PICKLE_BYTES` (zipfile never reads past the size an entry declares)."""
    for info in z.infolist():
        if info.filename.endswith(".pkl") and info.file_size > MAX_PICKLE_BYTES:
            raise OversizedCheckpoint(
                f"its {info.filename} unpacks to {info.file_size / 2**20:.0f} MiB, far more "
                f"than a checkpoint's pickle needs (at most {MAX_PICKLE_BYTES // 2**20} MiB)")


def _rebuild_tensor(storage, offset, size, stride, *rest) -> TensorInfo:
    return TensorInfo(tuple(int(n) for n in size))


def _rebuild_parameter(data, requires_grad, backward_hooks, *rest):
    return data


_GLOBALS = {("collections", "OrderedDict"): OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}


class _MetaUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, int]):
        super().__init__(file)
        self.storages = storages  # key -> bytes its file must hold

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _ELEMENT_BYTES:
            return name
        if (module, name) in _GLOBALS:
            return _GLOBALS[module, name]
        raise _Unsupported(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and pid[1] in _ELEMENT_BYTES):
            raise _Unsupported(repr(pid)[:80])
        _, kind, key, _location, numel = pid
        self.storages[str(key)] = int(numel) * _ELEMENT_BYTES[kind]
        return None


def read_metadata(file: Path | BinaryIO) -> dict[str, Any] | None:
    """The checkpoint's top-level dict with every tensor a :class:`TensorInfo`, or ``None``
    when this reader cannot vouch for the file (then ``torch.load`` decides).

    Raises:
        OversizedCheckpoint: its pickle is far larger than a checkpoint's (then nothing
            should read it).
    """
    try:
        with zipfile.ZipFile(file) as z:
            check_pickle_size(z)
            names = {i.filename: i.file_size for i in z.infolist()}
            pkl = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
            if len(pkl) != 1:
                return None
            prefix = pkl[0].removesuffix("data.pkl")
            storages: dict[str, int] = {}
            with z.open(pkl[0]) as f:
                data = _MetaUnpickler(f, storages).load()
    except (zipfile.BadZipFile, OSError, _Unsupported, pickle.UnpicklingError, EOFError,
            ValueError, TypeError, IndexError, KeyError, AttributeError):
        return None
    if not isinstance(data, dict):
        return None
    for key, size in storages.items():  # a truncated or hand-edited archive
        if names.get(f"{prefix}data/{key}", -1) < size:
            return None
    return data
