"""Detection benchmark: ``vidbatch submit`` (task: detect) against the plain loop, on the
same videos and the same detector, in one command.

    python benchmarks/detect.py --videos 48 --repeats 3

The plain loop is what a user writes first, in one process: for each video, decode the
sampled frames with decord (resized to the detector's input), run the detector on them
(torch's default threads), collect the boxes, write Parquet at the end. Both run the same
checkpoint (``--weights``: by default the demo's trained detector, ``runs/shapes-frcnn18/
best``; ``none`` takes seeded random weights) at fp32 over the same sampled frames.

Each repeat runs both, loop first, each in its own process (start-up included in its wall
time). Reported: the median wall time of each, the ratio loop / vidbatch per repeat and
its median, and whether the boxes agree: every loop box is matched to the vidbatch box of
the same video, frame and label with the highest IoU; the smallest matched IoU and the
share of boxes matched at IoU >= 0.99 are printed. Results go to
``benchmarks/results/detect-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import videos  # noqa: E402
from procs import run_measured  # noqa: E402
from vidbatch_jobs import _exe  # noqa: E402

RESULTS = videos.BENCH_DIR / "results"


def write_videos(folder: Path, count: int) -> Path:
    """``count`` demo shape videos (30 frames, 320x192, 10 fps) and their manifest."""
    from pipeline.synth import write_manifest
    from pipeline.tasks.detect.demo import make_detect_set

    manifest = folder / "manifest.csv"
    if not manifest.exists():
        rows, _ = make_detect_set(folder / "videos", count, seed=200_000)
        write_manifest(manifest, rows, prefix="videos/")
    return manifest


def job_spec(manifest: Path, out: Path, cfg: dict) -> Path:
    spec = {"task": "detect", "name": "bench-detect", "manifest": str(manifest),
            "sampling": {"frames": cfg["frames"]},
            "model": {"arch": cfg["arch"], "weights": cfg["weights"]},
            "detect": {"score_threshold": cfg["score_threshold"], "track": False,
                       "min_size": cfg["min_size"], "max_size": cfg["max_size"],
                       "frames_per_batch": cfg["frames_per_batch"]},
            "inference": {"batch_size": cfg["videos_per_batch"],
                          "precision": cfg["precision"]},
            "resources": {"num_cpus": cfg["cores"]},
            "output": {"path": str(out), "if_exists": "overwrite"}}
    path = out.parent / "job.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def plain_loop(cfg: dict) -> None:
    """The contender a user writes first (module docstring); run in its own process."""
    import csv

    import decord
    import pandas as pd
    import torch

    from pipeline.decode.base import fitted_dims
    from pipeline.decode.sampling import clip_indices
    from pipeline.tasks.detect.models import build_detector, detector_card

    card = detector_card(cfg["arch"], cfg["weights"], None, cfg["min_size"], cfg["max_size"])
    net = build_detector(card, cfg["score_threshold"]).eval()
    canvas = (card.min_size, card.max_size)
    base = Path(cfg["manifest"]).parent
    rows = []
    with open(cfg["manifest"], newline="") as f:
        for item in csv.DictReader(f):
            probe = decord.VideoReader(str(base / item["path"]))
            h, w = probe[0].shape[:2]
            fh, fw = fitted_dims(h, w, canvas)
            reader = decord.VideoReader(str(base / item["path"]), width=fw, height=fh)
            idx = clip_indices(0, len(reader) - 1, cfg["frames"], 1).reshape(-1)
            frames = torch.from_numpy(reader.get_batch(idx.tolist()).asnumpy())
            images = list(frames.permute(0, 3, 1, 2).float().div(255))
            with torch.inference_mode():
                found = net(images)
            scale = np.array([w / fw, h / fh] * 2)
            for i, det in zip(idx, found):
                for box, score, label in zip(det["boxes"].numpy(), det["scores"].numpy(),
                                             det["labels"].numpy()):
                    rows.append({"video_id": item["video_id"], "frame_index": int(i),
                                 "label": card.class_names[label], "score": float(score),
                                 "box": (box * scale).tolist()})
    pd.DataFrame(rows).to_parquet(cfg["out"])


def vidbatch_boxes(out: Path) -> list[dict]:
    import pyarrow.dataset as pads

    table = pads.dataset(str(out), format="parquet").to_table(
        columns=["video_id", "status", "detections"])
    return [{"video_id": r["video_id"], **d} for r in table.to_pylist()
            if r["status"] == "ok" for d in r["detections"]]


def agreement(loop_file: Path, vidbatch_out: Path) -> dict:
    """How the loop's boxes match vidbatch's (module docstring)."""
    import pandas as pd

    from pipeline.tasks.detect.tracks import iou_matrix

    loop = pd.read_parquet(loop_file).to_dict("records") if loop_file.exists() else []
    theirs: dict[tuple, list] = {}
    for d in vidbatch_boxes(vidbatch_out):
        theirs.setdefault((d["video_id"], d["frame_index"], d["label"]), []).append(d["box"])
    best = []
    for d in loop:
        cands = theirs.get((d["video_id"], d["frame_index"], d["label"]), [])
        iou = iou_matrix(np.array([d["box"]]), np.array(cands).reshape(-1, 4))
        best.append(float(iou.max()) if iou.size else 0.0)
    return {"loop_boxes": len(loop), "vidbatch_boxes": sum(len(v) for v in theirs.values()),
            "min_matched_iou": min(best) if best else None,
            "median_iou": float(np.median(best)) if best else None,
            "share_iou_ge_0_99": float(np.mean(np.array(best) >= 0.99)) if best else None,
            "share_iou_ge_0_9": float(np.mean(np.array(best) >= 0.9)) if best else None}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--frames", type=int, default=8, help="sampled frames per video")
    p.add_argument("--weights", default=str(REPO / "runs" / "shapes-frcnn18" / "best"))
    p.add_argument("--arch", default="fasterrcnn_resnet18_fpn")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="vidbatch's precision (the loop stays fp32)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--frames-per-batch", type=int, default=8)
    p.add_argument("--videos-per-batch", type=int, default=4)
    p.add_argument("--loop", help=argparse.SUPPRESS)  # internal: run the plain loop
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.loop:
        plain_loop(json.loads(args.loop))
        return 0
    folder = videos.DATA / "detect" / f"{args.videos}"
    manifest = write_videos(folder, args.videos)
    cfg = {"manifest": str(manifest), "frames": args.frames, "arch": args.arch,
           "weights": args.weights, "score_threshold": args.score_threshold,
           "min_size": 192, "max_size": 320,
           "cores": args.cores, "frames_per_batch": args.frames_per_batch,
           "videos_per_batch": args.videos_per_batch, "precision": args.precision}
    runs = []
    for r in range(args.repeats):
        loop_cfg = {**cfg, "out": str(folder / "loop.parquet")}
        loop = run_measured([sys.executable, __file__, "--loop", json.dumps(loop_cfg)],
                            folder / "logs" / f"loop-{r}.log")
        spec = job_spec(manifest, folder / "vidbatch" / "out", cfg)
        vb = run_measured([_exe(), "submit", str(spec), "--overwrite"],
                          folder / "logs" / f"vidbatch-{r}.log")
        assert loop["rc"] == 0 and vb["rc"] == 0, (loop["rc"], vb["rc"])
        runs.append({"loop_s": loop["wall_s"], "vidbatch_s": vb["wall_s"],
                     "ratio": loop["wall_s"] / vb["wall_s"],
                     **agreement(folder / "loop.parquet", folder / "vidbatch" / "out")})
        print(f"repeat {r + 1}: loop {loop['wall_s']:.1f} s, vidbatch {vb['wall_s']:.1f} s, "
              f"ratio {runs[-1]['ratio']:.2f}", flush=True)
    med = {k: statistics.median(x[k] for x in runs) for k in ("loop_s", "vidbatch_s", "ratio")}
    print(f"\n| videos x frames | plain loop (median) | vidbatch (median) | loop / vidbatch "
          f"| min matched IoU | boxes matched at IoU >= 0.99 |\n|---|---|---|---|---|---|\n"
          f"| {args.videos} x {args.frames} | {med['loop_s']:.1f} s | {med['vidbatch_s']:.1f} s "
          f"| **{med['ratio']:.2f}x** | {runs[-1]['min_matched_iou']} "
          f"| {runs[-1]['share_iou_ge_0_99']} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"detect-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "config": cfg, "runs": runs,
                                "medians": med}, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
