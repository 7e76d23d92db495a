"""vidbatch benchmark: vidbatch against the loop people write first, Ray Data's read_videos,
the cost of decoding every frame, and the model alone.

    python benchmarks/run.py --videos 96 --repeats 3

Every contender runs in its own process (Ray start-up included in its wall time, its memory
measured alone), in the same order in every repeat; the harness prints one Markdown table of
medians and the issue's ratios (per repeat, then the median), and writes everything to
``benchmarks/results/<time>.json``. See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import report
import vidbatch_jobs
import videos
from procs import run_measured

from pipeline.model.runtime import auto_streams, cpu_has_bf16

HERE = Path(__file__).resolve().parent
RESULTS = videos.BENCH_DIR / "results"
JOBS = {  # what each job decodes and runs (the definitions)
    "clip": {"kind": "clip", "arch": "r3d_18", "frames": 16, "short_side": 128, "crop": 112},
    "frame": {"kind": "frame", "arch": "resnet18", "frames": 8, "short_side": 256, "crop": 224},
    "decode": {"kind": "clip", "arch": "r3d_18", "frames": 16, "short_side": 128, "crop": 112},
}
# vidbatch's decode stage alone (mode: decode_only), exact and keyframe-snapped, per decoder
DECODE_ONLY = {
    "vidbatch_decode_only": ["mode=decode_only"],
    "vidbatch_decode_only_pyav": ["mode=decode_only", "resources.decoder=pyav"],
    "vidbatch_decode_keyframes": ["mode=decode_only", "sampling.snap_to_keyframes=true"],
    "vidbatch_decode_keyframes_pyav": ["mode=decode_only", "sampling.snap_to_keyframes=true",
                                       "resources.decoder=pyav"],
    # each job's own decode bound: its sampling, decoded by vidbatch, no model
    "vidbatch_clip_decode_only": ["mode=decode_only"],
    "vidbatch_frame_decode_only": ["mode=decode_only"],
}


@dataclass(frozen=True)
class Contender:
    name: str
    family: str  # model_bound | naive | ray_read_videos | decode_bound | vidbatch | warm
    job: str
    precision: str = "fp32"


def plan(jobs: list[str], only: list[str] | None, bf16: bool) -> list[Contender]:
    c = []
    if "clip" in jobs:
        c += [Contender("model_bound_clip", "model_bound", "clip")]
        c += [Contender("model_bound_clip_bf16", "model_bound", "clip", "bf16")] if bf16 else []
        c += [Contender("naive_clip", "naive", "clip"),
              Contender("vidbatch_clip", "vidbatch", "clip")]
        c += [Contender("vidbatch_clip_bf16", "vidbatch", "clip", "bf16")] if bf16 else []
        c += [Contender("vidbatch_clip_warm", "warm", "clip"),
              Contender("vidbatch_clip_decode_only", "vidbatch", "clip")]
    if "frame" in jobs:
        c += [Contender("model_bound_frame", "model_bound", "frame"),
              Contender("naive_frame", "naive", "frame"),
              Contender("ray_read_videos", "ray_read_videos", "frame"),
              Contender("vidbatch_frame", "vidbatch", "frame"),
              Contender("vidbatch_frame_warm", "warm", "frame"),
              Contender("vidbatch_frame_decode_only", "vidbatch", "frame")]
    if "decode" in jobs:
        c += [Contender("decode_bound", "decode_bound", "decode")]
        c += [Contender(name, "vidbatch", "decode") for name in DECODE_ONLY
              if name not in ("vidbatch_clip_decode_only", "vidbatch_frame_decode_only")]
    return [x for x in c if not only or x.family in only or x.name in only]


def config(c: Contender, args, data: dict, folder: Path) -> dict:
    job = JOBS[c.job]
    device = getattr(args, "device", "cpu")
    streams = getattr(args, "model_streams", None) or auto_streams(
        args.model_threads, args.batch_size, gpu=device == "cuda")
    return {**job, "name": c.name, "precision": c.precision, "batch_size": args.batch_size,
            "channels_last": args.channels_last, "threads": args.model_threads,
            "streams": streams,
            "cores": args.cores, "bound_iters": args.bound_iters, "paths": data["paths"],
            "ids": data["ids"],
            "device": device,
            "manifest": data["manifest"], "weights": data["weights"][job["arch"]],
            "out_dir": str(folder), "result": str(folder / "result.json")}


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a local Ray
    return {**env, "PYTHONUNBUFFERED": "1"}


def run_one(c: Contender, args, data: dict, repeat: int, outputs: dict) -> dict:
    base = {"name": c.name, "family": c.family, "job": c.job, "precision": c.precision,
            "repeat": repeat, "loadavg_before": os.getloadavg()[0]}
    folder = RESULTS / "tmp" / c.name
    cfg = config(c, args, data, folder)
    folder.mkdir(parents=True, exist_ok=True)
    if c.family in ("vidbatch", "warm"):
        argv = vidbatch_jobs.command(vidbatch_jobs.write_spec(c.name, cfg, folder),
                                     [*DECODE_ONLY.get(c.name, []), *args.set],
                                     attach=c.family == "warm")
    else:
        (folder / "config.json").write_text(json.dumps(cfg))
        argv = [sys.executable, str(HERE / "baselines.py"), c.family, str(folder / "config.json")]
    # `warm`: the job attaches to a Ray started (and stopped) around it, whose processes'
    # memory counts with the job's
    cluster = (vidbatch_jobs.running_cluster(c.name, cfg, folder, args.set, child_env())
               if c.family == "warm" else nullcontext())
    try:
        with cluster as session:
            m = run_measured(argv, folder / f"log_r{repeat}.txt", child_env(),
                             (session,) if session else ())
    except RuntimeError as e:  # the running Ray could not be started or warmed up
        return {**base, "failed": str(e)}
    lines = m.pop("lines")
    if m["rc"] != 0:
        tail = " | ".join(line for _, line in lines[-5:])
        return {**base, **m, "failed": f"exit {m['rc']}: {tail[-400:]}"}
    res = (vidbatch_jobs.result(folder, lines) if c.family in ("vidbatch", "warm")
           else json.loads(Path(cfg["result"]).read_text()))
    row = {**base, **m, **res}
    if "skipped" not in res:
        row["e2e_videos_per_s"] = res["videos"] / m["wall_s"]
    add_cosines(row, outputs)
    return row


def add_cosines(row: dict, outputs: dict) -> None:
    """bf16 vs fp32 (same pipeline), and vidbatch vs the naive loop (same weights)."""
    name, emb = row["name"], row.get("embeddings")
    if not emb:
        return
    outputs[name] = emb
    pairs = {"vidbatch_clip_bf16": "vidbatch_clip", "vidbatch_clip": "naive_clip",
             "vidbatch_frame": "naive_frame", "vidbatch_clip_warm": "vidbatch_clip",
             "vidbatch_frame_warm": "vidbatch_frame"}
    if pairs.get(name) in outputs:
        row["cos_min_vs_" + pairs[name]] = vidbatch_jobs.cosine_min(emb, outputs[pairs[name]])


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                  if ln.startswith("model name")), platform.processor())
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "mem_gib": round(int(mem) / 2**20, 1),
            "bf16": cpu_has_bf16() is True, "commit": commit,
            "python": platform.python_version(), "loadavg_start": os.getloadavg()}


def prepare_data(args, jobs: list[str]) -> dict:
    manifest, paths = videos.ensure_videos(args.videos, args.seconds, args.cores,
                                           getattr(args, "rows", None))
    archs = {JOBS[j]["arch"] for j in jobs}
    with open(manifest, newline="") as f:  # the manifest's ids, for the naive loop's rows
        ids = [row["video_id"] for row in csv.DictReader(f)]
    return {"manifest": str(manifest), "paths": [str(p) for p in paths], "ids": ids,
            "weights": {a: str(videos.ensure_weights(a)) for a in archs}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=96, help="videos in the data set")
    p.add_argument("--seconds", type=int, default=10, help="length of each video")
    p.add_argument("--rows", type=int, default=None, help="manifest rows, cycling through "
                   "the --videos files (distinct ids): scale runs without more files")
    p.add_argument("--repeats", type=int, default=3, help="runs of every contender")
    p.add_argument("--jobs", default="clip,frame,decode", help="clip,frame,decode")
    p.add_argument("--only", default="", help="families or names, e.g. naive,vidbatch")
    p.add_argument("--batch-size", type=int, default=8, help="videos per forward pass "
                   "(vidbatch, model bound, ray-read-videos x frames)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="CPUs given to Ray and "
                   "to the decode bound's process pool")
    p.add_argument("--model-threads", type=int, default=os.cpu_count(),
                   help="torch threads of the model bound")
    p.add_argument("--model-streams", type=int, default=None, help="batch slices the model "
                   "bound runs at once; default: what vidbatch's replica would (one per "
                   "torch thread on CPU)")
    p.add_argument("--bound-iters", type=int, default=5, help="timed batches of the bound")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="bf16 "
                   "contenders: auto = only if the CPU has bf16 instructions (avx512_bf16, "
                   "amx_bf16, Arm bf16: pipeline.model.runtime.cpu_has_bf16)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to `vidbatch submit --set` (knob sweeps)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    jobs = [j for j in args.jobs.split(",") if j]
    info = machine()
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and info["bf16"])
    contenders = plan(jobs, [o for o in args.only.split(",") if o], bf16)
    if not bf16:
        print("bf16 contenders skipped (no avx512_bf16/amx_bf16/bf16 in /proc/cpuinfo, or --bf16 "
              "off); --bf16 on runs them anyway")
    data = prepare_data(args, jobs)
    runs, outputs = [], {}
    for r in range(args.repeats):
        for c in contenders:
            row = run_one(c, args, data, r, outputs)
            runs.append(row)
            print(report.one_line(row), flush=True)
    summary = report.summarise(runs)
    ratios = report.ratios(runs, args.repeats)
    info["loadavg_end"] = os.getloadavg()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    settings = {k: v for k, v in vars(args).items()}
    out.write_text(json.dumps({"machine": info, "settings": settings, "summary": summary,
                               "ratios": ratios, "runs": runs}, indent=1, default=float))
    print(report.markdown(summary, ratios, info, args))
    print(f"\nall runs: {out}")
    return 1 if any("failed" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
