"""vidbatch's metrics through a real Prometheus, scraping the Ray a job runs on.

A Ray head of its own (``ray.cluster_utils.Cluster``, a Prometheus endpoint on a free
port, Ray's default report interval) and Debian's ``prometheus``, configured as
docs/monitoring.md says: Ray's service-discovery file of that session, here with a 1 s
scrape. The job runs as its own driver process (``vidbatch submit --address``). While it
runs, its counters are read back through Prometheus's HTTP API; once it has ended they
must equal the counts of the Parquet it wrote. Both servers are stopped at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import requests
import yaml
from conftest import free_port

from pipeline.synth import moving_texture, write_video

pytestmark = pytest.mark.slow
JOB = "metrics-test"
VIDEOS = 96
BROKEN = {"text.mp4": "not a video", "empty.mp4": ""}  # plus missing.mp4, never written
DASHBOARD = Path(__file__).resolve().parents[1] / "cluster" / "grafana" / \
    "vidbatch-dashboard.json"
# Past the last report of the job's workers (they flush theirs as they exit) and a scrape.
SETTLE_S = 60


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    found = shutil.which("prometheus")
    if not found:
        pytest.skip("prometheus is not on PATH: install Debian's package (apt-get install "
                    "-y prometheus; scripts/test_tools.sh does where it can) to run the "
                    "metrics test")
    return found


@pytest.fixture(scope="module")
def ray_head(prometheus_bin):
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": free_port(), "dashboard_agent_listen_port": free_port(),
        "metrics_export_port": free_port(), "object_store_memory": 300 * 2**20})
    try:
        c.wait_for_nodes()
        yield c
    finally:
        processes = [p.process for infos in c.head_node.all_processes.values()
                     for p in infos]
        c.shutdown()
        alive = [p.pid for p in processes if p.poll() is None]
        assert not alive, f"Ray processes left running: {alive}"


@pytest.fixture(scope="module")
def prometheus(prometheus_bin, ray_head, tmp_path_factory):
    """A Prometheus on a free port scraping the head's session, its URL."""
    root = tmp_path_factory.mktemp("prometheus")
    discovery = Path(ray_head.head_node.get_session_dir_path()) / \
        "prom_metrics_service_discovery.json"
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "ray", "file_sd_configs": [
                  {"files": [str(discovery)], "refresh_interval": "1s"}]}]}
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [prometheus_bin, f"--config.file={root / 'prometheus.yml'}",
         f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address={url[7:]}"],
        stdout=subprocess.DEVNULL, stderr=(root / "log").open("w"), start_new_session=True)
    try:
        _wait_until(lambda: _get(f"{url}/-/ready"), 60, "prometheus did not become ready")
        _wait_until(lambda: query(url, 'up{job="ray"}'), 60,
                    "prometheus found no Ray target in Ray's service-discovery file")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode is not None


