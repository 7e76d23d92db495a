"""The model zoo: torchvision ResNets, their weights, class names and normalisation.

Two kinds of architecture:

* ``frame``: 2D ImageNet ResNets (resnet18/34/50) applied to every sampled frame; the
  per-frame features are averaged over time (temporal average pooling).
* ``clip``: video ResNets (r3d_18, mc3_18, r2plus1d_18) applied to whole clips.

Either way the model is split into a ``body`` (everything up to the pooled features, the
embedding) and a linear ``head`` (the classifier). Averaging embeddings over frames/clips
and then applying the head equals averaging the logits, because the head is linear.

Weights are ``none`` (random init), a torchvision weights name (``KINETICS400_V1``,
``IMAGENET1K_V1``, ``DEFAULT``), or a vidbatch checkpoint (a file, or a directory holding
``model.pt``). Checkpoints are read with ``torch.load(weights_only=True)``: no pickled code.
Planning a job reads only a checkpoint's metadata, without torch (:mod:`pipeline.checkpoint`).
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.checkpoint import read_metadata
from pipeline.errors import WeightsError
from pipeline.jobspec import ModelSpec
from pipeline.outdir import is_uri

CHECKPOINT_FORMAT = "vidbatch.checkpoint/1"
CHECKPOINT_FILE = "model.pt"
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
KINETICS_NORM = ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))


@dataclass(frozen=True)
class ArchInfo:
    kind: str  # "frame" or "clip"
    short_side: int
    crop_size: int
    default_classes: int
    embed_dim: int
    norm: tuple[tuple[float, ...], tuple[float, ...]]


ARCHS: dict[str, ArchInfo] = {
    "resnet18": ArchInfo("frame", 256, 224, 1000, 512, IMAGENET_NORM),
    "resnet34": ArchInfo("frame", 256, 224, 1000, 512, IMAGENET_NORM),
    "resnet50": ArchInfo("frame", 256, 224, 1000, 2048, IMAGENET_NORM),
    **{a: ArchInfo("clip", 128, 112, 400, 512, KINETICS_NORM)
       for a in ("r3d_18", "mc3_18", "r2plus1d_18")},
}


@dataclass(frozen=True)
class ModelCard:
    """Everything about a model except its tensors: enough to plan a job."""

    arch: str
    kind: str
    weights: str  # as the user wrote it, or "none"
    source: str  # "none", "torchvision" or "checkpoint"
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    short_side: int
    crop_size: int
    meaningful: bool  # False for random weights: predictions mean nothing
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _is_checkpoint(weights: str) -> bool:
    return "/" in weights or os.sep in weights or weights.endswith((".pt", ".pth", ".ckpt"))


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
    if is_uri(path):
        fs, inner, uri = _remote_checkpoint(path)
        if whole:
            with fs.open_input_stream(inner) as f:
                return io.BytesIO(f.read()), uri
        return fs.open_input_file(inner), uri
    file = checkpoint_file(path.removeprefix("file://"))
    if not file.is_file():
        raise _not_found(str(file))
    return file, str(file)


def read_checkpoint(path: str) -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain containers only)."""
    import torch

    source, file = _checkpoint_source(path, whole=True)
    try:
        data = torch.load(source, map_location="cpu", weights_only=True)
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


def read_checkpoint_metadata(path: str) -> dict[str, Any]:
    """The checkpoint as :func:`read_checkpoint` gives it, with tensors replaced by their
    shapes when :func:`pipeline.checkpoint.read_metadata` can read it without torch: enough
    to plan a job, without importing torch on the driver or reading the weights there (of a
    remote checkpoint, only the archive's directory and its pickle are fetched)."""
    source, _ = _checkpoint_source(path, whole=False)
    try:
        data = read_metadata(source)
    finally:
        if hasattr(source, "close"):
            source.close()
    return data if data is not None else read_checkpoint(path)


def _torchvision_weights(arch: str, name: str):
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    if name not in enum.__members__:
        raise WeightsError(f"model.weights: {name!r} is not a weights name of {arch}; choose "
                           f"one of {sorted(enum.__members__)}, 'none', or a checkpoint path")
    return enum[name]


def _labels_file(path: str | None) -> tuple[str, ...] | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"model.labels: {p} not found; give a text file with one class "
                           "name per line, or remove the key")
    names = tuple(ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip())
    if not names:
        raise WeightsError(f"model.labels: {p} holds no class names")
    return names


def _check_label_count(names: tuple[str, ...] | None, n: int, what: str) -> None:
    if names is not None and len(names) != n:
        raise WeightsError(f"model.labels has {len(names)} names but {what} has {n} classes; "
                           "make them match or remove model.labels")


