"""The output: one Parquet schema, the table builder, resume bookkeeping, the job record.

Every manifest row becomes exactly one output row with ``status`` ``ok`` or ``error``;
error rows keep the manifest columns and say why in ``error`` (prefixed by the stage that
failed). Embeddings are ``fixed_size_list<float32>[D]``: Spark and pandas get plain arrays,
DuckDB's Parquet reader gives ``FLOAT[]`` (cast to ``FLOAT[D]``; an Arrow table read through
DuckDB keeps ``FLOAT[D]``). Files are written by Ray Data's ``write_parquet``;
the job record ``_vidbatch_job.json`` sits beside them (a leading underscore keeps Spark,
DuckDB globs and pyarrow datasets from reading it as data).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from pipeline.errors import OutputError
from pipeline.models import ARCHS
from pipeline.outdir import OutputDir

if TYPE_CHECKING:
    from pipeline.infer import InferSpec

Batch = dict[str, np.ndarray]
SCHEMA_VERSION = "2"  # 2: processed_at
JOB_RECORD = "_vidbatch_job.json"
QUARANTINE = "_partial"


def output_schema(embed_dim: int) -> pa.Schema:
    """The one output schema; only the embedding width depends on the model."""
    return pa.schema([
        pa.field("video_id", pa.string(), nullable=False),
        ("path", pa.string()),
        ("label", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # "ok" or "error"
        ("error", pa.string()),  # "<stage>: <reason>" on error rows
        ("decoder", pa.string()),  # "decord" or "pyav"
        ("decode_note", pa.string()),  # why a fallback ran, corrupt packets skipped, ...
        ("num_frames", pa.int64()),
        ("fps", pa.float64()),
        ("duration_s", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("clips", pa.int32()),
        ("frames_per_clip", pa.int32()),
        ("pred_index", pa.int32()),
        ("pred_label", pa.string()),
        ("pred_score", pa.float32()),
        ("topk_labels", pa.list_(pa.string())),
        ("topk_scores", pa.list_(pa.float32())),
        ("embedding", pa.list_(pa.float32(), embed_dim)),
        ("decode_s", pa.float64()),
        ("infer_s", pa.float64()),
        ("processed_at", pa.timestamp("ms", tz="UTC")),  # when the row's batch was finished
        ("model", pa.string()),
        ("weights", pa.string()),
        ("job", pa.string()),
    ], metadata={"vidbatch.schema_version": SCHEMA_VERSION})


def _nullable_int(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    v = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(v) | (v < 0)
    return pa.array(np.where(bad, 0, v).astype(np.int64), type=typ, mask=bad)


def _nullable_float(values: np.ndarray) -> pa.Array:
    v = np.asarray(values, dtype=np.float64)
    return pa.array(v, type=pa.float64(), mask=np.isnan(v))


def _strings(values) -> pa.Array:
    return pa.array([None if v is None or v != v else str(v) for v in values], pa.string())


def _per_ok(n: int, ok: np.ndarray, values, typ: pa.DataType) -> pa.Array:
    """Spread per-ok-row values over all rows, null where the row failed."""
    out: list[Any] = [None] * n
    for i, v in zip(np.flatnonzero(ok), values if values is not None else []):
        out[i] = v
    return pa.array(out, type=typ)


def output_table(batch: Batch, ok: np.ndarray, emb: np.ndarray | None, topi: np.ndarray | None,
                 tops: np.ndarray | None, class_names: np.ndarray, infer_s: np.ndarray,
                 spec: InferSpec) -> pa.Table:
    """Assemble the output rows of one batch (decode columns + model results)."""
    n = len(batch["video_id"])
    schema = output_schema(ARCHS[spec.card.arch].embed_dim)
    has = topi is not None
    card = spec.card
    cols = {
        "video_id": _strings(batch["video_id"]), "path": _strings(batch["path"]),
        "label": _strings(batch["label"]), "status": _strings(batch["status"]),
        "error": _strings(batch["error"]), "decoder": _strings(batch["decoder"]),
        "decode_note": _strings(batch["decode_note"]),
        "num_frames": _nullable_int(batch["num_frames"], pa.int64()),
        "fps": _nullable_float(batch["fps"]),
        "duration_s": _nullable_float(batch["duration_s"]),
        "width": _nullable_int(batch["width"], pa.int32()),
        "height": _nullable_int(batch["height"], pa.int32()),
        "start_s": _nullable_float(batch["start_s"]), "end_s": _nullable_float(batch["end_s"]),
        "clips": _per_ok(n, ok, [batch["frames"].shape[1]] * int(ok.sum()), pa.int32()),
        "frames_per_clip": _per_ok(n, ok, [batch["frames"].shape[2]] * int(ok.sum()),
                                   pa.int32()),
        "pred_index": _per_ok(n, ok, topi[:, 0].tolist() if has else None, pa.int32()),
        "pred_label": _per_ok(n, ok, class_names[topi[:, 0]].tolist() if has else None,
                              pa.string()),
        "pred_score": _per_ok(n, ok, tops[:, 0].tolist() if has else None, pa.float32()),
        "topk_labels": _per_ok(n, ok, [class_names[r].tolist() for r in topi] if has else None,
                               pa.list_(pa.string())),
        "topk_scores": _per_ok(n, ok, tops.tolist() if has else None, pa.list_(pa.float32())),
        "embedding": _per_ok(n, ok, emb.tolist() if emb is not None else None,
                             schema.field("embedding").type),
        "decode_s": _nullable_float(batch["decode_s"]), "infer_s": _nullable_float(infer_s),
        "processed_at": pa.array([time.time_ns() // 1_000_000] * n, pa.int64()).cast(
            schema.field("processed_at").type),
        "model": pa.array([card.arch] * n, pa.string()),
        "weights": pa.array([card.weights] * n, pa.string()),
        "job": pa.array([spec.job] * n, pa.string()),
    }
    return pa.table(cols, schema=schema)


# ---------------------------------------------------------------- output directory policy


def prepare_output(out: OutputDir, policy: str, spec: dict[str, Any] | None = None,
                   apply: bool = True) -> None:
    """Check (and with ``apply``, carry out) ``output.if_exists``: ``error``, ``resume`` or
    ``overwrite``. Never mixes runs silently, never deletes files vidbatch did not write."""
    kind = out.kind()
    if kind == pafs.FileType.NotFound:
        return
    if kind != pafs.FileType.Directory:
        raise OutputError(f"output.path {out} exists and is not a directory; choose another "
                          "path")
    entries = out.entries()
    if not entries:
        return
    if policy == "error":
        raise OutputError(f"output.path {out} already holds {len(entries)} entries. Use "
                          "--resume (output.if_exists: resume) to finish that job, --overwrite "
                          "to replace it, or choose another output.path.")
    ours = {JOB_RECORD, QUARANTINE}
    foreign = [e.base_name for e in entries
               if not e.base_name.endswith(".parquet") and e.base_name not in ours]
    if foreign:
        raise OutputError(f"output.path {out} holds files vidbatch did not write "
                          f"({', '.join(sorted(foreign)[:5])}); refusing to {policy} there. "
                          "Choose an empty or new output.path.")
    if policy == "resume":
        _check_same_job(out, spec)
    if policy == "overwrite" and apply:
        for e in entries:
            out.remove(e)


# Spec sections that must match for a resumed run to continue the same job.
RESUME_KEYS = ("manifest", "sampling", "model", "name", "mode")
DEFAULTS = {"mode": "infer"}  # keys older records lack, with the value they meant


def _check_same_job(out: OutputDir, spec: dict[str, Any] | None) -> None:
    record = read_job_record(out)
    if record is None or spec is None:
        return
    version = record.get("schema_version", "1")
    if version != SCHEMA_VERSION:
        raise OutputError(f"cannot resume into {out}: its files have output schema {version}, "
                          f"this vidbatch writes schema {SCHEMA_VERSION}. Use --overwrite, or "
                          "another output.path.")
    before = record.get("spec", {})
    changed = [k for k in RESUME_KEYS
               if before.get(k, DEFAULTS.get(k)) != spec.get(k, DEFAULTS.get(k))]
    if changed:
        raise OutputError(f"cannot resume into {out}: it was written with different "
                          f"{', '.join(changed)} settings. Use --overwrite, or another "
                          "output.path.")


def _ids_in(out: OutputDir, f: str) -> list[str] | None:
    """The video ids of a data file, or None if it cannot be read (e.g. no Parquet footer)."""
    try:
        return out.read_columns(f, ["video_id"])["video_id"].to_pylist()
    except (pa.ArrowInvalid, OSError):
        return None


def done_ids(out: OutputDir) -> tuple[set[str], tuple[str, ...]]:
    """Video ids already written by an earlier run of the same job, and the data files that
    cannot be read. Reads only.

    A file the earlier run was killed while writing has no Parquet footer: its rows are not
    done, and the run sets the file aside before it starts (:func:`set_aside`).
    """
    done: set[str] = set()
    unreadable = []
    for f in out.data_files():
        ids = _ids_in(out, f)
        if ids is None:
            unreadable.append(f)
        done.update(ids or ())
    return done, tuple(unreadable)


def set_aside(out: OutputDir, files: tuple[str, ...]) -> None:
    """Move data files whose rows are being done again (:func:`done_ids`) to ``_partial/``:
    kept for inspection, never read as data."""
    for f in files:
        out.move_into(f, QUARANTINE)


def count_statuses(out: OutputDir) -> dict[str, int]:
    """Rows per status over all data files (reads two small columns only)."""
    files = out.data_files()
    if not files:
        return {"rows": 0, "ok": 0, "error": 0, "unique_ids": 0}
    t = pa.concat_tables(out.read_columns(f, ["video_id", "status"]) for f in files)
    ok = int(pc.sum(pc.equal(t["status"], "ok")).as_py() or 0)
    return {"rows": t.num_rows, "ok": ok, "error": t.num_rows - ok,
            "unique_ids": len(pc.unique(t["video_id"]))}


def read_job_record(out: OutputDir) -> dict[str, Any] | None:
    try:
        text = out.read_text(JOB_RECORD)
        return None if text is None else json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        raise OutputError(f"cannot read {out.display(JOB_RECORD)}: {e}; remove it or use "
                          "--overwrite") from e


def write_job_record(out: OutputDir, record: dict[str, Any]) -> str:
    out.write_text(JOB_RECORD, json.dumps(record, indent=2, default=str))
    return out.display(JOB_RECORD)
