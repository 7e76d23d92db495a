"""Plan and run an inference job on Ray Data. The only module that wires Ray Data together.

``plan_job`` does everything that can fail for a configuration reason (spec, weights,
manifest, output policy) without starting Ray or writing anything. ``execute`` then
streams: manifest blocks -> decode tasks (CPU) -> model actors (GPU when present) ->
``write_parquet``. Nothing is collected on the driver; the summary is read back from the
written files, which also proves that every manifest row produced exactly one row.
"""

from __future__ import annotations

import math
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.decode import DecodeSpec, decode_batch
from pipeline.errors import ConfigError, JobFailed, ManifestError
from pipeline.infer import InferSpec, Predictor
from pipeline.jobspec import JobSpec, SamplingSpec
from pipeline.manifest import read_manifest
from pipeline.models import ModelCard, ensure_weights_available, model_card
from pipeline.sink import (
    SCHEMA_VERSION,
    count_statuses,
    done_ids,
    prepare_output,
    write_job_record,
)

# Write tasks only encode a few MB of result rows to Parquet. With Ray Data's default of 1
# CPU each, its resource allocator keeps CPU reserved for them that decode tasks then
# cannot use (measured on 2 cores in decode-only mode: 1 decode task at a time, 2.7
# videos/s; with 0-CPU writes, at most 2 at once: 2 decode tasks, 4.3 videos/s).
WRITE_CPUS = 0
WRITE_TASKS = 2
# Enough blocks for every core of a large cluster, few enough that a million-row manifest
# does not become a million objects.
MAX_BLOCKS = 10_000


@dataclass(frozen=True)
class JobPlan:
    spec: JobSpec
    card: ModelCard
    decode: DecodeSpec
    infer: InferSpec
    todo: pa.Table  # manifest rows still to process
    total_rows: int
    already_done: int
    output: Path
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
    decode = _decode_spec(spec, card)
    inf = spec.inference
    if inf.precision == "fp16" and (inf.device == "cpu" or spec.resources.gpus_per_replica == 0):
        raise ConfigError("inference.precision: fp16 needs a GPU; use bf16 (or fp32) on CPU")
    infer = InferSpec(card=card, precision=inf.precision, device=inf.device,
                      channels_last=inf.channels_last, top_k=spec.output.top_k,
                      embeddings=spec.output.embeddings,
                      threads=spec.resources.threads_per_replica or 0, job=spec.name)
    manifest = read_manifest(spec.manifest)
    if manifest.num_rows == 0:
        raise ManifestError(f"manifest {spec.manifest.path} has no rows; nothing to do")
    output = Path(spec.output.path)
    prepare_output(output, policy, spec.model_dump(mode="json"), apply=False)
    todo, done = manifest, 0
    if policy == "resume" and output.exists():
        finished = done_ids(output)
        if finished:
            written = pc.is_in(manifest["video_id"], value_set=pa.array(sorted(finished)))
            todo = manifest.filter(pc.invert(written))
            done = manifest.num_rows - todo.num_rows
    return JobPlan(spec, card, decode, infer, todo, manifest.num_rows, done, output, policy)


