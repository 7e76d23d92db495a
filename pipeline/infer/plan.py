"""Plan an inference job: everything that can fail for a configuration reason (spec,
model, manifest, output policy), checked without starting Ray or writing anything.

:func:`plan_job` returns a :class:`JobPlan` that ``pipeline.infer.run`` executes;
:func:`describe` and :func:`check_paths` are what ``vidbatch submit --dry-run`` prints.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.dataflow import window_rows
from pipeline.decode.base import DecodeSpec
from pipeline.decode.stage import decode_batch
from pipeline.errors import ConfigError, ManifestError
from pipeline.infer.layout import ReplicaLayout
from pipeline.infer.resume import left_to_do
from pipeline.manifest import ID_HEX, LEGACY_ID_HEX, Todo, check_manifest
from pipeline.model.runtime import stream_threads
from pipeline.output.lease import refuse_if_held
from pipeline.output.outdir import OutputDir
from pipeline.output.rows import Provenance, with_shot_fields
from pipeline.output.store import prepare_output
from pipeline.paths import local_path
from pipeline.segments.detectors import check_installed
from pipeline.segments.plan import with_given_shots
from pipeline.segments.shots import Detector, SplitSpec, sequence_spec
from pipeline.spec import JobSpec
from pipeline.tasks.base import Task
from pipeline.tasks.registry import get_task


@dataclass(frozen=True)
class Inputs:
    """The manifest rows and the output, checked: everything that needs no model."""

    todo: Todo  # manifest rows still to process
    total_rows: int
    already_done: int
    unreadable: tuple[str, ...]  # output files whose rows are done again (set aside first)
    output: OutputDir
    id_hex: int  # hex digits of derived video ids (pipeline.manifest.derive_video_id)


@dataclass(frozen=True)
class JobPlan:
    spec: JobSpec
    task: Task
    model: Any  # the task's model card (Task.resolve)
    decode: DecodeSpec
    inputs: Inputs
    policy: str
    split: SplitSpec | None = None  # segments: shots: how videos become shot rows

    @property
    def todo(self) -> Todo:
        return self.inputs.todo

    @property
    def output(self) -> OutputDir:
        return self.inputs.output

    @property
    def provenance(self) -> Provenance:
        return self.task.provenance(self.spec, self.model)

    @property
    def schema(self) -> pa.Schema:
        schema = self.task.schema(self.provenance.model)
        return schema if self.split is None else with_shot_fields(schema)


def plan_job(spec: JobSpec, policy: str | None = None) -> JobPlan:
    """Validate everything that does not need a cluster. Writes nothing."""
    policy = policy or spec.output.if_exists
    task = get_task(spec.task)
    return assemble(spec, policy, task.resolve(spec), check_inputs(spec, policy))


def check_inputs(spec: JobSpec, policy: str) -> Inputs:
    """Check the manifest (out of core: :func:`~pipeline.manifest.check_manifest`) and the
    output policy; with ``resume``, leave out the rows an earlier run of the same job wrote
    (whose derived ids it keeps: older outputs have shorter ones)."""
    window_rows()  # VIDBATCH_WINDOW_ROWS, when set, must be a number of rows
    output = OutputDir.at(spec.output.path)
    earlier = prepare_output(output, policy, spec.model_dump(mode="json"), apply=False,
                             resume_keys=get_task(spec.task).resume_keys)
    refuse_if_held(output)
    id_hex = ID_HEX
    if policy == "resume" and earlier is not None:
        id_hex = earlier.get("id_hex", LEGACY_ID_HEX)
    scan = check_manifest(spec.manifest, id_hex)
    if scan.rows == 0:
        raise ManifestError(f"manifest {spec.manifest.path} has no rows; nothing to do")
    todo, unreadable = Todo(scan), ()
    if policy == "resume":
        todo, unreadable = left_to_do(scan, output, per_shot=spec.segments is not None)
    if spec.segments is not None and spec.segments.shots_from:
        # The shots job's rows are joined to the rows to do in memory (not out of core).
        todo = todo.with_table(with_given_shots(todo.read_all(), spec.segments.shots_from))
    return Inputs(todo, scan.rows, todo.skipped, unreadable, output, id_hex)


def assemble(spec: JobSpec, policy: str, model: Any, inputs: Inputs) -> JobPlan:
    """The plan, once the task's model is resolved."""
    inf = spec.inference
    if inf.precision == "fp16" and (inf.device == "cpu" or spec.resources.gpus_per_replica == 0):
        raise ConfigError("inference.precision: fp16 needs a GPU; use bf16 (or fp32) on CPU")
    task = get_task(spec.task)
    check_decode_on(spec, task)
    return JobPlan(spec, task, model, task.decode_spec(spec, model), inputs, policy,
                   split_spec(spec))


