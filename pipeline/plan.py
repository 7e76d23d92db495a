"""Plan an inference job: everything that can fail for a configuration reason (spec,
weights, manifest, output policy), checked without starting Ray or writing anything.

:func:`plan_job` returns a :class:`JobPlan` that ``pipeline.run`` executes; ``describe``
and ``check_paths`` are what ``vidbatch submit --dry-run`` prints.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.decode import DecodeSpec
from pipeline.errors import ConfigError, ManifestError
from pipeline.infer import InferSpec, stream_threads
from pipeline.jobspec import JobSpec, SamplingSpec
from pipeline.manifest import read_manifest
from pipeline.models import ModelCard, model_card
from pipeline.outdir import OutputDir
from pipeline.sink import done_ids, prepare_output


@dataclass(frozen=True)
class JobPlan:
    spec: JobSpec
    card: ModelCard
    decode: DecodeSpec
    infer: InferSpec
    todo: pa.Table  # manifest rows still to process
    total_rows: int
    already_done: int
    unreadable: tuple[str, ...]  # output files whose rows are done again (set aside first)
    output: OutputDir
    policy: str


# Spec keys a checkpoint's stored sampling fills in when the job spec leaves them out.
FROM_CHECKPOINT = {"clips_per_video": "clips", "frames_per_clip": "frames",
                   "frame_stride": "stride"}


def input_size(s: SamplingSpec, card: ModelCard) -> tuple[int, int]:
    """``(short_side, crop_size)``: the spec's values, else the model's defaults."""
    short, crop = s.short_side or card.short_side, s.crop_size or card.crop_size
    if crop > short:
        raise ConfigError(f"sampling.crop_size ({crop}) is larger than sampling.short_side "
                          f"({short}); raise short_side or lower crop_size")
    return short, crop


def _decode_spec(spec: JobSpec, card: ModelCard) -> DecodeSpec:
    s = spec.sampling
    short, crop = input_size(s, card)
    trained = card.extra.get("sampling", {})
    clip = {key: trained[ck] if key not in s.model_fields_set and ck in trained
            else getattr(s, key) for key, ck in FROM_CHECKPOINT.items()}
    return DecodeSpec(clips=clip["clips_per_video"], frames=clip["frames_per_clip"],
                      stride=clip["frame_stride"], short_side=short, crop_size=crop,
                      threads=spec.resources.decode_threads,
                      timeout_s=spec.resources.decode_timeout_s,
                      snap_to_keyframes=s.snap_to_keyframes, decoder=spec.resources.decoder)


def plan_job(spec: JobSpec, policy: str | None = None) -> JobPlan:
    """Validate everything that does not need a cluster. Writes nothing."""
    policy = policy or spec.output.if_exists
    card = model_card(spec.model)
    return assemble(spec, policy, card, check_inputs(spec, policy))


def check_inputs(spec: JobSpec, policy: str
                 ) -> tuple[pa.Table, int, int, tuple[str, ...], OutputDir]:
    """``(rows to do, manifest rows, rows already done, unreadable output files, output)``,
    after checking the manifest and the output policy: everything that needs no model."""
    manifest = read_manifest(spec.manifest)
    if manifest.num_rows == 0:
        raise ManifestError(f"manifest {spec.manifest.path} has no rows; nothing to do")
    output = OutputDir.at(spec.output.path)
    prepare_output(output, policy, spec.model_dump(mode="json"), apply=False)
    todo, done, unreadable = manifest, 0, ()
    if policy == "resume":
        finished, unreadable = done_ids(output)
        if finished:
            written = pc.is_in(manifest["video_id"], value_set=pa.array(sorted(finished)))
            todo = manifest.filter(pc.invert(written))
            done = manifest.num_rows - todo.num_rows
    return todo, manifest.num_rows, done, unreadable, output


def assemble(spec: JobSpec, policy: str, card: ModelCard,
             inputs: tuple[pa.Table, int, int, tuple[str, ...], OutputDir]) -> JobPlan:
    decode = _decode_spec(spec, card)
    inf = spec.inference
    if inf.precision == "fp16" and (inf.device == "cpu" or spec.resources.gpus_per_replica == 0):
        raise ConfigError("inference.precision: fp16 needs a GPU; use bf16 (or fp32) on CPU")
    infer = InferSpec(card=card, precision=inf.precision, device=inf.device,
                      channels_last=inf.channels_last, top_k=spec.output.top_k,
                      embeddings=spec.output.embeddings,
                      threads=spec.resources.threads_per_replica or 0, job=spec.name)
    return JobPlan(spec, card, decode, infer, *inputs, policy)


def describe(plan: JobPlan, gpus: float | str | None = None, threads: int | None = None,
             streams: int | None = None) -> str:
    s, c, d = plan.spec, plan.card, plan.decode
    res = s.resources
    model = (
        f"  model  : {c.arch} ({c.kind} model), weights {c.weights}, {len(c.class_names)} "
        f"classes, {res.replicas} replica(s) x {res.cpus_per_replica:g} CPU"
        f"{_threads(threads, streams)}, GPUs/replica "
        f"{gpus if gpus is not None else res.gpus_per_replica}, {s.inference.precision}, "
        f"{s.inference.batch_size} videos/batch"
        if s.mode == "infer" else
        f"  model  : skipped (mode: decode_only); {c.arch} sets the input size only")
    lines = [
        f"job {s.name}: {plan.total_rows} videos in {s.manifest.path}"
        + (f" ({plan.already_done} already done, {plan.todo.num_rows} to go)"
           if plan.already_done else ""),
        f"  decode : {res.decoder} ({'PyAV' if res.decoder == 'decord' else 'decord'} "
        f"fallback), {d.clips} clip(s) x {d.frames} frames"
        f" ({'stride ' + str(d.stride) if d.stride else 'uniform spread'}), short side "
        f"{d.short_side}, crop {d.crop_size}; {res.videos_per_decode_task} videos/task, "
        f"{res.cpus_per_decode_task:g} CPU/task, parallelism "
        f"{res.decode_parallelism or 'auto'}"
        + (", frames snapped to keyframes" if d.snap_to_keyframes else ""),
        model,
        f"  output : {plan.output} (if it exists: {plan.policy}), top-{s.output.top_k}"
        f"{', embeddings' if s.output.embeddings else ''}",
    ]
    if not c.meaningful and s.mode == "infer":
        lines.append("  note   : weights: none means random weights; predictions are "
                     "meaningless (embeddings only show the pipeline works)")
    return "\n".join(lines)


def _threads(threads: int | None, streams: int | None) -> str:
    if not threads:
        return ""
    per = stream_threads(threads, streams or 1)
    each = f"{per} torch thread{'s' if per > 1 else ''}"
    return f" ({each})" if per == threads else f" ({streams} streams x {each})"


def check_paths(plan: JobPlan, sample: int = 20) -> tuple[int, list[str]]:
    """Check that a deterministic sample of local paths exists: (checked, missing)."""
    paths = [p for p in plan.todo["path"].to_pylist() if p]
    chosen = random.Random(0).sample(paths, min(sample, len(paths)))
    local = [p for p in chosen if "://" not in p]
    return len(chosen), [p for p in local if not os.path.exists(p)]
