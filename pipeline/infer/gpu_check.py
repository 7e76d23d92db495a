"""Do the GPUs a job gives its replicas work? A replica given a GPU by Ray whose torch cannot
see it (a CPU-only torch in the cluster's image, a driver mismatch) would run on the CPU
with ``inference.device: auto``, quietly, on a GPU node that costs GPU prices.

Before a GPU job writes anything, one small task asks for the replicas' GPUs on the
cluster and reports what its torch sees (:func:`check_gpus`); a torch that sees no CUDA
device is a configuration error naming the fix. Each replica checks again as it starts
(:func:`refuse_unseen_gpu`), since an autoscaling cluster may bring its GPU nodes later.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.errors import ConfigError

CHECK_TIMEOUT_S = 60.0


def _look() -> dict[str, Any]:
    """What a process that Ray gave GPUs sees (runs in that process)."""
    import ray
    import torch

    return {"ray_gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch": torch.__version__, "torch_cuda_build": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
            "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0}


def unseen(seen: dict[str, Any]) -> str | None:
    """Why the GPUs Ray gave a process are of no use to its torch, or None."""
    if not seen["ray_gpu_ids"] or seen["cuda_available"]:
        return None
    build = (f"a CPU-only build ({seen['torch']})" if not seen["torch_cuda_build"] else
             f"torch {seen['torch']} (CUDA {seen['torch_cuda_build']}) sees no CUDA device")
    return (f"resources.gpus_per_replica: Ray gives each replica GPU(s) "
            f"{', '.join(seen['ray_gpu_ids'])} (CUDA_VISIBLE_DEVICES="
            f"{seen['cuda_visible_devices']}), but the replicas' torch is {build}: they would "
            "run on the CPU. Install a CUDA build of torch (and the NVIDIA driver) on the GPU "
            "nodes, or set resources.gpus_per_replica: 0")


def check_gpus(gpus: float, log, timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, Any]:
    """Run :func:`_look` in a task that asks for ``gpus`` GPUs, as a replica does. Raises
    :class:`ConfigError` when its torch sees no GPU; returns what it saw (``checked:
    False`` when no GPU node answered within ``timeout_s``: the replicas check themselves)."""
    import ray

    ref = ray.remote(num_cpus=0, num_gpus=gpus, max_retries=0)(_look).remote()
    ready, _ = ray.wait([ref], timeout=timeout_s)
    if not ready:
        ray.cancel(ref, force=True)
        log(f"  gpus   : no GPU node answered within {timeout_s:g} s (an autoscaler may "
            "still be adding one); each replica checks its GPU as it starts")
        return {"checked": False}
    seen = ray.get(ref)
    problem = unseen(seen)
    if problem:
        raise ConfigError(problem)
    return {"checked": True, **seen}


def refuse_unseen_gpu() -> None:
    """In a replica as it starts: raise when Ray gave it GPUs that its torch cannot see."""
    import ray

    if not ray.get_gpu_ids():
        return
    problem = unseen(_look())
    if problem:
        raise RuntimeError(problem)
