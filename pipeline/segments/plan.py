"""The driver's side of a job per shot (``segments: shots``): which manifest rows are left
to do on ``--resume``, and the shots a shots job already found (``segments.shots_from``),
carried in the manifest rows to :func:`pipeline.segments.shots.split_into_shots`.

The row contract of such a job: every manifest row yields at least one row, one per shot
(``shot``, ``shot_count``), or exactly one error row (``shot`` null) when the video's shots
cannot be found. A video is done when its error row or all its ``shot_count`` shot rows
are written; a resumed run finds the shots of a partly written video again and writes only
the missing ones.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ConfigError
from pipeline.output.outdir import OutputDir
from pipeline.segments.shots import SHOT


def _shot_rows(out: OutputDir) -> tuple[pa.Table, tuple[str, ...]]:
    """``video_id, shot, shot_count`` of every readable data file, and the unreadable."""
    tables, unreadable = [], []
    for f in out.data_files():
        try:  # every file has the shot columns: --resume refuses a changed `segments`
            tables.append(out.read_columns(f, ["video_id", "shot", "shot_count"]))
        except (pa.ArrowInvalid, OSError):  # no footer: a run was killed writing it
            unreadable.append(f)
    schema = pa.schema([("video_id", pa.string()), ("shot", pa.int32()),
                        ("shot_count", pa.int32())])
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table, tuple(unreadable)


def done_shots(out: OutputDir) -> tuple[set[str], dict[str, list[int]], tuple[str, ...]]:
    """``(videos done, {video: shots written} of the partly done ones, unreadable data
    files)`` of an earlier run of the same job. Reads only."""
    rows, unreadable = _shot_rows(out)
    if not rows.num_rows:
        return set(), {}, unreadable
    # Named by pyarrow after column and function: shot_count (of null shots: an error
    # row), shot_count_distinct, shot_count_max (the video's shots), shot_list.
    per = rows.group_by("video_id").aggregate([
        ("shot", "count_distinct"), ("shot", "count", pc.CountOptions(mode="only_null")),
        ("shot_count", "max"), ("shot", "list")])
    done, partial = set(), {}
    for r in per.to_pylist():
        if r["shot_count"] or r["shot_count_distinct"] >= (r["shot_count_max"] or 0):
            done.add(r["video_id"])
        else:
            partial[r["video_id"]] = sorted(s for s in r["shot_list"] if s is not None)
    return done, partial, unreadable


def with_done_shots(todo: pa.Table, partial: dict[str, list[int]]) -> pa.Table:
    """``todo`` with ``done_shots``: the shots already written of each partly done video."""
    ids = todo["video_id"].to_pylist()
    return todo.append_column("done_shots", pa.array([partial.get(v) for v in ids],
                                                     pa.list_(pa.int32())))


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


def shots_left(manifest: pa.Table, out: OutputDir) -> tuple[pa.Table, int, tuple[str, ...]]:
    """``(rows to do, videos done, unreadable files)`` for ``--resume`` of a job per
    shot: done videos are left out, partly done ones carry their ``done_shots``."""
    done, partial, unreadable = done_shots(out)
    todo = manifest
    if done:
        written = pc.is_in(manifest["video_id"], value_set=pa.array(sorted(done)))
        todo = manifest.filter(pc.invert(written))
    return with_done_shots(todo, partial), manifest.num_rows - todo.num_rows, unreadable
