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
from pipeline.paths import is_checkpoint_ref, resolve
from pipeline.spec import (
    NAME_PATTERN,
    ManifestSpec,
    Spec,
    check_uris,
    manifest_shorthand,
    validate,
)
from pipeline.tasks.detect import DetectSamplingSpec
from pipeline.train.spec import CheckpointSpec, OptimSpec, TrainResourcesSpec


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


def _resolve_paths(spec: DetectTrainSpec, base: Path) -> DetectTrainSpec:
    data, weights = spec.data, spec.model.weights
    return spec.model_copy(update={
        "data": data.model_copy(update={
            "train": data.train.model_copy(update={"path": resolve(base, data.train.path)}),
            "val": data.val and data.val.model_copy(update={"path": resolve(base,
                                                                            data.val.path)}),
            "labels": resolve(base, data.labels),
        }),
        "model": spec.model.model_copy(update={
            "weights": resolve(base, weights) if is_checkpoint_ref(weights) else weights}),
        "checkpoint": spec.checkpoint.model_copy(update={
            "storage_path": resolve(base, spec.checkpoint.storage_path)}),
    })


def parse_detect_trainspec(data: Any, source: str = "<spec>", base_dir: Path | None = None
                           ) -> DetectTrainSpec:
    """Validate a parsed detection training spec; resolve relative paths."""
    spec = validate(DetectTrainSpec, data, source, "training spec", "docs/training.md")
    check_uris({"data.train.path": spec.data.train.path,
                "data.val.path": spec.data.val and spec.data.val.path,
                "data.labels": spec.data.labels,
                "model.weights": spec.model.weights}, spec.allow_uri_options)
    return spec if base_dir is None else _resolve_paths(spec, base_dir)
