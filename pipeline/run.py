"""Run an inference job on Ray Data. The only module that wires Ray Data together.

``pipeline.plan`` checks everything that can fail for a configuration reason without
starting Ray; :func:`start` does the same while Ray starts. :func:`execute` then streams:
manifest blocks -> decode tasks (CPU) -> model actors (GPU when present) ->
``write_parquet``. Nothing is collected on the driver; the summary is read back from the
written files, which also proves that every manifest row produced exactly one row.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any

from pipeline.cluster import RayHandle, connect, disconnect
from pipeline.decode import decode_batch
from pipeline.errors import ConfigError, JobFailed
from pipeline.infer import Predictor, auto_streams
from pipeline.jobspec import JobSpec
from pipeline.manifest import as_dataset
from pipeline.models import ModelCard, ensure_weights_available, model_card
from pipeline.plan import JobPlan, assemble, check_inputs, describe, plan_job
from pipeline.sink import (
    SCHEMA_VERSION,
    count_statuses,
    prepare_output,
    set_aside,
    write_job_record,
)

__all__ = ["JobPlan", "execute", "plan_job", "start"]

# Write tasks only encode a few MB of result rows to Parquet. With Ray Data's default of 1
# CPU each, its resource allocator keeps CPU reserved for them that decode tasks then
# cannot use (measured on 2 cores in decode-only mode: 1 decode task at a time, 2.7
# videos/s; with 0-CPU writes, at most 2 at once: 2 decode tasks, 4.3 videos/s).
WRITE_CPUS = 0
WRITE_TASKS = 2
# Enough blocks for every core of a large cluster, few enough that a million-row manifest
# does not become a million objects.
MAX_BLOCKS = 10_000


def _ready_card(spec: JobSpec) -> ModelCard:
    card = model_card(spec.model)
    if spec.mode == "infer":
        ensure_weights_available(card)
    return card


def start(spec: JobSpec, policy: str | None, address: str | None,
          log: Callable[[str], None]) -> tuple[JobPlan, RayHandle]:
    """:func:`plan_job` and :func:`~pipeline.cluster.connect` at once, for ``execute``.

    Resolving the model (importing torchvision for pretrained weights' metadata, fetching
    them: 3-6 s; a checkpoint's metadata, read without torch: ~0.05 s, see
    :mod:`pipeline.checkpoint`) runs in a thread while Ray starts, which leaves
    cores idle while its processes come up (on 2 cores: ~50 % CPU for the first ~13 s of a
    job; a 4-video job took 34.7 s instead of 36.7, medians of 5 interleaved runs). The
    manifest and the output policy are checked first, so that a bad manifest
    or output path fails before Ray starts; a bad model fails once Ray is up, and the Ray
    started here is shut down before the error is raised. Nothing is written either way.
    """
    import ray  # noqa: F401  (imported here first: the thread below may import torch)

    policy = policy or spec.output.if_exists
    inputs = check_inputs(spec, policy)
    with ThreadPoolExecutor(1, thread_name_prefix="vidbatch-model") as pool:
        card = pool.submit(_ready_card, spec)
        handle = connect(spec, address, log)
        try:
            plan = assemble(spec, policy, card.result(), inputs)
        except BaseException:
            disconnect(handle)
            raise
    return plan, handle


# ---------------------------------------------------------------- execution (Ray)


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


def replica_streams(plan: JobPlan, gpus: float, threads: int) -> int:
    """Batch slices a replica runs at once: ``resources.streams_per_replica``, else
    :func:`~pipeline.infer.auto_streams` of its torch threads (:func:`replica_threads`)."""
    return plan.spec.resources.streams_per_replica or auto_streams(
        threads, plan.spec.inference.batch_size, gpus > 0)


def build_dataset(plan: JobPlan, gpus: float, reporter=None):
    """The streaming pipeline, unexecuted: blocks -> decode tasks -> model actors.

    With a :class:`~pipeline.progress.ProgressReporter`, replicas report each batch to it.
    """
    import ray.data as rd

    from pipeline.progress import ReportingPredictor

    res = plan.spec.resources
    per_block = max(res.videos_per_decode_task, math.ceil(plan.todo.num_rows / MAX_BLOCKS))
    device = plan.infer.device if gpus > 0 else "cpu"
    threads = replica_threads(plan, gpus)
    infer = replace(plan.infer, device=device, threads=threads,
                    streams=replica_streams(plan, gpus, threads))
    ds = as_dataset(plan.todo, per_block)
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


def execute(plan: JobPlan, address: str | None = None, log: Callable[[str], None] = print,
            handle: RayHandle | None = None) -> dict[str, Any]:
    """Run the plan; return the job record (also written beside the data).

    Connects to (or starts) Ray unless ``handle`` comes from :func:`start`.
    """
    from pipeline.progress import ProgressReporter

    if handle is None:
        if plan.spec.mode == "infer":
            ensure_weights_available(plan.card)
        handle = connect(plan.spec, address, log)
    started = handle.started  # the job's wall time counts from connecting to Ray
    try:
        gpus = _gpus_per_replica(plan.spec) if plan.spec.mode == "infer" else 0.0
        threads = replica_threads(plan, gpus) if plan.spec.mode == "infer" else None
        log(describe(plan, gpus, threads,
                     replica_streams(plan, gpus, threads) if threads else None))
        prepare_output(plan.output, plan.policy, plan.spec.model_dump(mode="json"))
        set_aside(plan.output, plan.unreadable)
        plan.output.make()
        write_job_record(plan.output, {**_record(plan, None, 0.0, started, handle.dashboard_url),
                                       "state": "running"})
        if plan.todo.num_rows:
            with ProgressReporter(plan.spec.name, plan.todo.num_rows, log) as reporter:
                build_dataset(plan, gpus, reporter).write_parquet(
                    plan.output.root, filesystem=plan.output.fs,
                    min_rows_per_file=plan.spec.output.rows_per_file,
                    ray_remote_args={"num_cpus": WRITE_CPUS}, concurrency=WRITE_TASKS)
    finally:
        disconnect(handle)
    wall = time.perf_counter() - handle.t0
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
