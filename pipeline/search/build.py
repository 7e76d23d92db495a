"""``vidbatch index``: build (or bring up to date) the vector index of a job's output.

Policies as for jobs: ``error`` refuses an existing index, ``overwrite`` rebuilds it
(deleting only the index's own files), ``resume`` adds the ok rows of the data files the
index has not seen (a job resumed since gains files; its rows are centred with the mean
stored at the first build, so the old vectors stay comparable) and finishes an index whose
build was cut short. ``--overwrite`` recomputes the mean; do so when the collection has
changed much.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import OutputError
from pipeline.output.ledger import count_statuses
from pipeline.output.outdir import OutputDir
from pipeline.search import index as ix
from pipeline.search.layout import INDEX_FILES, META, claim
from pipeline.search.vectors import (
    centre,
    centre_column,
    embedding_column,
    job_of,
    mean_and_sample,
    ok_rows,
)


def build_index(output: OutputDir, folder: OutputDir, policy: str) -> dict[str, Any]:
    """Index ``output``'s ok rows into ``folder`` under ``policy``; returns a summary:
    ``added``, ``rows`` (in the index now), ``kind``, ``seconds``."""
    t0 = time.perf_counter()
    record = job_of(output)
    column = embedding_column(record, output)
    files = output.data_files()
    existing = claim(folder, INDEX_FILES, policy, "vector index")
    old = ix.load(folder) if existing and folder.read_text(META) is not None else None
    if old is None:
        index = _fresh(output, column, files)
        old_rows = None
    else:
        _check_same_source(old, column, folder)
        index, old_rows = old, old.rows
        files = [f for f in files if ix.file_names([f])[0] not in set(old.meta["files"])]
    added = _add(index, output, column, files, old_rows, index.meta.get("centre"))
    index.meta["files"] = sorted(set(index.meta.get("files", [])) | set(ix.file_names(files)))
    index.meta.update(rows=len(index), built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      output=output.location, job=record.get("job"))
    if added or old is None:
        ix.save(folder, index)
    kind = index.meta["kind"] + (", with centre views" if index.centre is not None else "")
    return {"added": added, "rows": len(index), "kind": kind,
            "seconds": time.perf_counter() - t0}


def _fresh(output: OutputDir, column: str, files: list[str]) -> ix.VectorIndex:
    """An empty index for ``output``'s ok rows, its mean from one pass over them."""
    expected = count_statuses(output)["ok"]
    sample = 0 if expected < ix.FLAT_BELOW else ix.TRAIN_PER_LIST * ix.nlist_for(expected)
    mean, training, _ = mean_and_sample(output, column, files, sample)
    faiss_index, kind = ix.new_index(len(mean), expected,
                                     None if training is None else centre(training, mean))
    views = centre_column(output, column, files)
    meta = {"format": ix.FORMAT, "library": "faiss", "column": column, "dim": len(mean),
            "similarity": "cosine of (embedding - mean), L2-normalised" + (
                "; the best of (whole, whole), (centre, whole), (whole, centre)"
                if views else ""),
            "mean": mean.tolist(), "files": [], "centre": views, **kind}
    return ix.VectorIndex(faiss_index, pa.table({}), meta,
                          ix.new_flat(len(mean)) if views else None)


def _check_same_source(old: ix.VectorIndex, column: str, folder: OutputDir) -> None:
    if old.meta["column"] != column:
        raise OutputError(f"the vector index at {folder} holds {old.meta['column']} vectors, "
                          f"this output's are {column}: it indexes another job. Use "
                          "--overwrite to rebuild it, or give another --index.")


def _add(index: ix.VectorIndex, output: OutputDir, column: str, files: list[str],
         old_rows: pa.Table | None, views: str | None) -> int:
    """Add the ok rows of ``files`` (ids not yet indexed) to ``index``, with their centre
    views from the column ``views`` when the index holds them; the rows' table grows alike
    (``id`` = position in the FAISS index). Returns how many were added."""
    skip = set() if old_rows is None else set(old_rows["video_id"].to_pylist())
    tables = [] if old_rows is None else [old_rows]
    added = 0
    for rows, x, c in ok_rows(output, column, files, skip, views):
        ids = np.arange(len(index), len(index) + len(rows), dtype=np.int64)
        index.faiss.add(centre(x, index.mean))
        if index.centre is not None:
            index.centre.add(centre(c, index.mean))
        tables.append(rows.add_column(0, "id", pa.array(ids)))
        added += len(rows)
    if tables:
        index.rows = pa.concat_tables(tables, promote_options="default")
    return added
