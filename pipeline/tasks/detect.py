"""Object detection with tracks: ``task: detect``.

A torchvision detector on a ResNet backbone (:mod:`pipeline.model.detectors`) runs on a
video's sampled frames (a rate, ``sampling.fps``, or a count, ``sampling.frames``), whole
frames fitted into the detector's input size at decode time. Boxes are reported in the
original frame's pixels (after its rotation tag), linked across the sampled frames into
tracks (:mod:`pipeline.tasks.tracks`), and summarised per label and per track: one row per
video. The replica is :class:`pipeline.tasks.detect_replica.DetectReplica`.
"""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from pipeline.decode.base import DecodeSpec
from pipeline.errors import ConfigError
from pipeline.model.detectors import (
    DETECTOR_NAMES,
    DetectorCard,
    detector_card,
    ensure_detector_weights,
)
from pipeline.model.runtime import Runtime
from pipeline.output.rows import Provenance
from pipeline.spec import DecodeResourcesSpec, JobSpec, OutputSpec, Spec
from pipeline.tasks.base import Task, TaskLines
from pipeline.tasks.detect_replica import DetectConfig, DetectReplica


class DetectSamplingSpec(Spec):
    """Which frames of each video the detector sees."""

    fps: float | None = Field(None, gt=0, description="frames per second to sample (at most "
                              "`frames` of them); null: `frames` spread over the video")
    frames: int = Field(8, ge=1, le=1024, description="frames per video, or with fps the "
                        "most taken from one video")
    snap_to_keyframes: bool = Field(False, description="move each sampled frame to the "
                                    "nearest keyframe (faster decoding, frames less regular)")


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
    output: OutputSpec


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


def detect_decode_spec(s: DetectSamplingSpec, res: DecodeResourcesSpec, card: DetectorCard,
                       allow_uri_options: bool = False) -> DecodeSpec:
    """Whole frames fitted into the detector's input (``max_size`` x ``min_size``): what a
    detect job and detection training decode."""
    return DecodeSpec(clips=s.frames, frames=1, stride=None, short_side=card.min_size,
                      crop_size=card.min_size, threads=res.decode_threads,
                      timeout_s=res.decode_timeout_s, snap_to_keyframes=s.snap_to_keyframes,
                      decoder=res.decoder, allow_uri_options=allow_uri_options,
                      memory_mb=res.decode_memory_mb, max_file_mb=res.max_remote_file_mb,
                      canvas=(card.min_size, card.max_size), rate=s.fps)


class DetectTask(Task):
    name = "detect"
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
        notes = () if model.meaningful else (
            "weights: none means random weights; detections are meaningless (they only "
            "show the pipeline works)",)
        return TaskLines(
            model=f"{model.arch} (detector), weights {model.weights}, "
                  f"{len(model.class_names) - 1} classes, input {model.max_size}x"
                  f"{model.min_size}",
            output=f"detections with score >= {d.score_threshold:g}, at most "
                   f"{d.max_per_frame} per frame"
                   + (f", classes {d.classes}" if d.classes else "")
                   + (f", tracks ({d.tracker})" if d.track else ""),
            notes=notes)

    def record(self, model: DetectorCard) -> dict[str, Any]:
        return {"arch": model.arch, "weights": model.weights,
                "classes": len(model.class_names) - 1, "min_size": model.min_size,
                "max_size": model.max_size, "predictions_meaningful": model.meaningful}

    def summary(self, record: dict[str, Any], rows: pa.Table | None = None) -> list[str]:
        if record["model"]["predictions_meaningful"]:
            return []
        return ["note: weights: none -> random weights; detections are meaningless. Use a "
                "checkpoint from `vidbatch train` (task: detect) or torchvision's COCO_V1."]
