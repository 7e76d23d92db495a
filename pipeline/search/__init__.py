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

from pipeline.search.layout import read_near_duplicates

__all__ = ["read_near_duplicates"]