def _get(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.ConnectionError:
        return False


def _wait_until(check, timeout: float, message: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(message)


def query(url: str, promql: str) -> dict[str, float]:
    """An instant query's result, ``{value of its only label (or ""): value}``."""
    r = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    out = {}
    for series in r.json()["data"]["result"]:
        labels = list(series["metric"].values())
        out[labels[0] if labels else ""] = float(series["value"][1])
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("metrics_videos")
    names = []
    for i in range(VIDEOS):
        names.append(f"v{i:02d}.mp4")
        write_video(root / names[-1], moving_texture(16, 48, 64, seed=i))
    for name, text in BROKEN.items():
        (root / name).write_text(text)
    names += [*BROKEN, "missing.mp4"]
    (root / "manifest.csv").write_text("path\n" + "\n".join(names) + "\n")
    return root


def write_job(videos: Path, out: Path) -> Path:
    spec = {"name": JOB, "manifest": str(videos / "manifest.csv"),
            "sampling": {"clips_per_video": 1, "frames_per_clip": 8, "short_side": 48,
                         "crop_size": 48},
            "model": {"arch": "r3d_18", "num_classes": 4},
            "inference": {"batch_size": 2},
            "resources": {"cpus_per_decode_task": 0.5, "videos_per_decode_task": 1},
            "output": {"path": str(out), "rows_per_file": 4},
            "max_error_fraction": 0.5}
    path = out.parent / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


COUNTS = {
    "status": f'sum by (status) (ray_vidbatch_videos_total{{vidbatch_job="{JOB}"}})',
    "stage": f'sum by (stage) (ray_vidbatch_errors_total{{vidbatch_job="{JOB}"}})',
    "written": f'sum(ray_vidbatch_rows_written_total{{vidbatch_job="{JOB}"}})',
    "decoded": f'sum(ray_vidbatch_decode_seconds_count{{vidbatch_job="{JOB}"}})',
    "inferred": f'sum(ray_vidbatch_infer_seconds_count{{vidbatch_job="{JOB}"}})',
}
QUEUE = f'sum(ray_data_obj_store_mem_internal_inqueue_blocks{{dataset=~"{JOB}_.*"}})'


def read_back(url: str) -> dict[str, dict[str, float]]:
    return {name: query(url, q) for name, q in COUNTS.items()}


def parquet_counts(out: Path) -> dict[str, dict[str, float]]:
    """The same figures, from the Parquet the job wrote."""
    files = f"{out}/*.parquet"
    sql = duckdb.connect()

    def grouped(expr: str, where: str = "true") -> dict[str, float]:
        rows = sql.execute(f"select {expr}, count(*) from '{files}' where {where} "
                           "group by 1").fetchall()
        return {k: float(n) for k, n in rows}

    def total(where: str) -> dict[str, float]:
        return {"": float(sql.execute(f"select count(*) from '{files}' where {where}")
                          .fetchone()[0])}

    return {"status": grouped("status"),
            "stage": grouped("split_part(error, ':', 1)", "error is not null"),
            "written": total("true"), "decoded": total("decode_s is not null"),
            "inferred": total("infer_s is not null")}


def test_counters_through_prometheus_equal_the_parquet(ray_head, prometheus, videos,
                                                       tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "submit", "--address", ray_head.address,
         str(write_job(videos, out))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    mid_run, queue_seen, t0 = None, False, time.time()
    while proc.poll() is None:
        seen = read_back(prometheus)
        queue_seen = queue_seen or bool(query(prometheus, QUEUE))
        if mid_run is None and sum(seen["status"].values()) > 0 and proc.poll() is None:
            mid_run = (time.time() - t0, seen)
        time.sleep(1)
    ended = time.time()
    log = proc.stdout.read()
    assert proc.returncode == 0, log
    print(f"job ran {ended - t0:.1f} s; first read back while it ran (s, counts): {mid_run}")
    assert mid_run is not None, "no vidbatch counter reached Prometheus while the job ran"
    assert sum(mid_run[1]["status"].values()) < VIDEOS + 3, "the job was over already"
    assert queue_seen, "Ray Data's queue gauge for the job's dataset never reached Prometheus"

    expected = parquet_counts(out)
    assert expected["status"] == {"ok": VIDEOS, "error": 3.0}
    assert set(expected["stage"]) == {"decode", "read"}
    final = None
    deadline = ended + SETTLE_S
    while time.time() < deadline and final != expected:
        final = read_back(prometheus)
        time.sleep(0.5)
    print(f"read back {time.time() - ended:.1f} s after the job ended: {final}")
    assert final == expected
    check_dashboard_queries(prometheus)


def check_dashboard_queries(url: str) -> None:
    """Every query of the Grafana dashboard is valid PromQL to this Prometheus, and those
    over vidbatch's metrics find the job (Ray Data's gauges may be gone after it)."""
    dashboard = json.loads(DASHBOARD.read_text())
    for expr in [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]:
        promql = (expr.replace("$SessionName", ".+").replace("$job", JOB)
                  .replace("$__rate_interval", "5m"))
        r = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
        assert r.ok and r.json()["status"] == "success", (promql, r.text)
        if "ray_vidbatch_" in promql:
            assert r.json()["data"]["result"], f"no data for the dashboard's {promql}"
