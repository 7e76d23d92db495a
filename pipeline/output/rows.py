"""Output rows and their schema: the common columns every task writes, plus the task's own.

Every manifest row becomes exactly one output row with ``status`` ``ok`` or ``error``;
error rows keep the manifest columns and say why in ``error`` (prefixed by the stage that
failed). The schema is the common head (ids, status, decode metadata), the task's columns
(``pipeline.tasks``), then the common tail (timings and provenance). Built in replicas (and
in decode tasks for ``mode: decode_only``); the driver never collects rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

Batch = dict[str, np.ndarray]
SCHEMA_VERSION = "2"  # 2: processed_at

HEAD = [
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("path", pa.string()),
    pa.field("label", pa.string()),
    pa.field("status", pa.string(), nullable=False),  # "ok" or "error"
    pa.field("error", pa.string()),  # "<stage>: <reason>" on error rows
    pa.field("decoder", pa.string()),  # "decord" or "pyav"
    pa.field("decode_note", pa.string()),  # why a fallback ran, corrupt packets skipped, ...
    pa.field("num_frames", pa.int64()),
    pa.field("fps", pa.float64()),
    pa.field("duration_s", pa.float64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("clips", pa.int32()),
    pa.field("frames_per_clip", pa.int32()),
]
TAIL = [
    pa.field("decode_s", pa.float64()),
    pa.field("infer_s", pa.float64()),
    pa.field("processed_at", pa.timestamp("ms", tz="UTC")),  # when the row's batch finished
    pa.field("model", pa.string()),
    pa.field("weights", pa.string()),
    pa.field("job", pa.string()),
]


# A job with ``segments: shots`` writes one row per shot: which shot of its video (from
# 0), and how many shots the video has; both null on a video's error row. They follow
# HEAD, whose start_s and end_s are then the shot's.
SHOT_FIELDS = [pa.field("shot", pa.int32()), pa.field("shot_count", pa.int32())]
SHOT_NAMES = tuple(f.name for f in SHOT_FIELDS)


def output_schema(task_fields: list[pa.Field]) -> pa.Schema:
    """The output schema of a task whose own columns are ``task_fields``."""
    return pa.schema([*HEAD, *task_fields, *TAIL],
                     metadata={"vidbatch.schema_version": SCHEMA_VERSION})


def with_shot_fields(schema: pa.Schema) -> pa.Schema:
    """``schema`` of a job with one row per shot: :data:`SHOT_FIELDS` after HEAD."""
    fields = list(schema)
    return pa.schema(fields[:len(HEAD)] + SHOT_FIELDS + fields[len(HEAD):],
                     metadata=schema.metadata)


def with_shot_columns(table: pa.Table, batch: Batch) -> pa.Table:
    """A replica's rows of ``batch`` (in its order) with the batch's shot columns added
    where :func:`with_shot_fields` puts them (a negative number: null)."""
    for k, field in enumerate(SHOT_FIELDS):
        table = table.add_column(len(HEAD) + k, field,
                                 nullable_int(batch[field.name], field.type))
    return table


@dataclass(frozen=True)
class Provenance:
    """What every row says about where it came from."""

    model: str
    weights: str
    job: str


def nullable_int(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    v = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(v) | (v < 0)
    return pa.array(np.where(bad, 0, v).astype(np.int64), type=typ, mask=bad)


def nullable_float(values: np.ndarray) -> pa.Array:
    v = np.asarray(values, dtype=np.float64)
    return pa.array(v, type=pa.float64(), mask=np.isnan(v))


def strings(values) -> pa.Array:
    return pa.array([None if v is None or v != v else str(v) for v in values], pa.string())


def per_ok(n: int, ok: np.ndarray, values, typ: pa.DataType) -> pa.Array:
    """Spread per-ok-row values over all rows, null where the row failed."""
    out: list[Any] = [None] * n
    for i, v in zip(np.flatnonzero(ok), values if values is not None else []):
        out[i] = v
    return pa.array(out, type=typ)


def inference_failed(batch: Batch, ok: np.ndarray, e: Exception) -> Batch:
    """``batch`` with its ``ok`` rows turned into ``inference:`` error rows that say why
    (a replica's answer to a batch its model failed on: one bad batch must not end the
    job, and its rows must not disappear)."""
    batch = dict(batch)
    batch["error"] = np.where(ok, f"inference: {type(e).__name__}: {e}"[:500], batch["error"])
    batch["status"] = np.where(ok, "error", batch["status"])
    return batch


def rows_table(batch: Batch, schema: pa.Schema, provenance: Provenance,
               ok: np.ndarray | None = None, task_columns: dict[str, pa.Array] | None = None,
               infer_s: np.ndarray | None = None) -> pa.Table:
    """The output rows of one decoded batch.

    Args:
        batch: decoded rows (``pipeline.decode.stage.decode_batch``), ``status`` and
            ``error`` as they stand after the task ran.
        schema: from :func:`output_schema`.
        ok: the rows the task has results for (default: ``status == "ok"``).
        task_columns: the task's columns; a column of the schema left out is null.
        infer_s: seconds of model time per row (default: null).
    """
    n = len(batch["video_id"])
    ok = batch["status"] == "ok" if ok is None else ok
    given = task_columns or {}
    cols = _head(batch, ok)
    for f in schema.names[len(HEAD):len(schema.names) - len(TAIL)]:
        if f in given:
            cols[f] = given[f]
        elif f in SHOT_NAMES and f in batch:  # a job per shot (with_shot_fields)
            cols[f] = nullable_int(batch[f], schema.field(f).type)
        else:
            cols[f] = pa.nulls(n, schema.field(f).type)
    cols.update({
        "decode_s": nullable_float(batch["decode_s"]),
        "infer_s": nullable_float(np.full(n, np.nan) if infer_s is None else infer_s),
        "processed_at": pa.array([time.time_ns() // 1_000_000] * n, pa.int64()).cast(
            schema.field("processed_at").type),
        "model": pa.array([provenance.model] * n, pa.string()),
        "weights": pa.array([provenance.weights] * n, pa.string()),
        "job": pa.array([provenance.job] * n, pa.string()),
    })
    return pa.table(cols, schema=schema)


def _head(batch: Batch, ok: np.ndarray) -> dict[str, pa.Array]:
    """The common columns before the task's: the manifest row and what was decoded."""
    n = len(batch["video_id"])
    shape = batch["frames"].shape if "frames" in batch else (n, None, None)
    return {
        "video_id": strings(batch["video_id"]), "path": strings(batch["path"]),
        "label": strings(batch["label"]), "status": strings(batch["status"]),
        "error": strings(batch["error"]), "decoder": strings(batch["decoder"]),
        "decode_note": strings(batch["decode_note"]),
        "num_frames": nullable_int(batch["num_frames"], pa.int64()),
        "fps": nullable_float(batch["fps"]),
        "duration_s": nullable_float(batch["duration_s"]),
        "width": nullable_int(batch["width"], pa.int32()),
        "height": nullable_int(batch["height"], pa.int32()),
        "start_s": nullable_float(batch["start_s"]), "end_s": nullable_float(batch["end_s"]),
        "clips": per_ok(n, ok, [shape[1]] * int(ok.sum()), pa.int32()),
        "frames_per_clip": per_ok(n, ok, [shape[2]] * int(ok.sum()), pa.int32()),
    }