def check_decode_on(spec: JobSpec, task: Task) -> None:
    """``resources.decode_on: replica`` decodes sampled video frames (``decode_batch``), in
    a job that has replicas."""
    if spec.resources.decode_on != "replica":
        return
    if task.decode_stage is not decode_batch:
        raise ConfigError(f"resources.decode_on: replica decodes sampled video frames; the "
                          f"{task.name} task decodes {task.decode_stage.__name__}, in decode "
                          "tasks only: remove decode_on (or set it to tasks)")
    if spec.mode == "decode_only":
        raise ConfigError("resources.decode_on: replica leaves decoding to the replicas, "
                          "which mode: decode_only does not start; set decode_on: tasks to "
                          "measure decoding alone")


def split_spec(spec: JobSpec) -> SplitSpec | None:
    """How a job with ``segments: shots`` turns videos into shot rows (None without)."""
    seg = spec.segments
    if seg is None:
        return None
    detector = Detector.of(seg)
    if not seg.shots_from:
        check_installed(detector.name)
    return SplitSpec(sequence=sequence_spec(spec), detector=detector, min_s=seg.min_s,
                     max_s=seg.max_s)


def describe(plan: JobPlan, layout: ReplicaLayout | None = None) -> str:
    """The plan in a few lines; with the replica layout once Ray is connected."""
    s, d, i = plan.spec, plan.decode, plan.inputs
    res = s.resources
    lines = plan.task.describe(s, plan.model)
    model = (
        f"  model  : {lines.model}; {res.replicas} replica(s) x {res.cpus_per_replica:g} CPU"
        f"{_threads(layout)}, GPUs/replica {layout.gpus if layout else res.gpus_per_replica}"
        f", {s.inference.precision}, {s.inference.batch_size} videos/batch"
        if s.mode == "infer" else
        f"  model  : skipped (mode: decode_only); {plan.provenance.model} sets the input "
        "size only")
    out = [
        f"job {s.name} ({plan.task.name}): {i.total_rows} videos in {s.manifest.path}"
        + (f" ({i.already_done} already done, {i.todo.num_rows} to go)"
           if i.already_done else ""),
        *([f"  shots  : {_split(plan.split, s.segments.shots_from)}"] if plan.split else []),
        f"  decode : {_where(res.decode_on)}{d.describe()}; {res.videos_per_decode_task} "
        f"videos/task, {res.cpus_per_decode_task:g} CPU/task, parallelism "
        f"{res.decode_parallelism or 'auto'}",
        model,
        f"  output : {plan.output} (if it exists: {plan.policy})"
        + (f", {lines.output}" if lines.output and s.mode == "infer" else ""),
    ]
    if s.mode == "infer":
        out += [f"  note   : {n}" for n in lines.notes]
    return "\n".join(out)


def _where(decode_on: str) -> str:
    if decode_on == "tasks":
        return ""
    return ("on the replicas (NVDEC through torchcodec on a GPU, else the CPU decoders), "
            "frames chosen by a probe in decode tasks: ")


def _split(split: SplitSpec, shots_from: str | None) -> str:
    """The plan's line of a job per shot."""
    found = (f"from the shots job in {shots_from}" if shots_from else
             f"found by {split.detector.name} (threshold {split.detector.threshold:g}) "
             f"in decode tasks, on {split.sequence.describe()}")
    return (f"one row per shot, {found}; shots under {split.min_s:g} s merged, over "
            f"{split.max_s:g} s split")


def _threads(layout: ReplicaLayout | None) -> str:
    if layout is None or not layout.threads:
        return ""
    per = stream_threads(layout.threads, layout.streams)
    each = f"{per} torch thread{'s' if per > 1 else ''}"
    return f" ({each})" if per == layout.threads else f" ({layout.streams} streams x {each})"


def check_paths(plan: JobPlan, sample: int = 20, among: int = 10_000) -> tuple[int, list[str]]:
    """Check that a deterministic sample of the local paths of the first ``among`` rows to
    do exists: (checked, missing)."""
    paths = plan.todo.first_paths(among)
    chosen = random.Random(0).sample(paths, min(sample, len(paths)))
    local = [p for p in map(local_path, chosen) if p is not None]
    return len(chosen), [p for p in local if not os.path.exists(p)]
