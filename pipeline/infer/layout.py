"""The replica layout of a job: GPUs, torch threads and streams per replica.

Resolved once per job on the driver, from the spec and the cluster that Ray reports, then
handed to the plan's description and to every replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.model.runtime import Runtime, auto_streams
from pipeline.spec import JobSpec


@dataclass(frozen=True)
class ReplicaLayout:
    gpus: float  # per replica
    threads: int  # torch threads per replica
    streams: int  # batch slices a replica runs at once

    def runtime(self, spec: JobSpec) -> Runtime:
        """How each replica runs, from ``inference`` and this layout."""
        inf = spec.inference
        return Runtime(precision=inf.precision,
                       device=inf.device if self.gpus > 0 else "cpu",
                       channels_last=inf.channels_last, threads=self.threads,
                       streams=self.streams)


def gpus_per_replica(spec: JobSpec, cluster_gpus: float) -> float:
    want = spec.resources.gpus_per_replica
    if want == "auto":
        return 1.0 if cluster_gpus >= 1 else 0.0
    if want > 0 and cluster_gpus < want:
        raise ConfigError(f"resources.gpus_per_replica is {want} but the cluster has "
                          f"{cluster_gpus:g} GPUs; set it to auto or 0, or add GPU nodes")
    return float(want)


def replica_threads(spec: JobSpec, gpus: float, node_cpus: list[int]) -> int:
    """torch threads per replica: ``resources.threads_per_replica``, else on GPU replicas
    their CPUs, and on CPU replicas the cores of a node shared by the replicas on it
    (``node_cpus``: the CPUs of each live node).

    A CPU replica is the bottleneck of a CPU-only job; decode tasks then run beside it on
    the same cores (they need a fraction of its CPU time): benchmarks/README.md, Knobs.
    """
    res = spec.resources
    if res.threads_per_replica:
        return res.threads_per_replica
    if gpus > 0 or not node_cpus:
        return max(1, int(res.cpus_per_replica))
    per_node = math.ceil(res.replicas / len(node_cpus))
    return max(1, int(res.cpus_per_replica), max(node_cpus) // per_node)


def resolve_layout(spec: JobSpec) -> ReplicaLayout:
    """The layout on the Ray this driver is connected to."""
    import ray

    gpus = gpus_per_replica(spec, ray.cluster_resources().get("GPU", 0))
    nodes = [int(n["Resources"]["CPU"]) for n in ray.nodes()
             if n.get("Alive") and n["Resources"].get("CPU")]
    threads = replica_threads(spec, gpus, nodes)
    streams = spec.resources.streams_per_replica or auto_streams(
        threads, spec.inference.batch_size, gpus > 0)
    return ReplicaLayout(gpus, threads, streams)
