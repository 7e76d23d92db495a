"""The rows a run processes: a checked manifest (:class:`~pipeline.manifest.scan.Scan`),
less the rows an earlier run finished (a bitmap, one bit per manifest row: 12.5 MB for
100 million rows), read chunk by chunk where the rows are needed.

:class:`Part` is what one read task of the job's stream carries: one chunk and its slice of
the bitmap. Its rows are normalised there, by the same SQL the checks ran
(:func:`~pipeline.manifest.scan.normalised`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from pipeline.manifest.scan import Scan, normalised, numbered, select_raw
from pipeline.manifest.source import Chunk, ManifestSource
from pipeline.manifest.sql import add_normpath

MANIFEST_SCHEMA = pa.schema([
    ("row", pa.int64()),  # 0-based position in the manifest, for messages and ordering
    ("video_id", pa.string()),
    ("path", pa.string()),
    ("label", pa.string()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
])
DONE_SHOTS = pa.list_(pa.int32())
# Rows per read task of a Parquet manifest. Ray Data hands a read task's rows on together
# (cut into decode-task blocks), and blocks this small are queued in the driver: a slice
# bounds what one task adds (pipeline.infer.progress.ReadGate bounds how many run ahead).
# A slice reads its row group's few columns whole, then keeps its rows.
SLICE_ROWS = 65_536

_CONNECTIONS: dict[str, object] = {}  # a read task's process: one DuckDB per manifest base


def connection_for(base: str):
    """This process's DuckDB for normalising rows of manifests in ``base`` (one thread: a
    read task normalises a batch of ~65,000 rows at a time)."""
    if base not in _CONNECTIONS:
        import duckdb

        con = duckdb.connect(config={"threads": 1})
        add_normpath(con, base)
        _CONNECTIONS[base] = con
    return _CONNECTIONS[base]


def normalise(source: ManifestSource, batch: pa.RecordBatch, first_row: int,
              id_hex: int) -> pa.Table:
    """``batch`` of the manifest, its first row ``first_row``, as :data:`MANIFEST_SCHEMA`."""
    con = connection_for(source.base)
    con.register("vidbatch_batch", numbered(batch, first_row))
    try:
        raw = f"(SELECT {select_raw(source, '__row')} FROM vidbatch_batch)"
        rows = con.sql(f"{normalised(raw, source, id_hex)} ORDER BY row").to_arrow_table()
    finally:
        con.unregister("vidbatch_batch")
    return rows.cast(MANIFEST_SCHEMA)


@dataclass(frozen=True)
class Part:
    """One chunk of a :class:`Todo`: its rows to do, normalised, batch by batch."""

    source: ManifestSource
    chunk: Chunk
    id_hex: int
    skip: np.ndarray | None  # packed bits over the chunk's rows; None: skip none
    todo: int  # rows left after skipping
    done_shots: dict[str, list[int]] | None = None
    ahead: int = 0  # rows to do in the parts before this one

    def tables(self) -> Iterator[pa.Table]:
        row = self.chunk.first_row
        skip = (None if self.skip is None else
                np.unpackbits(self.skip, count=self.chunk.rows).astype(bool))
        for batch in self.source.batches(self.chunk):
            rows = normalise(self.source, batch, row, self.id_hex)
            if skip is not None:
                start = row - self.chunk.first_row
                rows = rows.filter(pa.array(~skip[start:start + batch.num_rows]))
            row += batch.num_rows
            if rows.num_rows:
                yield self._with_done_shots(rows)

    def _with_done_shots(self, rows: pa.Table) -> pa.Table:
        if self.done_shots is None:
            return rows
        done = [self.done_shots.get(v) for v in rows["video_id"].to_pylist()]
        return rows.append_column("done_shots", pa.array(done, DONE_SHOTS))


@dataclass(frozen=True)
class Todo:
    """The manifest rows a run processes. ``skip``: packed bits over every manifest row,
    set for rows done before (None: none); ``done_shots``: a job per shot's partly written
    videos and their written shots (:mod:`pipeline.segments.plan`)."""

    scan: Scan
    skip: np.ndarray | None = None
    skipped: int = 0  # rows done before: the bits set in skip
    done_shots: dict[str, list[int]] | None = None
    table: pa.Table | None = None  # the rows to do, when held in memory (with_table)

    @property
    def total_rows(self) -> int:
        return self.scan.rows

    @property
    def num_rows(self) -> int:
        return self.table.num_rows if self.table is not None else self.total_rows - self.skipped

    def with_table(self, table: pa.Table) -> Todo:
        """This todo held as ``table`` (its rows, with columns a job adds to them)."""
        return replace(self, table=table)

    def parts(self) -> tuple[Part, ...]:
        """One :class:`Part` per chunk (a Parquet row group in slices of at most
        :data:`SLICE_ROWS`) that has rows to do; worked out once (the job's dataset and
        Ray Data's planning each ask, and a 100,000,000-row bitmap unpacks to 100 MB)."""
        return self._parts

    @functools.cached_property
    def _parts(self) -> tuple[Part, ...]:
        out = []
        bits = (None if self.skip is None else
                np.unpackbits(self.skip, count=self.total_rows).astype(bool))
        ahead = 0
        for chunk in (s for c in self.scan.chunks for s in c.slices(SLICE_ROWS)):
            mine = None if bits is None else bits[chunk.first_row:chunk.first_row + chunk.rows]
            todo = chunk.rows - (0 if mine is None else int(mine.sum()))
            if todo:
                out.append(Part(self.scan.source, chunk, self.scan.id_hex,
                                None if mine is None else np.packbits(mine), todo,
                                self.done_shots, ahead))
                ahead += todo
        return tuple(out)

    def windows(self, rows: int) -> list[tuple[Part, ...] | None]:
        """The parts in consecutive windows of at least ``rows`` rows to do (the last may
        hold fewer), which a job runs one after another
        (:data:`~pipeline.dataflow.WINDOW_ROWS` says why); ``[None]`` for a todo held in
        memory: one window, its table."""
        if self.table is not None:
            return [None]
        out: list[tuple[Part, ...] | None] = []
        window: list[Part] = []
        held = 0
        for part in self.parts():
            window.append(part)
            held += part.todo
            if held >= rows:
                out.append(tuple(window))
                window, held = [], 0
        if window or not out:
            out.append(tuple(window))
        return out

    def tables(self) -> Iterator[pa.Table]:
        """Every row to do, in manifest order, a batch at a time."""
        if self.table is not None:
            return iter([self.table])
        return itertools.chain.from_iterable(p.tables() for p in self.parts())

    def read_all(self) -> pa.Table:
        """Every row to do, in memory: for training sets and labelled sets."""
        tables = list(self.tables())
        return pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()

    def first_paths(self, limit: int) -> list[str]:
        """Up to ``limit`` non-empty paths from the first rows to do."""
        paths: list[str] = []
        for table in self.tables():
            paths += [p for p in table["path"].to_pylist() if p]
            if len(paths) >= limit:
                break
        return paths[:limit]
