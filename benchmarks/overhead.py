"""vidbatch's fixed and per-row costs (issue 21's targets 1, 4 and 5), from the job record's
``timing`` (seconds from the command's start: Ray ready, first row out of the model, last
row, end; the driver's peak RSS).

    python benchmarks/overhead.py --repeats 3                       # every case
    python benchmarks/overhead.py --cases missing_20k --repeats 3   # one case

Cases, each ``vidbatch submit`` in a process of its own (``--overwrite``):

* ``fixed_fresh``: the clip job of ``run.py`` (r3d_18, 1 x 16 frames at 112 px, the
  seeded weights) on ``--videos`` 2-second videos, on the local Ray the command starts;
* ``fixed_running``: the same, ``--address auto``, on a Ray started by ``vidbatch up`` and
  warmed by one job (untimed), stopped with ``vidbatch down`` afterwards;
* ``missing_20k``, ``missing_1m``: ``jobs/classify.yaml`` over a manifest of 20,000 /
  1,000,000 rows whose files do not exist (``max_error_fraction=1``).

``ray_to_first_decode_s``: from Ray being up to the first decode task's start (issue 21's
target 4 at 1,000,000 rows: within 10 s).
Fixed cost = ``first_row_s - first_batch_infer_s + (end_s - last_row_s)``: what a job pays
besides its rows (the first batch's inference is work; its decoding, which the first
batch waits for, is counted as fixed: a lower bound is the decode of one video).
Rows/s: all rows over the command's wall time, and steady (rows over last minus first
row). Each run checks that every manifest row has its output row.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import report
import vidbatch_jobs
import videos

REPO = Path(__file__).resolve().parents[1]
WORK = videos.BENCH_DIR / "results" / "tmp" / "overhead"
CASES = ("fixed_fresh", "fixed_running", "missing_20k", "missing_1m")


def missing_manifest(rows: int) -> Path:
    """``rows`` manifest rows whose files do not exist (under a folder that does not)."""
    path = videos.DATA / f"missing_{rows}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id", "path"])
            w.writerows([f"m{i:07d}", f"/nonexistent-vidbatch/m{i:07d}.mp4"]
                        for i in range(rows))
    return path


def submit(argv: list[str], out: Path, rows: int) -> dict:
    """Run one ``vidbatch submit``; its record's timing, wall time and row checks."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return {"failed": (done.stdout + done.stderr)[-800:]}
    record = json.loads((out / "_vidbatch_job.json").read_text())
    t = record["timing"]
    got = pads.dataset(str(out), format="parquet").to_table(
        columns=["video_id", "infer_s", "processed_at"]).to_pandas()
    # The first batch's own inference time is work, not fixed cost (infer_s: each row's
    # share of its batch's time).
    first = got[got.processed_at == got.processed_at.min()].infer_s.fillna(0).sum()
    return {**t, "wall_s": round(wall, 2), "rows": len(got),
            "unique_ids": got.video_id.nunique(), "expected_rows": rows,
            "first_batch_infer_s": round(float(first), 2),
            "fixed_s": round(t["first_row_s"] - first + t["end_s"] - t["last_row_s"], 2),
            "rows_per_s": round(rows / wall, 1),
            "steady_rows_per_s": round(rows / max(t["last_row_s"] - t["first_row_s"], 1e-9),
                                       1),
            "ray_to_first_decode_s": (round(t["first_decode_s"] - t["ray_ready_s"], 2)
                                      if t.get("first_decode_s") is not None else None),
            "ray_to_first_row_s": round(t["first_row_s"] - t["ray_ready_s"], 2)}


def _g(value) -> str:
    return "–" if value is None else f"{value:g}"


def run_case(case: str, args, data: dict) -> dict:
    exe = vidbatch_jobs._exe()
    folder = WORK / case
    out = folder / "out"
    if case.startswith("missing"):
        rows = {"missing_20k": 20_000, "missing_1m": 1_000_000}[case]
        argv = [exe, "submit", str(REPO / "jobs" / "classify.yaml"), "--overwrite",
                "--set", f"manifest={missing_manifest(rows)}", "--set",
                f"output.path={out}", "--set", "max_error_fraction=1"]
        return submit(argv, out, rows)
    cfg = {**data, "name": case, "arch": "r3d_18", "frames": 16, "short_side": 128,
           "crop": 112, "batch_size": 8, "precision": "fp32", "channels_last": True,
           "cores": args.cores}
    spec = vidbatch_jobs.write_spec(case, cfg, folder)
    argv = vidbatch_jobs.command(spec, [], attach=case == "fixed_running")
    if case == "fixed_fresh":
        return submit(argv, out, args.videos)
    env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"}
    with vidbatch_jobs.running_cluster(case, cfg, folder, [], env):
        return submit(argv, out, args.videos)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help=",".join(CASES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--videos", type=int, default=8, help="videos of the fixed-cost jobs")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args(argv)
    manifest, _ = videos.ensure_videos(args.videos, 2, args.cores)
    data = {"manifest": str(manifest), "weights": str(videos.ensure_weights("r3d_18"))}
    runs = []
    for r in range(args.repeats):
        for case in args.cases.split(","):
            row = {"case": case, "repeat": r, **run_case(case, args, data)}
            runs.append(row)
            print(json.dumps(row), flush=True)
    keys = ("ray_ready_s", "ray_to_first_decode_s", "first_row_s", "first_batch_infer_s",
            "ray_to_first_row_s",
            "fixed_s", "wall_s",
            "rows_per_s", "steady_rows_per_s", "driver_peak_rss_mb")
    print("\n| case | runs | " + " | ".join(keys) + " | rows ok |")
    print("|---" * (len(keys) + 3) + "|")
    failed = False
    for case in args.cases.split(","):
        mine = [r for r in runs if r["case"] == case and "failed" not in r]
        failed |= len(mine) < args.repeats
        if not mine:
            print(f"| {case} | 0 | " + " | ".join("–" for _ in keys) + " | – |")
            continue
        whole = all(r["rows"] == r["unique_ids"] == r["expected_rows"] for r in mine)
        failed |= not whole
        print(f"| {case} | {len(mine)} | " + " | ".join(
            _g(report.median([r.get(k) for r in mine])) for k in keys)
            + f" | {'yes' if whole else 'NO'} |")
    out = WORK / f"overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(runs, indent=1))
    print(f"\nall runs: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
