"""The model zoo: torchvision ResNets, their weights, class names and normalisation.

Every architecture (:mod:`pipeline.model.archs`) is split into a ``body`` (everything up
to the pooled features, the embedding) and a linear ``head`` (the classifier). Averaging
embeddings over frames/clips and then applying the head equals averaging the logits,
because the head is linear.

Weights are ``none`` (random init), a torchvision weights name (``KINETICS400_V1``,
``IMAGENET1K_V1``, ``DEFAULT``), or a vidbatch checkpoint (:mod:`pipeline.model.checkpoint`).
:func:`model_card` resolves a model without its tensors (planning a job needs no torch when
the weights are a checkpoint); :func:`build_network` loads them (in each replica).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import WeightsError
from pipeline.model.archs import ARCHS
from pipeline.model.card import ModelCard
from pipeline.model.checkpoint import CHECKPOINT_FORMAT, read_checkpoint, read_checkpoint_metadata
from pipeline.model.hub import load_state_dict, verified_file
from pipeline.model.spec import ModelSpec
from pipeline.paths import is_checkpoint_ref

RANDOM_WEIGHTS_SEED = 0  # weights: none builds this same network everywhere


def torchvision_weights(arch: str, name: str):
    """The weights enum member ``name`` of ``arch``, or a ``WeightsError`` listing them."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    if name not in enum.__members__:
        raise WeightsError(f"model.weights: {name!r} is not a weights name of {arch}; choose "
                           f"one of {sorted(enum.__members__)}, 'none', or a checkpoint path")
    return enum[name]


def labels_file(path: str | None) -> tuple[str, ...] | None:
    """Class names from ``model.labels`` (one per line), or None without the key."""
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
    labels = labels_file(spec.labels)
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
    if is_checkpoint_ref(w):
        return _checkpoint_card(spec, labels)
    weights = torchvision_weights(spec.arch, w)
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
    """Download torchvision weights into the torch hub cache now, on the driver, and verify
    them (:func:`pipeline.model.hub.verified_file`), so that a machine without internet, or
    an altered cache, fails before any work starts, with a message that helps."""
    if card.source == "torchvision":
        verified_file(card.extra["url"])


def build_network(card: ModelCard):
    """The torch module with its weights loaded (on CPU, eval mode not set).

    With pretrained weights or a checkpoint the module is built on the meta device and the
    loaded tensors are assigned to it, skipping the random initialisation that the weights
    would overwrite (a noticeable part of every replica's start).
    """
    import torch
    from torchvision.models import get_model

    if card.source == "none":
        # The same random network in every replica and every run, so that the embeddings
        # of one job, or of a job and its rerun, can be compared.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return get_model(card.arch, weights=None, num_classes=len(card.class_names))
    if card.source == "torchvision":
        state = load_state_dict(card.extra["url"])
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


def split_head(net):
    """``(body, head)``: ``body(x)`` returns pooled features, ``head`` is the final Linear."""
    import torch.nn as nn

    head = net.fc
    net.fc = nn.Identity()
    return net, head