def model_card(spec: ModelSpec) -> ModelCard:
    """Resolve class names, normalisation and input size without building the network."""
    info = ARCHS[spec.arch]
    labels = _labels_file(spec.labels)
    w = spec.weights
    if w.lower() == "none":
        n = spec.num_classes or (len(labels) if labels else info.default_classes)
        _check_label_count(labels, n, "model.num_classes")
        names = labels or tuple(f"class_{i}" for i in range(n))
        return ModelCard(spec.arch, info.kind, "none", "none", names, *info.norm,
                         info.short_side, info.crop_size, meaningful=False)
    if spec.num_classes is not None:
        raise WeightsError("model.num_classes: only allowed with weights: none (pretrained "
                           "weights and checkpoints fix the number of classes)")
    if _is_checkpoint(w):
        return _checkpoint_card(spec, labels)
    weights = _torchvision_weights(spec.arch, w)
    names = tuple(weights.meta["categories"])
    _check_label_count(labels, len(names), f"{spec.arch} {w}")
    t = weights.transforms()
    resize = t.resize_size[0] if isinstance(t.resize_size, (list, tuple)) else t.resize_size
    return ModelCard(spec.arch, info.kind, w, "torchvision", labels or names, tuple(t.mean),
                     tuple(t.std), int(resize), int(t.crop_size[0]), meaningful=True,
                     extra={"url": weights.url})


def _checkpoint_card(spec: ModelSpec, labels: tuple[str, ...] | None) -> ModelCard:
    info = ARCHS[spec.arch]
    data = read_checkpoint_metadata(spec.weights)
    if data.get("format") == CHECKPOINT_FORMAT:
        if data["arch"] != spec.arch:
            raise WeightsError(f"model.arch is {spec.arch} but checkpoint {spec.weights} holds "
                               f"a {data['arch']}; set model.arch: {data['arch']}")
        names = tuple(data["class_names"])
        _check_label_count(labels, len(names), "the checkpoint")
        return ModelCard(spec.arch, info.kind, spec.weights, "checkpoint", labels or names,
                         tuple(data["mean"]), tuple(data["std"]), int(data["short_side"]),
                         int(data["crop_size"]), meaningful=True,
                         extra={"metrics": data.get("metrics", {}),
                                "sampling": data.get("sampling") or {}})
    # A bare state dict (e.g. a torchvision fine-tune saved with model.state_dict()).
    if "fc.weight" not in data:
        raise WeightsError(f"model.weights: {spec.weights} is neither a vidbatch checkpoint "
                           "nor a ResNet state dict (no fc.weight)")
    n = int(data["fc.weight"].shape[0])
    _check_label_count(labels, n, "the checkpoint")
    names = labels or tuple(f"class_{i}" for i in range(n))
    return ModelCard(spec.arch, info.kind, spec.weights, "checkpoint", names, *info.norm,
                     info.short_side, info.crop_size, meaningful=True)


def ensure_weights_available(card: ModelCard) -> None:
    """Download torchvision weights into the torch hub cache now, on the driver, so that a
    machine without internet fails before any work starts, with a message that helps."""
    if card.source != "torchvision":
        return
    from torch.hub import get_dir, load_state_dict_from_url

    url = card.extra["url"]
    cached = Path(get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if cached.is_file():
        return
    try:
        load_state_dict_from_url(url, progress=False, map_location="cpu")
    except Exception as e:
        raise WeightsError(
            f"model.weights: cannot download {card.weights} for {card.arch} from {url} ({e}). "
            f"Either put the file at {cached} (TORCH_HOME sets the cache), point model.weights "
            "at a local checkpoint, or use weights: none (random weights, meaningless "
            "predictions).") from None


def build_network(card: ModelCard):
    """The torch module with its weights loaded (on CPU, eval mode not set).

    With pretrained weights or a checkpoint the module is built on the meta device and the
    loaded tensors are assigned to it: random initialisation that the weights would
    overwrite costs ~0.6 s for r3d_18 at every replica start (2 cores).
    """
    import torch
    from torchvision.models import get_model

    if card.source == "none":
        return get_model(card.arch, weights=None, num_classes=len(card.class_names))
    if card.source == "torchvision":
        state = _torchvision_weights(card.arch, card.weights).get_state_dict(
            progress=False, check_hash=True)
    else:
        data = read_checkpoint(card.weights)
        state = data["state_dict"] if data.get("format") == CHECKPOINT_FORMAT else data
    with torch.device("meta"):
        net = get_model(card.arch, weights=None, num_classes=len(card.class_names))
    try:
        net.load_state_dict(state, assign=True)
    except RuntimeError as e:
        raise WeightsError(f"model.weights: {card.weights} does not fit {card.arch}: "
                           f"{str(e)[:400]}") from e
    return net


def channels_first(x, clip_model: bool):
    """Clips ``(n, T, H, W, 3)`` -> the network's layout: ``(n, 3, T, H, W)`` for clip
    models, ``(n * T, 3, H, W)`` (every frame an image) for frame models."""
    return x.permute(0, 4, 1, 2, 3) if clip_model else x.flatten(0, 1).permute(0, 3, 1, 2)


def split_head(net):
    """``(body, head)``: ``body(x)`` returns pooled features, ``head`` is the final Linear."""
    import torch.nn as nn

    head = net.fc
    net.fc = nn.Identity()
    return net, head


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
