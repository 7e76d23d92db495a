"""The clip job on a GPU machine (issue 5, "GPU"): is inference hidden behind decoding?

    python benchmarks/gpu.py --videos 256

On one machine with an NVIDIA GPU, in one command and on the same files as run.py:

1. ``vidbatch_decode_only_pyav``: vidbatch's decode stage alone (``mode: decode_only``),
   every core decoding: the rate the GPU job cannot beat;
2. ``vidbatch_clip_gpu``: the clip job (r3d_18, 1x16x112x112) with bf16 autocast,
   channels_last_3d, pinned host memory and ``--decode-tasks`` decode tasks feeding one
   replica on the GPU; ``nvidia-smi`` samples GPU utilisation every 0.5 s meanwhile;
3. ``naive_clip_gpu``: the loop people write first, with the model on the GPU (fp32).

Printed: videos/s end to end and steady for each, GPU utilisation (median and mean over
the vidbatch run's steady part), and the two target ratios: GPU job / decode-only (steady,
target >= 0.8) and GPU job / naive on the GPU (end to end, target >= 10). Results go to
``benchmarks/results/gpu-<time>.json``. Exits 2 without a GPU.

    python benchmarks/gpu.py --replica-decode DIR --videos 512 --cores 2

Decoding on the replica (``resources.decode_on: replica``), without Ray, on the .mp4 files
in DIR (cycled to ``--videos``): what one GPU replica of the clip job does, on ``--cores``
CPU cores (the process is pinned to them):

1. ``probe``: the decode tasks' share, the probe (torchcodec on the CPU, one thread):
   CPU core-seconds per video;
2. ``cpu_decode``: decoding in tasks, torchcodec on one CPU core: core-seconds per video;
3. ``nvdec``: the replica's decoder alone (:class:`ReplicaDecoder`, NVDEC): videos/s,
   frames/s, and the CPU cores its process used;
4. ``model``: r3d_18 (bf16, channels_last_3d) alone on decoded GPU frames: videos/s;
5. ``replica``: decode on NVDEC then the model, batch after batch, as the replica runs:
   videos/s, GPU utilisation (SM and decoder, from ``nvidia-smi``), CPU cores used.

Printed: each figure, and the CPU cores per GPU replica it takes to keep the GPU at the
``replica`` rate with decoding on the replica (probe + replica process) and with decoding
in tasks (``cpu_decode`` x rate). Needs only torch, torchcodec, numpy, pyarrow and
pydantic besides the ``pipeline`` package: no Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time


class GpuSampler(threading.Thread):
    """``(time, utilisation %, memory MiB, decoder utilisation %)`` of GPU 0 every
    ``interval_s``."""

    def __init__(self, interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.interval_s, self.samples, self.stop = interval_s, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used,"
                                  "utilization.decoder", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True).stdout.strip()
            try:
                util, mem, dec = (float(v) for v in out.split(","))
            except ValueError:
                continue
            self.samples.append((time.time(), util, mem, dec))


def utilisation(samples: list, start: float, end: float) -> dict:
    """GPU utilisation over ``[start, end]`` (the job's steady part)."""
    inside = [s for s in samples if start <= s[0] <= end] or samples
    if not inside:
        return {}
    util, dec = [s[1] for s in inside], [s[3] for s in inside]
    return {"gpu_util_median": statistics.median(util), "gpu_util_mean": statistics.mean(util),
            "decoder_util_mean": statistics.mean(dec),
            "gpu_mem_peak_mib": max(s[2] for s in samples)}


def parse_args(argv=None):
    cores = os.cpu_count() or 2
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=256)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32, help="videos per forward pass")
    p.add_argument("--decode-tasks", type=int, default=max(1, cores - 2),
                   help="concurrent decode tasks feeding the replica")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--replica-decode", metavar="DIR", help="measure decoding on the "
                   "replica on the .mp4 files in DIR instead (no Ray)")
    p.add_argument("--cores", type=int, default=2, help="--replica-decode: CPU cores the "
                   "process is pinned to")
    p.add_argument("--out", help="--replica-decode: also write the result here (JSON)")
    p.add_argument("--snap", action="store_true", help="--replica-decode: sampled frames "
                   "snapped to keyframes (sampling.snap_to_keyframes)")
    p.add_argument("--at-once", type=int, help="--replica-decode: videos the replica "
                   "decodes at once on the GPU (default: GPU_DECODES_AT_ONCE)")
    p.add_argument("--device", default="cuda", help="--replica-decode: cpu checks this "
                   "script on a machine without a GPU (its figures are not the GPU's)")
    return p.parse_args(argv)


