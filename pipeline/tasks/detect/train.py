"""Training a detector: ``vidbatch train`` with ``task: detect``.

The sections every task's training has (:mod:`pipeline.fit.spec`: optimizer, resources,
checkpoints, failures) around detection's own: the data adds a **labels file** of boxes
(:mod:`pipeline.tasks.detect.labels`), the sampling is the detect job's (frames per
video, or a rate), and the model is a detector (:mod:`pipeline.tasks.detect.models`)
with its input size.

The labels file (CSV, Parquet or JSONL) has one row per object per frame: ``video_id``,
``frame`` (the frame's index in the video, from 0), ``label`` (a class name), and the box
``x1, y1, x2, y2`` in the frame's pixels. A frame of a listed video with no row has no
objects: label every frame of the videos you list, or none of them.

The plan reads the manifests and the labels file, splits the videos, and checks every
label row against its video (:func:`~pipeline.tasks.detect.labels.check_labels`); videos
that cannot be opened are left to the decode stage, which counts them as decode errors.
Each video's boxes travel with its manifest row as JSON (column ``boxes``). Train and val
decode what a detect job decodes; the best checkpoint has the highest ``val_map``
(mAP@[.5:.95], COCO's primary metric). The worker loop is
:mod:`pipeline.tasks.detect.loop`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pipeline.errors import ManifestError
from pipeline.fit.epochs import LoopConfig
from pipeline.fit.plan import TrainPlan, split_rows
from pipeline.fit.spec import DataSpec, TrainSpecBase
from pipeline.fit.training import Training
from pipeline.manifest import read_manifest
from pipeline.spec import Spec
from pipeline.tasks.detect.labels import check_labels, read_labels, with_boxes
from pipeline.tasks.detect.models import (
    BACKGROUND,
    DETECTOR_NAMES,
    DetectorCard,
    detector_card,
    ensure_detector_weights,
)
from pipeline.tasks.detect.sampling import DetectSamplingSpec, detect_decode_spec


class DetectDataSpec(DataSpec):
    """Videos (manifests) and their boxes (the labels file)."""

    labels: str = Field(description="CSV/Parquet/JSONL: video_id, frame, label, x1, y1, x2, "
                        "y2 (pixels); every object in every frame of the listed videos")


class DetectTrainModelSpec(Spec):
    arch: Literal[DETECTOR_NAMES] = "fasterrcnn_resnet18_fpn"  # type: ignore[valid-type]
    weights: str = Field("none", description="starting weights: 'none' (from scratch), a "
                         "torchvision weights name, or a detection checkpoint")
    min_size: int | None = Field(None, ge=32, le=4096, description="input short side; "
                                 "null: the model's default")
    max_size: int | None = Field(None, ge=32, le=8192)


class DetectAugmentSpec(Spec):
    hflip: bool = Field(True, description="random horizontal flip of frame and boxes")


class DetectTrainSpec(TrainSpecBase):
    data: DetectDataSpec
    sampling: DetectSamplingSpec = DetectSamplingSpec()
    augment: DetectAugmentSpec = DetectAugmentSpec()
    model: DetectTrainModelSpec = DetectTrainModelSpec()


def detect_splits(spec: DetectTrainSpec) -> tuple[pa.Table, pa.Table, tuple[str, ...]]:
    """``(train rows, val rows, class names with the background first)``."""
    data = spec.data
    train = read_manifest(data.train)
    if data.val is None:
        flat = train.set_column(train.schema.get_field_index("label"), "label",
                                pa.array([""] * train.num_rows, pa.string()))
        train_ids, val_ids = (set(t["video_id"].to_pylist())
                              for t in split_rows(flat, data.val_fraction, data.split_seed))
        val = train.filter(pa.array([v in val_ids for v in train["video_id"].to_pylist()]))
        train = train.filter(pa.array([v in train_ids for v in
                                       train["video_id"].to_pylist()]))
    else:
        val = read_manifest(data.val)
    for what, rows in (("train", train), ("val", val)):
        if rows.num_rows == 0:
            raise ManifestError(f"the {what} split is empty; add videos to data.{what}"
                                + (" or raise data.val_fraction" if what == "val" else ""))
    labels = read_labels(data.labels)
    check_labels(labels, pa.concat_tables([train, val]), data.labels)
    in_train = pc.is_in(labels["video_id"], value_set=train["video_id"])
    classes = sorted(set(labels.filter(in_train)["label"].to_pylist()))
    if not classes:
        raise ManifestError(f"labels file {data.labels} has no boxes for the train videos")
    unknown = sorted(set(labels["label"].to_pylist()) - set(classes))
    if unknown:
        raise ManifestError(f"classes {unknown[:5]} have boxes only in val videos; add "
                            "training videos with them or drop those boxes")
    names = (BACKGROUND, *classes)
    return with_boxes(train, labels, names), with_boxes(val, labels, names), names


class DetectTraining(Training):
    spec_class = DetectTrainSpec
    data_files = ("labels",)
    columns = ("row", "frames", "frame_indices", "boxes", "width", "height")
    metric = "val_map"  # COCO's primary metric, mAP@[.5:.95]
    unit = "frames"

    def plan(self, spec: DetectTrainSpec, run_dir: Path, resume: bool) -> TrainPlan:
        train, val, names = detect_splits(spec)
        m = spec.model
        start = detector_card(m.arch, m.weights, None, m.min_size, m.max_size)
        card = DetectorCard(m.arch, str(run_dir / "best"), "checkpoint", names,
                            start.min_size, start.max_size, meaningful=True)
        decode = detect_decode_spec(spec.sampling, spec.resources, card,
                                    spec.allow_uri_options)
        return TrainPlan(spec, start, card, decode, decode, train, val, run_dir, resume)

    def fetch(self, start: DetectorCard) -> None:
        ensure_detector_weights(start)

    def examples_per_video(self, plan: TrainPlan) -> int:
        return plan.train_decode.clips  # each sampled frame is an example

    def loop_config(self, plan: TrainPlan, **common: Any) -> LoopConfig:
        from pipeline.tasks.detect.loop import DetectLoop, DetectLoopConfig

        return DetectLoopConfig(worker=DetectLoop, hflip=plan.spec.augment.hflip, **common)

    def classes(self, plan: TrainPlan) -> tuple[str, ...]:
        return plan.card.class_names[1:]

    def inputs(self, plan: TrainPlan) -> tuple[str, str]:
        return "frames", plan.train_decode.describe()

    def model_note(self, plan: TrainPlan) -> str:
        return f", input {plan.card.max_size}x{plan.card.min_size}"

    def epoch_line(self, m: dict[str, Any]) -> str:
        return (f"train loss {m['train_loss']:.3f} ({m['train_frames']} frames, "
                f"{m['frames_per_s']:.1f} frames/s) | val mAP@0.5 {m['val_map50']:.3f} "
                f"mAP@[.5:.95] {m['val_map']:.3f} ({m['val_frames']} frames)")

    def best(self, metrics: dict[str, Any], plan: TrainPlan) -> dict[str, Any]:
        return {"best_val_map50": metrics["val_map50"], "best_val_map": metrics["val_map"]}

    def headline(self, summary: dict[str, Any]) -> str:
        return (f"best val mAP@0.5 {summary['best_val_map50']:.3f} (mAP@[.5:.95] "
                f"{summary['best_val_map']:.3f})")
