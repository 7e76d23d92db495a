"""The one module that wires Ray Data, for inference and training alike.

manifest rows -> blocks (:func:`manifest_blocks`) -> decode tasks on CPUs (:func:`decoded`,
a task's decode stage, by default :func:`pipeline.decode.stage.decode_batch`) -> an actor
pool of replicas
(:func:`through_replicas`) -> Parquet (:func:`write`). Stages themselves are plain functions
and classes over ``dict[str, np.ndarray]`` batches; only this module calls ``map_batches``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.decode.stage import decode_batch, in_batches
from pipeline.errors import ConfigError
from pipeline.output.outdir import OutputDir
from pipeline.spec import DecodeResourcesSpec

# Rows held in memory (a training set, a job per shot given its shots) become at most this
# many blocks: enough for every core of a large cluster, few enough that a million rows do
# not become a million objects. A manifest read by read tasks has no such bound: its blocks
# are made as the stream needs them.
MAX_BLOCKS = 10_000
# A manifest much larger than the cluster is cut into about this many decode tasks per CPU
# (fewer rows per task: a longer tail; more: more tasks), each of at most
# MAX_ROWS_PER_BLOCK rows. A Ray Data task costs ~10-20 ms to schedule and run, as much as
# a missing file's whole row; a task still decodes videos_per_decode_task videos at a time
# and hands each batch on as soon as it is decoded (decoded()), so rows do not wait for
# their task to end.
TASKS_PER_CPU = 16
MAX_ROWS_PER_BLOCK = 256
# Manifest rows travel to the cluster inside read tasks, each carrying this many blocks:
# putting every block in the object store from the driver first took ~19 s for 1,000,000
# rows before the first decode task could start.
BLOCKS_PER_READ_TASK = 200
# Read tasks only slice the manifest; with Ray Data's default of 1 CPU each they held a
# core that the decode tasks then waited for (a 1,000,000-row manifest ran at 15 rows/s).
READ_CPUS = 0
# ... and without CPUs nothing held them back: a 1,000,000-row manifest's 20 read tasks
# started 20 worker processes at once, and the first decode task began 18 s after Ray.
READ_TASKS = 2
# Ray retries a task whose worker process died; by default without end. A decode worker dies
# only when a decode runs in-process (decode_timeout_s: null) and crashes; the job's
# tracker then makes the video an error row after two deaths (infer.progress.RowGuard), and
# this bound stops anything else from retrying forever. (With the default confined child, a
# crash is that video's error row and the worker lives on.) Passed in map_batches'
# **ray_remote_args, which Ray 2.64 drops (2.60 names no replacement): pyproject keeps Ray
# below 2.64.
DECODE_RETRIES = 3
# Write tasks only encode a few MB of result rows to Parquet. With Ray Data's default of 1
# CPU each, its resource allocator keeps CPU reserved for them that decode tasks then
# cannot use (benchmarks/README.md, Knobs).
WRITE_CPUS = 0
WRITE_TASKS = 2
# A streamed manifest runs as one Ray Data execution per window of this many rows to do
# (Todo.windows). An execution keeps a record of every block in the driver until it ends
# (per-block stats, ray-project/ray#66016; the write tasks' results): ~1 MiB per 100,000
# rows, ~1 GiB over 100,000,000 (benchmarks/README.md, "Manifests of 1, 10 and 100 million
# rows"); a window bounds that. Between windows the pipeline drains and the replicas start
# again. VIDBATCH_WINDOW_ROWS overrides it.
WINDOW_ROWS = 1_000_000
SAMPLE_BYTES = {"AudioSpec": 4}  # bytes per decoded sample: float32 audio, uint8 frames
ROW_BYTES = 200  # a manifest row's path and id, about


def window_rows() -> int:
    """:data:`WINDOW_ROWS`, or ``VIDBATCH_WINDOW_ROWS`` where set."""
    value = os.environ.get("VIDBATCH_WINDOW_ROWS", "").strip()
    if not value:
        return WINDOW_ROWS
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"VIDBATCH_WINDOW_ROWS={value!r} is not a positive whole number of "
                          f"rows; unset it for the default ({WINDOW_ROWS})")
    return int(value)


def rows_per_block(rows: int, videos_per_task: int, cpus: float | None) -> int:
    """Manifest rows per block (one decode task each): ``videos_per_task`` while the
    manifest is small for the cluster's ``cpus``, up to :data:`MAX_ROWS_PER_BLOCK` for a
    large one."""
    spread = math.ceil(rows / max(1.0, (cpus or 1) * TASKS_PER_CPU))
    return max(videos_per_task, min(spread, MAX_ROWS_PER_BLOCK))


def per_block(rows: int, res: DecodeResourcesSpec) -> int:
    """:func:`rows_per_block` for ``rows`` manifest rows on the connected cluster."""
    import ray

    return rows_per_block(rows, res.videos_per_decode_task,
                          ray.cluster_resources().get("CPU"))


class _ManifestSource:
    """The manifest table as a Ray Data datasource (built lazily: see
    :func:`manifest_blocks`)."""

    def __init__(self, table: pa.Table, rows_per_task: int):
        self.table, self.rows_per_task = table, rows_per_task

    def estimate_inmemory_data_size(self) -> int:
        return self.table.nbytes

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list:
        from ray.data import ReadTask
        from ray.data.block import BlockMetadata

        span, tasks, n = self.rows_per_task, [], self.table.num_rows
        for start in range(0, max(1, n), span):  # an empty one: 1 task
            # A copy of the task's rows: a slice pickles the whole manifest's buffers
            # (a 1,000,000-row manifest sent 82 MB with each of its 20 read tasks, and the
            # first decode task started 19 s after Ray).
            rows = self.table.take(np.arange(start, min(start + span, n)))
            meta = BlockMetadata(num_rows=rows.num_rows, size_bytes=rows.nbytes,
                                 exec_stats=None, input_files=None)
            tasks.append(ReadTask(lambda rows=rows: [rows], meta, schema=rows.schema))
        return tasks


def manifest_blocks(table: pa.Table, per_block: int):
    """Manifest rows as a Ray Dataset of blocks of ``per_block`` rows (one decode task
    each; see :func:`rows_per_block`), at most :data:`MAX_BLOCKS`.

    The rows travel inside a few read tasks, which Ray Data starts as the stream needs them
    and whose output it splits into the blocks asked for (``override_num_blocks``), instead
    of one object per block put by the driver before anything runs.
    """
    import ray.data as rd
    from ray.data import Datasource

    n = table.num_rows
    per_block = max(per_block, math.ceil(n / MAX_BLOCKS))
    tasks = max(1, math.ceil(n / (per_block * BLOCKS_PER_READ_TASK)))
    per_task = max(1, math.ceil(n / tasks))  # equal tasks, each split into equal blocks
    source = type("ManifestSource", (_ManifestSource, Datasource), {})(table, per_task)
    return rd.read_datasource(source, num_cpus=READ_CPUS, concurrency=min(READ_TASKS, tasks),
                              override_num_blocks=tasks * math.ceil(per_task / per_block))


class _ManifestParts:
    """Parts of a :class:`~pipeline.manifest.todo.Todo` as a Ray Data datasource: one read
    task per chunk, which reads and normalises its rows where it runs (built lazily: see
    :func:`manifest_rows`)."""

    def __init__(self, parts, gate: Callable[[int], None] | None):
        self.parts, self.gate = parts, gate

    def estimate_inmemory_data_size(self) -> int:
        return sum(p.todo for p in self.parts) * ROW_BYTES

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list:
        from ray.data import ReadTask
        from ray.data.block import BlockMetadata

        tasks = []
        for part in self.parts:  # each task carries its chunk and its skip bits
            meta = BlockMetadata(num_rows=part.todo, size_bytes=part.todo * ROW_BYTES,
                                 exec_stats=None, input_files=None)
            tasks.append(ReadTask(lambda p=part, g=self.gate: _read(p, g), meta))
        return tasks


def _read(part, gate: Callable[[int], None] | None):
    """A read task: ``gate(rows before this part)`` first, then the part's rows."""
    if gate is not None:
        gate(part.ahead)
    yield from part.tables()


