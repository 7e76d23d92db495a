"""The driver's side of a job per shot (``segments: shots``): the shots a shots job
already found (``segments.shots_from``), carried in the manifest rows to
:func:`pipeline.segments.shots.split_into_shots`. (Which rows are left to do on
``--resume``: :mod:`pipeline.infer.resume`.)

The row contract of such a job: every manifest row yields at least one row, one per shot
(``shot``, ``shot_count``), or exactly one error row (``shot`` null) when the video's shots
cannot be found. A video is done when its error row or all its ``shot_count`` shot rows
are written; a resumed run finds the shots of a partly written video again and writes only
the missing ones.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.errors import ConfigError
from pipeline.output.outdir import OutputDir
from pipeline.segments.shots import SHOT


def with_given_shots(todo: pa.Table, shots_from: str) -> pa.Table:
    """``todo`` with the shots that the shots job at ``shots_from`` found for each video
    (``given_shots``), or why it has none (``given_error``: its error row, or no row)."""
    from pipeline.output.store import read_job_record, read_rows

    record = read_job_record(OutputDir.at(shots_from))
    if record is None or record.get("task") != "shots":
        raise ConfigError(f"segments.shots_from: {shots_from} holds no shots job's output "
                          "(task: shots); run one over the same manifest, or leave "
                          "shots_from out to find the shots in this job")
    found = read_rows(shots_from).select(["video_id", "status", "error", "shots"])
    by_id = {r["video_id"]: r for r in found.to_pylist()}
    shots, errors = [], []
    for video in todo["video_id"].to_pylist():
        r = by_id.get(video)
        ok = r is not None and r["status"] == "ok" and r["shots"]
        shots.append(r["shots"] if ok else None)
        errors.append(None if ok else
                      f"shots: {shots_from} has no row for this video" if r is None else
                      f"shots: the shots job failed on this video ({r['error']})")
    return todo.append_column("given_shots", pa.array(shots, pa.list_(SHOT))) \
        .append_column("given_error", pa.array(errors, pa.string()))
