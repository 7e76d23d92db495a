"""The store the driver keeps: the output directory's if_exists policy, resume, the job
record and the end-of-job counts.

Files are written by Ray Data's ``write_parquet``; the job record ``_vidbatch_job.json``
sits beside them (a leading underscore keeps Spark, DuckDB globs and pyarrow datasets from
reading it as data). Everything goes through :class:`~pipeline.output.outdir.OutputDir`,
so a local directory and an object-store prefix are handled alike.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from pipeline.errors import OutputError
from pipeline.output.outdir import OutputDir
from pipeline.output.rows import SCHEMA_VERSION

JOB_RECORD = "_vidbatch_job.json"
QUARANTINE = "_partial"
# Spec sections that must match for a resumed run to continue the same job (a task adds
# its own, pipeline.tasks.base.Task.resume_keys).
RESUME_KEYS = ("manifest", "sampling", "name", "mode", "task")
DEFAULTS = {"mode": "infer", "task": "classify"}  # keys older records lack, and their value


def prepare_output(out: OutputDir, policy: str, spec: dict[str, Any] | None = None,
                   apply: bool = True, resume_keys: tuple[str, ...] = ()) -> None:
    """Check (and with ``apply``, carry out) ``output.if_exists``: ``error``, ``resume`` or
    ``overwrite``. Never mixes runs silently, never deletes files vidbatch did not write.

    ``spec`` is the job spec as JSON data; ``resume_keys`` are the task's sections that must
    match, besides :data:`RESUME_KEYS`."""
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
        _check_same_job(out, spec, RESUME_KEYS + resume_keys)
    if policy == "overwrite" and apply:
        for e in entries:
            out.remove(e)


def _check_same_job(out: OutputDir, spec: dict[str, Any] | None, keys: tuple[str, ...]
                    ) -> None:
    record = read_job_record(out)
    if record is None or spec is None:
        return
    version = record.get("schema_version", "1")
    if version != SCHEMA_VERSION:
        raise OutputError(f"cannot resume into {out}: its files have output schema {version}, "
                          f"this vidbatch writes schema {SCHEMA_VERSION}. Use --overwrite, or "
                          "another output.path.")
    before = record.get("spec", {})
    changed = [k for k in keys
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
