"""What a job's output holds, counted out of core: the rows per status at the end of a run
(the proof that every manifest row yielded its rows) and the videos an earlier run
finished, for ``--resume``. DuckDB reads the Parquet files (a local directory itself, an
object store's through pyarrow's filesystem) and spills past its memory limit
(:func:`pipeline.manifest.sql.connection`), so no id set is held in the driver.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.manifest.sql import connection, literal
from pipeline.output.outdir import OutputDir


def readable_files(out: OutputDir) -> tuple[list[str], tuple[str, ...]]:
    """The data files whose footer reads, and those whose does not: a file a run was killed
    while writing has none, and its rows are not done (the run sets it aside first:
    :func:`pipeline.output.store.set_aside`)."""
    readable, unreadable = [], []
    for f in out.data_files():
        try:
            pq.read_metadata(f, filesystem=out.fs)
            readable.append(f)
        except (pa.ArrowInvalid, OSError):
            unreadable.append(f)
    return readable, tuple(unreadable)


def rows_view(con, out: OutputDir, files: list[str], name: str = "vidbatch_rows") -> str:
    """An SQL relation of the rows of ``files`` (data files of ``out``), registered on
    ``con`` as ``name``."""
    if not files:
        raise ValueError("no data files")
    if out.local:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet(["
                    f"{', '.join(literal(f) for f in files)}])")
    else:
        import pyarrow.dataset as pads

        con.register(name, pads.dataset(files, filesystem=out.fs, format="parquet"))
    return name


# A video of a job per shot is done when its error row (shot null) or all its shot_count
# shots are written.
SHOT_VIDEOS = ("SELECT video_id, count(*) FILTER (shot IS NULL) AS errors, "
               "count(DISTINCT shot) AS shots, coalesce(max(shot_count), 0) AS expected "
               "FROM {rows} GROUP BY video_id")


def count_statuses(out: OutputDir, outcomes: tuple[str, ...] = (),
                   per_shot: bool = False) -> dict[str, int]:
    """Rows per status over all data files (reads a few small columns only). With
    ``outcomes`` (error stages that are outcomes of the input, not failures: a task's
    ``Task.outcome_stages``), also ``outcomes``: the error rows of those stages. A job
    ``per_shot`` also gets ``unique_rows`` (distinct video and shot) and ``incomplete``
    (videos with fewer shot rows than their ``shot_count``)."""
    files = out.data_files()
    zero = {"rows": 0, "ok": 0, "error": 0, "unique_ids": 0, "outcomes": 0,
            **({"unique_rows": 0, "incomplete": 0} if per_shot else {})}
    if not files:
        return zero
    hit = " OR ".join(f"starts_with(coalesce(error, ''), {literal(s + ':')})"
                      for s in outcomes) or "false"
    with connection() as con:
        rows = rows_view(con, out, files)
        n, ok, expected = con.execute(
            f"SELECT count(*), count(*) FILTER (status = 'ok'), count(*) FILTER ({hit}) "
            f"FROM {rows}").fetchone()
        unique = _distinct(con, rows, "video_id")
        counts = {"rows": n, "ok": ok, "error": n - ok, "unique_ids": unique,
                  "outcomes": expected}
        if per_shot:
            counts["unique_rows"] = _distinct(con, rows, "video_id", "shot")
            counts["incomplete"] = con.execute(
                f"SELECT count(*) FROM ({SHOT_VIDEOS.format(rows=rows)}) "
                "WHERE shots < expected").fetchone()[0]
    return counts


def _distinct(con, rows: str, column: str, *others: str) -> int:
    """Distinct ``column`` values (with ``others``) over ``rows``, each held as two 64-bit
    hashes, not the string: 16 bytes a row to spill instead of ~40 (two distinct ids agree
    on both hashes with odds of ~2^-128)."""
    keys = ", ".join([f"hash({column})", f"hash({column} || '#')", *others])
    return con.execute(f"SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {rows})"
                       ).fetchone()[0]
