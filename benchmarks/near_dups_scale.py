"""``near-duplicates`` at a million rows: the index's batched kNN and the connected
components (``pipeline.search.near_dups.find_groups``) over the vector benchmark's data
(``benchmarks/vector_index.py`` writes it), with planted near-duplicates.

    nice python benchmarks/near_dups_scale.py            # 1,000,000 x 512 + 2,000 copies

``--copies`` base vectors get a copy each: the vector plus Gaussian noise, normalised, at
cosine ~0.97 to it (``--noise``). Reported: the IVF index's build time, the time of
``find_groups`` at ``--threshold``, peak RSS, the share of planted pairs grouped together
(recall) and the groups found. The base's own near pairs count as groups too (the mixture
has none at 0.95: the closest base pairs are far below).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from vector_index import data_paths, peak_rss_mib, read_chunks  # noqa: E402

from pipeline.search.index import VectorIndex, new_index, nlist_for  # noqa: E402
from pipeline.search.near_dups import NPROBE, find_groups  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--copies", type=int, default=2000)
    p.add_argument("--noise", type=float, default=0.25)
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--nprobe", type=int, default=NPROBE)
    args = p.parse_args()
    base, _, _ = data_paths(args.n, args.dim)
    if not base.exists():
        raise SystemExit(f"{base} is absent: run benchmarks/vector_index.py --n {args.n} first")
    rng = np.random.default_rng(7)
    picked = np.sort(rng.choice(args.n, args.copies, replace=False))
    t0 = time.perf_counter()
    sample = np.concatenate([x[rng.random(len(x)) < 64 * nlist_for(args.n) / args.n]
                             for _, x in read_chunks(base, args.n, args.dim)])
    index, kind = new_index(args.dim, args.n + args.copies, sample)
    originals = []
    for start, x in read_chunks(base, args.n, args.dim):
        index.add(x)
        originals.append(x[picked[(picked >= start) & (picked < start + len(x))] - start])
    copies = np.concatenate(originals)
    copies = copies + rng.standard_normal(copies.shape).astype(np.float32) * (
        args.noise / args.dim ** 0.5)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    index.add(copies)
    build_s = time.perf_counter() - t0
    total = args.n + args.copies
    rows = pa.table({"id": np.arange(total), "video_id": [str(i) for i in range(total)],
                     "path": [f"v{i:08d}" for i in range(total)]})
    t0 = time.perf_counter()
    groups = find_groups(VectorIndex(index, rows, {"mean": [0.0], **kind}), args.threshold,
                         nprobe=args.nprobe)
    groups_s = time.perf_counter() - t0
    group_of = dict(zip(groups["video_id"].to_pylist(), groups["group_id"].to_pylist()))
    found = sum(group_of.get(str(o)) is not None and group_of.get(str(o)) ==
                group_of.get(str(args.n + i)) for i, o in enumerate(picked))
    print(json.dumps({"rows": total, "index": kind, "build_s": round(build_s, 1),
                      "find_groups_s": round(groups_s, 1), "threshold": args.threshold,
                      "nprobe": args.nprobe,
                      "planted_recall": found / args.copies,
                      "groups": len(set(group_of.values())), "grouped_rows": groups.num_rows,
                      "peak_rss_mib": round(peak_rss_mib())}))


if __name__ == "__main__":
    main()