def manifest_rows(todo, per_block: int, gate: Callable[[int], None] | None = None,
                  window: tuple | None = None):
    """A :class:`~pipeline.manifest.todo.Todo`'s rows (``window``'s parts of it, from
    ``Todo.windows``; by default all) as a Ray Dataset of blocks of about ``per_block``
    rows (one decode task each; see :func:`rows_per_block`). Read tasks read the manifest
    themselves, a chunk each, as the stream needs them, and Ray Data splits each task's rows
    into blocks: the manifest never passes through the driver whole. ``gate(rows before a
    read task's own)`` holds each read task back until it is needed
    (:class:`~pipeline.infer.progress.ReadGate`). A todo held in memory goes through
    :func:`manifest_blocks`."""
    import ray.data as rd
    from ray.data import Datasource

    if todo.table is not None:
        return manifest_blocks(todo.table, per_block)
    parts = todo.parts() if window is None else window
    source = type("ManifestParts", (_ManifestParts, Datasource), {})(parts, gate)
    # Ray Data splits every task's rows into (blocks asked for / tasks) blocks.
    split = max([math.ceil(p.todo / per_block) for p in parts], default=1)
    return rd.read_datasource(
        source, num_cpus=READ_CPUS, concurrency=max(1, min(READ_TASKS, len(parts))),
        override_num_blocks=max(1, len(parts)) * split)