def describe(plan: JobPlan, gpus: float | str | None = None, threads: int | None = None) -> str:
    s, c, d = plan.spec, plan.card, plan.decode
    res = s.resources
    model = (
        f"  model  : {c.arch} ({c.kind} model), weights {c.weights}, {len(c.class_names)} "
        f"classes, {res.replicas} replica(s) x {res.cpus_per_replica:g} CPU"
        f"{f' ({threads} torch threads)' if threads else ''}, GPUs/replica "
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


def check_paths(plan: JobPlan, sample: int = 20) -> tuple[int, list[str]]:
    """Check that a deterministic sample of local paths exists: (checked, missing)."""
    paths = [p for p in plan.todo["path"].to_pylist() if p]
    chosen = random.Random(0).sample(paths, min(sample, len(paths)))
    local = [p for p in chosen if "://" not in p]
    return len(chosen), [p for p in local if not os.path.exists(p)]


# ---------------------------------------------------------------- execution (Ray)


@dataclass
class RayHandle:
    started_here: bool
    dashboard_url: str | None


def connect(spec: JobSpec, address: str | None, log: Callable[[str], None]) -> RayHandle:
    import ray

    if ray.is_initialized():
        return RayHandle(False, None)
    if address:
        ctx = ray.init(address=address, log_to_driver=True)
        return RayHandle(True, _dashboard(ctx))
    res = spec.resources
    # address="local": always a new Ray for this job, even when another one (say from
    # `vidbatch up`) runs on this machine; joining that one is what --address auto is for.
    ctx = ray.init(address="local", num_cpus=res.num_cpus, include_dashboard=True,
                   dashboard_host="127.0.0.1",
                   object_store_memory=res.object_store_mb * 2**20 if res.object_store_mb
                   else None)
    url = _dashboard(ctx)
    log(f"started a local Ray; dashboard: {url or 'not available'}")
    return RayHandle(True, url)


def _dashboard(ctx) -> str | None:
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url and "://" not in url else url


def _gpus_per_replica(spec: JobSpec) -> float:
    import ray

    want = spec.resources.gpus_per_replica
    have = ray.cluster_resources().get("GPU", 0)
    if want == "auto":
        return 1.0 if have >= 1 else 0.0
    if want > 0 and have < want:
        raise ConfigError(f"resources.gpus_per_replica is {want} but the cluster has {have:g} "
                          "GPUs; set it to auto or 0, or add GPU nodes")
    return float(want)


def decode_task_memory(plan: JobPlan) -> int:
    """Bytes a decode task may use: decoder state plus its frames at decode size (a 16:9
    frame, x2 for the copy made by cropping). Besides guiding the scheduler, a memory
    request that the model actors do not share keeps Ray from fusing decode into the
    actors, which would serialise decoding and inference in one process."""
    d = plan.decode
    frame = d.short_side * (d.short_side * 16 // 9) * 3
    per_video = d.clips * d.frames * frame * 2
    return 256 * 2**20 + plan.spec.resources.videos_per_decode_task * per_video


def replica_threads(plan: JobPlan, gpus: float) -> int:
    """torch threads per replica: ``resources.threads_per_replica``, else on GPU replicas
    their CPUs, and on CPU replicas the cores of a node shared by the replicas on it.

    A CPU replica is the bottleneck of a CPU-only job; decode tasks then run beside it on
    the same cores (they need a fraction of its CPU time). Measured on 2 cores, r3d_18
    clip job: 1 thread (one per reserved CPU) 1.04 videos/s steady, 2 threads 1.25-1.48
    (benchmarks/README.md, Knobs).
    """
    import ray

    res = plan.spec.resources
    if res.threads_per_replica:
        return res.threads_per_replica
    if gpus > 0:
        return max(1, int(res.cpus_per_replica))
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")]
    if not nodes:
        return max(1, int(res.cpus_per_replica))
    node_cpus = max(int(n["Resources"]["CPU"]) for n in nodes)
    per_node = math.ceil(res.replicas / len(nodes))
    return max(1, int(res.cpus_per_replica), node_cpus // per_node)


def build_dataset(plan: JobPlan, gpus: float, reporter=None):
    """The streaming pipeline, unexecuted: blocks -> decode tasks -> model actors.

    With a :class:`~pipeline.progress.ProgressReporter`, replicas report each batch to it.
    """
    import ray.data as rd

    from pipeline.progress import ReportingPredictor

    res = plan.spec.resources
    per_block = max(res.videos_per_decode_task, math.ceil(plan.todo.num_rows / MAX_BLOCKS))
    blocks = [plan.todo.slice(i, per_block) for i in range(0, plan.todo.num_rows, per_block)]
    device = plan.infer.device if gpus > 0 else "cpu"
    infer = replace(plan.infer, device=device, threads=replica_threads(plan, gpus))
    ds = rd.from_arrow(blocks)
    if plan.spec.mode == "decode_only":
        from pipeline.progress import decode_only

        extra = {} if reporter is None else {"tracker_name": reporter.name,
                                             "namespace": reporter.namespace}
        return ds.map_batches(
            decode_only, fn_kwargs={"spec": plan.decode, "infer": infer, **extra},
            batch_size=res.videos_per_decode_task, batch_format="numpy",
            num_cpus=res.cpus_per_decode_task, concurrency=res.decode_parallelism,
            memory=decode_task_memory(plan))
    ds = ds.map_batches(
        decode_batch, fn_kwargs={"spec": plan.decode}, batch_size=res.videos_per_decode_task,
        batch_format="numpy", num_cpus=res.cpus_per_decode_task,
        concurrency=res.decode_parallelism, memory=decode_task_memory(plan))
    replica, kwargs = (Predictor, {"spec": infer}) if reporter is None else (
        ReportingPredictor, {"spec": infer, "tracker_name": reporter.name,
                             "namespace": reporter.namespace})
    return ds.map_batches(
        replica, fn_constructor_kwargs=kwargs,
        batch_size=plan.spec.inference.batch_size, batch_format="numpy",
        compute=rd.ActorPoolStrategy(
            size=res.replicas, max_tasks_in_flight_per_actor=res.batches_in_flight_per_replica),
        num_cpus=res.cpus_per_replica,
        num_gpus=gpus)


def execute(plan: JobPlan, address: str | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the plan; return the job record (also written beside the data)."""
    import ray

    from pipeline.progress import ProgressReporter

    if plan.spec.mode == "infer":
        ensure_weights_available(plan.card)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    handle = connect(plan.spec, address, log)
    try:
        gpus = _gpus_per_replica(plan.spec) if plan.spec.mode == "infer" else 0.0
        log(describe(plan, gpus, replica_threads(plan, gpus) if plan.spec.mode == "infer"
                     else None))
        prepare_output(plan.output, plan.policy, plan.spec.model_dump(mode="json"))
        plan.output.mkdir(parents=True, exist_ok=True)
        write_job_record(plan.output, {**_record(plan, None, 0.0, started, handle.dashboard_url),
                                       "state": "running"})
        if plan.todo.num_rows:
            with ProgressReporter(plan.spec.name, plan.todo.num_rows, log) as reporter:
                build_dataset(plan, gpus, reporter).write_parquet(
                    str(plan.output), min_rows_per_file=plan.spec.output.rows_per_file,
                    ray_remote_args={"num_cpus": WRITE_CPUS}, concurrency=WRITE_TASKS)
    finally:
        if handle.started_here:
            ray.shutdown()
    wall = time.perf_counter() - t0
    counts = count_statuses(plan.output)
    record = {**_record(plan, counts, wall, started, handle.dashboard_url), "state": "finished"}
    write_job_record(plan.output, record)
    if counts["rows"] != plan.total_rows or counts["unique_ids"] != plan.total_rows:
        raise JobFailed(f"output holds {counts['rows']} rows ({counts['unique_ids']} unique "
                        f"ids) for {plan.total_rows} manifest rows; this is a vidbatch bug, "
                        f"please report it with {plan.output}")
    fraction = counts["error"] / max(1, counts["rows"])
    if fraction > plan.spec.max_error_fraction:
        raise JobFailed(f"{counts['error']} of {counts['rows']} videos failed ({fraction:.0%})"
                        f", above max_error_fraction {plan.spec.max_error_fraction:g}; see the "
                        f"error column in {plan.output}")
    return record


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("vidbatch", "torch", "torchvision", "ray", "decord", "av", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _record(plan: JobPlan, counts: dict[str, int] | None, wall: float, started: datetime,
            dashboard: str | None) -> dict[str, Any]:
    return {
        "job": plan.spec.name,
        "schema_version": SCHEMA_VERSION,
        "spec": plan.spec.model_dump(mode="json"),
        "model": {"arch": plan.card.arch, "weights": plan.card.weights,
                  "classes": len(plan.card.class_names),
                  "predictions_meaningful": plan.card.meaningful},
        "sampling": {"clips": plan.decode.clips, "frames": plan.decode.frames,
                     "stride": plan.decode.stride, "short_side": plan.decode.short_side,
                     "crop_size": plan.decode.crop_size},
        "counts": {**(counts or {}), "manifest_rows": plan.total_rows,
                   "processed_this_run": plan.todo.num_rows,
                   "skipped_already_done": plan.already_done},
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": round(wall, 3),
        "videos_per_s": round(plan.todo.num_rows / wall, 4) if wall > 0 else None,
        "dashboard_url": dashboard,
        "versions": _versions(),
    }
