"""Run an inference job on Ray.

``pipeline.infer.plan`` checks everything that can fail for a configuration reason without
starting Ray; :func:`start` does the same while Ray starts. :func:`execute` then streams
the job through ``pipeline.dataflow``: manifest blocks -> decode tasks (CPU) -> the task's
replicas (GPU when present) -> Parquet. Nothing is collected on the driver; the summary is
read back from the written files, which also proves that every manifest row produced
exactly one row.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipeline import dataflow
from pipeline.decode.on_replica import probe_batch
from pipeline.errors import JobFailed
from pipeline.infer.layout import ReplicaLayout, resolve_layout
from pipeline.infer.plan import JobPlan, assemble, check_inputs, describe
from pipeline.output.lease import OutputLease
from pipeline.output.ledger import count_statuses
from pipeline.output.rows import SCHEMA_VERSION
from pipeline.output.store import (
    data_file_prefix,
    prepare_output,
    set_aside,
    write_job_record,
)
from pipeline.ray_session import RayHandle, connect, disconnect
from pipeline.segments.shots import split_into_shots
from pipeline.spec import JobSpec
from pipeline.tasks.registry import get_task

if TYPE_CHECKING:
    from pipeline.console import Console, ProgressView
    from pipeline.infer.progress import ProgressReporter


_IMPORTED_AT = time.time()


def process_started_at() -> float:
    """Unix time at which this process started (the command's start, interpreter start-up
    and imports included): from ``/proc`` on Linux, else when this module was imported."""
    try:
        with open("/proc/self/stat") as f:  # field 22: start time in clock ticks after boot
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(ln.split()[1]) for ln in f if ln.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


def _timing(handle: RayHandle, progress: dict[str, Any], ended: float) -> dict[str, Any]:
    """Where the job's time went, in seconds from the command's start (issue 21's fixed
    cost: ``first_row_s`` plus ``end_s - last_row_s``; ``first_decode_s``: the first decode
    task began), and the driver's peak memory."""
    import resource

    t0 = process_started_at()

    def since(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 3)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"ray_ready_s": since(handle.ready),
            "first_decode_s": since(progress.get("first_decode_at")),
            "first_row_s": since(progress.get("first_row_at")),
            "last_row_s": since(progress.get("last_row_at")), "end_s": since(ended),
            "driver_peak_rss_mb": round(peak if sys.platform != "darwin" else peak / 1024)}


def _ready_model(spec: JobSpec) -> Any:
    task = get_task(spec.task)
    model = task.resolve(spec)
    if spec.mode == "infer":
        task.fetch(model)
    return model


def start(spec: JobSpec, policy: str | None, address: str | None,
          log: Callable[[str], None], console: Console | None = None
          ) -> tuple[JobPlan, RayHandle]:
    """Plan the job and connect to Ray at once, for :func:`execute`.

    Resolving the model (importing torchvision for pretrained weights' metadata, fetching
    them) runs in a thread while Ray starts, which leaves cores idle while its processes
    come up. The manifest and the output policy are checked first, so that a bad manifest
    or output path fails before Ray starts; a bad model fails once Ray is up, and the Ray
    started here is shut down before the error is raised. Nothing is written either way.
    ``console``: the terminal's (:func:`~pipeline.ray_session.connect`).
    """
    import ray  # noqa: F401  (imported here first: the thread below may import torch)

    policy = policy or spec.output.if_exists
    inputs = check_inputs(spec, policy)
    with ThreadPoolExecutor(1, thread_name_prefix="vidbatch-model") as pool:
        model = pool.submit(_ready_model, spec)
        handle = connect(spec.resources, address, log, console)
        try:
            plan = assemble(spec, policy, model.result(), inputs)
        except BaseException:
            disconnect(handle)
            raise
    return plan, handle


