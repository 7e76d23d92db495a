"""The store the driver keeps: the output directory's if_exists policy, resume, the job
record and the end-of-job counts.

Files are written by Ray Data's ``write_parquet``; the job record ``_vidbatch_job.json``
sits beside them (a leading underscore keeps Spark, DuckDB globs and pyarrow datasets from
reading it as data). Everything goes through :class:`~pipeline.output.outdir.OutputDir`,
so a local directory and an object-store prefix are handled alike.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.errors import OutputError
from pipeline.output.outdir import STAGING_SUFFIX, OutputDir
from pipeline.output.rows import SCHEMA_VERSION

JOB_RECORD = "_vidbatch_job.json"
LEASE = "_vidbatch_lease.json"  # pipeline.output.lease
QUARANTINE = "_partial"
# What vidbatch derives from a finished job's rows and keeps beside them (`vidbatch report`,
# `vidbatch index`, `vidbatch near-duplicates`): the report file, and two folders with the
# only files vidbatch writes in each. The `_` prefix keeps them out of Parquet readers' way
# (pyarrow, pandas and Spark skip such entries). They are vidbatch's: `--resume` keeps
# them, `--overwrite` removes them with the rows they describe; anything else inside those
# folders is not vidbatch's and blocks both, by name.
REPORT_FILE = "_vidbatch_report.html"
DERIVED_DIRS = {"_vidbatch_index": ("index.json", "index.faiss", "rows.parquet", "centre.faiss"),
                "_vidbatch_near_duplicates": ("groups.parquet",)}
DERIVED = (REPORT_FILE, *DERIVED_DIRS)
# Spec sections that must match for a resumed run to continue the same job (a task adds
# its own, pipeline.tasks.base.Task.resume_keys).
RESUME_KEYS = ("manifest", "sampling", "name", "mode", "task", "segments")
DEFAULTS = {"mode": "infer", "task": "classify"}  # keys older records lack, and their value


def data_file_prefix(run_id: str) -> str:
    """The start of the name of every data file that the run ``run_id`` writes."""
    return f"vidbatch-{run_id}_"


def _is_ours(entry: pafs.FileInfo, runs: list[str] | None) -> bool:
    """Whether vidbatch wrote ``entry``: the job record or the lease (or a temporary copy of
    either that a crash left mid-write: ``write_atomically``'s staging name), what it
    derives from the rows (the report; :data:`DERIVED_DIRS` are checked file by file), or
    a data file of one of the recorded ``runs``. ``runs`` is None for a record of a vidbatch
    that did not record its runs: then any Parquet file counts (enough to resume, never to
    delete: see :func:`prepare_output`)."""
    name = entry.base_name
    if entry.type != pafs.FileType.File:
        return False
    if name == REPORT_FILE:
        return True
    if name in (JOB_RECORD, LEASE) or (name.startswith((f"{JOB_RECORD}.", f"{LEASE}."))
                                       and name.endswith(STAGING_SUFFIX)):
        return True
    return name.endswith(".parquet") and (runs is None or any(
        name.startswith(data_file_prefix(r)) for r in runs))


def _inside_is_ours(folder: str, entry: pafs.FileInfo, runs: list[str] | None) -> bool:
    """Whether ``entry``, inside vidbatch's folder ``folder``, is vidbatch's: a quarantined
    data file, or a file the derived folder holds (or a temporary copy a crash left)."""
    if folder == QUARANTINE:
        return _is_ours(entry, runs)
    name = entry.base_name
    if name.endswith(STAGING_SUFFIX):
        name = name.rsplit(".", 2)[0]
    return entry.type == pafs.FileType.File and name in DERIVED_DIRS[folder]


def _ownership(out: OutputDir, entries: list[pafs.FileInfo], runs: list[str] | None
               ) -> tuple[list[pafs.FileInfo], list[str]]:
    """``(what vidbatch wrote, names of everything else)`` in the output directory
    (``_partial/`` is vidbatch's when everything in it is)."""
    ours, foreign = [], []
    for e in entries:
        if e.type == pafs.FileType.Directory and (e.base_name == QUARANTINE or
                                                  e.base_name in DERIVED_DIRS):
            inside = out.fs.get_file_info(pafs.FileSelector(e.path, recursive=True))
            strays = [f"{e.base_name}/{posixpath.relpath(i.path, e.path)}" for i in inside
                      if not _inside_is_ours(e.base_name, i, runs)]
            if strays:
                foreign += strays
            else:
                ours.append(e)
        elif _is_ours(e, runs):
            ours.append(e)
        else:
            foreign.append(e.base_name)
    return ours, sorted(foreign)


def prepare_output(out: OutputDir, policy: str, spec: dict[str, Any] | None = None,
                   apply: bool = True, resume_keys: tuple[str, ...] = ()
                   ) -> dict[str, Any] | None:
    """Check (and with ``apply``, carry out) ``output.if_exists``: ``error``, ``resume`` or
    ``overwrite``. Never mixes runs silently, and never deletes a file that the job record
    does not show vidbatch wrote: anything else in the directory is refused by name.

    ``spec`` is the job spec as JSON data; ``resume_keys`` are the task's sections that must
    match, besides :data:`RESUME_KEYS`. Returns the job record found there (None for an
    empty or new directory), read once for the caller too."""
    kind = out.kind()
    if kind == pafs.FileType.NotFound:
        return None
    if kind != pafs.FileType.Directory:
        raise OutputError(f"output.path {out} exists and is not a directory; choose another "
                          "path")
    entries = [e for e in out.entries() if e.base_name != LEASE]  # a lease is not content
    if not entries:
        return None
    if policy == "error":
        raise OutputError(f"output.path {out} already holds {len(entries)} entries. Use "
                          "--resume (output.if_exists: resume) to finish that job, --overwrite "
                          "to replace it, or choose another output.path.")
    record = read_job_record(out)
    if record is None:
        raise OutputError(f"output.path {out} holds {len(entries)} entries and no vidbatch job "
                          f"record ({JOB_RECORD}): vidbatch did not write it; refusing to "
                          f"{policy} there. Choose an empty or new output.path.")
    if "runs" not in record and policy == "overwrite":
        raise OutputError(f"output.path {out} was written by a vidbatch that did not record "
                          "the names of its files; refusing to overwrite it. Delete the "
                          "directory yourself, or choose another output.path.")
    ours, foreign = _ownership(out, entries, record.get("runs"))
    if foreign:
        raise OutputError(f"output.path {out} holds files its job record does not show "
                          f"vidbatch wrote ({', '.join(foreign[:5])}"
                          f"{', ...' if len(foreign) > 5 else ''}); refusing to {policy} "
                          "there. Move them away, or choose an empty or new output.path.")
    if policy == "resume":
        _check_same_job(out, spec, record, RESUME_KEYS + resume_keys)
    if policy == "overwrite" and apply:
        for e in ours:
            out.remove(e)
    return record


def _check_same_job(out: OutputDir, spec: dict[str, Any] | None, record: dict[str, Any],
                    keys: tuple[str, ...]) -> None:
    if spec is None:
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


def set_aside(out: OutputDir, files: tuple[str, ...]) -> None:
    """Move data files whose rows are being done again (their footer does not read:
    :func:`pipeline.output.ledger.readable_files`) to ``_partial/``:
    kept for inspection, never read as data."""
    for f in files:
        out.move_into(f, QUARANTINE)


def read_job_record(out: OutputDir) -> dict[str, Any] | None:
    try:
        text = out.read_text(JOB_RECORD)
        return None if text is None else json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        raise OutputError(f"cannot read {out.display(JOB_RECORD)}: {e}. Without it vidbatch "
                          "cannot tell which files it wrote there: move the directory away, "
                          "or choose another output.path.") from e


def write_job_record(out: OutputDir, record: dict[str, Any]) -> str:
    out.write_text(JOB_RECORD, json.dumps(record, indent=2, default=str))
    return out.display(JOB_RECORD)


def read_rows(output: str) -> pa.Table:
    """The ok and error rows of a job's output (a local folder or a URI), all in memory:
    for evaluation, over outputs of the size of a labelled set."""
    import pyarrow.dataset as pads

    from pipeline.paths import is_uri

    if is_uri(output):
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(output)
        return pads.dataset(path, filesystem=fs, format="parquet").to_table()
    return pads.dataset(output, format="parquet").to_table()