def decoded(ds, spec, res: DecodeResourcesSpec, stage: Callable = decode_batch,
            whole_blocks: bool = False, **kwargs: Any):
    """``stage(batch, spec=spec, **kwargs)`` over ``ds`` in decode tasks: by default the
    rows with their decoded frames (:func:`decode_batch`). ``whole_blocks`` (inference):
    each task takes its block at once and hands on the decoded rows batch by batch and
    the failed rows together (:func:`~pipeline.decode.stage.in_batches`).

    Besides guiding the scheduler, the memory each task requests (``spec.memory``), which
    the replicas do not share, keeps Ray from fusing decode into the actors: that would
    serialise decoding and inference in one process.
    """
    videos = res.videos_per_decode_task
    args = ({"fn": in_batches, "batch_size": None,
             "fn_kwargs": {"spec": spec, "decode_stage": stage, "videos": videos, **kwargs}}
            if whole_blocks else
            {"fn": stage, "batch_size": videos, "fn_kwargs": {"spec": spec, **kwargs}})
    with warnings.catch_warnings():
        # Ray 2.60 deprecates task options such as max_retries as map_batches keywords
        # (they land in ray_remote_args) but names no replacement for max_retries yet.
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
        out = ds.map_batches(
            **args, batch_format="numpy", num_cpus=res.cpus_per_decode_task,
            concurrency=res.decode_parallelism, memory=spec.memory(videos),
            max_retries=DECODE_RETRIES)
    # A task of many rows hands each decoded batch on at once: Ray Data gathers a task's
    # output up to target_max_block_size (128 MiB) before passing it on.
    video = int(np.prod(spec.shape)) * SAMPLE_BYTES.get(type(spec).__name__, 1)
    out.context.target_max_block_size = max(video, 1 << 20)
    return out


def _ok_rows(batch: dict[str, np.ndarray], keep: tuple[str, ...]) -> dict[str, np.ndarray]:
    ok = batch["status"] == "ok"
    return {c: batch[c][ok] for c in keep}


