"""What every task's training spec is made of: the sections a task's spec shares.

Built from the same pieces as the job spec (:mod:`pipeline.spec`: ``ManifestSpec``, the
decode resources, ``--set`` overrides, ``field.path: message`` errors, paths relative to
the spec file), so that a training run and the jobs that use its checkpoint describe
videos and models the same way. A task's own spec (``pipeline/tasks/<task>/train.py``)
subclasses :class:`TrainSpecBase` with its ``data``, ``model`` and other sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.paths import is_checkpoint_ref, resolve
from pipeline.spec import (
    NAME_PATTERN,
    DecodeResourcesSpec,
    ManifestSpec,
    Spec,
    check_uris,
    local_directory,
    manifest_shorthand,
    validate,
)


class DataSpec(Spec):
    """Labelled videos: a train and a val manifest, or one manifest split deterministically."""

    train: ManifestSpec
    val: ManifestSpec | None = Field(None, description="null: hold out val_fraction of train")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="per class, only without val")
    split_seed: int = 0

    _shorthand = field_validator("train", "val", mode="before")(
        classmethod(lambda cls, v: manifest_shorthand(v)))


class OptimSpec(Spec):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(8, ge=1, le=4096, description="clips per worker per step")
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0, description="peak learning rate (after warm-up)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    schedule: Literal["cosine", "step"] = "cosine"
    warmup_epochs: float = Field(0, ge=0, description="linear warm-up from lr/10")
    step_epochs: int = Field(10, ge=1, description="step schedule: epochs between decays")
    step_gamma: float = Field(0.1, gt=0, le=1, description="step schedule: decay factor")
    mixed_precision: Literal["off", "bf16", "fp16"] = Field(
        "bf16", description="autocast on GPU workers; CPU workers always train in fp32")
    seed: int = 0

    @model_validator(mode="after")
    def _warmup_fits(self) -> OptimSpec:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs:g}) must be less than "
                             f"epochs ({self.epochs})")
        return self


class TrainResourcesSpec(DecodeResourcesSpec):
    workers: int = Field(2, ge=1, description="Ray Train workers (DDP processes)")
    gpus_per_worker: float = Field(0, ge=0, description="0 trains on CPU (gloo)")
    cpus_per_worker: float = Field(1, gt=0)


class CheckpointSpec(Spec):
    storage_path: str = Field(description="runs go to <storage_path>/<name>")
    _local = field_validator("storage_path")(local_directory)
    every: int = Field(1, ge=1, description="checkpoint every this many epochs (and the last)")
    keep: int = Field(2, ge=1, description="checkpoints kept, best by the task's metric "
                      "first (the latest is always kept too, for resuming)")


class TrainSpecBase(Spec):
    """The sections every task's training spec has; a task adds ``data``, ``model`` and
    its own (sampling, augmentation, features)."""

    task: str  # the registry picks the spec class by it
    name: str = Field(pattern=NAME_PATTERN)
    data: DataSpec
    optim: OptimSpec = OptimSpec()
    resources: TrainResourcesSpec = TrainResourcesSpec()
    checkpoint: CheckpointSpec
    max_failures: int = Field(1, ge=-1, description="worker failures to recover from (from "
                              "the last checkpoint); -1 = unlimited")
    allow_uri_options: bool = Field(False, description="as in job specs: let URIs carry "
                                    "query options")


def resolve_train_paths(spec, base: Path, **data_paths: str):
    """A training spec (of any task) with its relative paths resolved against ``base``:
    the manifests, a checkpoint as ``model.weights``, ``checkpoint.storage_path``, and the
    task's own data files (``data_paths``: key of ``spec.data`` -> its value)."""
    data, weights = spec.data, spec.model.weights
    return spec.model_copy(update={
        "data": data.model_copy(update={
            "train": data.train.model_copy(update={"path": resolve(base, data.train.path)}),
            "val": data.val and data.val.model_copy(update={"path": resolve(base,
                                                                            data.val.path)}),
            **{k: resolve(base, v) for k, v in data_paths.items()},
        }),
        "model": spec.model.model_copy(update={
            "weights": resolve(base, weights) if is_checkpoint_ref(weights) else weights}),
        "checkpoint": spec.checkpoint.model_copy(update={
            "storage_path": resolve(base, spec.checkpoint.storage_path)}),
    })


def parse_train_spec(cls: type[Spec], data: Any, source: str, base_dir: Path | None,
                     reference: str, data_files: tuple[str, ...] = ()):
    """Validate a parsed training spec of class ``cls``: every URI checked (the
    manifests, the weights, and the task's own ``data_files``: keys of its ``data``
    section), and relative paths resolved against ``base_dir``."""
    spec = validate(cls, data, source, "training spec", reference)
    files = {k: getattr(spec.data, k) for k in data_files}
    check_uris({"data.train.path": spec.data.train.path,
                "data.val.path": spec.data.val and spec.data.val.path,
                "model.weights": spec.model.weights,
                **{f"data.{k}": v for k, v in files.items()}}, spec.allow_uri_options)
    return spec if base_dir is None else resolve_train_paths(spec, base_dir, **files)
