"""The model replica: turns batches of decoded clips into predictions and embeddings.

:class:`Predictor` is a plain callable class over ``dict[str, np.ndarray]`` batches; Ray
Data runs one per actor (``pipeline.run``), tests call it directly. It loads the model once
in ``__init__`` and runs it under ``torch.inference_mode``. Rows whose decode failed pass
through untouched, so every input row leaves as exactly one output row.
"""

from __future__ import annotations

import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.models import ModelCard, build_network, channels_first, split_head
from pipeline.sink import Batch, output_table


@dataclass(frozen=True, kw_only=True)
class InferSpec:
    card: ModelCard
    precision: str = "fp32"
    device: str = "auto"
    channels_last: bool = True
    top_k: int = 5
    embeddings: bool = True
    threads: int = 0  # torch threads; 0 leaves torch's default
    streams: int = 1  # batch slices run at once, each with threads // streams torch threads
    job: str = ""


# CPU flags of bf16 arithmetic: x86 (AVX-512 BF16, AMX) and Arm (FEAT_BF16).
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this machine's CPU computes in bf16 natively; None when it cannot tell."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return None
    return bool(flags & BF16_CPU_FLAGS)


def bf16_cpu_warning(spec: InferSpec, device: str) -> str | None:
    """A warning for ``precision: bf16`` on a CPU without bf16 instructions: autocast
    then emulates it and runs far slower than fp32 (benchmarks/README.md: an r3d_18
    batch took over 10 minutes against 32 s in fp32 on an AVX2-only CPU)."""
    if spec.precision != "bf16" or device != "cpu" or cpu_has_bf16() is not False:
        return None
    return (f"vidbatch: inference.precision is bf16 but this CPU ({platform.node()}) has no "
            "bf16 instructions (avx512_bf16, amx_bf16); bf16 runs much slower than fp32 "
            "here. Use precision: fp32 on this machine.")


def auto_streams(threads: int, batch_size: int, gpu: bool) -> int:
    """Streams per replica when the job spec leaves them to vidbatch: on CPU one per torch
    thread (at most one per video of a batch), on a GPU one.

    On CPU, independent single-threaded forward passes over slices of a batch keep every
    core busy, where one pass over the whole batch with several torch threads loses time
    at each operator's barrier (a thread waits for the slowest, or for a core that a
    decode task holds). Measured on 2 cores, batch 8: 2 streams x 1 thread ran a batch in
    0.89-0.94x the time of 1 stream x 2 threads (r3d_18, idle or beside a decoding
    process; resnet18 0.88x), and the r3d_18 job 6 % faster (benchmarks/README.md,
    Streams).
    """
    return 1 if gpu else max(1, min(threads, batch_size))


