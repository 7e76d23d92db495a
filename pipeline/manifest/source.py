"""Where a manifest's rows come from: a CSV, Parquet or JSON Lines file, or a directory of
such shards (one format), local or at any URI pyarrow's filesystems open.

A manifest is read in *chunks* (a Parquet row group, a whole CSV or JSONL file), each in
bounded batches: by a read task of the job's stream, and one after another by the
whole-manifest checks. Nothing here holds the whole manifest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from pipeline.errors import ManifestError
from pipeline.paths import parent
from pipeline.spec import ManifestSpec

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "json",
           ".ndjson": "json", ".json": "json"}
BATCH_ROWS = 65_536  # rows per batch read from a Parquet chunk
CSV_BLOCK = 4 << 20  # bytes per batch read from a CSV file


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError):
        return pafs.LocalFileSystem(), str(Path(uri).resolve())


@dataclass(frozen=True)
class Chunk:
    """What one read task reads: a whole file (``group`` None) or one Parquet row group;
    ``first_row`` (0-based, in the manifest) and ``rows`` once known."""

    file: int  # index into ManifestSource.files
    group: int | None = None
    first_row: int | None = None
    rows: int | None = None
    offset: int | None = None  # a slice of the row group: its first row in the group

    def slices(self, rows: int) -> list[Chunk]:
        """This row group in slices of at most ``rows`` rows (a whole file: itself)."""
        if self.group is None or self.rows <= rows:
            return [self]
        return [Chunk(self.file, self.group, self.first_row + k, min(rows, self.rows - k), k)
                for k in range(0, self.rows, rows)]


@dataclass(frozen=True)
class ManifestSource:
    """A manifest's files (paths of ``fs``, in the order their rows are numbered), their
    format, and the directory that relative video paths are taken from (``base``)."""

    spec: ManifestSpec
    fs: pafs.FileSystem
    files: tuple[str, ...]
    format: str  # parquet, csv or json
    base: str
    columns: tuple[str, ...]  # of the first file

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def chunks(self) -> list[Chunk]:
        """Every chunk, in order; Parquet's with their rows (from the files' footers)."""
        if self.format != "parquet":
            return [Chunk(i) for i in range(len(self.files))]
        out, row = [], 0
        for i, f in enumerate(self.files):
            meta = pq.read_metadata(f, filesystem=self.fs)
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                out.append(Chunk(i, g, row, n))
                row += n
        return out

    def wanted(self) -> list[str]:
        """The columns a job reads (the spec's path, id and label columns, and the
        segment bounds) that the manifest has."""
        spec = self.spec
        names = (spec.path_column, spec.id_column, spec.label_column, "start_s", "end_s")
        return [c for c in self.columns if c in names]

    def batches(self, chunk: Chunk) -> Iterator[pa.RecordBatch]:
        """The chunk's rows as they are stored (CSV: every column as text), batch by batch."""
        path = self.files[chunk.file]
        try:
            if self.format == "parquet":
                parquet = pq.ParquetFile(path, filesystem=self.fs)
                if chunk.offset is None:
                    yield from parquet.iter_batches(BATCH_ROWS, row_groups=[chunk.group])
                    return
                group = parquet.read_row_group(chunk.group, columns=self.wanted())
                yield from group.slice(chunk.offset, chunk.rows).to_batches(BATCH_ROWS)
                return
            with self.fs.open_input_stream(path) as f:
                if self.format == "csv":
                    yield from _csv(f, self.fs, path)
                else:  # JSON's types are inferred from the whole file: read at once
                    yield from pajson.read_json(f).to_batches()
        except (pa.ArrowInvalid, OSError) as e:
            raise ManifestError(f"cannot read manifest {self.spec.path}: {e}. It must be "
                                "CSV, Parquet or JSON Lines with a header / keys.") from e


def _csv(f, fs: pafs.FileSystem, path: str) -> pacsv.CSVStreamingReader:
    # Every column as text: ids like 007 must stay 007. Blank lines are rows too (an empty
    # path in a one-column file): no row may vanish unseen.
    return pacsv.open_csv(
        f, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK),
        parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True,
                                             column_types=_all_strings(fs, path)))