def build_dataset(plan: JobPlan, layout: ReplicaLayout, reporter: ProgressReporter,
                  window: tuple | None = None):
    """The streaming pipeline, unexecuted: blocks -> decode tasks -> replicas; each batch's
    outcome is reported to ``reporter``. ``window``: the parts of the manifest it reads
    (``Todo.windows``); by default all the rows to do."""
    from pipeline.infer.progress import (
        DecodeClock,
        ReadGate,
        ReportingReplica,
        RowGuard,
        decode_only,
    )

    spec, task, res = plan.spec, plan.task, plan.spec.resources
    track = {"tracker_name": reporter.name, "namespace": reporter.namespace}
    ds = dataflow.manifest_rows(plan.todo, dataflow.per_block(plan.todo.num_rows, res),
                                gate=ReadGate(**track), window=window)
    # Decoding in the Ray worker: a crashing decoder takes the worker with it, so attempts
    # are counted per video (the confined child needs no such guard).
    guard = RowGuard(**track) if plan.decode.timeout_s is None else None
    if plan.split is not None:  # segments: shots: each video becomes its shots' rows
        ds = dataflow.decoded(ds, plan.split, res, split_into_shots, guard=guard)
    if spec.mode == "decode_only":
        return dataflow.decoded(ds, plan.decode, res, decode_only,
                                decode_stage=task.decode_stage, schema=plan.schema,
                                provenance=plan.provenance, task=task.name, guard=guard,
                                **track)
    runtime = layout.runtime(spec)
    replica, kwargs = task.replica(spec, plan.model, runtime)
    stage, on_replica = task.decode_stage, {}
    if res.decode_on == "replica":  # decode tasks probe; each replica decodes its batches
        stage, on_replica = probe_batch, {"decode": plan.decode, "device": runtime.device}
    return dataflow.through_replicas(
        dataflow.decoded(ds, plan.decode, res, stage, whole_blocks=True,
                         guard=guard, on_start=DecodeClock(**track)),
        ReportingReplica,
        {"replica": replica, "kwargs": kwargs, "job": spec.name, "task": task.name,
         "per_shot": plan.split is not None, **on_replica, **track},
        replicas=res.replicas, batch_size=spec.inference.batch_size,
        cpus=res.cpus_per_replica, gpus=layout.gpus,
        in_flight=res.batches_in_flight_per_replica)


def execute(plan: JobPlan, log: Callable[[str], None] = print,
            handle: RayHandle | None = None,
            view: Callable[[str, int], ProgressView] | None = None) -> dict[str, Any]:
    """Run the plan on the Ray that ``handle`` (from :func:`start`) is connected to, then
    disconnect; return the job record (also written beside the data). Without a handle
    the weights are fetched here, and the job runs on the Ray this process already has,
    or a local one started for it. The run holds the output's lease throughout
    (:class:`~pipeline.output.lease.OutputLease`). ``view``: what shows the progress
    (:class:`~pipeline.infer.progress.ProgressReporter`)."""
    spec = plan.spec
    if handle is None:
        if spec.mode == "infer":
            plan.task.fetch(plan.model)
        handle = connect(spec.resources, None, log)
    run = uuid.uuid4().hex[:12]
    try:
        layout = resolve_layout(spec) if spec.mode == "infer" else None
        checked = _check_gpus(layout, log)  # before anything is written: it may refuse
        lease = OutputLease(plan.output, run, spec.name, log).acquire()
    except BaseException:
        disconnect(handle)
        raise
    try:
        return _run(plan, handle, run, lease, log, view, layout, checked)
    finally:
        lease.release()


def _check_gpus(layout: ReplicaLayout | None, log: Callable[[str], None]) -> dict[str, Any]:
    """GPU replicas: that their torch sees the GPUs Ray gives them (the job record's
    ``gpu_check``); raises ConfigError when it does not."""
    if layout is None or layout.gpus <= 0:
        return {}
    from pipeline.infer.gpu_check import check_gpus

    return {"gpu_check": check_gpus(layout.gpus, log)}


def _run(plan: JobPlan, handle: RayHandle, run: str, lease: OutputLease,
         log: Callable[[str], None], view, layout: ReplicaLayout | None,
         checked: dict[str, Any]) -> dict[str, Any]:
    """The job under its output lease: the data files of this run are named after ``run``
    (the job record lists every run), and the record says ``finished`` only once the rows
    are counted and complete."""
    from pipeline.infer.progress import ProgressReporter  # imports ray: not at planning

    spec, out = plan.spec, plan.output
    started = handle.started  # the job's wall time counts from connecting to Ray
    try:
        log(describe(plan, layout))
        gpu = {**checked, **_feeding(plan, layout, log)}
        found = prepare_output(out, plan.policy, spec.model_dump(mode="json"),
                               resume_keys=plan.task.resume_keys)
        previous = found if plan.policy == "resume" else None
        set_aside(out, plan.inputs.unreadable)
        out.make()
        # A resumed output of a vidbatch that did not record its runs stays without them.
        runs = (None if previous is not None and "runs" not in previous
                else [*(previous or {}).get("runs", []), run])
        base = {"runs": runs} if runs is not None else {}
        base.update(gpu)
        write_job_record(out, {**_record(plan, None, 0.0, started, handle.dashboard_url),
                               **base, "state": "running"})
        progress: dict[str, Any] = {}
        if plan.todo.num_rows:
            reporter = ProgressReporter(spec.name, plan.todo.num_rows, log, view)
            try:
                with reporter:
                    _write_windows(plan, layout, reporter, out, data_file_prefix(run))
            except KeyboardInterrupt:  # Ctrl-C: the record says so; --resume goes on
                write_job_record(out, {**_record(plan, None, 0.0, started,
                                                 handle.dashboard_url), **base,
                                       "state": "interrupted",
                                       "timing": _timing(handle, reporter.final, time.time())})
                raise
            progress = reporter.final
    finally:
        disconnect(handle)
    # A local Ray kept up for a last metrics scrape (ray_session) is not the job's time.
    wall = time.perf_counter() - handle.t0 - handle.linger_s
    counts = count_statuses(out, plan.task.outcome_stages, per_shot=plan.split is not None)
    problem = _incomplete(plan, counts, lease)
    record = {**_record(plan, counts, wall, started, handle.dashboard_url), **base,
              "state": "incomplete" if problem else "finished",
              "timing": _timing(handle, progress, time.time())}
    write_job_record(out, record)
    if problem:
        raise JobFailed(problem)
    _check_error_fraction(plan, counts)
    return record


