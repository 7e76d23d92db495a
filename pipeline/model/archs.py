"""The architecture table: what vidbatch knows of each torchvision ResNet, without torch.

Two kinds of architecture:

* ``frame``: 2D ImageNet ResNets (resnet18/34/50) applied to every sampled frame; the
  per-frame features are averaged over time (temporal average pooling).
* ``clip``: video ResNets (r3d_18, mc3_18, r2plus1d_18) applied to whole clips.
"""

from __future__ import annotations

from dataclasses import dataclass

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

ARCHITECTURES = tuple(ARCHS)