def _all_strings(fs: pafs.FileSystem, path: str) -> dict[str, pa.DataType]:
    with fs.open_input_stream(path) as f:
        header = pacsv.open_csv(f).schema.names
    return {name: pa.string() for name in header}


def _format(path: str, uri: str, what: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    if suffix not in FORMATS:
        raise ManifestError(f"{what} {uri}: unknown format {suffix!r}. Use .csv, .parquet, "
                            ".jsonl or a directory of such files.")
    return FORMATS[suffix]


def _files(fs: pafs.FileSystem, path: str, uri: str) -> list[str]:
    """The data files of a directory manifest, sorted; names starting with ``_`` or ``.``
    (Spark's ``_SUCCESS``, ``.crc`` files) are not data."""
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(e.path for e in found if e.type == pafs.FileType.File
                   and not e.base_name.startswith(("_", ".")))
    if not files:
        raise ManifestError(f"manifest {uri} is a directory without data files; nothing to "
                            "do. Check manifest.path in the spec.")
    return files


def open_source(spec: ManifestSpec) -> ManifestSource:
    """The manifest ``spec`` names, its files listed and its path column checked (from the
    first file's header); reads no rows."""
    fs, path = _filesystem(spec.path)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ManifestError(f"manifest {spec.path} not found. Check manifest.path in the spec.")
    files = _files(fs, path, spec.path) if info.type == pafs.FileType.Directory else [path]
    formats = {_format(f, spec.path, "manifest") for f in files}
    if len(formats) > 1:
        raise ManifestError(f"manifest {spec.path} mixes formats ({', '.join(sorted(formats))}); "
                            "a directory holds shards of one format.")
    fmt = formats.pop()
    source = ManifestSource(spec, fs, tuple(files), fmt, parent(spec.path), ())
    columns = _columns(source)
    if spec.path_column not in columns:
        raise ManifestError(
            f"manifest {spec.path} has no {spec.path_column!r} column (it has "
            f"{list(columns)}). Add one, or set manifest.path_column in the job spec.")
    return ManifestSource(spec, fs, tuple(files), fmt, source.base, columns)


def _columns(source: ManifestSource) -> tuple[str, ...]:
    try:
        if source.format == "parquet":
            return tuple(pq.read_schema(source.files[0], filesystem=source.fs).names)
        if source.format == "csv":
            return tuple(_all_strings(source.fs, source.files[0]))
        first = next(source.batches(Chunk(0)), None)
    except (pa.ArrowInvalid, OSError) as e:
        raise ManifestError(f"cannot read manifest {source.spec.path}: {e}. It must be CSV, "
                            "Parquet or JSON Lines with a header / keys.") from e
    return tuple(first.schema.names) if first is not None else ()


def read_table(uri: str, what: str = "manifest", key: str = "manifest.path") -> pa.Table:
    """A small table, whole: a CSV (every column as text), Parquet (file or directory) or
    JSON Lines file; ``what`` and ``key`` name it and its spec key in messages. For labels
    and cuts files; manifests are read in chunks (:class:`ManifestSource`)."""
    fs, path = _filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ManifestError(f"{what} {uri} not found. Check {key} in the spec.")
    try:
        if info.type == pafs.FileType.Directory:
            return pads.dataset(path, filesystem=fs, format="parquet").to_table()
        fmt = _format(path, uri, what)
        if fmt == "parquet":
            return pads.dataset(path, filesystem=fs, format="parquet").to_table()
        with fs.open_input_stream(path) as f:
            if fmt == "csv":
                return _csv(f, fs, path).read_all()
            return pajson.read_json(f)
    except (pa.ArrowInvalid, OSError) as e:
        raise ManifestError(f"cannot read {what} {uri}: {e}. It must be CSV, Parquet or "
                            "JSON Lines with a header / keys.") from e
