"""The ``model:`` section of a classification job: an architecture of the table and its
weights."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.model.archs import ARCHITECTURES
from pipeline.spec import Spec


class ModelSpec(Spec):
    arch: Literal[ARCHITECTURES]  # type: ignore[valid-type]
    weights: str = Field("none", description="'none', a torchvision weights name "
                         "(KINETICS400_V1, IMAGENET1K_V1, DEFAULT), or a checkpoint path")
    labels: str | None = Field(None, description="text file with one class name per line")
    num_classes: int | None = Field(None, ge=1, description="only with weights: none and no "
                                    "labels file")
