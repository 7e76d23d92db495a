"""How long `vidbatch report` takes over a large job, and how much memory it holds.

    python benchmarks/report_scale.py --rows 1000000 --repeats 3

Writes a classify job's output of ``--rows`` rows once (``benchmarks/data/report_<rows>/``:
the classify schema with 512-d embeddings, 1,000 rows per file as a job writes them, 5% error
rows over four reasons, paths cycling over a dozen real generated videos so that the
contact sheets decode real frames), then builds its report ``--repeats`` times, each in a
fresh process, and prints wall time and peak RSS (the report's process; the decode child
is confined apart). Medians at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pipeline.output.store import JOB_RECORD  # noqa: E402
from pipeline.synth import moving_texture, write_video  # noqa: E402
from pipeline.tasks.registry import TASKS  # noqa: E402

PER_FILE = 1000
LABELS = [f"class_{i}" for i in range(400)]
ERRORS = ["read: file not found: {p}. Check the manifest's path column.",
          "read: file is empty (0 bytes): {p}", "decode: not a decodable video: {p}",
          "sample: segment starts at 10 s, after the video's end"]


def _videos(root: Path, n: int = 12) -> list[str]:
    out = []
    for i in range(n):
        p = root / "videos" / f"v{i:02d}.mp4"
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            write_video(p, moving_texture(30, 180, 320, seed=i))
        out.append(str(p))
    return out


def _file(schema: pa.Schema, start: int, n: int, videos: list[str], rng, t0) -> pa.Table:
    ids = [f"v{start + i:07d}" for i in range(n)]
    paths = [videos[(start + i) % len(videos)] for i in range(n)]
    err = rng.random(n) < 0.05
    label = rng.zipf(1.3, n) % len(LABELS)
    emb = rng.standard_normal((n, 512), dtype=np.float32)
    cols = {
        "video_id": ids, "path": paths, "label": [LABELS[i] for i in label],
        "status": np.where(err, "error", "ok").tolist(),
        "error": [ERRORS[i % 4].format(p=p) if e else None
                  for i, (e, p) in enumerate(zip(err, paths))],
        "decoder": ["decord"] * n, "num_frames": [30] * n, "fps": [30.0] * n,
        "duration_s": [1.0] * n, "width": [320] * n, "height": [180] * n,
        "start_s": [0.0] * n, "end_s": [1.0] * n, "clips": [2] * n, "frames_per_clip": [16] * n,
        "pred_index": label.tolist(), "pred_label": [LABELS[i] for i in label],
        "pred_score": rng.random(n).astype(np.float32).tolist(),
        "topk_labels": [[LABELS[i]] for i in label], "topk_scores": [[0.5]] * n,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 512),
        "decode_s": rng.gamma(2.0, 0.05, n).tolist(), "infer_s": rng.gamma(5.0, 0.1, n).tolist(),
        "processed_at": [t0 + timedelta(milliseconds=3.0 * (start + i)) for i in range(n)],
        "model": ["r3d_18"] * n, "weights": ["none"] * n, "job": ["scale"] * n,
    }
    arrays = [pa.array(cols.get(f.name, [None] * n), type=f.type)
              if not isinstance(cols.get(f.name), pa.Array) else cols[f.name] for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def make_output(rows: int, root: Path) -> Path:
    out = root / f"report_{rows}"
    if (out / JOB_RECORD).exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    videos, rng = _videos(root), np.random.default_rng(0)
    schema = TASKS["classify"].schema("r3d_18")
    t0 = datetime(2026, 11, 30, tzinfo=timezone.utc)
    for k, start in enumerate(range(0, rows, PER_FILE)):
        table = _file(schema, start, min(PER_FILE, rows - start), videos, rng, t0)
        pq.write_table(table, out / f"vidbatch-scale_w_{k:06d}.parquet")
    record = {"job": "scale", "task": "classify", "state": "finished", "runs": ["scale"],
              "model": {"arch": "r3d_18", "weights": "none", "classes": 400,
                        "predictions_meaningful": False},
              "counts": {"manifest_rows": rows}, "wall_s": rows * 0.003}
    (out / JOB_RECORD).write_text(json.dumps(record))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    t = time.perf_counter()
    out = make_output(a.rows, HERE / "data")
    print(f"output of {a.rows:,} rows at {out} ({time.perf_counter() - t:.0f} s to make or find)")
    walls, peaks = [], []
    for i in range(a.repeats):
        code = ("import resource, sys, time; from pipeline.report.build import make_report; "
                "t = time.perf_counter(); "
                "make_report(sys.argv[1], sys.argv[2], log=lambda s: None); "
                "print(time.perf_counter() - t, "
                "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
        got = subprocess.run([sys.executable, "-c", code, str(out), str(out.parent /
                              "report_scale.html")], capture_output=True, text=True,
                             cwd=HERE.parent, check=True)
        wall, peak = map(float, got.stdout.split()[-2:])
        walls.append(wall)
        peaks.append(peak)
        print(f"run {i + 1}: {wall:.1f} s, peak RSS {peak:.0f} MiB")
    print(f"median over {a.repeats}: {statistics.median(walls):.1f} s, peak RSS "
          f"{statistics.median(peaks):.0f} MiB ({a.rows:,} rows)")


if __name__ == "__main__":
    main()
