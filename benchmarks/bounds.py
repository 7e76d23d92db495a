"""The bounding stage of the detect and audio jobs (issue 21, target 3): each job's steady
rate against its two bounds, the model alone and its decoding alone, side by side in one
command.

    python benchmarks/bounds.py --repeats 3                      # detect and audio
    python benchmarks/bounds.py --jobs audio --repeats 1 --set inference.precision=bf16

The jobs are the shipped ones, ``jobs/detect.yaml`` (the demo's detector, 30 frames per
video, tracks) and ``jobs/speech.yaml`` (the demo's res8 keyword model, up to 60 one-second
windows, Silero VAD), with their checkpoints (``vidbatch train jobs/train_detect.yaml`` and
``jobs/train_speech.yaml`` write them), over generated videos of their kind that no
training saw (``--videos``: by default 96 detect and 480 audio videos; seeds from
300,000). Each repeat runs, each in its own process:

* ``model``: the task's own replica (``Task.replica``), built as a job builds it on this
  machine (``--cores`` torch threads, streams as the replica would choose), called on
  batches of ``inference.batch_size`` videos that were decoded beforehand by the task's
  own decode stage (real samples: a detector's cost depends on what it finds); one warm-up
  call, then ``--bound-batches`` timed calls (5 detect, 30 audio): videos / their time;
* ``decode``: the job with ``mode: decode_only`` (vidbatch's decode stage, no replica);
* ``job``: the job.

Steady rates as in ``run.py`` (``vidbatch_jobs.result``). Ratios per repeat, then the
median: the job over the slower bound (the target: >= 0.9), and over both stages sharing
the cores, ``1 / (1/model + 1/decode)`` (what a pipeline can reach where both run on the
same cores). Results go to ``benchmarks/results/bounds-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import videos  # noqa: E402
from procs import run_measured  # noqa: E402
from vidbatch_jobs import command, result  # noqa: E402

RESULTS = videos.BENCH_DIR / "results"
SEED = 300_000  # the demo sets train from 0 and 100,000, validate from 100,000 / 200,000
JOBS = {"detect": ("detect.yaml", "jobs/train_detect.yaml"),
        "audio": ("speech.yaml", "jobs/train_speech.yaml")}
# Videos per job unless --videos says: enough for ~2 minutes of steady state (detect:
# ~0.8 videos/s) or ~15 s (audio: ~30 videos/s; at 96 its steady window was ~3 s).
VIDEOS = {"detect": 96, "audio": 480}
BOUND_BATCHES = {"detect": 5, "audio": 30}  # timed calls of the model bound: ~25 s / ~10 s


def job_videos(job: str, count: int) -> Path:
    """``count`` generated videos of the job's kind (made once) and their manifest."""
    from pipeline.synth import write_manifest

    folder = videos.DATA / f"bounds_{job}" / str(count)
    manifest = folder / "manifest.csv"
    if manifest.exists():
        return manifest
    if job == "detect":
        from pipeline.tasks.detect.demo import make_detect_set

        rows, _ = make_detect_set(folder / "videos", count, seed=SEED)
    else:
        from pipeline.tasks.audio.demo import CLASSES, make_speech_set

        per_class = -(-count // len(CLASSES))
        rows = make_speech_set(folder / "videos", "val", per_class, seed=SEED)[:count]
    write_manifest(manifest, rows, prefix="videos/")
    return manifest


def job_spec(job: str, manifest: Path, folder: Path, cores: int) -> Path:
    """The shipped job over ``manifest``, its checkpoint's path made absolute, its output
    in ``folder/out``, on a local Ray of ``cores`` CPUs."""
    name, train = JOBS[job]
    shipped = REPO / "jobs" / name
    spec = yaml.safe_load(shipped.read_text())
    weights = (shipped.parent / spec["model"]["weights"]).resolve()
    if not weights.exists():
        sys.exit(f"{job}: the job's checkpoint {weights} is missing; train it first: "
                 f"`vidbatch train {train}` (README, the {job} demo)")
    spec.update(manifest=str(manifest), name=f"bench-{job}")
    spec["model"]["weights"] = str(weights)
    spec.setdefault("resources", {})["num_cpus"] = cores
    spec["output"] = {"path": str(folder / "out"), "if_exists": "overwrite"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def model_alone(spec_path: str, sets: list[str], cores: int, batches: int) -> dict:
    """The ``model`` bound (module docstring), in this process."""
    import numpy as np

    from pipeline.decode.stage import dense_samples
    from pipeline.infer.layout import ReplicaLayout
    from pipeline.infer.plan import plan_job
    from pipeline.infer.spec import load_jobspec
    from pipeline.model.runtime import auto_streams

    spec = load_jobspec(spec_path, sets)
    plan = plan_job(spec, "overwrite")
    plan.task.fetch(plan.model)
    size = spec.inference.batch_size
    streams = spec.resources.streams_per_replica or auto_streams(cores, size, False)
    replica_class, kwargs = plan.task.replica(spec, plan.model,
                                              ReplicaLayout(0.0, cores, streams).runtime(spec))
    rows, decoded = plan.todo, []
    for b in range(batches + 1):  # the manifest's first videos, from the top again if short
        part = rows.take(np.arange(b * size, (b + 1) * size) % rows.num_rows)
        batch = {c: part.column(c).to_numpy(zero_copy_only=False) for c in part.column_names}
        out = dense_samples(plan.task.decode_stage(batch, spec=plan.decode))
        bad = [e for e in out["error"] if e is not None]
        if bad:
            sys.exit(f"model bound: a video failed to decode: {bad[0]}")
        decoded.append(out)
    replica = replica_class(**kwargs)
    replica(decoded[0])  # warm-up: the allocator, oneDNN's kernels
    took = []
    for batch in decoded[1:]:
        t0 = time.perf_counter()
        replica(batch)
        took.append(time.perf_counter() - t0)
    return {"videos": size * batches, "steady_videos_per_s": size * batches / sum(took),
            "note": f"batch {size}, {cores} threads in {streams} stream(s), "
                    f"{spec.inference.precision}; per call {np.median(took):.2f} s"}


def run_contender(kind: str, job: str, spec: Path, args, repeat: int) -> dict:
    folder = spec.parent
    log = folder / f"{kind}_r{repeat}.txt"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray
    if kind == "model":
        res_file = folder / "model.json"
        batches = args.bound_batches or BOUND_BATCHES[job]
        argv = [sys.executable, __file__, "--model-bound", str(spec), "--cores",
                str(args.cores), "--bound-batches", str(batches), "--out",
                str(res_file), *[a for s in args.set for a in ("--set", s)]]
    else:
        argv = command(spec, [*(["mode=decode_only"] if kind == "decode" else []),
                              *args.set])
    m = run_measured(argv, log, env)
    lines = m.pop("lines")
    row = {"name": f"{job}_{kind}", "job": job, "kind": kind, "repeat": repeat,
           "wall_s": m["wall_s"],
           "cpu_core_s": m["cpu_core_s"], "peak_pss_mb": m["peak_pss_mb"]}
    if m["rc"] != 0:
        return {**row, "failed": " | ".join(line for _, line in lines[-5:])[-600:]}
    res = (json.loads(res_file.read_text()) if kind == "model" else result(folder, lines))
    return {**row, **{k: res.get(k) for k in ("videos", "ok", "steady_videos_per_s", "note",
                                                "stages")}}


def targets(job: str) -> list[tuple]:
    """The job's ratios, as ``report.RATIOS``: over the slower bound, and over both
    sharing the cores."""
    bounds = (f"{job}_model", f"{job}_decode")
    return [(f"{job}: steady / the slower bound", f"{job}_job", "steady", bounds, "steady",
             0.9),
            (f"{job}: steady / both sharing the cores", f"{job}_job", "steady",
             ("shared", *bounds), "steady", None)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", default="detect,audio", help="detect,audio")
    p.add_argument("--videos", type=int, default=None,
                   help=f"generated videos per job (default: {VIDEOS})")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", type=int, default=os.cpu_count(),
                   help="CPUs of each local Ray, torch threads of the model bound")
    p.add_argument("--bound-batches", type=int, default=None,
                   help=f"timed batches of the model bound (default: {BOUND_BATCHES})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="applied to every contender's job spec")
    p.add_argument("--model-bound", help=argparse.SUPPRESS)  # internal: one model bound
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model_bound:
        res = model_alone(args.model_bound, args.set, args.cores, args.bound_batches)
        Path(args.out).write_text(json.dumps(res))
        return 0
    jobs = [j for j in args.jobs.split(",") if j]
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        p.error(f"--jobs: unknown {unknown}; choose from {sorted(JOBS)}")
    specs = {j: job_spec(j, job_videos(j, args.videos or VIDEOS[j]),
                         RESULTS / "tmp" / f"bounds_{j}", args.cores) for j in jobs}
    runs = []
    for r in range(args.repeats):
        for job in jobs:
            for kind in ("model", "decode", "job"):
                row = run_contender(kind, job, specs[job], args, r)
                runs.append(row)
                rate = row.get("steady_videos_per_s")
                said = (f"{row.get('videos')} videos, wall {row['wall_s']:.1f} s, steady "
                        + (f"{rate:.2f} videos/s" if rate else "rate: none"))
                print(f"[{r}] {job} {kind}: {row.get('failed') or said}", flush=True)
    ok = [x for x in runs if "failed" not in x]
    print("\n| job | model alone | decode alone | job steady | / slower bound (target 0.9) | "
          "/ both sharing the cores | job wall s | per repeat |\n|---|---|---|---|---|---|---|---|")
    summary = {}
    for job in jobs:
        med = {k: report.median([x["steady_videos_per_s"] for x in ok
                                 if x["name"] == f"{job}_{k}"])
               for k in ("model", "decode", "job")}
        med["wall"] = report.median([x["wall_s"] for x in ok if x["name"] == f"{job}_job"])
        slower, shared = report.ratios(runs, args.repeats, targets(job))
        summary[job] = {**med, "of_slower": slower["value"], "of_shared": shared["value"],
                        "per_repeat": {"of_slower": slower["per_repeat"],
                                       "of_shared": shared["per_repeat"]}}
        f = report._f
        print(f"| {job} | {f(med['model'])} | {f(med['decode'])} | {f(med['job'])} | "
              f"**{f(slower['value'])}** | {f(shared['value'])} | {f(med['wall'])} | "
              + ", ".join(f(v) for v in slower["per_repeat"]) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bounds-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "summary": summary, "runs": runs},
                              indent=1, default=float))
    print(f"\nall runs: {out}")
    return 1 if any("failed" in x for x in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
