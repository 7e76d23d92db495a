"""``--resume``: which manifest rows an earlier run of the same job finished, as a bitmap
over the manifest's rows, found by an anti-join that DuckDB runs out of core between the
manifest (normalised by the read tasks' own SQL) and the output's readable data files.

A job per shot (``segments: shots``) has finished a video when its error row or all its
``shot_count`` shot rows are written; a partly written video is done again, carrying the
shots already written (``done_shots``) so that only the missing ones are written.
"""

from __future__ import annotations

import numpy as np

from pipeline.manifest import Scan, Todo
from pipeline.manifest.scan import normalised, raw_rows
from pipeline.manifest.sql import add_normpath, connection
from pipeline.output.ledger import SHOT_VIDEOS, readable_files, rows_view
from pipeline.output.outdir import OutputDir

FETCH_ROWS = 1 << 20


def left_to_do(scan: Scan, out: OutputDir, per_shot: bool = False
               ) -> tuple[Todo, tuple[str, ...]]:
    """``(the rows still to do, the data files that cannot be read)`` of a job whose
    earlier run wrote into ``out``. Reads only."""
    files, unreadable = readable_files(out)
    if not files:
        return Todo(scan), unreadable
    with connection() as con:
        add_normpath(con, scan.source.base)
        rows = rows_view(con, out, files)
        videos = SHOT_VIDEOS.format(rows=rows)
        done = (f"SELECT video_id FROM ({videos}) WHERE errors > 0 OR shots >= expected"
                if per_shot else f"SELECT video_id FROM {rows}")
        partial = None
        if per_shot:
            partial = {v: sorted(shots) for v, shots in con.execute(
                f"SELECT video_id, list(DISTINCT shot) FROM {rows} WHERE shot IS NOT NULL "
                f"AND video_id IN (SELECT video_id FROM ({videos}) WHERE errors = 0 AND "
                "shots < expected) GROUP BY video_id").fetchall()}
        manifest = normalised(raw_rows(con, scan.source, list(scan.chunks)), scan.source,
                              scan.id_hex)
        found = con.sql(f"SELECT m.row FROM ({manifest}) m SEMI JOIN ({done}) d "
                            "ON m.video_id = d.video_id")
        skip = np.zeros(scan.rows, bool)
        for batch in found.fetch_record_batch(FETCH_ROWS):
            skip[batch.column(0).to_numpy()] = True
    return Todo(scan, np.packbits(skip), int(skip.sum()), partial), unreadable
