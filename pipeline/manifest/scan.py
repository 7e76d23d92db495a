"""The whole-manifest checks, out of core: every row is numbered and counted, duplicate
video ids are found and named, and segment bounds checked, before a job starts, with
DuckDB's bounded memory (:mod:`pipeline.manifest.sql`) instead of the manifest in the
driver's.

A local Parquet manifest is read by DuckDB itself, in parallel; a CSV, JSON Lines or remote
one is streamed to it chunk by chunk, with pyarrow's readers (the read tasks' own), so that
both number the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pyarrow as pa

from pipeline.errors import ManifestError
from pipeline.manifest.source import Chunk, ManifestSource
from pipeline.manifest.sql import literal, quoted, resolved_path, video_id

# The raw relation every check reads: the manifest's columns by their job-spec names, cast.
RAW = ("row", "path_raw", "given", "label", "start_raw", "end_raw")
SHOWN = 5  # duplicates and bad rows named in a message


@dataclass(frozen=True)
class Scan:
    """A checked manifest: its chunks numbered (``first_row``, ``rows``) and ``id_hex``,
    the hex digits of its derived ids."""

    source: ManifestSource
    chunks: tuple[Chunk, ...]
    id_hex: int

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks)


def _column(source: ManifestSource, name: str, cast: str = "VARCHAR") -> str:
    return f"CAST({quoted(name)} AS {cast})" if name in source.columns else f"NULL::{cast}"


def select_raw(source: ManifestSource, row: str) -> str:
    spec = source.spec
    return (f"{row} AS row, {_column(source, spec.path_column)} AS path_raw, "
            f"{_column(source, spec.id_column)} AS given, "
            f"{_column(source, spec.label_column)} AS label, "
            f"{_column(source, 'start_s')} AS start_raw, {_column(source, 'end_s')} AS end_raw")


def numbered(batch: pa.RecordBatch, first_row: int,
             schema: pa.Schema | None = None) -> pa.RecordBatch:
    """``batch`` with its rows' numbers (``__row``), its columns cast to ``schema``'s where
    given (shards of a streamed manifest must agree)."""
    if schema is not None and batch.schema != schema:
        try:
            batch = pa.RecordBatch.from_arrays(
                [batch.column(f.name).cast(f.type) if f.name in batch.schema.names
                 else pa.nulls(batch.num_rows, f.type) for f in schema], schema=schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ManifestError(f"manifest shards disagree on their columns' types: {e}. "
                                "Write every shard with the same columns.") from e
    rows = pa.array(range(first_row, first_row + batch.num_rows), pa.int64())
    return batch.append_column("__row", rows)


def _streamed(source: ManifestSource, chunks: list[Chunk]) -> Iterator[pa.RecordBatch]:
    """The chunks' batches, numbered, filling in each chunk's row numbers."""
    row, schema = 0, None
    for k, chunk in enumerate(chunks):
        first = row
        for batch in source.batches(chunk):
            schema = schema or batch.schema
            yield numbered(batch, row, schema)
            row += batch.num_rows
        chunks[k] = replace(chunk, first_row=first, rows=row - first)


def raw_rows(con, source: ManifestSource, chunks: list[Chunk]) -> str:
    """An SQL subquery of every manifest row as :data:`RAW` columns (for a streamed
    manifest, a fresh stream registered on ``con``, whose reading numbers ``chunks``)."""
    if source.format == "parquet" and source.local:
        offsets = {}
        for c in chunks:
            offsets.setdefault(source.files[c.file], c.first_row)
        con.register("vidbatch_offsets", pa.table({"file": list(offsets),
                                                   "first": list(offsets.values())}))
        files = ", ".join(literal(f) for f in source.files)
        return (f"(SELECT {select_raw(source, 'o.first + p.file_row_number')} FROM "
                f"read_parquet([{files}], filename = true, file_row_number = true, "
                "union_by_name = true) p "
                "JOIN vidbatch_offsets o ON p.filename = o.file)")
    batches = _streamed(source, chunks)
    first = next(batches, None)
    if first is None:  # no rows: nothing to read the columns from
        return ("(SELECT NULL::BIGINT AS row, " + ", ".join(
            f"NULL::VARCHAR AS {c}" for c in RAW[1:]) + " WHERE false)")
    reader = pa.RecordBatchReader.from_batches(first.schema, _chain(first, batches))
    con.register("vidbatch_stream", reader)
    return f"(SELECT {select_raw(source, '__row')} FROM vidbatch_stream)"


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def normalised(raw: str, source: ManifestSource, id_hex: int) -> str:
    """SQL of the rows of ``raw`` (:data:`RAW` columns) as ``MANIFEST_SCHEMA``."""
    path = resolved_path("path_raw", source.base)
    return (f"SELECT row, {video_id('given', 'path', 'row', id_hex)} AS video_id, path, label, "
            "start_s, end_s FROM (SELECT row, given, label, "
            f"{path} AS path, TRY_CAST(start_raw AS DOUBLE) AS start_s, "
            f"TRY_CAST(end_raw AS DOUBLE) AS end_s FROM {raw})")


def _key(source: ManifestSource) -> str:
    """Two rows have the same video id when they give the same id, or give none and name
    the same resolved path (a derived id is the path's stem and 64 bits of its SHA-1)."""
    return (f"CASE WHEN coalesce(given, '') <> '' THEN 'id:' || given "
            f"ELSE 'path:' || ({resolved_path('path_raw', source.base)}) END")


def scan(con, source: ManifestSource, id_hex: int) -> Scan:
    """Number and check every row of ``source``: raises :class:`ManifestError` on duplicate
    ids or bad segment bounds (naming the rows)."""
    chunks = source.chunks()
    raw = raw_rows(con, source, chunks)
    twice = con.execute(f"SELECT hash(k) FROM (SELECT {_key(source)} AS k FROM {raw}) "
                        "WHERE k IS NOT NULL GROUP BY hash(k) HAVING count(*) > 1").fetchall()
    checked = Scan(source, tuple(chunks), id_hex)
    if twice:
        _name_duplicates(con, checked, [h for (h,) in twice])
    if "start_s" in source.columns or "end_s" in source.columns:
        _check_segments(con, checked)
    return checked


def _name_duplicates(con, checked: Scan, hashes: list[int]) -> None:
    """Raise naming the rows of the first duplicate ids (among rows whose key hash is in
    ``hashes``; a hash shared by different keys is no duplicate)."""
    source = checked.source
    raw = raw_rows(con, source, list(checked.chunks))
    wanted = ", ".join(str(h) for h in hashes)
    found = con.execute(
        f"SELECT first(video_id), list(row ORDER BY row), count(*) FROM ("
        f"SELECT row, {_key(source)} AS k, "
        f"{video_id('given', resolved_path('path_raw', source.base), 'row', checked.id_hex)}"
        f" AS video_id FROM {raw} WHERE hash({_key(source)}) IN ({wanted})) "
        f"GROUP BY k HAVING count(*) > 1 ORDER BY min(row)").fetchall()
    if not found:
        return
    shown = [f"{vid!r} on rows {', '.join(str(r + 1) for r in rows[:SHOWN])}"
             + (f" (and {n - SHOWN} more)" if n > SHOWN else "")
             for vid, rows, n in found[:SHOWN]]
    more = f" (and {len(found) - SHOWN} more)" if len(found) > SHOWN else ""
    raise ManifestError(
        f"manifest has duplicate video ids: {'; '.join(shown)}{more}. Rows are numbered from "
        "1 after the header. Give each row a unique video_id, or remove repeated paths.")


def _check_segments(con, checked: Scan) -> None:
    raw = raw_rows(con, checked.source, list(checked.chunks))
    start, end = "TRY_CAST(start_raw AS DOUBLE)", "TRY_CAST(end_raw AS DOUBLE)"
    unreadable = (f"(start_raw IS NOT NULL AND {start} IS NULL) OR "
                  f"(end_raw IS NOT NULL AND {end} IS NULL)")
    bad = f"coalesce({start}, 0) < 0 OR {end} <= coalesce({start}, 0)"
    rows = con.execute(f"SELECT row, {unreadable} FROM {raw} WHERE {unreadable} OR {bad} "
                       f"ORDER BY row LIMIT {SHOWN}").fetchall()
    if not rows:
        return
    named = ", ".join(str(r + 1) for r, _ in rows)
    if any(text for _, text in rows):
        raise ManifestError(f"manifest rows {named}: start_s and end_s must hold seconds "
                            "(numbers). Fix them, or leave them empty for the whole video.")
    raise ManifestError(f"manifest rows {named}: need 0 <= start_s < end_s. Fix the segment "
                        "bounds, or leave them empty for the whole video.")
