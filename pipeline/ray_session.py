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

from pipeline.errors import ConfigError
from pipeline.paths import is_uri
from pipeline.spec import DecodeResourcesSpec


@dataclass
class RayHandle:
    started_here: bool
    dashboard_url: str | None
    t0: float  # perf_counter when connecting began: the job's wall time counts from here
    started: datetime  # the same moment, UTC
    linger_s: float = 0.0  # kept up this long before a local Ray is shut down
    ready: float = field(default_factory=time.time)  # Unix time when Ray was connected


METRICS_LINGER_ENV = "VIDBATCH_METRICS_LINGER_S"


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
            log: Callable[[str], None]) -> RayHandle:
    """Attach to the cluster at ``address`` as its driver, or start a local Ray."""
    import ray

    t0, started = time.perf_counter(), datetime.now(timezone.utc)
    if ray.is_initialized():
        return RayHandle(False, None, t0, started)
    if address:
        ctx = ray.init(address=address, log_to_driver=True)
        return RayHandle(True, dashboard_url(ctx), t0, started)
    # address="local": always a new Ray for this job, even when another one (say from
    # `vidbatch up`) runs on this machine; joining that one is what --address auto is for.
    linger = metrics_linger_s()
    mb = resources.object_store_mb
    ctx = ray.init(address="local", num_cpus=resources.num_cpus, include_dashboard=True,
                   dashboard_host="127.0.0.1",
                   object_store_memory=mb * 2**20 if mb else None)
    protect_token()  # Ray creates the token while it starts
    url = dashboard_url(ctx)
    log(f"started a local Ray; dashboard: {url or 'not available'}")
    return RayHandle(True, url, t0, started, linger)


def token_path() -> Path:
    """Where Ray keeps its authentication token (``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def protect_token() -> None:
    """Make Ray's token readable by its owner only: Ray 2.60 writes it world-readable
    (0644), and whoever reads it may submit jobs to every Ray this user starts."""
    path = token_path()
    if path.is_file() and path.stat().st_mode & 0o077:
        path.chmod(0o600)


def disconnect(handle: RayHandle) -> None:
    """Shut down the Ray that :func:`connect` started or attached to (not one it found)."""
    import ray

    if handle.started_here:
        time.sleep(handle.linger_s)
        ray.shutdown()


def dashboard_url(ctx) -> str | None:
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url and not is_uri(url) else url
