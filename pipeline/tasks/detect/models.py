"""Object detectors on ResNet backbones: the table, their weights and class names.

Four of torchvision's COCO detectors (``fasterrcnn_resnet50_fpn_v2`` is the default) and
two lighter Faster R-CNNs that vidbatch builds itself for CPU clusters: a ResNet-18 or
ResNet-34 body with a 128-channel FPN over strides 8-32, anchors from 24 to 192 pixels and
a 256-wide box head (no published weights: ``none``, or a checkpoint that
``vidbatch train`` writes).

Weights are ``none`` (random init), a torchvision weights name (``COCO_V1``, ``DEFAULT``),
or a vidbatch checkpoint. :func:`detector_card` resolves a detector without its tensors
(enough to plan); :func:`build_detector` loads them, in each replica and in training.
Label indices are the model's: index 0 is the background, ``class_names[i]`` names the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import WeightsError
from pipeline.model.checkpoint import (
    CHECKPOINT_FORMAT,
    read_checkpoint,
    task_checkpoint_metadata,
)
from pipeline.model.hub import load_state_dict, verified_file
from pipeline.model.zoo import RANDOM_WEIGHTS_SEED, labels_file, torchvision_weights
from pipeline.paths import is_checkpoint_ref


@dataclass(frozen=True)
class DetectorInfo:
    family: str  # "fasterrcnn", "retinanet", "fcos", "keypointrcnn"
    backbone: str
    torchvision: bool  # built by torchvision's builder, with published COCO weights
    min_size: int  # default input size: short side ...
    max_size: int  # ... and the cap on the long side


DETECTORS: dict[str, DetectorInfo] = {
    "fasterrcnn_resnet50_fpn_v2": DetectorInfo("fasterrcnn", "resnet50", True, 800, 1333),
    "retinanet_resnet50_fpn_v2": DetectorInfo("retinanet", "resnet50", True, 800, 1333),
    "fcos_resnet50_fpn": DetectorInfo("fcos", "resnet50", True, 800, 1333),
    "keypointrcnn_resnet50_fpn": DetectorInfo("keypointrcnn", "resnet50", True, 800, 1333),
    "fasterrcnn_resnet18_fpn": DetectorInfo("fasterrcnn", "resnet18", False, 384, 640),
    "fasterrcnn_resnet34_fpn": DetectorInfo("fasterrcnn", "resnet34", False, 384, 640),
}
DETECTOR_NAMES = tuple(DETECTORS)
BACKGROUND = "__background__"


@dataclass(frozen=True)
class DetectorCard:
    """A detector without its tensors: enough to plan a job."""

    arch: str
    weights: str  # as the user wrote it, or "none"
    source: str  # "none", "torchvision" or "checkpoint"
    class_names: tuple[str, ...]  # by label index; 0 is the background
    min_size: int
    max_size: int
    meaningful: bool  # False for random weights: detections mean nothing
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _names_file(path: str | None) -> tuple[str, ...] | None:
    """Class names from ``model.labels`` (one per line, without the background)."""
    names = labels_file(path)
    return None if names is None else (BACKGROUND, *names)


def detector_card(arch: str, weights: str, labels: str | None = None,
                  min_size: int | None = None, max_size: int | None = None) -> DetectorCard:
    """Resolve class names and input size without building the network."""
    info = DETECTORS[arch]
    names = _names_file(labels)
    size = (min_size or info.min_size, max_size or info.max_size)
    if weights.lower() == "none":
        if names is None:
            names = _default_names(arch)
        return DetectorCard(arch, "none", "none", names, *size, meaningful=False)
    if is_checkpoint_ref(weights):
        data = task_checkpoint_metadata(weights, "detect", "a detection", arch)
        trained = tuple(data["class_names"])
        _same_count(names, trained, "the checkpoint")
        size = (min_size or int(data["min_size"]), max_size or int(data["max_size"]))
        return DetectorCard(arch, weights, "checkpoint", names or trained, *size,
                            meaningful=True, extra={"metrics": data.get("metrics", {}),
                                                    "sampling": data.get("sampling") or {}})
    if not info.torchvision:
        raise WeightsError(f"model.weights: {arch} has no published weights; use 'none' or a "
                           "checkpoint from `vidbatch train` (task: detect)")
    w = torchvision_weights(arch, weights)
    published = tuple(w.meta["categories"])
    _same_count(names, published, f"{arch} {weights}")
    return DetectorCard(arch, weights, "torchvision", names or published, *size,
                        meaningful=True, extra={"url": w.url})


def _default_names(arch: str) -> tuple[str, ...]:
    """COCO's names for torchvision's detectors (from the weights' metadata: no download);
    numbered classes for vidbatch's own."""
    if DETECTORS[arch].torchvision:
        from torchvision.models import get_model_weights

        return tuple(get_model_weights(arch).DEFAULT.meta["categories"])
    return (BACKGROUND, *(f"class_{i}" for i in range(1, 91)))


def _same_count(names: tuple[str, ...] | None, model: tuple[str, ...], what: str) -> None:
    if names is not None and len(names) != len(model):
        raise WeightsError(f"model.labels has {len(names) - 1} names but {what} has "
                           f"{len(model) - 1} classes; make them match or remove model.labels")


def save_detector_checkpoint(path: str | Path, net, card: DetectorCard, **extra: Any) -> Path:
    """A detection checkpoint (``task: detect``) that a job rebuilds the detector from:
    class names, input size and weights, plus plain data (``sampling``, ``spec``,
    ``metrics``, ``epoch``)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "task": "detect", "arch": card.arch,
                "class_names": list(card.class_names), "min_size": card.min_size,
                "max_size": card.max_size,
                "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                **extra}, path)
    return path


def ensure_detector_weights(card: DetectorCard) -> None:
    """Download and verify torchvision weights on the driver (see ``model.zoo``)."""
    if card.source == "torchvision":
        verified_file(card.extra["url"])


def _light_fasterrcnn(backbone: str, num_classes: int, **kwargs):
    """vidbatch's CPU-sized Faster R-CNN (module docstring)."""
    import torch.nn as nn
    from torchvision.models import get_model
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    body = get_model(backbone, weights=None, norm_layer=nn.BatchNorm2d)
    widths = [128, 256, 512]  # layer2..layer4 of ResNet-18 and -34
    fpn = BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"}, widths, 128,
                          extra_blocks=LastLevelMaxPool())
    anchors = AnchorGenerator(((24,), (48,), (96,), (192,)), ((0.5, 1.0, 2.0),) * 4)
    return FasterRCNN(fpn, rpn_anchor_generator=anchors, box_head=TwoMLPHead(128 * 7 * 7, 256),
                      box_predictor=FastRCNNPredictor(256, num_classes),
                      rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
                      rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150,
                      rpn_batch_size_per_image=128, box_batch_size_per_image=128, **kwargs)


