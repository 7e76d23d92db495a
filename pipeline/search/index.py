"""The vector index: FAISS over the centred, normalised embeddings of a job's ok rows.

FAISS was chosen over LanceDB by measurement (``benchmarks/README.md``, "Vector index"):
on this project's 2-core machine, at 1,000,000 x 512, IVF-Flat builds in a fraction of
LanceDB's time and answers a query in well under a millisecond at recall@10 >= 0.95, and
it searches a whole batch of queries at once, which ``near-duplicates`` needs for a
million rows. What LanceDB would have brought, SQL filters and object stores, comes from
DuckDB (``similar --where``) and from the output's own pyarrow filesystem here.

On disk (a local folder or an object-store prefix, through pyarrow like the job output):
``index.faiss`` (the FAISS index: vector ``i`` is row ``i``), ``rows.parquet`` (``id`` and
the rows' video_id, path, labels...) and, written last, ``index.json`` (the mean, the
kind, the files indexed): an index without ``index.json`` is unfinished. When the job
wrote centre views (``embedding_centre``, classify's ``output.centre_embedding``),
``centre.faiss`` holds them, centred with the same mean (a flat index: vector ``i`` is
row ``i``'s centre view), and two rows' similarity is their best pair of views
(:meth:`VectorIndex.pair_similarity`).
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import OutputError
from pipeline.output.outdir import STAGING_SUFFIX, OutputDir
from pipeline.search.layout import CENTRE, META, ROWS, VECTORS

FORMAT = 1
# Below this many rows the index is exact (a flat scan: ~10 ms a query at 50,000 x 512);
# from it, IVF-Flat, whose coarse quantizer needs ~40 training points per list.
FLAT_BELOW = 50_000
TRAIN_PER_LIST = 64
# Lists probed per query: the benchmark's setting that reaches recall@10 >= 0.95 at 1M.
NPROBE = 16


def nlist_for(rows: int) -> int:
    """IVF lists for ``rows`` vectors: about sqrt(rows), a power of two, 256 to 4096."""
    return int(min(4096, max(256, 2 ** round(np.log2(np.sqrt(rows))))))


def new_index(dim: int, rows: int, sample: np.ndarray | None) -> tuple[Any, dict[str, Any]]:
    """An empty FAISS index for about ``rows`` vectors of ``dim`` (inner product = cosine
    of normalised vectors), trained on ``sample`` when it is an IVF; and its description."""
    import faiss

    if rows < FLAT_BELOW:
        return faiss.IndexFlatIP(dim), {"kind": "flat"}
    nlist = nlist_for(rows)
    index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(sample, np.float32))
    index.make_direct_map()  # id -> list position, kept up on add: reconstruct_batch needs it
    return index, {"kind": "ivf", "nlist": nlist, "nprobe": NPROBE}


def new_flat(dim: int) -> Any:
    """An empty exact index of ``dim``-d vectors (the centre views: searched rarely,
    read back by id)."""
    import faiss

    return faiss.IndexFlatIP(dim)


@dataclass
class VectorIndex:
    """An index in memory: ``faiss`` (vector ``i`` is row ``i`` of ``rows``) and ``meta``
    (``index.json``)."""

    faiss: Any
    rows: pa.Table
    meta: dict[str, Any]
    centre: Any = None  # a flat FAISS index of the rows' centre views, or None

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.meta["mean"], np.float32)

    def __len__(self) -> int:
        return self.faiss.ntotal

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored (centred, normalised) vectors of rows ``ids``."""
        return self.faiss.reconstruct_batch(np.asarray(ids, np.int64))

    def views(self, ids: np.ndarray) -> list[np.ndarray]:
        """Each view's vectors of rows ``ids``: the whole frame, then the centre when the
        index holds centre views."""
        ids = np.asarray(ids, np.int64)
        if self.centre is None:
            return [self.vectors(ids)]
        return [self.vectors(ids), self.centre.reconstruct_batch(ids)]

    def pair_similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The similarity of rows ``a[i]`` and ``b[i]``: the cosine of their whole views,
        or with centre views the best of (whole, whole), (centre of a, whole of b) and
        (whole of a, centre of b). A copy cropped by a border matches its original's
        centre; two centres are not compared (both lose the same border)."""
        va, vb = self.views(a), self.views(b)
        sims = np.einsum("ij,ij->i", va[0], vb[0])
        if self.centre is not None:
            sims = np.maximum.reduce([sims, np.einsum("ij,ij->i", va[1], vb[0]),
                                      np.einsum("ij,ij->i", va[0], vb[1])])
        return sims

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, ids)``, each ``(len(queries), k)``, best first; id -1 where
        fewer than ``k`` were found. ``allowed``: search only these row ids."""
        import faiss

        sel = None if allowed is None else faiss.IDSelectorBatch(np.asarray(allowed, np.int64))
        if self.meta["kind"] == "ivf":
            params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe or self.meta["nprobe"])
        else:
            params = faiss.SearchParameters(sel=sel)
        return self.faiss.search(np.ascontiguousarray(queries, np.float32), k, params=params)


