"""The benchmark harness end to end on a few tiny videos: it must keep running, and its
ratios must come from the contenders' own outputs (benchmarks/README.md).

Marked ``bench``: outside the default run; ``pytest -m bench`` runs it (so does CI)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_bounded

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.bench
def test_harness_smoke_run(tmp_path):
    env = {**os.environ, "VIDBATCH_BENCH_DIR": str(tmp_path)}
    cmd = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--videos", "3", "--seconds",
           "2", "--repeats", "1", "--bound-iters", "1", "--batch-size", "2", "--cores", "2",
           "--jobs", "clip,decode", "--bf16", "off",
           "--only", "naive_clip,vidbatch_clip,vidbatch_decode_keyframes_pyav"]
    proc = run_bounded(cmd, 600, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:]
    results = sorted((tmp_path / "results").glob("*.json"))
    assert len(results) == 1
    data = json.loads(results[0].read_text())
    runs = {r["name"]: r for r in data["runs"]}
    assert set(runs) == {"naive_clip", "vidbatch_clip", "vidbatch_decode_keyframes_pyav"}
    assert all(r["videos"] == 3 and r["wall_s"] > 0 for r in runs.values())
    # A Ray job of 3 videos keeps this machine busy for many core-seconds; memory was sampled.
    assert all(r["cpu_core_s"] > 1 and r["memory_samples"] >= 1 for r in runs.values())
    assert runs["vidbatch_clip"]["cpu_core_s"] > runs["naive_clip"]["cpu_core_s"]
    # Same seeded weights, same sampled frames: vidbatch's embeddings agree with the loop's.
    assert runs["vidbatch_clip"]["cos_min_vs_naive_clip"] > 0.99
    assert "| vidbatch_clip |" in proc.stdout


def test_sampler_counts_another_session_only_when_asked():
    """A Ray that `vidbatch up` started lives in its own session, outside the job's process
    tree: the `_warm` contenders count it by session id (benchmarks/procs.py)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from procs import tree
    finally:
        sys.path.pop(0)
    # A session leader whose child outlives it: the child is re-parented, not our descendant.
    leader = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!"], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    orphan = int(leader.stdout.readline())
    leader.wait()
    try:
        assert orphan not in tree(os.getpid())
        assert orphan in tree(os.getpid(), (leader.pid,))
    finally:
        os.kill(orphan, 9)


@pytest.mark.bench
def test_detect_benchmark_smoke_run(tmp_path):
    """benchmarks/detect.py end to end on 2 tiny jobs: both contenders finish, and on the
    same seeded random detector their boxes are the same boxes."""
    env = {**os.environ, "VIDBATCH_BENCH_DIR": str(tmp_path)}
    cmd = [sys.executable, str(REPO / "benchmarks" / "detect.py"), "--videos", "2",
           "--repeats", "1", "--frames", "2", "--weights", "none", "--score-threshold", "0.01"]
    proc = run_bounded(cmd, 600, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:]
    data = json.loads(next((tmp_path / "results").glob("detect-*.json")).read_text())
    run = data["runs"][0]
    assert run["loop_s"] > 0 and run["vidbatch_s"] > 0
    assert run["loop_boxes"] == run["vidbatch_boxes"] > 0
    assert run["min_matched_iou"] > 0.99
