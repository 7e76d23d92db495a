"""The human summary of a finished job, read back from its files (not from driver memory)."""

from __future__ import annotations

import posixpath
from typing import Any

from pipeline.errors import VidbatchError
from pipeline.output.outdir import OutputDir
from pipeline.output.store import JOB_RECORD, read_job_record
from pipeline.tasks.registry import DEFAULT_TASK, get_task

ERROR_LINE = 100  # characters of an error row's line
ERROR_ROWS = 8  # error rows shown


def render_summary(output: OutputDir, record: dict[str, Any]) -> str:
    """Counts, where the files are, which decoders ran, the first error rows, and the
    task's own lines: aggregates that DuckDB computes over the files, so that the summary
    of 100 million rows holds no more than that of ten."""
    from pipeline.manifest.sql import connection
    from pipeline.output.ledger import rows_view

    c = record["counts"]
    files = output.data_files()
    task = get_task(record.get("task", DEFAULT_TASK))
    rows = (f"{c['rows']} shot rows for {c['manifest_rows']} videos"
            if record["spec"].get("segments") else
            f"{c['rows']} rows for {c['manifest_rows']} manifest rows")
    lines = [
        f"job {record['job']}: {rows} -> "
        f"{c['ok']} ok, {c['error']} error; {c['processed_this_run']} processed in "
        f"{record['wall_s']:.1f} s ({record['videos_per_s'] or 0:.2f} videos/s, Ray start-up "
        "included)",
        f"output: {output} ({len(files)} Parquet files + {JOB_RECORD})",
        *_timing(record.get("timing") or {}),
    ]
    if not files:
        return "\n".join(lines)
    with connection() as con:
        view = rows_view(con, output, files)
        lines += _tallies(con, view)
        figures = None
        if task.summary_figures:
            names = list(task.summary_figures)
            values = con.execute("SELECT " + ", ".join(
                task.summary_figures[n] for n in names) + f" FROM {view}").fetchone()
            figures = dict(zip(names, values))
    if record["spec"].get("mode") == "decode_only":
        lines.append("mode decode_only: no model ran; the task's columns are null, decode_s "
                     "is each video's decode time")
    else:
        lines += task.summary(record, figures)
    return "\n".join(lines)


def _timing(timing: dict[str, Any]) -> list[str]:
    if timing.get("first_row_s") is None:
        return []
    fixed = timing["first_row_s"] + timing["end_s"] - timing["last_row_s"]
    began = timing.get("first_decode_s")
    return [f"seconds from the start: Ray ready {timing['ray_ready_s']:.1f}, "
            + (f"first decode {began:.1f}, " if began is not None else "")
            + f"first row {timing['first_row_s']:.1f}, last row "
            f"{timing['last_row_s']:.1f}, done {timing['end_s']:.1f} (fixed cost "
            f"{fixed:.1f}); driver {timing['driver_peak_rss_mb']} MiB"]


def _tallies(con, view: str) -> list[str]:
    """Rows per decoder, errors per stage, and the first error rows."""
    decoders = con.execute(f"SELECT decoder, count(*) FROM {view} WHERE status = 'ok' "
                           "GROUP BY decoder ORDER BY count(*) DESC, decoder").fetchall()
    stages = con.execute(
        f"SELECT split_part(coalesce(error, ''), ':', 1) AS stage, count(*) FROM {view} "
        "WHERE status = 'error' GROUP BY stage ORDER BY count(*) DESC, stage").fetchall()
    tallies = []
    if decoders:
        tallies.append("decoders: " + ", ".join(f"{d} {n}" for d, n in decoders))
    if stages:
        tallies.append("errors by stage: " + ", ".join(f"{s} {n}" for s, n in stages))
    lines = ["; ".join(tallies)] if tallies else []
    errors = sum(n for _, n in stages)
    for vid, path, error in con.execute(
            f"SELECT video_id, path, error FROM {view} WHERE status = 'error' "
            f"ORDER BY video_id LIMIT {ERROR_ROWS}").fetchall():
        # One screen line each: the reason, with the file's name for its whole path.
        reason = (error or "").replace(path, posixpath.basename(path)) if path else error
        line = f"  error {vid}: {reason}"
        lines.append(line if len(line) <= ERROR_LINE else line[:ERROR_LINE - 3] + "...")
    if errors > ERROR_ROWS:
        lines.append(f"  ... and {errors - ERROR_ROWS} more error rows")
    return lines


def finished_record(output: OutputDir) -> dict[str, Any]:
    """The job record of a finished (or partly finished) job, or a VidbatchError."""
    record = read_job_record(output)
    if record is None or "rows" not in record.get("counts", {}):
        raise VidbatchError(f"{output.display(JOB_RECORD)} not found or the job did not "
                            "finish; run `vidbatch submit JOB --resume` to finish it")
    return record