def _feeding(plan: JobPlan, layout: ReplicaLayout | None, log: Callable[[str], None]
             ) -> dict[str, Any]:
    """GPU replicas: the cores the job needs per GPU (``pipeline.infer.feeding``), printed
    with the plan; the job record's ``feeding``."""
    if layout is None or layout.gpus <= 0:
        return {}
    import ray

    from pipeline.infer.feeding import plan_feed

    feed = plan_feed(plan, ray.cluster_resources())
    for line in feed.lines(plan.spec.resources.decode_on):
        log(line)
    return {"feeding": feed.record()}


def _write_windows(plan: JobPlan, layout: ReplicaLayout | None, reporter: ProgressReporter,
                   out, prefix: str) -> None:
    """The job's rows into ``out``, one Ray Data execution per window of the rows to do
    (:data:`~pipeline.dataflow.WINDOW_ROWS` says why); each window's files are named apart
    (``<prefix>w<k>_``) when there are several."""
    from pipeline.infer.metrics import RowsWritten

    spec = plan.spec
    windows = plan.todo.windows(dataflow.window_rows())
    for k, window in enumerate(windows):
        rows = plan.todo.num_rows if window is None else sum(p.todo for p in window)
        dataflow.write(build_dataset(plan, layout, reporter, window), out,
                       spec.output.rows_per_file,
                       prefix if len(windows) == 1 else f"{prefix}w{k:05d}_", name=spec.name,
                       on_written=RowsWritten(spec.name, plan.task.name), rows=rows)


def _incomplete(plan: JobPlan, counts: dict[str, int], lease: OutputLease) -> str | None:
    """Why the output is not one row per manifest row, or None when it is."""
    total = plan.inputs.total_rows
    if lease.lost:
        return (f"{lease.lost} while this run was writing {plan.output}; check the output, "
                "then --resume")
    if plan.split is not None:  # at least one row per video, each shot's exactly once
        if counts["unique_ids"] == total and counts["rows"] == counts["unique_rows"] and \
                not counts["incomplete"]:
            return None
        return (f"output holds {counts['rows']} rows ({counts['unique_rows']} distinct "
                f"shots) of {counts['unique_ids']} videos, {counts['incomplete']} of them "
                f"missing shots, for {total} manifest rows; this is a vidbatch bug, please "
                f"report it with {plan.output}")
    if counts["rows"] != total or counts["unique_ids"] != total:
        return (f"output holds {counts['rows']} rows ({counts['unique_ids']} unique ids) for "
                f"{total} manifest rows; this is a vidbatch bug, please report it with "
                f"{plan.output}")
    return None


def _check_error_fraction(plan: JobPlan, counts: dict[str, int]) -> None:
    """Exit 1 when too many videos failed; error rows that are outcomes of the input (a
    file without audio, for an audio task) are not failures."""
    failed = counts["error"] - counts.get("outcomes", 0)
    fraction = failed / max(1, counts["rows"])
    limit = plan.spec.max_error_fraction
    if fraction > limit:
        raise JobFailed(f"{failed} of {counts['rows']} videos failed ({fraction:.0%})"
                        f", above max_error_fraction {limit:g}; see the error column in "
                        f"{plan.output}")


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
    i = plan.inputs
    return {
        "job": plan.spec.name,
        "task": plan.task.name,
        "schema_version": SCHEMA_VERSION,
        "spec": plan.spec.model_dump(mode="json"),
        "model": plan.task.record(plan.model),
        "sampling": plan.decode.record(),
        "id_hex": i.id_hex,
        "counts": {**(counts or {}), "manifest_rows": i.total_rows,
                   "processed_this_run": i.todo.num_rows,
                   "skipped_already_done": i.already_done},
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": round(wall, 3),
        "videos_per_s": round(i.todo.num_rows / wall, 4) if wall > 0 else None,
        "dashboard_url": dashboard,
        "versions": _versions(),
    }
