"""A real multi-node Ray on this machine: Jobs API submission, faults, nothing lost or doubled.

One head and one worker node, each its own raylet (``ray.cluster_utils.Cluster``), started
for this module and stopped at its end. Jobs run as separate driver processes (through the
Jobs API or ``vidbatch submit --address``), so this process never joins the cluster and the
session's local Ray is untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import yaml
from conftest import bounded, daemon_pids, free_port, spawn, stop_ray

from pipeline.cluster import _own_environment
from pipeline.synth import moving_texture, write_video

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
VIDEOS = 24


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    port = free_port()
    # The Jobs API runs its entrypoint (`python -m pipeline.cli`) with the PATH the head was
    # started with: put this interpreter first, as `vidbatch up` does, so that the test also
    # passes when pytest runs from a shell whose virtual environment is not activated.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PATH", _own_environment()["PATH"])
        # Free agent ports too: the default (52365) is held by any other Ray on this
        # machine, e.g. the test session's, and a head without its agent accepts no jobs.
        c = Cluster(initialize_head=True, connect=False, head_node_args={
            "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1",
            "dashboard_port": port, "dashboard_agent_listen_port": free_port(),
            "object_store_memory": 200 * 2**20})
        worker = c.add_node(num_cpus=2, object_store_memory=200 * 2**20,
                            dashboard_agent_listen_port=free_port())
    c.wait_for_nodes()
    c.dashboard_url = f"http://127.0.0.1:{port}"
    c.worker = worker
    _wait_for_dashboard(c.dashboard_url)
    yield c
    stop_ray(c.shutdown, daemon_pids(*c.list_all_nodes()))


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("RAY_AUTH_TOKEN") or (
        Path.home() / ".ray" / "auth_token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


def _wait_for_dashboard(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/api/version", headers=_auth_headers(), timeout=2).ok:
                return
        except (requests.ConnectionError, FileNotFoundError):
            pass
        time.sleep(1)
    raise TimeoutError(f"dashboard at {url} did not come up")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster_videos")
    t = np.arange(16000 * 2) / 16000  # a soundtrack for the audio task: a tone, 2 s
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for i in range(VIDEOS):
        write_video(root / f"v{i:02d}.mp4", moving_texture(32, 48, 64, seed=i), audio=tone)
    (root / "broken.mp4").write_text("not a video")
    names = [f"v{i:02d}.mp4" for i in range(VIDEOS)] + ["broken.mp4"]
    (root / "manifest.csv").write_text("path\n" + "\n".join(names) + "\n")
    return root


def write_job(root: Path, out: Path, name: str = "cluster", task: str = "classify") -> Path:
    spec = {"name": name, "manifest": str(root / "manifest.csv"),
            "sampling": {"clips_per_video": 2, "frames_per_clip": 8, "short_side": 48,
                         "crop_size": 48},
            "model": {"arch": "r3d_18", "num_classes": 4},
            "inference": {"batch_size": 2},
            "resources": {"cpus_per_decode_task": 0.5, "videos_per_decode_task": 1},
            "output": {"path": str(out), "rows_per_file": 1}}
    if task == "detect":  # the same videos through the detection task (random weights)
        spec.update(task="detect", sampling={"frames": 4},
                    model={"arch": "fasterrcnn_resnet18_fpn", "weights": "none"},
                    detect={"min_size": 64, "max_size": 96, "score_threshold": 0.0})
    if task == "audio":  # their soundtracks through the audio task (random weights)
        spec.update(task="audio", sampling={"hop_s": 0.5}, model={"arch": "res8"})
    path = out.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def assert_exactly_once(out: Path) -> None:
    ids = pq.read_table(out, columns=["video_id"])["video_id"].to_pylist()
    assert len(ids) == len(set(ids)) == VIDEOS + 1


def vidbatch(*args: str, **kw) -> subprocess.Popen:
    return spawn([sys.executable, "-m", "pipeline.cli", *args], **kw)


def test_two_nodes_are_up(cluster):
    nodes = requests.get(f"{cluster.dashboard_url}/nodes?view=summary",
                         headers=_auth_headers(), timeout=10).json()
    alive = [n for n in nodes["data"]["summary"] if n["raylet"]["state"] == "ALIVE"]
    assert len(alive) == 2


# classify, and audio for its own decode stage; a job's path through the Jobs API is the
# same for every task (detect runs on this cluster in test_driver_killed_then_resumed).
@pytest.mark.parametrize("task", ["classify", "audio"])
def test_jobs_api_submission_and_rest_status(cluster, videos, tmp_path, task):
    out = tmp_path / "out"
    job = write_job(videos, out, task=task)
    # A fresh process, as a user's laptop would be: it must find the auth token itself.
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    proc = vidbatch("submit", "--address", cluster.dashboard_url, str(job), "--wait", env=env)
    output = bounded(proc, 300)
    assert proc.returncode == 0, output
    submission_id = output.split("submitted ", 1)[1].split()[0]
    assert "progress: 25/25 videos (24 ok, 1 error)" in output
    # The dashboard's REST API (token auth) agrees.
    info = requests.get(f"{cluster.dashboard_url}/api/jobs/{submission_id}",
                        headers=_auth_headers(), timeout=10).json()
    assert info["status"] == "SUCCEEDED" and info["metadata"]["vidbatch_job"] == "cluster"
    assert_exactly_once(out)
    if task == "detect":
        rows = pq.read_table(out).to_pylist()
        ok = [r for r in rows if r["status"] == "ok"]
        assert len(ok) == VIDEOS and all(r["frames_sampled"] == 4 for r in ok)
        assert all(isinstance(r["detections"], list) for r in ok)
    if task == "audio":
        ok = [r for r in pq.read_table(out).to_pylist() if r["status"] == "ok"]
        assert len(ok) == VIDEOS and all(r["windows"] == 3 for r in ok)  # 2 s, hop 0.5
        assert all(r["audio_codec"] == "aac" and not r["silent"] for r in ok)
    listed = vidbatch("list", "--address", cluster.dashboard_url, env=env)
    assert submission_id in bounded(listed, 60)


def _rows_written(out: Path) -> int:
    """Rows in the complete Parquet files of ``out`` (a file still being written has no
    footer yet and is not counted)."""
    written = 0
    for f in out.glob("*.parquet"):
        try:
            written += pq.read_metadata(f).num_rows
        except Exception:
            pass
    return written


def _wait_for_output_rows(out: Path, rows: int, proc: subprocess.Popen, timeout=180) -> None:
    """Block until at least ``rows`` rows are written, while the job is still running."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        if _rows_written(out) >= rows:
            return
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"the job wrote {rows} rows in no {timeout} s; its process group was "
                f"killed. Output:\n{proc.communicate()[0]}")


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def test_killed_model_replica_loses_nothing(cluster, videos, tmp_path):
    out = tmp_path / "out"
    proc = vidbatch("submit", "--address", cluster.address, str(write_job(videos, out)))
    _wait_for_output_rows(out, 2, proc)
    replicas = _pids("ReportingReplica")
    assert replicas, "no model replica process found"
    for pid in replicas:
        os.kill(pid, signal.SIGKILL)
    output = bounded(proc, 300)
    assert proc.returncode == 0, output
    assert_exactly_once(out)


@pytest.mark.parametrize("task", ["detect"])
def test_driver_killed_then_resumed(cluster, videos, tmp_path, task):
    out = tmp_path / "out"
    job = write_job(videos, out, task=task)
    proc = vidbatch("submit", "--address", cluster.address, str(job))
    _wait_for_output_rows(out, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # The cluster's write tasks can still be writing a file when the driver dies.
    assert _rows_written(out) < VIDEOS + 1, "the job finished before the driver was killed"
    again = vidbatch("submit", "--address", cluster.address, str(job), "--resume")
    log = bounded(again, 300)
    assert again.returncode == 0, log
    assert_exactly_once(out)


def test_worker_node_removed_mid_job(cluster, videos, tmp_path):
    out = tmp_path / "out"
    proc = vidbatch("submit", "--address", cluster.address, str(write_job(videos, out)))
    _wait_for_output_rows(out, 2, proc)
    cluster.remove_node(cluster.worker, allow_graceful=False)
    output = bounded(proc, 300)
    assert proc.returncode == 0, output
    assert_exactly_once(out)
