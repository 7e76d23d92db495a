"""The ok rows of a job's output with their embeddings, read file by file, and centring.

A job's output may hold a million rows (2 GiB of 512-d float32): nothing here holds all
the embeddings at once. The index is built in two passes over the files: the mean (and a
training sample), then the centred vectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import ConfigError
from pipeline.output.outdir import OutputDir
from pipeline.output.store import read_job_record

# Row columns the index keeps beside the vectors, when the task writes them.
ROW_COLUMNS = ("video_id", "path", "label", "pred_label", "pred_score", "duration_s", "width",
               "height")


def job_of(output: OutputDir) -> dict[str, Any]:
    """The job record of ``output``; a ConfigError when there is none."""
    record = read_job_record(output)
    if record is None or not output.data_files():
        raise ConfigError(f"{output} holds no vidbatch job output (no _vidbatch_job.json, or "
                          "no vidbatch-*.parquet files). Give the output.path of a finished "
                          "classify or audio job.")
    return record


def is_embedding(field: pa.Field) -> bool:
    """A task's embedding column: ``embedding`` or ``<kind>_embedding``, a fixed-size list
    of floats (classify's ``embedding``, audio's ``audio_embedding``)."""
    return ((field.name == "embedding" or field.name.endswith("_embedding"))
            and pa.types.is_fixed_size_list(field.type)
            and pa.types.is_floating(field.type.value_type))


def embedding_column(record: dict[str, Any], output: OutputDir) -> str:
    """The column of ``output``'s rows that holds the embeddings to index, found in the
    schema its task wrote (whatever the task)."""
    for f in output.data_files():
        try:
            schema = pq.read_schema(f, filesystem=output.fs)
        except (pa.ArrowInvalid, OSError):
            continue  # a footerless file a killed run left
        found = [field.name for field in schema if is_embedding(field)]
        if found:
            return found[0]
        break
    task = record.get("task") or record.get("spec", {}).get("task", "classify")
    raise ConfigError(f"{output} is a {task} job's output, and {task} writes no "
                      "embeddings. Index the output of a classify or audio job "
                      "(vidbatch schema --task classify shows its embedding column).")


def centre(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``x - mean``, each row L2-normalised, float32: inner products are then cosines. A
    row equal to the mean stays zero (similar to nothing) rather than dividing by zero."""
    y = np.asarray(x, np.float32) - mean.astype(np.float32)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return y / np.maximum(norms, 1e-12)


def centre_column(output: OutputDir, column: str, files: list[str]) -> str | None:
    """``<column>_centre`` when ``files`` hold centre views of ``column`` (classify's
    ``embedding_centre``, written with ``output.centre_embedding``), else None."""
    name = f"{column}_centre"
    for f in files:
        try:
            if name not in pq.read_schema(f, filesystem=output.fs).names:
                return None
        except (pa.ArrowInvalid, OSError):
            continue  # a footerless file a killed run left
        values = output.read_columns(f, [name])[name]
        if values.null_count < len(values):
            return name
    return None


def ok_rows(output: OutputDir, column: str, files: list[str],
            skip_ids: set[str] = frozenset(), centre: str | None = None
            ) -> Iterator[tuple[pa.Table, np.ndarray, np.ndarray | None]]:
    """Per data file in ``files``: its ok rows (those of :data:`ROW_COLUMNS` the task
    writes) not in ``skip_ids``, their embeddings as an ``(n, dim)`` float32 array and,
    when ``centre`` names the centre views' column, theirs (a row without one gets its
    whole view: its pairs then compare whole views only)."""
    skip = pa.array(sorted(skip_ids), pa.string()) if skip_ids else None
    for f in files:
        try:
            schema_names = set(pq.read_schema(f, filesystem=output.fs).names)
        except (pa.ArrowInvalid, OSError):
            continue  # a footerless file a killed run left: the job's --resume redoes it
        keep = [c for c in ROW_COLUMNS if c in schema_names]
        views = [centre] if centre and centre in schema_names else []
        t = output.read_columns(f, [*keep, "status", column, *views])
        mask = pc.and_(pc.equal(t["status"], "ok"), pc.is_valid(t[column]))
        if skip is not None:
            mask = pc.and_(mask, pc.invert(pc.is_in(t["video_id"], value_set=skip)))
        t = t.filter(mask)
        if t.num_rows == 0:
            continue
        vectors = _matrix(t[column])
        centres = None
        if centre:
            centres = vectors.copy()
            if views:
                has = pc.is_valid(t[centre]).to_numpy(zero_copy_only=False)
                centres[has] = _matrix(t[centre].filter(pc.is_valid(t[centre])))
        yield t.select(keep), vectors, centres


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed-size list column without nulls -> ``(n, size)`` float32."""
    emb = column.combine_chunks()
    return emb.flatten().to_numpy().reshape(len(emb), emb.type.list_size).astype(
        np.float32, copy=False)


def mean_and_sample(output: OutputDir, column: str, files: list[str], sample: int,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """One pass over ``files``: the mean embedding of their ok rows, a uniform random
    sample of ``sample`` of them (bottom-k of random keys, so memory stays at ``sample``
    rows; the index's coarse quantizer trains on it), and their count."""
    rng = np.random.default_rng(seed)
    total, count = None, 0
    keys, kept = np.zeros(0), None
    for _, x, _ in ok_rows(output, column, files):
        total = x.sum(axis=0, dtype=np.float64) + (0 if total is None else total)
        count += len(x)
        if sample:
            keys = np.concatenate([keys, rng.random(len(x))])
            kept = x if kept is None else np.concatenate([kept, x])
            order = np.argsort(keys)[:sample]
            keys, kept = keys[order], kept[order]
    if count == 0:
        raise ConfigError(f"{output} has no ok rows with an embedding to index. Check the "
                          "job's errors (vidbatch summary).")
    return (total / count).astype(np.float32), kept, count