def save(folder: OutputDir, index: VectorIndex) -> None:
    """Write ``index`` to ``folder``: the vectors and the rows first, ``index.json`` last."""
    import pyarrow.parquet as pq

    folder.make()
    _write_faiss(folder, VECTORS, index.faiss)
    if index.centre is not None:
        _write_faiss(folder, CENTRE, index.centre)
    staging = folder.path(f"{ROWS}.{uuid.uuid4().hex[:8]}{STAGING_SUFFIX}")
    pq.write_table(index.rows, staging, filesystem=folder.fs)
    folder.fs.move(staging, folder.path(ROWS))
    folder.write_text(META, json.dumps(index.meta))


def _write_faiss(folder: OutputDir, name: str, vectors: Any) -> None:
    import faiss

    if folder.local:
        staging = folder.path(f"{name}.{uuid.uuid4().hex[:8]}{STAGING_SUFFIX}")
        faiss.write_index(vectors, staging)
        os.replace(staging, folder.path(name))
    else:  # an object appears only once its upload completes
        with folder.fs.open_output_stream(folder.path(name)) as f:
            f.write(faiss.serialize_index(vectors).data)


def _read_faiss(folder: OutputDir, name: str) -> Any:
    import faiss

    if folder.local:
        return faiss.read_index(folder.path(name))
    with folder.fs.open_input_stream(folder.path(name)) as f:
        return faiss.deserialize_index(np.frombuffer(f.read(), np.uint8))


def load(folder: OutputDir) -> VectorIndex:
    """The index in ``folder``; an OutputError naming the fix when there is none."""
    import faiss
    import pyarrow.parquet as pq

    text = folder.read_text(META)
    if text is None:
        raise OutputError(f"no vector index at {folder} (no {META}). Build it with "
                          "`vidbatch index OUTPUT` (with --index if it lives elsewhere).")
    meta = json.loads(text)
    if meta.get("format") != FORMAT:
        raise OutputError(f"the vector index at {folder} has format {meta.get('format')}; "
                          f"this vidbatch reads format {FORMAT}. Rebuild it with "
                          "`vidbatch index OUTPUT --overwrite`.")
    vectors = _read_faiss(folder, VECTORS)
    if meta["kind"] == "ivf":
        faiss.extract_index_ivf(vectors).make_direct_map()  # for reconstruct_batch
    centre = _read_faiss(folder, CENTRE) if meta.get("centre") else None
    rows = pq.read_table(folder.path(ROWS), filesystem=folder.fs)
    return VectorIndex(vectors, rows, meta, centre)


def file_names(paths: list[str]) -> list[str]:
    return [posixpath.basename(p) for p in paths]
