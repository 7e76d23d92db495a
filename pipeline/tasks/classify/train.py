"""Training a classifier: ``vidbatch train`` with ``task: classify`` (the default).

The spec (``jobs/train.yaml``): labelled manifests, the job's sampling, clip augmentation,
a zoo architecture and its starting weights, and the sections every task's training has
(:mod:`pipeline.fit.spec`). The plan reads and splits the labelled rows
(:func:`pipeline.fit.plan.read_splits`) and decodes exactly what inference decodes for
validation, and several candidate clip positions, uncropped, for training (see
docs/training.md). The worker loop is :mod:`pipeline.tasks.classify.loop`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.decode.base import DecodeSpec
from pipeline.fit.epochs import LoopConfig
from pipeline.fit.plan import TrainPlan, read_splits
from pipeline.fit.spec import TrainSpecBase
from pipeline.fit.training import ClassifierTraining
from pipeline.model.archs import ARCHITECTURES
from pipeline.model.card import ModelCard
from pipeline.model.spec import ModelSpec
from pipeline.model.zoo import ensure_weights_available, model_card
from pipeline.spec import SamplingSpec, Spec
from pipeline.tasks.classify.augment import ClipAugment


class AugmentSpec(Spec):
    """Train-time augmentation of clips (validation and inference see plain clips)."""

    temporal_positions: int = Field(
        4, ge=1, le=64, description="random temporal offset: each epoch takes one of this "
        "many evenly spaced clip positions per video (1 = always the centre)")
    crop_scale: tuple[float, float] = Field(
        (0.6, 1.0), description="random resized crop: area range relative to the frame")
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = Field(True, description="random horizontal flip; turn off when the label "
                        "depends on left/right (e.g. the motion demo)")

    @field_validator("crop_scale", "crop_ratio")
    @classmethod
    def _ordered_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("must be [low, high] with 0 < low <= high")
        return v

    @field_validator("crop_scale")
    @classmethod
    def _at_most_one(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[1] > 1:
            raise ValueError("areas are fractions of the frame: high must be <= 1")
        return v


class TrainModelSpec(Spec):
    arch: Literal[ARCHITECTURES]  # type: ignore[valid-type]
    weights: str = Field("none", description="starting weights: 'none' (from scratch), a "
                         "torchvision weights name, or a vidbatch checkpoint path")


class TrainSpec(TrainSpecBase):
    task: Literal["classify"] = "classify"
    sampling: SamplingSpec = SamplingSpec()
    augment: AugmentSpec = AugmentSpec()
    model: TrainModelSpec


def plan(spec: TrainSpec, run_dir: Path, resume: bool) -> TrainPlan:
    """Splits, cards and decodes of a classification run."""
    train, val, names = read_splits(spec)
    start = model_card(ModelSpec(arch=spec.model.arch, weights=spec.model.weights))
    val_decode = DecodeSpec.from_sampling(spec.sampling, spec.resources, start.short_side,
                                          start.crop_size,
                                          allow_uri_options=spec.allow_uri_options)
    # Without a stride, clips spread over 1/positions of the video would play faster than
    # the clips seen at validation and inference: then only the inference clips are
    # candidates (see docs/training.md).
    s = spec.sampling
    positions = spec.augment.temporal_positions if s.frame_stride else s.clips_per_video
    train_decode = replace(val_decode, clips=positions, crop_size=val_decode.short_side)
    card = replace(start, weights=str(run_dir / "best"), source="checkpoint",
                   class_names=names, short_side=val_decode.short_side,
                   crop_size=val_decode.crop_size, meaningful=True, extra={})
    return TrainPlan(spec, start, card, train_decode, val_decode, train, val, run_dir,
                     resume)


class ClassifyTraining(ClassifierTraining):
    spec_class = TrainSpec
    columns = ("row", "frames", "target")

    def plan(self, spec: TrainSpec, run_dir: Path, resume: bool) -> TrainPlan:
        return plan(spec, run_dir, resume)

    def fetch(self, start: ModelCard) -> None:
        ensure_weights_available(start)

    def loop_config(self, plan: TrainPlan, **common: Any) -> LoopConfig:
        from pipeline.tasks.classify.loop import ClassifyLoop, ClassifyLoopConfig

        a = plan.spec.augment
        augment = ClipAugment(crop_size=plan.val_decode.crop_size, crop_scale=a.crop_scale,
                              crop_ratio=a.crop_ratio, hflip=a.hflip)
        return ClassifyLoopConfig(worker=ClassifyLoop, augment=augment, **common)

    def inputs(self, plan: TrainPlan) -> tuple[str, str]:
        t = plan.train_decode
        return "clips", (f"{t.frames} frames (stride {t.stride or 'uniform'}), {t.clips} "
                         f"candidate position(s), short side {t.short_side} -> crop "
                         f"{plan.card.crop_size}")
