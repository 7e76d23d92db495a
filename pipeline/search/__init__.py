"""Search over a job's embeddings: a vector index of the ok rows (``vidbatch index``), the
nearest videos to one (``vidbatch similar``) and groups of near-duplicates
(``vidbatch near-duplicates``).

Similarity is the cosine of *centred* embeddings: each embedding minus the mean embedding
of the indexed rows, L2-normalised. Untrained (``weights: none``) networks map unrelated
videos to almost the same direction (raw cosine ~0.99); the collection's mean is that
shared direction, and what remains tells content apart. The mean is kept with the index
and subtracted from queries alike.

Layers: :mod:`~pipeline.search.layout` (names and places; no FAISS),
:mod:`~pipeline.search.vectors` (reading and centring), :mod:`~pipeline.search.index`
(the FAISS index on disk or an object store), :mod:`~pipeline.search.neighbours`
(``similar``), :mod:`~pipeline.search.near_dups` (groups), :mod:`~pipeline.search.commands`
(the command-line functions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# Centred cosine at and above which two videos are near-duplicates, and the neighbours
# looked at per row. Here, with nothing imported, so that the command line shows them
# without loading pyarrow (pipeline.cli imports pipeline.search.commands at start).
DEFAULT_THRESHOLD = 0.9
DEFAULT_K = 10


def read_near_duplicates(output: str) -> pa.Table | None:
    """The near-duplicate groups written beside the job output ``output``, or None: see
    :func:`pipeline.search.layout.read_near_duplicates`."""
    from pipeline.search.layout import read_near_duplicates as read

    return read(output)


__all__ = ["DEFAULT_K", "DEFAULT_THRESHOLD", "read_near_duplicates"]
