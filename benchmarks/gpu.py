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

import report
import run
from run import Contender


class GpuSampler(threading.Thread):
    """``(time, utilisation %, memory MiB)`` of GPU 0 every ``interval_s``."""

    def __init__(self, interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.interval_s, self.samples, self.stop = interval_s, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True).stdout.strip()
            try:
                util, mem = (float(v) for v in out.split(","))
            except ValueError:
                continue
            self.samples.append((time.time(), util, mem))


def utilisation(samples: list, start: float, end: float) -> dict:
    """GPU utilisation over ``[start, end]`` (the job's steady part)."""
    util = [u for t, u, _ in samples if start <= t <= end] or [u for _, u, _ in samples]
    mem = [m for _, _, m in samples]
    if not util:
        return {}
    return {"gpu_util_median": statistics.median(util), "gpu_util_mean": statistics.mean(util),
            "gpu_mem_peak_mib": max(mem)}


def parse_args(argv=None):
    cores = os.cpu_count() or 2
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=256)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32, help="videos per forward pass")
    p.add_argument("--decode-tasks", type=int, default=max(1, cores - 2),
                   help="concurrent decode tasks feeding the replica")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    if not torch.cuda.is_available() or not shutil.which("nvidia-smi"):
        print("no CUDA GPU (or no nvidia-smi) on this machine; run this on a GPU machine",
              file=sys.stderr)
        return 2
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
