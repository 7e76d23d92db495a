"""A finished job's rows as one DuckDB view, and the aggregates a report draws.

DuckDB reads a local output's Parquet files itself; a URI output is opened as one
``pyarrow.dataset`` over its own filesystem (as :class:`~pipeline.output.outdir.OutputDir`
opens it) and handed to DuckDB. Either way DuckDB scans lazily, column by column. Every
query returns a bounded result (counts, bins, a few example rows), so a report over a
million rows holds bins, not rows. Only :meth:`RowsView.embedding_sample` reads vectors,
from a bounded number of row groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.errors import OutputError
from pipeline.output.outdir import OutputDir
from pipeline.output.store import read_job_record


@dataclass(frozen=True)
class Bins:
    """A histogram: ``edges`` (n + 1 values) and ``counts`` (n values)."""

    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class Rate:
    """Videos per second (``per_s``) at ``t_s`` seconds since the first row, each over
    the ``window_s`` seconds before."""

    t_s: list[float]
    per_s: list[float]
    window_s: float


def sliding_rate(times: np.ndarray, done: np.ndarray, points: int = 200) -> Rate | None:
    """The rate at which rows were finished: ``done[i]`` rows by ``times[i]`` seconds.

    Rows are written a batch at a time, so rows per fixed bin jumps between 0 and a batch
    (0, 4, 0, 4 for 4-video batches). Instead each batch counts as finished evenly since
    the one before (the finished count is interpolated between writes), and the rate at
    ``t`` is the rows finished over the window before it: 4 intervals between writes
    (on average over the run), so that each window holds several batches and replicas
    finishing out of step do not read as spikes, and at least 1/30 of the run, so that
    the line shows the run's shape (start-up, a stall, the tail) rather than noise.
    Near the start, where less than a window has passed, the rate is that of the run's
    first window (every point averages the same length of time). Example: writes of 4
    rows at 0, 2, 4 and 6 s give 2 videos/s throughout (the window is the whole 6 s).
    """
    if len(times) < 2:
        return None
    span = float(times[-1] - times[0])
    window = min(span, max(4 * span / (len(times) - 1), span / 30))
    t = np.linspace(times[0], times[-1], points + 1)[1:]
    since = np.clip(t - window, times[0], times[-1] - window)
    rate = (np.interp(since + window, times, done) - np.interp(since, times, done)) / window
    return Rate([float(x) for x in t], [float(r) for r in rate], window)


class RowsView:
    """The rows of the job at ``location`` as the DuckDB view ``rows``."""

    def __init__(self, location: str):
        self.out = OutputDir.at(location)
        self.record = read_job_record(self.out)
        if self.record is None:
            raise OutputError(f"{location} holds no vidbatch job record (_vidbatch_job.json); "
                              "give the output.path of a vidbatch job, or a training run's "
                              "folder (it holds history.jsonl)")
        self.files = self.out.data_files()
        self.con = duckdb.connect()
        self.con.execute("SET enable_progress_bar = false")
        if self.files and self.out.local:  # DuckDB's own reader: parallel, and faster
            self.con.read_parquet(self.files).create_view("rows")
            self.columns = set(pq.read_schema(self.files[0]).names)
        elif self.files:  # a URI: pyarrow's filesystems read it, DuckDB scans the dataset
            self.dataset = ds.dataset(self.files, filesystem=self.out.fs, format="parquet")
            self.con.register("rows", self.dataset)
            self.columns = set(self.dataset.schema.names)
        else:
            self.columns = set()
            self.con.execute("CREATE VIEW rows AS SELECT NULL::VARCHAR AS status, "
                             "NULL::VARCHAR AS error, NULL::VARCHAR AS path WHERE false")

    @property
    def task(self) -> str:
        return self.record.get("task", "classify")

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def counts(self) -> dict[str, int]:
        """Rows by status, plus ``rows`` in all."""
        got = {s: n for s, n in self.query("SELECT status, count(*) FROM rows GROUP BY 1")}
        return {"rows": sum(got.values()), "ok": got.get("ok", 0),
                "error": got.get("error", 0)}

    def errors(self, limit: int = 40, examples: int = 3) -> list[dict[str, Any]]:
        """Error rows grouped by stage and reason (the row's own path replaced by ``…``, so
        one reason groups many files), largest group first, with example paths."""
        sql = """
            SELECT split_part(error, ':', 1) AS stage,
                   trim(replace(substr(error, length(split_part(error, ':', 1)) + 2),
                                coalesce(path, ''), '…')) AS reason,
                   count(*) AS n, list(path ORDER BY path)[1:?] AS paths
            FROM rows WHERE status = 'error'
            GROUP BY 1, 2 ORDER BY n DESC, stage, reason LIMIT ?"""
        return [{"stage": s, "reason": r, "count": n, "paths": p}
                for s, r, n, p in self.query(sql, [examples, limit])]

    def errors_by_stage(self) -> dict[str, int]:
        return dict(self.query("SELECT split_part(error, ':', 1), count(*) FROM rows "
                               "WHERE status = 'error' GROUP BY 1 ORDER BY 2 DESC"))

    def bins(self, expr: str, where: str = "true", n: int = 30, lo: float | None = None,
             hi: float | None = None, source: str = "SELECT * FROM rows") -> Bins | None:
        """A histogram of ``expr`` over the rows of ``source`` matching ``where``: ``n``
        equal bins from ``lo`` (default: the minimum) to ``hi`` (default: the 99.5th
        percentile, so that one stuck video does not squash the rest into one bin; larger
        values join the last)."""
        picked = f"SELECT {expr} AS x FROM ({source}) WHERE {where}"
        stats = self.query(f"SELECT min(x), quantile_cont(x, 0.995), count(x) FROM ({picked})")[0]
        if not stats[2]:
            return None
        lo = stats[0] if lo is None else lo
        hi = stats[1] if hi is None else hi
        width = (hi - lo) / n if hi > lo else 1.0
        got = dict(self.query(
            f"SELECT least(greatest(floor((x - ?) / ?), 0), ?)::INT AS b, count(*) FROM "
            f"({picked}) WHERE x IS NOT NULL GROUP BY b",
            [lo, width, n - 1]))
        return Bins([lo + i * width for i in range(n + 1)], [got.get(i, 0) for i in range(n)])

    def quantiles(self, expr: str, where: str = "true") -> dict[str, float | None]:
        q = self.query(f"SELECT quantile_cont(x, 0.5), quantile_cont(x, 0.9), max(x) FROM "
                       f"(SELECT {expr} AS x FROM rows WHERE {where})")[0]
        return {"median": q[0], "p90": q[1], "max": q[2]}

    def timeline(self, fine: int = 2000) -> Rate | None:
        """Videos finished per second over the run (:func:`sliding_rate`), from the times
        rows were written, gathered in at most ``fine`` bins (the last time and the rows
        of each); None without at least two such times."""
        if "processed_at" not in self.columns:
            return None
        t0, t1 = self.query("SELECT epoch_ms(min(processed_at)), epoch_ms(max(processed_at)) "
                            "FROM rows")[0]
        if t0 is None or t1 <= t0:
            return None
        got = self.query("SELECT max(epoch_ms(processed_at)), count(*) FROM rows WHERE "
                         "processed_at IS NOT NULL GROUP BY floor((epoch_ms(processed_at) - ?) "
                         "/ ?) ORDER BY 1", [t0, max(1.0, (t1 - t0) / fine)])
        return sliding_rate(np.array([(t - t0) / 1000 for t, _ in got]),
                            np.cumsum([n for _, n in got]))

    def embedding_sample(self, column: str, limit: int = 4000,
                         extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """At most ``limit`` ok rows' ``column`` vectors with ``video_id``, ``path`` and
        ``extra`` columns, read from row groups spread over the files (never the whole
        column of a large job)."""
        names = ["video_id", "path", "status", column, *extra]
        groups = [(f, g) for f in self.files
                  for g in range(pq.ParquetFile(f, filesystem=self.out.fs).num_row_groups)]
        if not groups or column not in self.columns:
            return {}
        take = sorted(set(np.linspace(0, len(groups) - 1, min(len(groups), 64)).astype(int)))
        per_group, parts = max(1, limit // len(take)), []
        for i in take:
            f, g = groups[i]
            t = pq.ParquetFile(f, filesystem=self.out.fs).read_row_group(g, columns=names)
            t = t.filter(pc.and_(pc.equal(t["status"], "ok"), pc.is_valid(t[column])))
            parts.append(t.slice(0, per_group))
        t = pa.concat_tables(parts).slice(0, limit)
        out = {n: np.asarray(t[n].to_pylist(), dtype=object) for n in names if n != column}
        out[column] = np.asarray(t[column].to_pylist(), dtype=np.float32).reshape(t.num_rows, -1)
        return out
