"""vidbatch checkpoints: written by training, read by inference (local files or URIs).

A checkpoint is ``torch.save`` of a dict: the format tag, the architecture, class names,
normalisation, input size, the weights (``state_dict``) and plain data (``sampling``,
``spec``, ``metrics``, ``epoch``). It is read with ``torch.load(weights_only=True)``: no
pickled code. Planning a job reads only its metadata, without torch
(:mod:`pipeline.model.checkpoint_meta`); of a remote checkpoint only the archive's
directory and its pickle are fetched then.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from pipeline.errors import WeightsError
from pipeline.model.card import ModelCard
from pipeline.model.checkpoint_meta import OversizedCheckpoint, check_pickle_size, read_metadata
from pipeline.paths import local_path

CHECKPOINT_FORMAT = "vidbatch.checkpoint/1"
CHECKPOINT_FILE = "model.pt"


def checkpoint_file(path: str) -> Path:
    p = Path(path)
    return p / CHECKPOINT_FILE if p.is_dir() else p


def _not_found(file: str) -> WeightsError:
    return WeightsError(f"model.weights: checkpoint {file} not found. Point it at a file "
                        f"written by `vidbatch train` (or its directory), or use 'none'.")


def _remote_checkpoint(uri: str):
    """``(filesystem, path, URI)`` of the checkpoint a URI names (the file, or
    ``model.pt`` under it), through pyarrow's filesystems (s3://, gs://, hdfs://)."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            path = f"{path.rstrip('/')}/{CHECKPOINT_FILE}"
            uri = f"{uri.rstrip('/')}/{CHECKPOINT_FILE}"
        found = fs.get_file_info(path).type == pafs.FileType.File
    except (pa.ArrowInvalid, ValueError, OSError) as e:
        raise WeightsError(f"model.weights: cannot open {uri}: {e}") from None
    if not found:
        raise _not_found(uri)
    return fs, path, uri


def _checkpoint_source(path: str, whole: bool):
    """``(what torch.load / zipfile open, its name for messages)``: a local file's path,
    or a remote file opened for random access (``whole``: read into memory, for the many
    small reads of torch.load)."""
    local = local_path(path)
    if local is None:
        fs, inner, uri = _remote_checkpoint(path)
        if whole:
            with fs.open_input_stream(inner) as f:
                return io.BytesIO(f.read()), uri
        return fs.open_input_file(inner), uri
    file = checkpoint_file(local)
    if not file.is_file():
        raise _not_found(str(file))
    return file, str(file)


def read_checkpoint(path: str) -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain containers only)."""
    import torch

    source, file = _checkpoint_source(path, whole=True)
    _refuse_oversized(source, file)
    try:
        data = torch.load(source, map_location="cpu", weights_only=True)
    except MemoryError:
        raise WeightsError(f"model.weights: {file} needs more memory to load than this "
                           "process has; it is not a checkpoint vidbatch wrote") from None
    except Exception as e:
        if not zipfile.is_zipfile(source):  # torch.save has written zip archives since 1.6
            raise WeightsError(f"model.weights: {file} is not a PyTorch checkpoint: torch.save "
                               "writes a zip archive, and this file is not one (another format,"
                               " or cut short). Point it at a model.pt written by `vidbatch "
                               "train` or a state dict saved with torch.save.") from None
        raise WeightsError(f"model.weights: cannot load {file} safely: {e}. Only tensors and "
                           "plain containers are accepted (torch.load weights_only=True).") from e
    if not isinstance(data, dict):
        raise WeightsError(f"model.weights: {file} holds a {type(data).__name__}, not a "
                           "checkpoint dict or a state dict")
    return data


def _refused(file: str, e: OversizedCheckpoint) -> WeightsError:
    return WeightsError(f"model.weights: refusing {file}: {e}. Point it at a model.pt "
                        "written by `vidbatch train` or a state dict saved with torch.save.")


def _refuse_oversized(source, file: str) -> None:
    """A ``WeightsError`` for an archive whose pickle no checkpoint would need
    (:func:`~pipeline.model.checkpoint_meta.check_pickle_size`); a file that is not a zip
    archive is left to the loader's own message."""
    try:
        with zipfile.ZipFile(source) as z:
            check_pickle_size(z)
    except OversizedCheckpoint as e:
        raise _refused(file, e) from None
    except (zipfile.BadZipFile, OSError):
        pass
    finally:
        if hasattr(source, "seek"):
            source.seek(0)


def read_checkpoint_metadata(path: str) -> dict[str, Any]:
    """The checkpoint as :func:`read_checkpoint` gives it, with tensors replaced by their
    shapes when :func:`~pipeline.model.checkpoint_meta.read_metadata` can read it without
    torch: enough to plan a job, without importing torch on the driver or reading the
    weights there (of a remote checkpoint, only the archive's directory and its pickle are
    fetched)."""
    source, file = _checkpoint_source(path, whole=False)
    try:
        data = read_metadata(source)
    except OversizedCheckpoint as e:
        raise _refused(file, e) from None
    except MemoryError:
        raise WeightsError(f"model.weights: reading {file} needs more memory than this "
                           "process has; it is not a checkpoint vidbatch wrote") from None
    finally:
        if hasattr(source, "close"):
            source.close()
    return data if data is not None else read_checkpoint(path)


def task_checkpoint_metadata(weights: str, task: str, kind: str, arch: str
                             ) -> dict[str, Any]:
    """The metadata (:func:`read_checkpoint_metadata`) of a checkpoint that ``vidbatch
    train`` wrote for ``task`` with ``arch``, or a ``WeightsError`` that names the fix;
    ``kind`` is how messages call it (``"a detection"``, ``"an audio"``)."""
    data = read_checkpoint_metadata(weights)
    if data.get("format") != CHECKPOINT_FORMAT or data.get("task") != task:
        raise WeightsError(f"model.weights: {weights} is not {kind} checkpoint written by "
                           f"`vidbatch train` with task: {task}")
    if data["arch"] != arch:
        raise WeightsError(f"model.arch is {arch} but checkpoint {weights} holds a "
                           f"{data['arch']}; set model.arch: {data['arch']}")
    return data


def save_checkpoint(path: str | Path, net, card: ModelCard, **extra: Any) -> Path:
    """Write a checkpoint that inference can rebuild the model from without the train spec.

    ``extra`` holds plain data only (``sampling``, ``spec``, ``metrics``, ``epoch``, ...).
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save({
        "format": CHECKPOINT_FORMAT, "arch": card.arch, "class_names": list(card.class_names),
        "mean": list(card.mean), "std": list(card.std), "short_side": card.short_side,
        "crop_size": card.crop_size, "state_dict": state, **extra,
    }, path)
    return path
