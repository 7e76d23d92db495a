"""The one module that wires Ray Data, for inference and training alike.

manifest rows -> blocks (:func:`manifest_blocks`) -> decode tasks on CPUs (:func:`decoded`,
a task's decode stage, by default :func:`pipeline.decode.stage.decode_batch`) -> an actor
pool of replicas
(:func:`through_replicas`) -> Parquet (:func:`write`). Stages themselves are plain functions
and classes over ``dict[str, np.ndarray]`` batches; only this module calls ``map_batches``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.decode.stage import decode_batch
from pipeline.output.outdir import OutputDir
from pipeline.spec import DecodeResourcesSpec

# Enough blocks for every core of a large cluster, few enough that a million-row manifest
# does not become a million objects.
MAX_BLOCKS = 10_000
# Ray retries a task whose worker process died; by default without end. A decode worker dies
# only when a decode runs in-process (decode_timeout_s: null) and crashes; the job's
# tracker then makes the video an error row after two deaths (infer.progress.RowGuard), and
# this bound stops anything else from retrying forever. (With the default confined child, a
# crash is that video's error row and the worker lives on.)
DECODE_RETRIES = 3
# Write tasks only encode a few MB of result rows to Parquet. With Ray Data's default of 1
# CPU each, its resource allocator keeps CPU reserved for them that decode tasks then
# cannot use (benchmarks/README.md, Knobs).
WRITE_CPUS = 0
WRITE_TASKS = 2


def manifest_blocks(table: pa.Table, rows_per_block: int):
    """Manifest rows as a Ray Dataset of blocks of at least ``rows_per_block`` rows (one
    decode task each, at most :data:`MAX_BLOCKS`), made without a Ray task per block.

    ``from_arrow`` runs a remote task per block to read its metadata, which costs seconds
    before a small job can start and minutes for a million-row manifest; ``from_blocks``
    (a DeveloperAPI) reads the same metadata on the driver. A Ray without it gets
    ``from_arrow``.
    """
    import ray.data as rd

    per = max(rows_per_block, math.ceil(table.num_rows / MAX_BLOCKS))
    blocks = [table.slice(i, per) for i in range(0, table.num_rows, per)] or [table]
    return (getattr(rd, "from_blocks", None) or rd.from_arrow)(blocks)


def decoded(ds, spec, res: DecodeResourcesSpec, stage: Callable = decode_batch,
            **kwargs: Any):
    """``stage(batch, spec=spec, **kwargs)`` over ``ds`` in decode tasks: by default the
    rows with their decoded frames (:func:`decode_batch`).

    Besides guiding the scheduler, the memory each task requests (``spec.memory``), which
    the replicas do not share, keeps Ray from fusing decode into the actors: that would
    serialise decoding and inference in one process.
    """
    return ds.map_batches(
        stage, fn_kwargs={"spec": spec, **kwargs}, batch_size=res.videos_per_decode_task,
        batch_format="numpy", num_cpus=res.cpus_per_decode_task,
        concurrency=res.decode_parallelism, memory=spec.memory(res.videos_per_decode_task),
        max_retries=DECODE_RETRIES)


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
    ds = decoded(manifest_blocks(rows, res.videos_per_decode_task), spec, res,
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
          on_written: Callable[[int], None] | None = None) -> None:
    """Execute ``ds``, streaming its rows into Parquet files in ``out`` whose names start
    with ``prefix`` (the job record names the runs, so vidbatch knows its files).

    ``name`` prefixes the dataset's tag in Ray Data's metrics (``ray_data_*{dataset=...}``),
    so a dashboard can pick the job's operators. ``on_written(rows)`` is called in the write
    task once a file with ``rows`` rows is complete.
    """
    from ray.data.datasource import FilenameProvider

    if name and hasattr(ds, "set_name"):  # a Ray without it keeps the tag "dataset_..."
        ds.set_name(name)
    args = {"filesystem": out.fs, "min_rows_per_file": rows_per_file,
            "filename_provider": FilenameProvider(dataset_uuid=prefix.rstrip("_"),
                                                  file_format="parquet")}
    remote = {"ray_remote_args": {"num_cpus": WRITE_CPUS}, "concurrency": WRITE_TASKS}
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
