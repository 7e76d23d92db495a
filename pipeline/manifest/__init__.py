"""Manifests: the list of videos a job processes.

A manifest is a CSV, Parquet or JSONL file, or a directory of such shards, with a ``path``
column and optional ``video_id``, ``label``, ``start_s`` and ``end_s``; local or at a URI.
It never passes through the driver's memory whole: :func:`check_manifest` numbers, counts
and checks every row out of core (:mod:`~pipeline.manifest.scan`), and a job's read tasks
read it chunk by chunk (:mod:`~pipeline.manifest.todo`), every row normalised to
:data:`MANIFEST_SCHEMA` by the same SQL (:mod:`~pipeline.manifest.sql`). Relative video
paths are resolved against the manifest's own directory.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.errors import ManifestError
from pipeline.manifest.scan import Scan, scan
from pipeline.manifest.source import read_table
from pipeline.manifest.sql import (
    ID_HEX,
    LEGACY_ID_HEX,
    add_normpath,
    connection,
    memory_limit,
    video_id,
)
from pipeline.manifest.todo import MANIFEST_SCHEMA, Todo, connection_for
from pipeline.spec import ManifestSpec

__all__ = ["ID_HEX", "LEGACY_ID_HEX", "MANIFEST_SCHEMA", "Scan", "Todo", "check_manifest",
           "derive_video_id", "derive_video_ids", "read_manifest", "read_table"]


def check_manifest(spec: ManifestSpec, id_hex: int = ID_HEX) -> Scan:
    """The manifest ``spec`` names, every row numbered and checked (duplicate ids, segment
    bounds, at least one row) with bounded memory; raises :class:`ManifestError`. Rows
    without an id get ``id_hex`` hex digits of their path's hash (a resumed output of an
    older vidbatch keeps its 8)."""
    import duckdb

    from pipeline.manifest.source import open_source

    source = open_source(spec)
    with connection() as con:
        add_normpath(con, source.base)
        try:
            return scan(con, source, id_hex)
        except duckdb.OutOfMemoryException as e:
            raise ManifestError(f"checking manifest {spec.path} ran out of the memory it may "
                                f"use ({e}); set VIDBATCH_DUCKDB_MEMORY higher than "
                                f"{memory_limit()}.") from e
        except duckdb.Error as e:
            raise ManifestError(f"cannot read manifest {spec.path}: {e}. It must be CSV, "
                                "Parquet or JSON Lines with a header / keys.") from e


def read_manifest(spec: ManifestSpec, id_hex: int = ID_HEX) -> pa.Table:
    """The whole manifest, checked and normalised, in memory: for training and labelled
    sets. Rows with an empty path are kept (they become error rows later)."""
    return Todo(check_manifest(spec, id_hex)).read_all()


def derive_video_ids(paths: list[str], hex_digits: int = ID_HEX) -> list[str]:
    """The ids of manifest rows that give none: each file's stem plus ``hex_digits`` hex
    digits of its path's SHA-1 (:func:`pipeline.manifest.sql.video_id`, which the read
    tasks run)."""
    con = connection_for("")
    con.register("vidbatch_paths", pa.table({"path": pa.array(paths, pa.string())}))
    try:
        return [v for (v,) in con.execute(
            f"SELECT {video_id('NULL', 'path', '0', hex_digits)} FROM vidbatch_paths").fetchall()]
    finally:
        con.unregister("vidbatch_paths")


def derive_video_id(path: str, hex_digits: int = ID_HEX) -> str:
    """:func:`derive_video_ids` of one path.

    >>> derive_video_id("/data/clips/cat.mp4")
    'cat-93d318a2f2af17ac'
    """
    return derive_video_ids([path], hex_digits)[0]