def _timed(fn, *a):
    """``(result, wall s, CPU s of this process)``."""
    w, c = time.perf_counter(), time.process_time()
    out = fn(*a)
    return out, time.perf_counter() - w, time.process_time() - c


def replica_decode(args) -> dict:
    """The figures of decoding on the replica (see the module's docstring)."""
    import glob
    from dataclasses import replace

    import numpy as np
    import torch

    from pipeline.decode import on_replica
    from pipeline.decode.base import DecodeSpec
    from pipeline.decode.on_replica import ReplicaDecoder, probe_batch
    from pipeline.model.runtime import Runtime
    from pipeline.model.spec import ModelSpec
    from pipeline.model.zoo import model_card
    from pipeline.tasks.classify.replica import ClassifyConfig, ClassifyReplica

    cores = list(range(args.cores))
    os.sched_setaffinity(0, cores)
    torch.set_num_threads(args.cores)
    files = sorted(glob.glob(os.path.join(args.replica_decode, "*.mp4")))
    paths = [files[i % len(files)] for i in range(args.videos)]
    spec = DecodeSpec(clips=1, frames=16, stride=None, short_side=128, crop_size=112,
                      decoder="torchcodec", threads=1, snap_to_keyframes=args.snap)
    batches = [paths[i:i + args.batch_size] for i in range(0, len(paths), args.batch_size)]

    def rows(group):
        n = len(group)
        return {"video_id": np.array([f"v{i}" for i in range(n)], dtype=object),
                "path": np.array(group, dtype=object), "label": np.full(n, None, object),
                "start_s": np.full(n, np.nan),
                "end_s": np.full(n, np.nan)}

    dev = args.device
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    on_replica.GPU_DECODES_AT_ONCE = args.at_once or on_replica.GPU_DECODES_AT_ONCE
    out = {"gpu": torch.cuda.get_device_name(0) if dev == "cuda" else "none",
           "at_once": on_replica.GPU_DECODES_AT_ONCE, "cores": args.cores, "videos": len(paths),
           "files": len(files), "batch_size": args.batch_size,
           "sampling": "1x16, 128/112" + (", snapped to keyframes" if args.snap else "")}
    probe_batch(rows(files[:1]), spec)  # warm: loading torchcodec and FFmpeg
    # Each file is probed once (the probe's cost per video); the batches cycle its rows.
    unique, wall, cpu = _timed(probe_batch, rows(files), spec)
    out["probe_core_s_per_video"] = cpu / len(files)
    at = {f: i for i, f in enumerate(files)}
    probed = [{k: v[[at[f] for f in b]] for k, v in unique.items()} for b in batches]
    sample = files[:16]
    one = ReplicaDecoder(replace(spec), "cpu")
    _, wall, cpu = _timed(one, probe_batch(rows(sample), spec))
    out["cpu_decode_core_s_per_video"] = cpu / len(sample)
    nvdec = ReplicaDecoder(spec, dev, device_frames=True)
    nvdec(probed[0])  # warm: NVDEC decoders, CUDA context
    sync()
    decoded, wall, cpu = _timed(lambda: [nvdec(b) for b in probed])
    sync()
    names = {str(d) for b in decoded for d in b["decoder"]}
    ok = sum(int((b["status"] == "ok").sum()) for b in decoded)
    out.update(nvdec_videos_per_s=len(paths) / wall, nvdec_frames_per_s=len(paths) * 16 / wall,
               nvdec_cores=cpu / wall, nvdec_ok=ok, nvdec_decoders=sorted(names))
    card = model_card(ModelSpec(arch="r3d_18", weights="none"))
    replica = ClassifyReplica(ClassifyConfig.of(card, Runtime(
        precision=args.precision, device=dev, threads=args.cores), top_k=5))
    for b in decoded[:2]:
        replica(b)  # warm: cuDNN's algorithm choice
    sync()
    _, wall, _ = _timed(lambda: [replica(b) for b in decoded])
    sync()
    out["model_videos_per_s"] = len(paths) / wall
    del decoded
    sampler = GpuSampler(0.2)
    sampler.start()
    t0 = time.time()
    _, wall, cpu = _timed(lambda: [replica(nvdec(b)) for b in probed])
    sync()
    sampler.stop.set()
    sampler.join()
    rate = len(paths) / wall
    out.update(replica_videos_per_s=rate, replica_cores=cpu / wall,
               **utilisation(sampler.samples, t0, time.time()))
    out["cores_per_gpu_decode_on_replica"] = out["replica_cores"] + \
        out["probe_core_s_per_video"] * rate
    out["cores_per_gpu_decode_in_tasks_at_that_rate"] = \
        out["cpu_decode_core_s_per_video"] * rate
    out["cores_per_gpu_decode_in_tasks_at_model_rate"] = \
        out["cpu_decode_core_s_per_video"] * out["model_videos_per_s"]
    return out


