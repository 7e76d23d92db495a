"""``--resume``: which manifest rows an earlier run of the same job finished, as a bitmap
over the manifest's rows, found by an anti-join that DuckDB runs out of core between the
manifest (normalised by the read tasks' own SQL) and the output's readable data files.

A job per shot (``segments: shots``) has finished a video when its error row or all its
``shot_count`` shot rows are written; a partly written video is done again, carrying the
shots already written (``done_shots``) so that only the missing ones are written.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import OutputError
from pipeline.manifest import Scan, Todo
from pipeline.manifest.scan import normalised, raw_rows
from pipeline.manifest.sql import add_normpath, connection, memory_limit
from pipeline.output.ledger import SHOT_VIDEOS, readable_files, rows_view
from pipeline.output.outdir import OutputDir

FETCH_ROWS = 1 << 20
KEY = "hash({0}) AS h1, hash({0} || '#') AS h2"


def left_to_do(scan: Scan, out: OutputDir, per_shot: bool = False
               ) -> tuple[Todo, tuple[str, ...]]:
    """``(the rows still to do, the data files that cannot be read)`` of a job whose
    earlier run wrote into ``out``. Reads only."""
    files, unreadable = readable_files(out)
    if not files:
        return Todo(scan), unreadable
    import duckdb

    try:
        return _left(scan, out, files, per_shot), unreadable
    except (duckdb.Error, OSError) as e:  # OSError: DuckDB's, raised through Arrow's reader
        raise OutputError(f"cannot tell which rows {out} already holds: {e}. If DuckDB ran "
                          f"out of memory, set VIDBATCH_DUCKDB_MEMORY higher than "
                          f"{memory_limit()}.") from e


def _left(scan: Scan, out: OutputDir, files: list[str], per_shot: bool) -> Todo:
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
        # Joined on two 64-bit hashes of the id: 16 bytes a row to hold instead of the id
        # (joining the strings ran out of DuckDB's memory at 5,000,000 done rows); two
        # different ids match with odds of ~2^-128.
        found = con.sql(f"SELECT m.row FROM (SELECT row, {KEY.format('video_id')} FROM "
                        f"({manifest})) m SEMI JOIN (SELECT {KEY.format('video_id')} FROM "
                        f"({done})) d ON m.h1 = d.h1 AND m.h2 = d.h2")
        skip = np.zeros(scan.rows, bool)
        for batch in found.fetch_record_batch(FETCH_ROWS):
            skip[batch.column(0).to_numpy()] = True
    return Todo(scan, np.packbits(skip), int(skip.sum()), partial)
