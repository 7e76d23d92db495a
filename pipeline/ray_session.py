"""Connecting a driver to Ray, and disconnecting: one pair for inference and training.

Without an address a job starts its own local Ray (``resources.num_cpus``,
``object_store_mb``) with the dashboard on 127.0.0.1; with one it attaches to that cluster
as its driver; inside a driver that already runs Ray (tests, notebooks) it uses that one.
Only a Ray that :func:`connect` started or attached to is shut down by :func:`disconnect`.

A local Ray's metrics agent dies with it: a Prometheus that scrapes it (docs/monitoring.md)
would miss the counts that workers record in their last report interval.
``VIDBATCH_METRICS_LINGER_S`` keeps a local Ray up that many seconds after the job, for one
more report and scrape; unset, nothing waits. A cluster outlives its jobs and needs none.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.dashboard import dashboard_hint, protect_token
from pipeline.errors import ConfigError
from pipeline.paths import is_uri
from pipeline.spec import DecodeResourcesSpec

if TYPE_CHECKING:
    from pipeline.console import Console


@dataclass
class RayHandle:
    started_here: bool
    dashboard_url: str | None
    t0: float  # perf_counter when connecting began: the job's wall time counts from here
    started: datetime  # the same moment, UTC
    linger_s: float = 0.0  # kept up this long before a local Ray is shut down
    ready: float = field(default_factory=time.time)  # Unix time when Ray was connected
    logs_dir: str | None = None  # this node's Ray session logs, when there is one here


METRICS_LINGER_ENV = "VIDBATCH_METRICS_LINGER_S"
# A local Ray keeps this many idle workers beyond its CPUs before it stops them. A job's
# zero-CPU tasks (manifest reads waiting at their gate, writes) and its actors need more
# workers than CPUs; at Ray's default (the CPUs) an idle one was stopped within a second
# and a new one started soon after, 75 worker processes in 200 s on 2 cores, each
# costing seconds of CPU to start (benchmarks/README.md, "Manifests of 1, 10 and 100
# million rows"). A cluster node's CPUs usually outnumber such tasks; where they do not,
# its raylet takes the same setting from RAY_num_workers_soft_limit.
IDLE_WORKERS_ABOVE_CPUS = 8
# Task results up to this size travel inline, through their owner (the driver), instead of
# the object store. Ray's default is 100 KiB, which takes in a block of a few hundred rows;
# Ray 2.60's driver then kept each write task's inlined input rows after the task was done:
# ~60 KB per write task, ~12 MiB per 100,000 rows, for good (benchmarks/README.md,
# "Manifests of 1, 10 and 100 million rows"). Blocks in the object store also count towards
# Ray Data's backpressure, which inline ones do not. cluster/Dockerfile sets the same for a
# cluster (RAY_max_direct_call_object_size).
INLINE_RESULT_BYTES = 4096


def metrics_linger_s() -> float:
    """Seconds to keep a local Ray up after its job (``VIDBATCH_METRICS_LINGER_S``)."""
    value = os.environ.get(METRICS_LINGER_ENV, "").strip()
    try:
        seconds = float(value or 0)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise ConfigError(f"{METRICS_LINGER_ENV}={value!r} is not a number of seconds from 0 "
                          "to 3600; set it to at least RAY_metrics_report_interval_ms / 1000 "
                          "plus Prometheus's scrape_interval (e.g. 25), or unset it")
    return seconds


def connect(resources: DecodeResourcesSpec, address: str | None,
            log: Callable[[str], None], console: Console | None = None) -> RayHandle:
    """Attach to the cluster at ``address`` as its driver, or start a local Ray. With a
    quiet ``console`` (:mod:`pipeline.console`), workers' output stays in their log files
    (the dashboard shows them) instead of being printed by this driver, and the driver's
    own log moves into the session's logs."""
    import ray

    t0, started = time.perf_counter(), datetime.now(timezone.utc)
    if ray.is_initialized():
        return RayHandle(False, None, t0, started)
    quiet = console is not None and console.quiet
    if address:
        ctx = ray.init(address=address, log_to_driver=not quiet)
        return _ready(RayHandle(True, dashboard_url(ctx), t0, started), ctx, console)
    # address="local": always a new Ray for this job, even when another one (say from
    # `vidbatch up`) runs on this machine; joining that one is what --address auto is for.
    linger = metrics_linger_s()
    mb = resources.object_store_mb
    cpus = resources.num_cpus or os.cpu_count() or 1
    ctx = ray.init(address="local", num_cpus=resources.num_cpus, include_dashboard=True,
                   dashboard_host="127.0.0.1", log_to_driver=not quiet,
                   object_store_memory=mb * 2**20 if mb else None,
                   _system_config={"num_workers_soft_limit": cpus + IDLE_WORKERS_ABOVE_CPUS,
                                   "max_direct_call_object_size": INLINE_RESULT_BYTES})
    protect_token()  # Ray creates the token while it starts
    url = dashboard_url(ctx)
    log("started a local Ray; " + (dashboard_hint(url) if url else "dashboard: not available"))
    return _ready(RayHandle(True, url, t0, started, linger), ctx, console)


def _ready(handle: RayHandle, ctx, console: Console | None) -> RayHandle:
    session = (getattr(ctx, "address_info", None) or {}).get("session_dir")
    if session and (Path(session) / "logs").is_dir():
        handle.logs_dir = str(Path(session) / "logs")
    if console is not None:
        console.adopt(handle.logs_dir)
    return handle


def disconnect(handle: RayHandle) -> None:
    """Shut down the Ray that :func:`connect` started or attached to (not one it found)."""
    import ray

    if handle.started_here:
        time.sleep(handle.linger_s)
        ray.shutdown()


def dashboard_url(ctx) -> str | None:
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url and not is_uri(url) else url
