"""The human summary of a finished job, read back from its files (not from driver memory)."""

from __future__ import annotations

import posixpath
from typing import Any

from pipeline.errors import VidbatchError
from pipeline.output.outdir import OutputDir
from pipeline.output.store import JOB_RECORD, read_job_record
from pipeline.tasks.registry import DEFAULT_TASK, get_task

ERROR_LINE = 100  # characters of an error row's line


def render_summary(output: OutputDir, record: dict[str, Any]) -> str:
    """Counts, where the files are, which decoders ran, the first error rows, and the
    task's own lines."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    c = record["counts"]
    files = output.data_files()
    task = get_task(record.get("task", DEFAULT_TASK))
    table = pads.dataset(files, filesystem=output.fs, format="parquet").to_table(
        columns=["video_id", "path", "status", "error", "decoder", *task.summary_columns])
    rows = (f"{c['rows']} shot rows for {c['manifest_rows']} videos"
            if record["spec"].get("segments") else
            f"{c['rows']} rows for {c['manifest_rows']} manifest rows")
    lines = [
        f"job {record['job']}: {rows} -> "
        f"{c['ok']} ok, {c['error']} error; {c['processed_this_run']} processed in "
        f"{record['wall_s']:.1f} s ({record['videos_per_s'] or 0:.2f} videos/s, Ray start-up "
        "included)",
        f"output: {output} ({len(files)} Parquet files + {JOB_RECORD})",
    ]
    timing = record.get("timing") or {}
    if timing.get("first_row_s") is not None:
        fixed = timing["first_row_s"] + timing["end_s"] - timing["last_row_s"]
        began = timing.get("first_decode_s")
        lines.append(f"seconds from the start: Ray ready {timing['ray_ready_s']:.1f}, "
                     + (f"first decode {began:.1f}, " if began is not None else "")
                     + f"first row {timing['first_row_s']:.1f}, last row "
                     f"{timing['last_row_s']:.1f}, done {timing['end_s']:.1f} (fixed cost "
                     f"{fixed:.1f}); driver {timing['driver_peak_rss_mb']} MiB")
    decoders = table.filter(pc.equal(table["status"], "ok")).group_by("decoder").aggregate(
        [("video_id", "count")]).to_pylist()
    tallies = []
    if decoders:
        tallies.append("decoders: " + ", ".join(f"{d['decoder']} {d['video_id_count']}"
                                                for d in decoders))
    errors = table.filter(pc.equal(table["status"], "error")).select(["video_id", "path", "error"])
    if errors.num_rows:
        # Aggregated in Arrow: a million error rows stay columns, never Python objects.
        stage = pc.list_element(pc.split_pattern(pc.fill_null(errors["error"], ""), ":",
                                                 max_splits=1), 0)
        stages = pa.table({"stage": stage}).group_by("stage").aggregate(
            [("stage", "count")]).sort_by([("stage_count", "descending")]).to_pylist()
        tallies.append("errors by stage: " + ", ".join(f"{s['stage']} {s['stage_count']}"
                                                       for s in stages))
    if tallies:
        lines.append("; ".join(tallies))
    for row in errors.slice(0, 8).to_pylist():
        # One screen line each: the reason, with the file's name for its whole path.
        reason = row["error"].replace(row["path"], posixpath.basename(row["path"]))
        line = f"  error {row['video_id']}: {reason}"
        lines.append(line if len(line) <= ERROR_LINE else line[:ERROR_LINE - 3] + "...")
    if errors.num_rows > 8:
        lines.append(f"  ... and {errors.num_rows - 8} more error rows")
    if record["spec"].get("mode") == "decode_only":
        lines.append("mode decode_only: no model ran; the task's columns are null, decode_s "
                     "is each video's decode time")
    else:
        lines += task.summary(record, table)
    return "\n".join(lines)


def finished_record(output: OutputDir) -> dict[str, Any]:
    """The job record of a finished (or partly finished) job, or a VidbatchError."""
    record = read_job_record(output)
    if record is None or "rows" not in record.get("counts", {}):
        raise VidbatchError(f"{output.display(JOB_RECORD)} not found or the job did not "
                            "finish; run `vidbatch submit JOB --resume` to finish it")
    return record
