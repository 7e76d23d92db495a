"""Feeding GPUs: the CPU cores a job needs per GPU replica, planned before it runs.

On a GPU the model is rarely the limit: decoding is (docs/cluster.md, "How many CPU cores
feed one GPU"). Before a GPU job starts, and in every dry run, vidbatch works out:

* the job's **decode cost per video**: CPU core-seconds, measured by decoding a few of the
  manifest's first rows in the confined decode child (or, when none can be read here, a
  generated 10-s 640x360 H.264 video), with the job's own sampling and decoder. With
  ``decode_on: replica`` the decode tasks' share is the probe, and the replica's own
  decoding on NVDEC adds :data:`REPLICA_DECODE_CORE_S`;
* the **model's rate** on one GPU: its FLOPs per video (:func:`model_gflop`: the task's
  replica under torch's FLOP counter) over what the accelerator sustains (:data:`TFLOPS`,
  measured on an H100, scaled by peak for others);
* the **cores per GPU replica** that keep it busy (rate x cost) against the cores the
  cluster has per GPU, and so how busy its GPUs would be. Below :data:`BUSY_ENOUGH` the
  plan says so and names the fixes.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.decode.audio import AudioSpec
from pipeline.decode.base import DecodeSpec
from pipeline.decode.sequence import SequenceSpec
from pipeline.errors import VideoError
from pipeline.paths import local_path

# TFLOP/s one GPU sustains on vidbatch's small convolutional nets (bf16 autocast, batch
# 32, channels-last): measured on an H100, r3d_18 at 112 px, 1,760 videos/s x 81 GFLOP
# (benchmarks/README.md, GPU); other accelerators scaled by their dense bf16/fp16 peak.
TFLOPS = {"H100": 142.0, "H200": 142.0, "A100": 45.0, "A10G": 18.0, "L4": 17.5,
          "L40S": 52.0, "V100": 18.0, "T4": 9.0}
ASSUMED = "H100"
# CPU core-seconds per video a GPU replica spends decoding it on NVDEC (decode_on:
# replica): measured on an H100 with 2 cores, 16 frames spread over 10-s 640x360 H.264.
REPLICA_DECODE_CORE_S = 0.045
# Cores per GPU assumed when the cluster is not known yet (a dry run): NeMo Curator's
# benchmark nodes have 16 per GPU; GPU nodes have 8 to 32.
ASSUMED_CORES_PER_GPU = 16
BUSY_ENOUGH = 0.5  # below it the plan warns
PROBE_ROWS = 3
PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FeedPlan:
    decode_core_s: float | None  # per video, in decode tasks; None: nothing decoded here
    measured_on: str  # what the decode cost was measured on
    replica_core_s: float  # per video, decoding on the replica (0 with decode_on: tasks)
    gflop: float | None  # the model's GFLOP per video (None: unknown for this task)
    accelerator: str  # the one whose rate is used
    accelerator_known: bool  # False: assumed (a dry run, or a type vidbatch has no figure for)
    cores_per_gpu: float  # what the cluster has per GPU (or ASSUMED_CORES_PER_GPU)
    cores_known: bool
    sound: bool = False  # the job decodes soundtracks, not frames

    @property
    def gpu_videos_per_s(self) -> float | None:
        if not self.gflop:
            return None
        return TFLOPS[self.accelerator] * 1000 / self.gflop

    @property
    def cores_needed(self) -> float | None:
        """CPU cores per GPU replica that keep its GPU busy."""
        rate = self.gpu_videos_per_s
        if rate is None or self.decode_core_s is None:
            return None
        return rate * (self.decode_core_s + self.replica_core_s)

    @property
    def busy(self) -> float | None:
        """How busy a GPU would be, at most: the cores it has over the cores it needs."""
        need = self.cores_needed
        if need is None:
            return None
        return 1.0 if need <= self.cores_per_gpu else self.cores_per_gpu / need

    def lines(self, decode_on: str) -> list[str]:
        where = "in decode tasks" if decode_on == "tasks" else \
            f"probing in decode tasks, + {self.replica_core_s:g} on the replica (NVDEC)"
        if self.decode_core_s is None:
            return [f"  feed   : no video decoded here (tried the manifest's first rows and "
                    f"{self.measured_on}): the cores per GPU are not planned"]
        out = [f"  feed   : decode {self.decode_core_s:.3g} CPU core-s per video {where} "
               f"(measured on {self.measured_on})"]
        rate, need = self.gpu_videos_per_s, self.cores_needed
        if rate is None:
            out.append("  feed   : the model's rate on a GPU is unknown for this task; "
                       "docs/cluster.md has measured rates")
            return out
        acc = self.accelerator + ("" if self.accelerator_known else " (assumed)")
        have = f"{self.cores_per_gpu:g}" + ("" if self.cores_known else " (assumed)")
        out.append(f"  feed   : model {self.gflop:.3g} GFLOP per video, ~{rate:,.0f} "
                   f"videos/s on one {acc}: {need:,.0f} CPU cores per GPU replica keep it "
                   f"busy; the cluster has {have} per GPU -> GPUs ~{self.busy:.0%} busy")
        if self.busy is not None and self.busy < BUSY_ENOUGH:
            fixes = ["sampling.snap_to_keyframes: true", "fewer frames_per_clip or clips"]
            if decode_on == "tasks":
                fixes.append("resources.decode_on: replica (NVDEC)")
            if self.sound:  # decoding a soundtrack costs more than this model on a CPU
                fixes = ["fewer windows (sampling.max_windows)", "CPU replicas "
                         "(resources.gpus_per_replica: 0), which this model keeps up with"]
            fixes.append("CPU-only nodes for the decode tasks")
            out.append(f"  WARNING: the GPUs would be under {BUSY_ENOUGH:.0%} busy, waiting "
                       f"for decoding; fixes: {'; '.join(fixes)} (docs/cluster.md)")
        return out

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "gpu_videos_per_s": self.gpu_videos_per_s,
                "cores_needed_per_gpu": self.cores_needed, "gpu_busy": self.busy}


def accelerator_of(resources: dict[str, float]) -> str | None:
    """The accelerator type Ray reports (``accelerator_type:H100``) that vidbatch has a
    figure for, or None."""
    for key in resources:
        if key.startswith("accelerator_type:"):
            name = key.split(":", 1)[1].upper()
            for known in sorted(TFLOPS, key=len, reverse=True):  # L40S before L4
                if name.startswith(known):
                    return known
    return None


def _cpu_seconds(pid: int | None) -> float | None:
    """CPU time of a process's threads so far, in nanoseconds' resolution (each thread's
    /proc schedstat: the ticks of /proc/PID/stat are 10 ms, a short video's whole decode);
    None where unknown."""
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError, TypeError):
        return None


def reference_video() -> Path:
    """A generated 10-s 640x360 H.264 video (30 fps, a keyframe every 2 s, textured moving
    content, as the benchmarks use) with a noise soundtrack, cached under the system's
    temporary directory."""
    import numpy as np

    from pipeline.synth import moving_texture, write_video

    path = Path(tempfile.gettempdir()) / "vidbatch-reference-640x360-10s-sound.mp4"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.mp4")
        sound = np.random.default_rng(0).uniform(-0.3, 0.3, 16000 * 10).astype(np.float32)
        write_video(partial, moving_texture(300, 360, 640, seed=0), gop=60, audio=sound)
        partial.replace(path)
    return path


@dataclass(frozen=True)
class DecodeCost:
    core_s: float | None  # per video; None: nothing decodes here
    measured_on: str
    path: str | None  # a video that decoded (for the model's FLOPs)
    frames: int  # distinct frames the job samples from it


def decode_cost(paths: list[str], spec, rows: int = PROBE_ROWS) -> DecodeCost:
    """CPU core-seconds per video of decoding with ``spec``, in the confined child (whose
    CPU time is read from /proc; wall time where it cannot be), over the first ``rows`` of
    ``paths`` that decode; a generated reference video when none does."""
    from pipeline.decode.worker import DecodeWorker

    worker = DecodeWorker(PROBE_TIMEOUT_S, spec.memory_mb)
    spec = replace(spec, timeout_s=PROBE_TIMEOUT_S)
    try:
        costs, first = _costs(worker, paths, spec, rows)
        on = f"{len(costs)} of the manifest's first rows"
        if not costs:
            costs, first = _costs(worker, [str(reference_video())], spec, 1)
            on = "a generated 10-s 640x360 H.264 video"
        if not costs:
            return DecodeCost(None, on, None, 0)
        path, video = first
        frames = len(set(video.indices.tolist())) if getattr(video, "indices", None) \
            is not None else 0
        return DecodeCost(sum(costs) / len(costs), on, path, frames)
    finally:
        worker.close()


# The confined worker's method that decodes each kind of spec.
_METHODS = {DecodeSpec: "decode", AudioSpec: "decode_audio", SequenceSpec: "decode_sequence"}


def _costs(worker, paths: list[str], spec, rows: int) -> tuple[list[float], tuple | None]:
    """Each decodable path's cost, up to ``rows`` of them, and the first ``(path, decoded)``.
    Each is decoded twice and the second is measured: the first pays for the child's start
    and the file's first read."""
    decode = getattr(worker, _METHODS[type(spec)])
    costs: list[float] = []
    first = None
    for path in paths:
        if len(costs) >= rows:
            break
        try:
            decode(path, spec)
            before, t0 = _cpu_seconds(worker.pid), time.perf_counter()
            decoded = decode(path, spec)
        except VideoError:
            continue
        after = _cpu_seconds(worker.pid)
        costs.append(after - before if before is not None and after is not None
                     else time.perf_counter() - t0)
        first = first or (path, decoded)
    return costs, first


def model_gflop(task, spec, decode, path: str, frames: int) -> float | None:
    """GFLOP per video of the job's model on its input: the task's replica, with random
    weights of the same architecture on the CPU, run under torch's FLOP counter on
    ``path`` decoded as the job decodes it (in the confined child): one clip, scaled to
    the job's clips; for models that take frames one by one (a canvas: detection) one
    frame, scaled to the ``frames`` the job samples from that video. None for a task that
    decodes every frame (shots)."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.model.runtime import Runtime

    if not isinstance(decode, (DecodeSpec, AudioSpec)):
        return None
    model_spec = spec.model.model_copy(update={"weights": "none", "labels": None})
    none = spec.model_copy(update={"model": model_spec})
    scale = 1
    decode = replace(decode, timeout_s=decode.timeout_s or PROBE_TIMEOUT_S)
    if isinstance(decode, DecodeSpec):
        scale = max(1, frames) if decode.canvas else decode.clips
        decode = replace(decode, clips=1, frames=1 if decode.canvas else decode.frames,
                         probe_only=False)
    rows = {"video_id": np.array(["probe"], dtype=object),
            "path": np.array([path], dtype=object), "label": np.array([None], dtype=object),
            "start_s": np.array([np.nan]), "end_s": np.array([np.nan])}
    batch = task.decode_stage(rows, spec=decode)
    if batch["status"][0] != "ok":
        return None
    cls, kwargs = task.replica(none, task.resolve(none), Runtime(
        precision="fp32", device="cpu", threads=torch.get_num_threads()))
    with FlopCounterMode(display=False) as counter:
        cls(**kwargs)(batch)
    return counter.get_total_flops() / 1e9 * scale


def plan_feed(plan, cluster: dict[str, float] | None = None) -> FeedPlan:
    """The job's feed plan; ``cluster``: what Ray reports (``ray.cluster_resources()``),
    None in a dry run (then an H100 and :data:`ASSUMED_CORES_PER_GPU` are assumed)."""
    res = plan.spec.resources
    on_replica = getattr(res, "decode_on", "tasks") == "replica"
    decode = replace(plan.decode, probe_only=True) if on_replica else plan.decode
    paths = [p for p in plan.todo.first_paths(50)
             if (local := local_path(p)) is not None and os.path.isfile(local)]
    cost = decode_cost(paths, decode)
    gflop = None
    if cost.path is not None:
        gflop = model_gflop(plan.task, plan.spec, plan.decode, cost.path, cost.frames)
    cluster = cluster or {}
    accelerator = accelerator_of(cluster)
    gpus, cpus = cluster.get("GPU", 0), cluster.get("CPU", 0)
    return FeedPlan(decode_core_s=cost.core_s, measured_on=cost.measured_on,
                    replica_core_s=REPLICA_DECODE_CORE_S if on_replica else 0.0,
                    gflop=gflop, accelerator=accelerator or ASSUMED,
                    accelerator_known=accelerator is not None,
                    cores_per_gpu=cpus / gpus if gpus else ASSUMED_CORES_PER_GPU,
                    cores_known=bool(gpus), sound=isinstance(plan.decode, AudioSpec))
