"""Where the index and the near-duplicate groups live, what files are vidbatch's there,
and reading the groups back (for ``vidbatch report``). Imports no FAISS.

By default both sit inside the job's output, beside the rows they are derived from:
``<OUTPUT>/_vidbatch_index/`` and ``<OUTPUT>/_vidbatch_near_duplicates/``. The leading
underscore keeps Parquet readers of the output (pyarrow datasets, pandas, Spark) from
reading them as rows, and :data:`pipeline.output.store.DERIVED` lets the job's
``--resume`` keep them and ``--overwrite`` remove them with the rows.
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.errors import OutputError
from pipeline.output.outdir import STAGING_SUFFIX, OutputDir
from pipeline.output.store import DERIVED_DIRS

INDEX_DIR = "_vidbatch_index"
NEAR_DUPS_DIR = "_vidbatch_near_duplicates"
# The store lets a job's --overwrite remove these folders only while they hold these files.
INDEX_FILES = DERIVED_DIRS[INDEX_DIR]
# index.json is written last: without it, unfinished. centre.faiss: only with centre views.
META, VECTORS, ROWS, CENTRE = INDEX_FILES
(GROUPS,) = DERIVED_DIRS[NEAR_DUPS_DIR]


def index_dir(output: OutputDir, index: str | None) -> OutputDir:
    """The index's folder: ``index`` (a path or URI) when given, else inside the output."""
    return OutputDir.at(index) if index else OutputDir.at(output.display(INDEX_DIR))


def groups_dir(output: OutputDir, out: str | None) -> OutputDir:
    return OutputDir.at(out) if out else OutputDir.at(output.display(NEAR_DUPS_DIR))


def _is_mine(entry: pafs.FileInfo, names: tuple[str, ...]) -> bool:
    """``entry`` is one of ``names``, or a temporary copy of one that a crash left."""
    name = entry.base_name
    if name.endswith(STAGING_SUFFIX):
        name = name.rsplit(".", 2)[0]
    return entry.type == pafs.FileType.File and name in names


def claim(folder: OutputDir, names: tuple[str, ...], policy: str, what: str) -> bool:
    """Check ``folder`` before writing ``names`` there under ``policy`` (error, resume,
    overwrite); with ``overwrite``, delete them. True when files of a previous build are
    there (and kept). Never deletes a file vidbatch does not write there."""
    kind = folder.kind()
    if kind not in (pafs.FileType.NotFound, pafs.FileType.Directory):
        raise OutputError(f"{folder} exists and is not a directory; give another {what} "
                          "location")
    entries = folder.entries()
    foreign = sorted(e.base_name for e in entries if not _is_mine(e, names))
    if foreign:
        raise OutputError(f"{folder} holds files vidbatch does not write there "
                          f"({', '.join(foreign[:5])}); refusing to write the {what} there. "
                          "Move them away, or give another location.")
    if entries and policy == "error":
        raise OutputError(f"{folder} already holds a {what}. Use --resume to add what is "
                          "new, --overwrite to rebuild it, or give another location.")
    if policy == "overwrite":
        for e in entries:
            folder.remove(e)
        return False
    return bool(entries)


def write_parquet(folder: OutputDir, name: str, table: pa.Table) -> None:
    """Write ``table`` as ``name`` in ``folder`` whole or not at all (a temporary name,
    then a move: a reader never sees half a file on a local disk)."""
    folder.make()
    staging = f"{name}.{uuid.uuid4().hex[:8]}{STAGING_SUFFIX}"
    pq.write_table(table, folder.path(staging), filesystem=folder.fs)
    folder.fs.move(folder.path(staging), folder.path(name))


def read_near_duplicates(output: str) -> pa.Table | None:
    """The near-duplicate groups that ``vidbatch near-duplicates`` wrote beside the job
    output ``output`` (a path or URI), or None when there are none. Columns: see
    :data:`pipeline.search.near_dups.GROUP_SCHEMA`."""
    folder = OutputDir.at(output).display(NEAR_DUPS_DIR)
    groups = OutputDir.at(folder)
    if groups.fs.get_file_info(groups.path(GROUPS)).type != pafs.FileType.File:
        return None
    return pq.read_table(groups.path(GROUPS), filesystem=groups.fs)
