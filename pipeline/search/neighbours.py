"""``vidbatch similar``: the videos nearest to one video of the output, optionally among
the rows a SQL condition selects."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ConfigError
from pipeline.search.index import VectorIndex


def find_row(index: VectorIndex, query: str) -> int:
    """The row id of the video ``query`` names: its video_id, else its path as the
    output's path column writes it (a relative path is matched against the end of it)."""
    for column in ("video_id", "path"):
        hits = pc.indices_nonzero(pc.equal(index.rows[column], query)).to_numpy()
        if len(hits):
            return int(index.rows["id"][int(hits[0])].as_py())
    tail = pc.indices_nonzero(pc.ends_with(index.rows["path"], "/" + query.lstrip("./")))
    if len(tail) == 1:
        return int(index.rows["id"][tail[0].as_py()].as_py())
    raise ConfigError(f"{query!r} is neither a video_id nor a path of the indexed ok rows "
                      f"({'several paths end so' if len(tail) else 'no match'}). Give a "
                      "video_id or path as the output's rows write it (vidbatch index "
                      "--resume first if the job gained rows since the index was built).")


def select_rows(index: VectorIndex, where: str) -> np.ndarray:
    """Row ids of the rows for which the SQL condition ``where`` holds (DuckDB, over the
    index's row columns; no access to files or the network)."""
    import duckdb

    con = duckdb.connect(config={"enable_external_access": False})
    try:
        con.register("indexed_rows", index.rows)
        found = con.execute(f"SELECT id FROM indexed_rows WHERE {where}").fetchnumpy()["id"]
    except duckdb.Error as e:
        raise ConfigError(f"--where {where!r}: {str(e).splitlines()[0]}. Write a SQL "
                          f"condition over the columns {', '.join(index.rows.column_names)}, "
                          "e.g. \"pred_label = 'cat'\".") from None
    finally:
        con.close()
    return np.asarray(found, np.int64)


def candidates(index: VectorIndex, row: int, k: int, allowed: np.ndarray | None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Searches for the rows nearest to ``row``: its whole view among the whole views and,
    with centre views, its centre among the whole views and its whole view among the
    centres (:meth:`VectorIndex.pair_similarity`'s pairs)."""
    import faiss

    views = index.views([row])
    found = [index.search(views[0], k, allowed)]
    if index.centre is not None:
        found.append(index.search(views[1], k, allowed))
        sel = None if allowed is None else faiss.IDSelectorBatch(np.asarray(allowed, np.int64))
        found.append(index.centre.search(views[0], k, params=faiss.SearchParameters(sel=sel)))
    return found


def similar(index: VectorIndex, query: str, k: int = 10, where: str | None = None
            ) -> pa.Table:
    """The ``k`` rows nearest to the video ``query`` (itself excluded), best first, with
    their ``similarity``: the cosine of centred embeddings (see :mod:`pipeline.search`)."""
    if k < 1:
        raise ConfigError(f"-k {k}: ask for at least one neighbour")
    row = find_row(index, query)
    allowed = None if where is None else select_rows(index, where)
    best: dict[int, float] = {}
    for sims, ids in candidates(index, row, k + 1, allowed):
        for s, i in zip(sims[0], ids[0]):
            if i >= 0 and i != row:
                best[int(i)] = max(float(s), best.get(int(i), -1.0))
    keep = sorted(((s, i) for i, s in best.items()), key=lambda p: (-p[0], p[1]))[:k]
    picked = index.rows.take(pa.array([i for _, i in keep], pa.int64()))
    table = picked.drop_columns(["id"])
    table = table.add_column(0, "similarity", pa.array([float(s) for s, _ in keep],
                                                       pa.float32()))
    return table.add_column(0, "rank", pa.array(range(1, len(keep) + 1), pa.int32()))
