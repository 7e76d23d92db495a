"""Object detection with tracks: ``task: detect``.

A torchvision detector on a ResNet backbone (:mod:`pipeline.tasks.detect.models`) runs on a
video's sampled frames (a rate, ``sampling.fps``, or a count, ``sampling.frames``), whole
frames fitted into the detector's input size at decode time. Boxes are reported in the
original frame's pixels (after its rotation tag), linked across the sampled frames into
tracks (:mod:`pipeline.tasks.detect.tracks`), and summarised per label and per track: one row per
video. The replica is :class:`pipeline.tasks.detect.replica.DetectReplica`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from pipeline.decode.base import DecodeSpec
from pipeline.errors import ConfigError
from pipeline.model.runtime import Runtime
from pipeline.output.rows import Provenance
from pipeline.spec import JobSpec, Spec
from pipeline.tasks.base import Task, TaskLines, random_weights_note
from pipeline.tasks.detect.demo import COMMANDS as DEMOS
from pipeline.tasks.detect.evaluate import evaluate
from pipeline.tasks.detect.models import (
    DETECTOR_NAMES,
    DetectorCard,
    detector_card,
    ensure_detector_weights,
)
from pipeline.tasks.detect.replica import DetectConfig, DetectReplica
from pipeline.tasks.detect.sampling import DetectSamplingSpec, detect_decode_spec

if TYPE_CHECKING:
    from pipeline.fit.training import Training


class DetectModelSpec(Spec):
    arch: Literal[DETECTOR_NAMES] = "fasterrcnn_resnet50_fpn_v2"  # type: ignore[valid-type]
    weights: str = Field("none", description="'none' (random weights), a torchvision "
                         "weights name (COCO_V1, DEFAULT) or a vidbatch checkpoint")
    labels: str | None = Field(None, description="text file of class names, one per line, "
                               "without the background")


class DetectSpec(Spec):
    score_threshold: float = Field(0.5, ge=0, le=1, description="detections below are "
                                   "dropped")
    max_per_frame: int = Field(100, ge=1, le=10_000)
    classes: list[str] | None = Field(None, description="keep only these class names; "
                                      "null keeps all")
    min_size: int | None = Field(None, ge=32, le=4096, description="detector input: short "
                                 "side; null: the model's default")
    max_size: int | None = Field(None, ge=32, le=8192, description="detector input: long "
                                 "side; null: the model's default")
    frames_per_batch: int = Field(8, ge=1, le=4096, description="frames per forward pass, "
                                  "gathered across the videos of a batch (inference."
                                  "batch_size counts videos)")
    track: bool = True
    tracker: Literal["bytetrack", "ocsort", "sort"] = Field(
        "bytetrack", description="the trackers package's ByteTrack, OC-SORT or SORT "
        "(compared in docs/detection.md)")
    lost_s: float = Field(1.0, gt=0, description="a track survives this long without a "
                          "detection")

    @model_validator(mode="after")
    def _sizes(self) -> DetectSpec:
        if self.min_size and self.max_size and self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) is larger than max_size "
                             f"({self.max_size})")
        return self


class DetectJobSpec(JobSpec):
    task: Literal["detect"] = "detect"
    sampling: DetectSamplingSpec = DetectSamplingSpec()
    model: DetectModelSpec = DetectModelSpec()
    detect: DetectSpec = DetectSpec()


BOX = pa.list_(pa.float32(), 4)
DETECTION = pa.struct([
    pa.field("frame_index", pa.int32()), pa.field("t_s", pa.float32()),
    pa.field("track_id", pa.int32()), pa.field("label_index", pa.int32()),
    pa.field("label", pa.string()), pa.field("score", pa.float32()), pa.field("box", BOX)])
LABEL_SUMMARY = pa.struct([
    pa.field("label", pa.string()), pa.field("frames", pa.int32()),
    pa.field("max_score", pa.float32()), pa.field("tracks", pa.int32())])
TRACK = pa.struct([
    pa.field("track_id", pa.int32()), pa.field("label", pa.string()),
    pa.field("first_s", pa.float32()), pa.field("last_s", pa.float32()),
    pa.field("frames", pa.int32()), pa.field("mean_score", pa.float32())])


def class_filter(card: DetectorCard, classes: list[str] | None) -> tuple[int, ...] | None:
    """The label indices of ``detect.classes``; a ``ConfigError`` names unknown ones."""
    if classes is None:
        return None
    index = {name: i for i, name in enumerate(card.class_names) if i > 0}
    unknown = [c for c in classes if c not in index]
    if unknown:
        some = ", ".join(n for n in list(index)[:12])
        raise ConfigError(f"detect.classes: {unknown} are not classes of {card.arch} "
                          f"({card.weights}); its classes include {some} ...")
    return tuple(sorted(index[c] for c in classes))


class DetectTask(Task):
    name = "detect"
    demos = DEMOS
    evaluation = staticmethod(evaluate)
    spec_class = DetectJobSpec
    resume_keys = ("model", "detect")
    architectures = DETECTOR_NAMES

    def resolve(self, spec: DetectJobSpec) -> DetectorCard:
        card = detector_card(spec.model.arch, spec.model.weights, spec.model.labels,
                             spec.detect.min_size, spec.detect.max_size)
        class_filter(card, spec.detect.classes)
        return card

    def fetch(self, model: DetectorCard) -> None:
        ensure_detector_weights(model)

    def decode_spec(self, spec: DetectJobSpec, model: DetectorCard) -> DecodeSpec:
        return detect_decode_spec(spec.sampling, spec.resources, model, spec.allow_uri_options)

    def output_fields(self, arch: str) -> list[pa.Field]:
        return [pa.field("frames_sampled", pa.int32()),
                pa.field("sampled_frames", pa.list_(pa.int32())),
                pa.field("detections", pa.list_(DETECTION)),
                pa.field("labels_found", pa.list_(LABEL_SUMMARY)),
                pa.field("tracks", pa.list_(TRACK))]

    def replica(self, spec: DetectJobSpec, model: DetectorCard, runtime: Runtime
                ) -> tuple[type, dict[str, Any]]:
        d = spec.detect
        config = DetectConfig(card=model, runtime=runtime, batch_size=d.frames_per_batch,
                              score_threshold=d.score_threshold, max_per_frame=d.max_per_frame,
                              keep=class_filter(model, d.classes), track=d.track,
                              tracker=d.tracker, lost_s=d.lost_s, schema=self.schema(model.arch),
                              provenance=self.provenance(spec, model))
        return DetectReplica, {"config": config}

    def provenance(self, spec: DetectJobSpec, model: DetectorCard) -> Provenance:
        return Provenance(model.arch, model.weights, spec.name)

    def describe(self, spec: DetectJobSpec, model: DetectorCard) -> TaskLines:
        d = spec.detect
        return TaskLines(
            model=f"{model.arch} (detector), weights {model.weights}, "
                  f"{len(model.class_names) - 1} classes, input {model.max_size}x"
                  f"{model.min_size}",
            output=f"detections with score >= {d.score_threshold:g}, at most "
                   f"{d.max_per_frame} per frame"
                   + (f", classes {d.classes}" if d.classes else "")
                   + (f", tracks ({d.tracker})" if d.track else ""),
            notes=random_weights_note(model.meaningful, "detections"))

    def record(self, model: DetectorCard) -> dict[str, Any]:
        return {"arch": model.arch, "weights": model.weights,
                "classes": len(model.class_names) - 1, "min_size": model.min_size,
                "max_size": model.max_size, "predictions_meaningful": model.meaningful}

    def summary(self, record: dict[str, Any], figures: dict[str, Any] | None = None
                ) -> list[str]:
        if record["model"]["predictions_meaningful"]:
            return []
        return ["note: weights: none -> random weights; detections are meaningless. Use a "
                "checkpoint from `vidbatch train` (task: detect) or torchvision's COCO_V1."]

    def training(self) -> Training:
        from pipeline.tasks.detect.train import DetectTraining

        return DetectTraining()
