"""Vector index benchmark: LanceDB and FAISS indexes over the same normalised vectors, in
one command, against exact (brute-force) search.

    nice python benchmarks/vector_index.py                       # 1,000,000 x 512, all
    nice python benchmarks/vector_index.py --n 100000 --only faiss_ivf_flat,lance_ivf_pq

Data: a Gaussian mixture (``--clusters`` centres, Zipf-like cluster sizes, noise about
0.7 of a centre's norm, so two members of a cluster have cosine ~0.67), each vector
L2-normalised: the shape of centred, normalised embeddings of a collection with many
near-topics. Queries are fresh draws from the same mixture, not members of the base.
Ground truth: the exact top 10 by inner product (= cosine), by numpy over the whole base.

Each contender builds in one child process (build time, peak RSS, size on disk), then a
second child opens the index from disk and answers ``--queries`` single queries, one at a
time, for each search setting (p50/p99 latency after 10 warm-up queries, recall@10 =
share of the exact top 10 found, peak RSS of a process that only serves). Both libraries
use all cores (their default). Results: ``benchmarks/results/vector_index-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BENCH_DIR = Path(os.environ.get("VIDBATCH_BENCH_DIR") or HERE)
CHUNK = 100_000
K = 10

# name -> (library, build parameters, search settings swept at query time)
CONTENDERS = {
    "faiss_flat": ("faiss", {"factory": "Flat"}, [{}]),
    "faiss_ivf_flat": ("faiss", {"factory": "IVF1024,Flat"},
                       [{"nprobe": 8}, {"nprobe": 16}, {"nprobe": 32}, {"nprobe": 64}]),
    "faiss_ivf_sq8": ("faiss", {"factory": "IVF1024,SQ8"}, [{"nprobe": 16}, {"nprobe": 32}]),
    "faiss_hnsw": ("faiss", {"factory": "HNSW32"}, [{"efSearch": 64}, {"efSearch": 128}]),
    "lance_ivf_pq": ("lance", {"index_type": "IVF_PQ", "num_partitions": 1024,
                               "num_sub_vectors": 64},
                     [{"nprobes": 16, "refine": 10}, {"nprobes": 32, "refine": 10},
                      {"nprobes": 32, "refine": 30}]),
    "lance_ivf_flat": ("lance", {"index_type": "IVF_FLAT", "num_partitions": 1024},
                       [{"nprobes": 16}, {"nprobes": 32}]),
    "lance_ivf_hnsw_sq": ("lance", {"index_type": "IVF_HNSW_SQ", "num_partitions": 64,
                                    "m": 16, "ef_construction": 100},
                          [{"nprobes": 4, "ef": 64}, {"nprobes": 8, "ef": 128}]),
}


def data_paths(n: int, dim: int) -> tuple[Path, Path, Path]:
    base = BENCH_DIR / "data" / f"vectors-{n}x{dim}"
    return base.with_suffix(".f32"), base.with_name(base.name + "-queries.npy"), \
        base.with_name(base.name + "-truth.npy")


def read_chunks(path: Path, n: int, dim: int):
    """The base vectors in chunks, read (not memory-mapped, so a child's RSS counts only
    what the library keeps)."""
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        yield start, np.fromfile(path, np.float32, count * dim,
                                 offset=start * dim * 4).reshape(count, dim)


def mixture(rng: np.random.Generator, centres: np.ndarray, weights: np.ndarray,
            count: int) -> np.ndarray:
    dim = centres.shape[1]
    which = rng.choice(len(centres), size=count, p=weights)
    x = centres[which] + rng.standard_normal((count, dim), dtype=np.float32) * (0.7 / dim**0.5)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_data(n: int, dim: int, clusters: int, queries: int) -> None:
    base, qpath, tpath = data_paths(n, dim)
    if tpath.exists():
        return
    base.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    weights /= weights.sum()
    with open(base, "wb") as f:
        for start in range(0, n, CHUNK):
            mixture(rng, centres, weights, min(CHUNK, n - start)).astype(np.float32).tofile(f)
    q = mixture(rng, centres, weights, queries).astype(np.float32)
    np.save(qpath, q)
    np.save(tpath, exact_topk(base, n, dim, q))


def exact_topk(base: Path, n: int, dim: int, q: np.ndarray) -> np.ndarray:
    best_s = np.full((len(q), K), -np.inf, np.float32)
    best_i = np.zeros((len(q), K), np.int64)
    for start, x in read_chunks(base, n, dim):
        s = np.concatenate([best_s, q @ x.T], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(x)),
                                                    (len(q), len(x)))], axis=1)
        top = np.argsort(-s, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def build_faiss(params: dict, base: Path, n: int, dim: int, where: Path) -> None:
    import faiss

    index = faiss.index_factory(dim, params["factory"], faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        # 64 points per list (FAISS warns below 39), drawn from the whole base.
        sample = np.random.default_rng(1).choice(n, size=min(n, 64 * 1024), replace=False)
        x = np.concatenate([c[np.isin(np.arange(s, s + len(c)), sample)]
                            for s, c in read_chunks(base, n, dim)])
        index.train(x)
    for _, x in read_chunks(base, n, dim):
        index.add(x)
    faiss.write_index(index, str(where / "index.faiss"))


def build_lance(params: dict, base: Path, n: int, dim: int, where: Path) -> None:
    import lancedb
    import pyarrow as pa

    def batches():
        for start, x in read_chunks(base, n, dim):
            yield pa.RecordBatch.from_arrays(
                [pa.array(np.arange(start, start + len(x))),
                 pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim)],
                ["id", "vector"])

    schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), dim))])
    table = lancedb.connect(where).create_table("v", batches(), schema=schema)
    table.create_index(metric="cosine", vector_column_name="vector", **params)


def open_index(library: str, where: Path):
    """The built index, opened once per query child (its RSS is then one copy's)."""
    if library == "faiss":
        import faiss

        return faiss.read_index(str(where / "index.faiss"))
    import lancedb

    return lancedb.connect(where).open_table("v")


def searcher(library: str, index, setting: dict):
    """A function query -> ids of its approximate top K."""
    if library == "faiss":
        import faiss

        params = faiss.ParameterSpace()
        for key, value in setting.items():
            params.set_index_parameter(index, key, value)
        return lambda q: index.search(q[None, :], K)[1][0]

    def search(q):
        s = index.search(q).distance_type("cosine").limit(K).select(["id"])
        s = s.nprobes(setting["nprobes"])
        if "refine" in setting:
            s = s.refine_factor(setting["refine"])
        if "ef" in setting:
            s = s.ef(setting["ef"])
        return s.to_arrow()["id"].to_numpy()
    return search


def child(args) -> dict:
    library, params, settings = CONTENDERS[args.name]
    base, qpath, tpath = data_paths(args.n, args.dim)
    where = BENCH_DIR / "data" / f"index-{args.name}-{args.n}x{args.dim}"
    if args.phase == "build":
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        t0 = time.perf_counter()
        (build_faiss if library == "faiss" else build_lance)(params, base, args.n, args.dim,
                                                             where)
        size = sum(f.stat().st_size for f in where.rglob("*") if f.is_file())
        return {"build_s": time.perf_counter() - t0, "build_rss_mib": peak_rss_mib(),
                "disk_mib": size / 2**20}
    q, truth = np.load(qpath), np.load(tpath)
    rows = []
    index = open_index(library, where)
    for setting in settings:
        search = searcher(library, index, setting)
        for v in q[:10]:
            search(v)
        times, hits = [], 0
        for v, t in zip(q, truth):
            t0 = time.perf_counter()
            got = search(v)
            times.append(time.perf_counter() - t0)
            hits += len(set(got.tolist()) & set(t.tolist()))
        rows.append({"setting": setting, "p50_ms": 1e3 * float(np.percentile(times, 50)),
                     "p99_ms": 1e3 * float(np.percentile(times, 99)),
                     "recall_at_10": hits / truth.size})
    return {"queries": rows, "serve_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: getrusage's ru_maxrss survives exec, so a child
    would report its parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def run_one(args, name: str) -> dict:
    result = {"name": name, "library": CONTENDERS[name][0], "params": CONTENDERS[name][1]}
    for phase in ("build", "query"):
        cmd = [sys.executable, __file__, "--child", phase, "--name", name,
               "--n", str(args.n), "--dim", str(args.dim)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{name} {phase} failed:\n{out.stderr[-3000:]}")
        result.update(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {name} {phase}: {out.stdout.strip().splitlines()[-1]}", flush=True)
    if not args.keep:
        shutil.rmtree(BENCH_DIR / "data" / f"index-{name}-{args.n}x{args.dim}")
    return result


def table(results: list[dict]) -> str:
    lines = ["| index | search setting | build s | p50 ms | p99 ms | recall@10 | "
             "build RSS MiB | serve RSS MiB | disk MiB |", "|---" * 9 + "|"]
    for r in results:
        for q in r["queries"]:
            setting = ", ".join(f"{k}={v}" for k, v in q["setting"].items()) or "exact"
            lines.append(f"| {r['name']} | {setting} | {r['build_s']:.0f} | {q['p50_ms']:.2f} "
                         f"| {q['p99_ms']:.2f} | {q['recall_at_10']:.3f} | "
                         f"{r['build_rss_mib']:.0f} | {r['serve_rss_mib']:.0f} | "
                         f"{r['disk_mib']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--only", default=",".join(CONTENDERS), help="contenders, comma-separated")
    p.add_argument("--keep", action="store_true", help="keep the built indexes")
    p.add_argument("--child", choices=("build", "query"), dest="phase", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        print(json.dumps(child(args)))
        return
    t0 = time.perf_counter()
    make_data(args.n, args.dim, args.clusters, args.queries)
    print(f"data and exact top {K}: {time.perf_counter() - t0:.0f} s", flush=True)
    out = BENCH_DIR / "results" / f"vector_index-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.only.split(","):
        results.append(run_one(args, name))
        # Written after each contender, so that a long run's finished part is kept.
        out.write_text(json.dumps({"n": args.n, "dim": args.dim, "clusters": args.clusters,
                                   "queries": args.queries, "load": os.getloadavg(),
                                   "results": results}, indent=2))
    print(table(results))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
