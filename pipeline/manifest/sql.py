"""The manifest's normalisation as SQL, run by DuckDB: over one chunk's Arrow table in a
read task, and over the whole manifest in the checks (:mod:`pipeline.manifest.scan`), so
that both derive exactly the same paths and ids.

DuckDB is also what keeps the whole-manifest checks out of core: it runs them in parallel
and spills to disk past ``MEMORY_LIMIT`` (``VIDBATCH_DUCKDB_MEMORY`` overrides it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pipeline.paths import is_uri

if TYPE_CHECKING:
    import duckdb

MEMORY_LIMIT = "768MB"
# Hex digits of the path's hash in a derived id (video_id): 64 bits, so that a million
# files that share a stem (class/xyz/clip.mp4) do not collide. Outputs of vidbatch before
# this used 8.
ID_HEX = 16
LEGACY_ID_HEX = 8


def memory_limit() -> str:
    """The memory DuckDB may use before it spills: ``VIDBATCH_DUCKDB_MEMORY`` or
    :data:`MEMORY_LIMIT`."""
    return os.environ.get("VIDBATCH_DUCKDB_MEMORY", MEMORY_LIMIT)


@contextmanager
def connection(threads: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB that spills to a temporary directory of its own (removed after),
    with a bounded memory, no progress bar and no ordering kept (none is asked of it)."""
    import duckdb

    spill = tempfile.mkdtemp(prefix="vidbatch-duckdb-")
    con = duckdb.connect(config={
        "memory_limit": memory_limit(),
        "threads": threads or os.cpu_count() or 1, "temp_directory": spill,
        "preserve_insertion_order": False})
    try:
        con.execute("SET enable_progress_bar = false")
        yield con
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def quoted(name: str) -> str:
    """``name`` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _prefix(base: str) -> str:
    """What a plain relative path is appended to: ``os.path.normpath(os.path.join(base,
    p))`` is ``prefix + p`` when ``p`` has no ``.``/``..``/empty component."""
    if is_uri(base):
        return base.rstrip("/") + "/"
    norm = os.path.normpath(base)
    return "" if norm == "." else norm if norm.endswith("/") else norm + "/"


def resolved_path(raw: str, base: str, udf: str = "vidbatch_normpath") -> str:
    """SQL for :func:`pipeline.paths.join` of the manifest's directory ``base`` and the path
    ``raw`` (an SQL expression): null for an empty path; absolute paths and URIs unchanged;
    a relative one joined to ``base``, through the Python function ``udf`` only where
    ``os.path.normpath`` has something to collapse (register it with :func:`add_normpath`)."""
    odd = r"(^|/)\.\.?(/|$)|//|/$"
    joined = (f"{literal(_prefix(base))} || {raw}" if is_uri(base) else
              f"CASE WHEN regexp_matches({raw}, {literal(odd)}) THEN {udf}({raw}) "
              f"ELSE {literal(_prefix(base))} || {raw} END")
    return (f"CASE WHEN {raw} IS NULL OR regexp_full_match({raw}, '\\s*') THEN NULL "
            f"WHEN contains({raw}, '://') OR starts_with({raw}, '/') THEN {raw} "
            f"ELSE {joined} END")


def add_normpath(con: duckdb.DuckDBPyConnection, base: str,
                 name: str = "vidbatch_normpath") -> None:
    """Register :func:`resolved_path`'s ``udf`` for manifests in the directory ``base``."""
    try:
        from duckdb.sqltypes import VARCHAR
    except ImportError:  # DuckDB before 1.4
        from duckdb.typing import VARCHAR

    from pipeline.paths import join

    con.create_function(name, lambda p: join(base, p), [VARCHAR], VARCHAR,
                        side_effects=False)


def video_id(given: str, path: str, row: str, hex_digits: int) -> str:
    """SQL for a row's video id: ``given`` (an expression) unless null or empty, else the
    stem of ``path`` (or ``row-<row>`` without one) plus ``hex_digits`` hex digits of its
    SHA-1: ``cat-93d318a2f2af17ac`` for ``/data/clips/cat.mp4``.

    The stem is the last component that is not ``.`` (trailing slashes ignored) without its
    last suffix, a dot at either end of it being no suffix; ``video`` when empty."""
    key = f"coalesce({path}, 'row-' || CAST({row} AS VARCHAR))"
    trimmed = f"rtrim({key}, '/')"
    named = f"list_filter(string_split({trimmed}, '/'), lambda s: s NOT IN ('', '.'))"
    last = (f"CASE WHEN {trimmed} = '.' OR ends_with({trimmed}, '/.') THEN "
            f"coalesce({named}[-1], '') ELSE string_split({trimmed}, '/')[-1] END")
    stem = (f"coalesce(nullif(coalesce(nullif(regexp_extract({last}, '^((?s).+)\\.[^.]+$', 1),"
            f" ''), {last}), ''), 'video')")
    return (f"coalesce(nullif({given}, ''), {stem} || '-' || "
            f"left(sha1({key}), {int(hex_digits)}))")
