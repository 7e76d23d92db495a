"""Shot detectors side by side: CPU-seconds per video-minute, decoding included, and what
each finds against the cuts file (benchmarks/README.md, "Shots").

For every video of a manifest, in one single-threaded process per detector (torch and
PyAV on one thread, as a decode task or CPU replica runs them): decode every frame at
48x27 (:mod:`pipeline.decode.sequence`), score it (:mod:`pipeline.segments.detectors`),
turn the scores into shots. CPU time is the process's own (``time.process_time``), so a
busy machine slows the run but not the figure much. Each detector runs ``--repeats``
times; the table gives the median over videos (and repeats) of each part's CPU-seconds
per video-minute, and the ratio to the cheaper detector. The shots of the last repeat are
scored with ``vidbatch evaluate``'s rules (:func:`pipeline.tasks.shots.evaluate.evaluate`).

    python benchmarks/shots.py                     # the shot demo's held-out videos
    python benchmarks/shots.py --manifest M.csv --cuts M_cuts.csv --repeats 1
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _videos(manifest: Path) -> list[tuple[str, str]]:
    with manifest.open() as f:
        return [(r["video_id"], str((manifest.parent / r["path"]).resolve()))
                for r in csv.DictReader(f)]


def run_detector(detector: str, threshold: float | None,
                 videos: list[tuple[str, str]]) -> dict:
    """One detector over every video in this process: CPU seconds per part, the rows."""
    import torch

    torch.set_num_threads(1)
    from pipeline.decode.sequence import SequenceSpec, decode_sequence
    from pipeline.segments.detectors import THRESHOLDS
    from pipeline.segments.shots import Detector, ShotFinder, shot_dicts

    chosen = Detector(detector, threshold if threshold is not None else THRESHOLDS[detector])
    t0 = time.process_time()
    finder = ShotFinder(chosen)
    setup = time.process_time() - t0
    per_video, rows = [], []
    for video_id, path in videos:
        t0 = time.process_time()
        v = decode_sequence(path, SequenceSpec())
        t1 = time.process_time()
        shots = finder.find(v.frames, v.times, int(v.indices[0]), v.fps)
        minutes = v.num_frames / v.fps / 60
        per_video.append({"decode_s": (t1 - t0) / minutes,
                          "detect_s": (time.process_time() - t1) / minutes,
                          "minutes": minutes})
        rows.append({"video_id": video_id, "status": "ok", "error": None, "fps": v.fps,
                     "num_frames": v.num_frames, "duration_s": v.num_frames / v.fps,
                     "shots": shot_dicts(shots), "shot_count": len(shots),
                     "mean_shot_s": None})
    return {"detector": detector, "threshold": chosen.threshold, "setup_s": setup,
            "per_video": per_video, "rows": rows}


def score(rows: list[dict], cuts: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.segments.shots import SHOT
    from pipeline.tasks.shots.evaluate import evaluate

    schema = pa.schema([("video_id", pa.string()), ("status", pa.string()),
                        ("error", pa.string()), ("fps", pa.float64()),
                        ("num_frames", pa.int64()), ("duration_s", pa.float64()),
                        ("shots", pa.list_(SHOT)), ("shot_count", pa.int32()),
                        ("mean_shot_s", pa.float64())])
    with tempfile.TemporaryDirectory() as out:
        pq.write_table(pa.Table.from_pylist(rows, schema), f"{out}/rows.parquet")
        return evaluate(out, str(cuts))


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", type=Path, default=REPO / "manifests" / "shots_val.csv")
    p.add_argument("--cuts", type=Path, default=None,
                   help="cuts file (default: the manifest's <name>_cuts.csv)")
    p.add_argument("--detectors", default="transnetv2,content")
    p.add_argument("--threshold", action="append", default=[],
                   help="DETECTOR=VALUE (repeatable); default: each detector's own")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    a = p.parse_args()
    cuts = a.cuts or a.manifest.with_name(a.manifest.stem + "_cuts.csv")
    videos = _videos(a.manifest)
    given = dict(t.split("=") for t in a.threshold)
    figures = {}
    for detector in a.detectors.split(","):
        runs = []
        for _ in range(a.repeats):  # a fresh process each time: setup costs counted
            with ProcessPoolExecutor(1) as pool:
                th = float(given[detector]) if detector in given else None
                runs.append(pool.submit(run_detector, detector, th, videos).result())
        # The median over every video of every repeat, each in CPU-s per video-minute.
        per_min = {k: statistics.median(v[k] for r in runs for v in r["per_video"])
                   for k in ("decode_s", "detect_s")}
        quality = score(runs[-1]["rows"], cuts)
        figures[detector] = {"threshold": runs[-1]["threshold"],
                             "video_minutes": round(sum(v["minutes"] for v in
                                                        runs[-1]["per_video"]), 2),
                             "setup_s": round(statistics.median(r["setup_s"] for r in runs), 2),
                             **{f"{k}_per_min": round(v, 2) for k, v in per_min.items()},
                             "total_per_min": round(sum(per_min.values()), 2),
                             "quality": quality}
        print(json.dumps({detector: {k: v for k, v in figures[detector].items()
                                     if k != "quality"}}), flush=True)
    cheapest = min(f["total_per_min"] for f in figures.values())
    print("\n| detector | threshold | CPU-s per video-minute (decode + detect) | x cheapest "
          "| cut F1 | dissolve F1 | false cuts per 10 min, single-shot |")
    print("|---|---|---|---|---|---|---|")
    for name, f in figures.items():
        q = f["quality"]
        print(f"| {name} | {f['threshold']:g} | {f['total_per_min']:.2f} "
              f"({f['decode_s_per_min']:.2f} + {f['detect_s_per_min']:.2f}) | "
              f"{f['total_per_min'] / cheapest:.1f} | "
              f"{_num(q['cut']['f1'])} | {_num(q['dissolve']['f1'])} | "
              f"{_num(q['single_shot']['false_cuts_per_10_min'], 1)} |")
    if a.out:
        a.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