def new_detector(card: DetectorCard, score_threshold: float = 0.05, per_frame: int = 100):
    """The detector of ``card`` with random weights (CPU, train mode)."""
    from torchvision.models import get_model

    info = DETECTORS[card.arch]
    kwargs: dict[str, Any] = {"min_size": card.min_size, "max_size": card.max_size}
    if info.family in ("fasterrcnn", "keypointrcnn"):
        kwargs.update(box_score_thresh=score_threshold, box_detections_per_img=per_frame)
    else:
        kwargs.update(score_thresh=score_threshold, detections_per_img=per_frame)
    n = len(card.class_names)
    if not info.torchvision:
        return _light_fasterrcnn(info.backbone, n, **kwargs)
    return get_model(card.arch, weights=None, weights_backbone=None, num_classes=n, **kwargs)


def build_detector(card: DetectorCard, score_threshold: float = 0.05, per_frame: int = 100):
    """The detector with its weights loaded (CPU; eval mode not set).

    torchvision's COCO files were saved from models with frozen batch norm, which has no
    ``num_batches_tracked``; the model built here has plain batch norm (the same function
    in eval mode), so those keys, and only those, may be missing.
    """
    import torch

    if card.source == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return new_detector(card, score_threshold, per_frame)
    if card.source == "torchvision":
        state = load_state_dict(card.extra["url"])
    else:
        state = read_checkpoint(card.weights)["state_dict"]
    net = new_detector(card, score_threshold, per_frame)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise WeightsError(f"model.weights: {card.weights} does not fit {card.arch}: "
                           f"{str(e)[:400]}") from e
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(f"model.weights: {card.weights} does not fit {card.arch}: "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return net
