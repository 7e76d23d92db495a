"""The model card: everything about a model except its tensors, enough to plan a job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelCard:
    arch: str
    kind: str  # "frame" or "clip" (pipeline.model.archs)
    weights: str  # as the user wrote it, or "none"
    source: str  # "none", "torchvision" or "checkpoint"
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    short_side: int
    crop_size: int
    meaningful: bool  # False for random weights: predictions mean nothing
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def clip_model(self) -> bool:
        return self.kind == "clip"