def _print_result(result: dict, out: str | None) -> int:
    for k, v in result.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}", flush=True)
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    if args.replica_decode and args.device == "cpu":
        return _print_result(replica_decode(args), args.out)
    if not torch.cuda.is_available() or not shutil.which("nvidia-smi"):
        print("no CUDA GPU (or no nvidia-smi) on this machine; run this on a GPU machine",
              file=sys.stderr)
        return 2
    if args.replica_decode:
        return _print_result(replica_decode(args), args.out)
    import report
    import run
    from run import Contender

    gpu = torch.cuda.get_device_name(0)
    cores = os.cpu_count() or 2
    # What run.config() reads; the model bound is not run here.
    opts = argparse.Namespace(batch_size=args.batch_size, channels_last=True, cores=cores,
                              model_threads=cores, bound_iters=5, device="cuda", set=[])
    data = run.prepare_data(argparse.Namespace(videos=args.videos, seconds=args.seconds,
                                               cores=cores), ["clip"])
    decode = [f"resources.decode_parallelism={args.decode_tasks}", "resources.decoder=pyav"]
    plan = [
        (Contender("vidbatch_decode_only_pyav", "vidbatch", "decode"),
         ["mode=decode_only", *decode]),
        (Contender("vidbatch_clip_gpu", "vidbatch", "clip", args.precision),
         [*decode, "resources.gpus_per_replica=1", "inference.device=cuda"]),
        (Contender("naive_clip_gpu", "naive", "clip"), []),
    ]
    rows, outputs = [], {}
    for c, sets in plan:
        opts.set = sets
        sampler = GpuSampler()
        sampler.start()
        t0 = time.time()
        row = run.run_one(c, opts, data, 0, outputs)
        sampler.stop.set()
        sampler.join()
        if c.name == "vidbatch_clip_gpu" and "failed" not in row:
            steady = row.get("steady_window") or (t0, time.time())
            row.update(utilisation(sampler.samples, *steady))
        rows.append(row)
        print(report.one_line(row), flush=True)
    by = {r["name"]: r for r in rows}

    def ratio(a, ma, b, mb):
        x, y = by[a].get(f"{ma}_videos_per_s"), by[b].get(f"{mb}_videos_per_s")
        return x / y if x and y else None

    result = {
        "gpu": gpu, "cores": cores, "videos": args.videos, "settings": vars(args),
        "gpu_job_over_decode_only_steady": ratio("vidbatch_clip_gpu", "steady",
                                                 "vidbatch_decode_only_pyav", "steady"),
        "gpu_job_over_naive_gpu_e2e": ratio("vidbatch_clip_gpu", "e2e", "naive_clip_gpu",
                                            "e2e"),
        "runs": rows,
    }
    g = by["vidbatch_clip_gpu"]
    print(f"\n{gpu}, {cores} cores, {args.videos} videos, {args.precision}, batch "
          f"{args.batch_size}, {args.decode_tasks} decode tasks")
    print(f"GPU utilisation during the job: median {g.get('gpu_util_median', '–')} %, mean "
          f"{g.get('gpu_util_mean', '–')} %, peak memory {g.get('gpu_mem_peak_mib', '–')} MiB")
    for key, target in (("gpu_job_over_decode_only_steady", 0.8),
                        ("gpu_job_over_naive_gpu_e2e", 10.0)):
        v = result[key]
        print(f"{key}: {'–' if v is None else f'{v:.2f}'} (target >= {target})")
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    out = run.RESULTS / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"all runs: {out}")
    return 1 if any("failed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
