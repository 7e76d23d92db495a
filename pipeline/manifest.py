"""Manifests: the list of videos a job processes.

A manifest is a CSV, Parquet or JSONL file (or a directory of Parquet files) with a ``path``
column and optional ``video_id``, ``label``, ``start_s`` and ``end_s``. It is read once on
the driver (paths are short strings: a million rows fit in the driver's memory) and
normalised to :data:`MANIFEST_SCHEMA`, so every later stage sees the same columns and
types.

Relative video paths are resolved against the manifest's own directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.json as pajson

from pipeline.errors import ManifestError
from pipeline.paths import join, parent
from pipeline.spec import ManifestSpec

MANIFEST_SCHEMA = pa.schema([
    ("row", pa.int64()),  # 0-based position in the manifest, for messages and ordering
    ("video_id", pa.string()),
    ("path", pa.string()),
    ("label", pa.string()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
])


# Hex digits of the path's hash in a derived id: 64 bits, so that a million files that share
# a stem (class/xyz/clip.mp4) do not collide. Outputs of vidbatch before this used 8.
ID_HEX = 16
LEGACY_ID_HEX = 8


def derive_video_id(path: str, hex_digits: int = ID_HEX) -> str:
    """A stable, readable id: the file stem plus ``hex_digits`` hex digits of the path's
    SHA-1.

    >>> derive_video_id("/data/clips/cat.mp4")
    'cat-93d318a2f2af17ac'
    """
    stem = PurePosixPath(path.rstrip("/")).stem or "video"
    return f"{stem}-{hashlib.sha1(path.encode('utf-8')).hexdigest()[:hex_digits]}"


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError):
        return pafs.LocalFileSystem(), str(Path(uri).resolve())


def read_table(uri: str, what: str = "manifest", key: str = "manifest.path") -> pa.Table:
    """A CSV (every column as text), Parquet (file or directory) or JSON Lines table;
    ``what`` and ``key`` name it and its spec key in messages."""
    fs, path = _filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ManifestError(f"{what} {uri} not found. Check {key} in the spec.")
    try:
        if info.type == pafs.FileType.Directory:
            return pads.dataset(path, filesystem=fs, format="parquet").to_table()
        suffix = PurePosixPath(path).suffix.lower()
        if suffix in (".parquet", ".pq"):
            return pads.dataset(path, filesystem=fs, format="parquet").to_table()
        with fs.open_input_stream(path) as f:
            if suffix == ".csv":
                # Every column as text: ids like 007 must stay 007. Blank lines are rows
                # too (an empty path in a one-column file): no row may vanish unseen.
                return pacsv.read_csv(
                    f, parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
                    convert_options=pacsv.ConvertOptions(
                        strings_can_be_null=True, column_types=_all_strings(fs, path)))
            if suffix in (".jsonl", ".ndjson", ".json"):
                return pajson.read_json(f)
    except (pa.ArrowInvalid, OSError) as e:
        raise ManifestError(f"cannot read {what} {uri}: {e}. It must be CSV, Parquet or "
                            "JSON Lines with a header / keys.") from e
    raise ManifestError(f"{what} {uri}: unknown format {suffix!r}. Use .csv, .parquet, "
                        ".jsonl or a directory of Parquet files.")


def _all_strings(fs: pafs.FileSystem, path: str) -> dict[str, pa.DataType]:
    with fs.open_input_stream(path) as f:
        header = pacsv.open_csv(f).schema.names
    return {name: pa.string() for name in header}


def _column_as(table: pa.Table, name: str, typ: pa.DataType, what: str) -> pa.Array:
    if name not in table.column_names:
        return pa.nulls(table.num_rows, typ)
    col = table[name]
    try:
        return pc.cast(col, typ) if col.type != typ else col
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ManifestError(f"manifest column {name!r} must hold {what}: {e}") from e


def _resolve_paths(paths: list[str | None], base: str) -> list[str | None]:
    return [None if p is None or p.strip() == "" else join(base, p) for p in paths]


def read_manifest(spec: ManifestSpec, id_hex: int = ID_HEX) -> pa.Table:
    """Read and normalise a manifest to :data:`MANIFEST_SCHEMA`.

    Rows with an empty path are kept (they become error rows later); duplicate video ids
    are an error that names the rows. Rows without an id get :func:`derive_video_id` with
    ``id_hex`` digits (a resumed output of an older vidbatch keeps its 8).
    """
    raw = read_table(spec.path)
    if spec.path_column not in raw.column_names:
        raise ManifestError(
            f"manifest {spec.path} has no {spec.path_column!r} column (it has "
            f"{raw.column_names}). Add one, or set manifest.path_column in the job spec.")
    paths = _resolve_paths(_column_as(raw, spec.path_column, pa.string(), "text").to_pylist(),
                           parent(spec.path))
    given_ids = _column_as(raw, spec.id_column, pa.string(), "text").to_pylist()
    ids = [gid if gid else derive_video_id(p or f"row-{i}", id_hex)
           for i, (gid, p) in enumerate(zip(given_ids, paths))]
    table = pa.table({
        "row": pa.array(range(raw.num_rows), pa.int64()),
        "video_id": pa.array(ids, pa.string()),
        "path": pa.array(paths, pa.string()),
        "label": _column_as(raw, spec.label_column, pa.string(), "text"),
        "start_s": _column_as(raw, "start_s", pa.float64(), "seconds"),
        "end_s": _column_as(raw, "end_s", pa.float64(), "seconds"),
    }, schema=MANIFEST_SCHEMA)
    check_unique_ids(table)
    check_segments(table)
    return table


def check_unique_ids(table: pa.Table, limit: int = 5) -> None:
    counts = table.group_by("video_id").aggregate([("row", "list")])
    dupes = counts.filter(pc.greater(pc.list_value_length(counts["row_list"]), 1))
    if dupes.num_rows == 0:
        return
    shown = [f"{vid!r} on rows {', '.join(str(r + 1) for r in rows)}"
             for vid, rows in zip(dupes["video_id"].to_pylist()[:limit],
                                  dupes["row_list"].to_pylist()[:limit])]
    more = f" (and {dupes.num_rows - limit} more)" if dupes.num_rows > limit else ""
    raise ManifestError(
        f"manifest has duplicate video ids: {'; '.join(shown)}{more}. Rows are numbered from "
        "1 after the header. Give each row a unique video_id, or remove repeated paths.")


def check_segments(table: pa.Table) -> None:
    start, end = table["start_s"], table["end_s"]
    bad = pc.or_(pc.less(pc.fill_null(start, 0.0), 0.0),
                 pc.less_equal(end, pc.fill_null(start, 0.0)))
    bad = pc.fill_null(bad, False)
    if pc.any(bad).as_py():
        rows = pc.indices_nonzero(bad).to_pylist()[:5]
        raise ManifestError(
            f"manifest rows {', '.join(str(r + 1) for r in rows)}: need 0 <= start_s < end_s. "
            "Fix the segment bounds, or leave them empty for the whole video.")