def stream_threads(threads: int, streams: int) -> int:
    """torch threads of each of a replica's ``streams`` when it has ``threads``."""
    return max(1, threads // max(1, streams))


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("inference.device is cuda but this replica sees no GPU; use auto")
    return requested


class Predictor:
    """Runs one model replica. Ray constructs it once per actor."""

    def __init__(self, spec: InferSpec):
        import torch

        self.spec = spec
        self.streams = max(1, spec.streams)
        threads = spec.threads if spec.threads > 0 else torch.get_num_threads()
        per_stream = stream_threads(threads, self.streams)
        if spec.threads > 0 or self.streams > 1:
            torch.set_num_threads(per_stream)
        # Each stream's thread sets its thread count itself: OpenMP keeps it per thread.
        self._pool = ThreadPoolExecutor(self.streams, initializer=torch.set_num_threads,
                                        initargs=(per_stream,),
                                        thread_name_prefix="stream") \
            if self.streams > 1 else None
        self.device = torch.device(pick_device(spec.device))
        warning = bf16_cpu_warning(spec, self.device.type)
        if warning:
            print(warning, file=sys.stderr, flush=True)  # Ray forwards it to the driver
        body, head = split_head(build_network(spec.card))
        self.clip_model = spec.card.kind == "clip"
        self.memory_format = None
        if spec.channels_last:
            self.memory_format = torch.channels_last_3d if self.clip_model else \
                torch.channels_last
        body = body.to(self.device).eval()
        if self.memory_format is not None:
            body = body.to(memory_format=self.memory_format)
        self.body, self.head = body, head.to(self.device).eval()
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[
            spec.precision]
        shape = (1, 3, 1, 1, 1) if self.clip_model else (1, 3, 1, 1)
        self.mean = torch.tensor(spec.card.mean, device=self.device).view(shape) * 255.0
        self.std = torch.tensor(spec.card.std, device=self.device).view(shape) * 255.0
        self.class_names = np.array(spec.card.class_names, dtype=object)

    def _prepare(self, frames):
        """uint8 ``(n, T, H, W, 3)`` -> normalised float ``(n, 3, T, H, W)`` or, for frame
        models, ``(n * T, 3, H, W)``."""
        import torch

        host = torch.from_numpy(frames)
        if self.device.type == "cuda":  # page-locked, so the copy runs asynchronously
            host = host.pin_memory()
        x = channels_first(host.to(self.device, non_blocking=True), self.clip_model)
        x = (x.float() - self.mean) / self.std
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        return x

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Per-video embeddings for uint8 frames ``(videos, clips, T, H, W, 3)``: one
        forward pass per stream over consecutive videos (the batch size is set in videos by
        the caller), in input order."""
        parts = min(self.streams, len(frames))
        if parts <= 1:
            return self._embed(frames)
        bounds = np.linspace(0, len(frames), parts + 1).round().astype(int)
        slices = [frames[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return np.concatenate(list(self._pool.map(self._embed, slices)))

    def _embed(self, frames: np.ndarray) -> np.ndarray:
        import torch

        videos, clips, t = frames.shape[:3]
        flat = frames.reshape(videos * clips, *frames.shape[2:])
        with torch.inference_mode(), torch.autocast(
                self.device.type, dtype=self.dtype or torch.float32,
                enabled=self.dtype is not None):
            f = self.body(self._prepare(flat)).float()
        per_video = clips if self.clip_model else clips * t
        return f.view(videos, per_video, -1).mean(dim=1).cpu().numpy()

    def classify(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (indices, softmax scores) for each embedding."""
        import torch

        with torch.inference_mode():
            logits = self.head(torch.from_numpy(embeddings).to(self.device)).float()
            k = min(self.spec.top_k, logits.shape[1])
            scores, idx = torch.softmax(logits, dim=1).topk(k, dim=1)
        return idx.cpu().numpy(), scores.cpu().numpy()

    def __call__(self, batch: Batch):
        ok = batch["status"] == "ok"
        n_ok = int(ok.sum())
        emb = topi = tops = None
        infer_s = np.full(len(ok), np.nan)
        if n_ok:
            t0 = time.perf_counter()
            try:
                emb = self.embed(batch["frames"][ok])
                topi, tops = self.classify(emb)
            except Exception as e:  # one bad batch must not end the job: its rows say why
                batch = dict(batch)
                batch["error"] = np.where(ok, f"inference: {type(e).__name__}: {e}"[:500],
                                          batch["error"])
                batch["status"] = np.where(ok, "error", batch["status"])
                ok, emb = np.zeros_like(ok), None
            infer_s[ok] = (time.perf_counter() - t0) / max(1, n_ok)
        return output_table(batch, ok, emb if self.spec.embeddings else None, topi, tops,
                            self.class_names, infer_s, self.spec)


def decoded_rows(batch: Batch, spec: InferSpec):
    """Output rows for decoded videos without running a model (``mode: decode_only``)."""
    ok = batch["status"] == "ok"
    return output_table(batch, ok, None, None, None, np.array([], dtype=object),
                        np.full(len(ok), np.nan), spec)
