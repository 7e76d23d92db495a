"""Detection training specs: ``vidbatch train`` with ``task: detect``.

The same sections as a classification run (:mod:`pipeline.train.spec`: optimizer,
resources, checkpoints, failures) around detection's own: the data adds a **labels file**
of boxes, the sampling is the detect job's (frames per video, or a rate), and the model is
a detector (:mod:`pipeline.model.detectors`) with its input size.

The labels file (CSV, Parquet or JSONL) has one row per object per frame: ``video_id``,
``frame`` (the frame's index in the video, from 0), ``label`` (a class name), and the box
``x1, y1, x2, y2`` in the frame's pixels. A frame of a listed video with no row has no
objects: label every frame of the videos you list, or none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.model.detectors import DETECTOR_NAMES
from pipeline.spec import (
    NAME_PATTERN,
    ManifestSpec,
    Spec,
    manifest_shorthand,
)
from pipeline.tasks.detect import DetectSamplingSpec
from pipeline.train.spec import (
    CheckpointSpec,
    OptimSpec,
    TrainResourcesSpec,
    parse_train_spec,
)


class DetectDataSpec(Spec):
    """Videos (manifests) and their boxes (the labels file)."""

    train: ManifestSpec
    val: ManifestSpec | None = Field(None, description="null: hold out val_fraction of train")
    labels: str = Field(description="CSV/Parquet/JSONL: video_id, frame, label, x1, y1, x2, "
                        "y2 (pixels); every object in every frame of the listed videos")
    val_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 0

    _shorthand = field_validator("train", "val", mode="before")(
        classmethod(lambda cls, v: manifest_shorthand(v)))


class DetectTrainModelSpec(Spec):
    arch: Literal[DETECTOR_NAMES] = "fasterrcnn_resnet18_fpn"  # type: ignore[valid-type]
    weights: str = Field("none", description="starting weights: 'none' (from scratch), a "
                         "torchvision weights name, or a detection checkpoint")
    min_size: int | None = Field(None, ge=32, le=4096, description="input short side; "
                                 "null: the model's default")
    max_size: int | None = Field(None, ge=32, le=8192)


class DetectAugmentSpec(Spec):
    hflip: bool = Field(True, description="random horizontal flip of frame and boxes")


class DetectTrainSpec(Spec):
    task: Literal["detect"]
    name: str = Field(pattern=NAME_PATTERN)
    data: DetectDataSpec
    sampling: DetectSamplingSpec = DetectSamplingSpec()
    augment: DetectAugmentSpec = DetectAugmentSpec()
    model: DetectTrainModelSpec = DetectTrainModelSpec()
    optim: OptimSpec = OptimSpec()
    resources: TrainResourcesSpec = TrainResourcesSpec()
    checkpoint: CheckpointSpec
    max_failures: int = Field(1, ge=-1)
    allow_uri_options: bool = False


def parse_detect_trainspec(data: Any, source: str = "<spec>", base_dir: Path | None = None
                           ) -> DetectTrainSpec:
    """Validate a parsed detection training spec; resolve relative paths."""
    return parse_train_spec(DetectTrainSpec, data, source, base_dir, "docs/training.md",
                            data_files=("labels",))
