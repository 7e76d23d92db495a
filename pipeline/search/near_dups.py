"""``vidbatch near-duplicates``: groups of videos whose embeddings are near each other.

Each row's ``k`` nearest neighbours come from the index in batches (FAISS searches a batch
on all cores); pairs with similarity >= the threshold are edges, and the groups are the
connected components of that graph (scipy). So the work grows with rows x k, never rows².
Grouping is transitive: A~B and B~C put A and C in one group even when A and C are below
the threshold; each row's ``similarity`` to its group's representative shows how far.
When the index holds centre views, each row also searches with its centre's vector: a
copy cropped by a border is near its original's centre, and the pair (whole of the copy,
centre of the original) is found from the original's side.

The representative of a group is the copy that keeps the most of the video: the highest
resolution (width x height), then the longest, then the first path in sorting order (so
the choice is stable). Re-encoded, resized, cropped and trimmed copies lose pixels or time,
so the original is chosen when it is in the group.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ConfigError
from pipeline.search import DEFAULT_K, DEFAULT_THRESHOLD
from pipeline.search.index import VectorIndex

# IVF lists probed per row when looking for near-duplicates: fewer than a query's
# (index.NPROBE), because a pair this close shares a list or sits in neighbouring ones;
# the planted-pair recall at 1M rows is in benchmarks/README.md ("Near-duplicates").
NPROBE = 4
BATCH = 16_384  # queries per search: ~32 MiB of 512-d vectors and results, bounded

GROUP_SCHEMA = pa.schema([
    ("group_id", pa.int32()), ("group_size", pa.int32()), ("video_id", pa.string()),
    ("path", pa.string()), ("label", pa.string()), ("pred_label", pa.string()),
    ("is_representative", pa.bool_()), ("similarity", pa.float32()),
])


def neighbour_pairs(index: VectorIndex, threshold: float, k: int, nprobe: int = NPROBE
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(src, dst)``: row ids of every pair where ``dst`` is among the ``k`` nearest of
    ``src`` with similarity >= ``threshold``."""
    src, dst = [], []
    for start in range(0, len(index), BATCH):
        ids = np.arange(start, min(len(index), start + BATCH), dtype=np.int64)
        for queries in index.views(ids):
            sims, found = index.search(queries, k + 1, nprobe=nprobe)
            hit = (sims >= threshold) & (found >= 0) & (found != ids[:, None])
            src.append(np.broadcast_to(ids[:, None], found.shape)[hit])
            dst.append(found[hit])
    return np.concatenate(src), np.concatenate(dst)


def components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The connected component of each of ``n`` rows in the undirected graph of edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _preference(rows: pa.Table) -> np.ndarray:
    """Each row's rank as a representative, best first: pixels, then duration, then path."""
    def numbers(column: str) -> np.ndarray:
        if column not in rows.column_names:
            return np.zeros(rows.num_rows)
        return pc.fill_null(rows[column], 0).to_numpy(zero_copy_only=False).astype(float)

    pixels = numbers("width") * numbers("height")
    path_order = np.empty(rows.num_rows, np.int64)
    path_order[pc.sort_indices(rows["path"]).to_numpy()] = np.arange(rows.num_rows)
    order = np.lexsort((path_order, -numbers("duration_s"), -pixels))
    rank = np.empty(rows.num_rows, np.int64)
    rank[order] = np.arange(rows.num_rows)
    return rank


def find_groups(index: VectorIndex, threshold: float = DEFAULT_THRESHOLD,
                k: int = DEFAULT_K, nprobe: int = NPROBE) -> pa.Table:
    """The near-duplicate groups of the indexed rows (:data:`GROUP_SCHEMA`), one row per
    member; groups numbered by size, largest first, then by representative path."""
    if not -1.0 <= threshold <= 1.0 or k < 1:
        raise ConfigError(f"--threshold {threshold} / -k {k}: the threshold is a cosine "
                          "(-1 to 1, e.g. 0.9) and k at least 1")
    label = components(len(index), *neighbour_pairs(index, threshold, k, nprobe))
    size = np.bincount(label)[label]
    members = np.flatnonzero(size >= 2)
    if len(members) == 0:
        return GROUP_SCHEMA.empty_table()
    rows = index.rows.take(pa.array(members))
    order = np.lexsort((_preference(rows), label[members]))
    members, rows = members[order], rows.take(pa.array(order))
    first = np.r_[True, label[members][1:] != label[members][:-1]]
    rep = members[first][np.cumsum(first) - 1]  # each member's representative
    sims = np.concatenate([index.pair_similarity(members[s:s + BATCH], rep[s:s + BATCH])
                           for s in range(0, len(members), BATCH)])
    return _numbered(rows, label[members], size[members], first, sims)


def _numbered(rows: pa.Table, label: np.ndarray, size: np.ndarray, first: np.ndarray,
              sims: np.ndarray) -> pa.Table:
    """Rows sorted by group with group ids: largest group first, ties by representative
    path."""
    rep_paths = np.asarray(rows["path"].to_pylist(), dtype=str)[first]
    group_rank = np.lexsort((rep_paths, -size[first]))
    group_id = np.empty(len(group_rank), np.int32)
    group_id[group_rank] = np.arange(len(group_rank))
    gid = group_id[np.cumsum(first) - 1]

    def column(name: str) -> pa.Array:
        return rows[name] if name in rows.column_names else pa.nulls(rows.num_rows, pa.string())
    table = pa.table({
        "group_id": pa.array(gid, pa.int32()), "group_size": pa.array(size, pa.int32()),
        "video_id": column("video_id"), "path": column("path"), "label": column("label"),
        "pred_label": column("pred_label"), "is_representative": pa.array(first),
        "similarity": pa.array(np.clip(sims, -1, 1).astype(np.float32))}, schema=GROUP_SCHEMA)
    return table.take(pc.sort_indices(table, [("group_id", "ascending"),
                                              ("is_representative", "descending"),
                                              ("similarity", "descending")]))
