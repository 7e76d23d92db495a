"""How a replica runs its network: device, precision, torch threads and streams.

Shared by every task's replica; the functions that the driver calls to lay out replicas
(:func:`auto_streams`, :func:`stream_threads`) import no torch.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# CPU flags of bf16 arithmetic: x86 (AVX-512 BF16, AMX) and Arm (FEAT_BF16).
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """How one replica runs: resolved once per job (``pipeline.infer.layout``)."""

    precision: str = "fp32"  # fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    channels_last: bool = True
    threads: int = 0  # torch threads; 0 leaves torch's default
    streams: int = 1  # batch slices run at once, each with threads // streams torch threads


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this machine's CPU computes in bf16 natively; None when it cannot tell."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return None
    return bool(flags & BF16_CPU_FLAGS)


def bf16_cpu_warning(precision: str, device: str) -> str | None:
    """A warning for ``precision: bf16`` on a CPU without bf16 instructions: autocast
    then emulates it and runs far slower than fp32 (benchmarks/README.md)."""
    if precision != "bf16" or device != "cpu" or cpu_has_bf16() is not False:
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
    decode task holds). benchmarks/README.md (Streams) has the measurements.
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


class Streams:
    """Runs a function over slices of a batch at once, one thread per stream, with the
    torch threads split among them (:func:`stream_threads`)."""

    def __init__(self, runtime: Runtime):
        import torch

        self.count = max(1, runtime.streams)
        threads = runtime.threads if runtime.threads > 0 else torch.get_num_threads()
        per_stream = stream_threads(threads, self.count)
        if runtime.threads > 0 or self.count > 1:
            torch.set_num_threads(per_stream)
        # Each stream's thread sets its thread count itself: OpenMP keeps it per thread.
        self._pool = ThreadPoolExecutor(self.count, initializer=torch.set_num_threads,
                                        initargs=(per_stream,),
                                        thread_name_prefix="stream") \
            if self.count > 1 else None

    def map(self, fn: Callable[[np.ndarray], np.ndarray], items: np.ndarray) -> np.ndarray:
        """``fn`` over consecutive slices of ``items`` (one per stream), concatenated in
        input order."""
        parts = min(self.count, len(items))
        if parts <= 1:
            return fn(items)
        bounds = np.linspace(0, len(items), parts + 1).round().astype(int)
        slices = [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return np.concatenate(list(self._pool.map(fn, slices)))