def decoded_once(rows: pa.Table, spec, res: DecodeResourcesSpec, keep: tuple[str, ...],
                 stage: Callable = decode_batch) -> tuple[Any, list[dict[str, Any]]]:
    """Decode ``rows`` once and hold the result (object store, spilled to disk when large):
    ``(the ok rows with only the columns keep, the failed rows as dicts)``, the failures in
    manifest order with their row, video_id, path and error. For training, which reads
    the same clips every epoch; its own progress lines replace Ray Data's. ``stage``: the
    decode stage (video frames by default, or ``decode_audio_batch``)."""
    import ray.data as rd

    rd.DataContext.get_current().enable_progress_bars = False
    ds = decoded(manifest_blocks(rows, per_block(rows.num_rows, res)), spec, res,
                 stage).materialize()
    status = ds.select_columns(["row", "video_id", "path", "status", "error"]).to_pandas()
    failed = status[status["status"] != "ok"].sort_values("row").to_dict("records")
    ok = ds.map_batches(_ok_rows, fn_kwargs={"keep": keep},
                             batch_format="numpy").materialize()
    return ok, failed


def through_replicas(ds, replica: type, kwargs: dict[str, Any], *, replicas: int,
                     batch_size: int, cpus: float, gpus: float,
                     in_flight: int | None = None):
    """``ds`` through an actor pool of ``replicas`` instances of ``replica(**kwargs)``."""
    import ray.data as rd

    return ds.map_batches(
        replica, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
        compute=rd.ActorPoolStrategy(size=replicas, max_tasks_in_flight_per_actor=in_flight),
        num_cpus=cpus, num_gpus=gpus)


def write(ds, out: OutputDir, rows_per_file: int, prefix: str, *, name: str | None = None,
          on_written: Callable[[int], None] | None = None, rows: int | None = None) -> None:
    """Execute ``ds``, streaming its rows into Parquet files in ``out`` whose names start
    with ``prefix`` (the job record names the runs, so vidbatch knows its files).

    ``name`` prefixes the dataset's tag in Ray Data's metrics (``ray_data_*{dataset=...}``),
    so a dashboard can pick the job's operators. ``on_written(rows)`` is called in the write
    task once a file with ``rows`` rows is complete. ``rows``: how many ``ds`` holds, when
    known (it bounds the write tasks).
    """
    from ray.data.datasource import FilenameProvider

    if name and hasattr(ds, "set_name"):  # a Ray without it keeps the tag "dataset_..."
        ds.set_name(name)
    args = {"filesystem": out.fs, "min_rows_per_file": rows_per_file,
            "filename_provider": FilenameProvider(dataset_uuid=prefix.rstrip("_"),
                                                  file_format="parquet")}
    # Ray Data bundles a write task's rows up to min_rows_per_file: fewer files than
    # WRITE_TASKS need fewer tasks (and Ray warns about a limit its inputs cannot reach).
    files = math.ceil(rows / rows_per_file) if rows else WRITE_TASKS
    remote = {"ray_remote_args": {"num_cpus": WRITE_CPUS},
              "concurrency": max(1, min(WRITE_TASKS, files))}
    sink = _counted_parquet(out.root, args, on_written) if on_written else None
    if sink is None:
        ds.write_parquet(out.root, **args, **remote)
    else:
        ds.write_datasink(sink, **remote)


def _counted_parquet(root: str, args: dict[str, Any], on_written: Callable[[int], None]):
    """Ray Data's Parquet sink, calling ``on_written`` after each file it writes; None where
    this Ray has no such class (its module is internal), and rows written go uncounted.

    Counting after ``write`` returns, in the write task, counts rows that are on storage:
    not rows buffered towards ``min_rows_per_file``, nor rows of a write that failed.
    """
    try:
        from ray.data._internal.datasource.parquet_datasink import ParquetDatasink
    except ImportError:
        return None

    class CountedParquetDatasink(ParquetDatasink):
        def write(self, blocks, ctx):
            from ray.data.block import BlockAccessor

            blocks = list(blocks)
            result = super().write(blocks, ctx)
            on_written(sum(BlockAccessor.for_block(b).num_rows() for b in blocks))
            return result

    return CountedParquetDatasink(root, **args)
