"""GPU replicas on a real local Ray that advertises 2 GPUs on this machine, which has none.

Ray's GPUs are logical here: it places actors and sets ``CUDA_VISIBLE_DEVICES`` for them as
it would on a GPU node, and torch (rightly) sees no CUDA device. So this checks the
placement vidbatch asks of Ray (one replica per GPU, each with its own device) and that a
job whose replicas would get a GPU their torch cannot use is refused up front, naming the
fix, instead of running on the CPU without a word.

The Ray here is its own head (``ray.cluster_utils.Cluster``), started for this module and
stopped at its end; jobs and the placement script run as separate processes, so the test
session's local Ray is untouched.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import daemon_pids, free_port, run_bounded, stop_ray

from pipeline.synth import moving_texture, write_video

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def gpu_ray():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 2, "num_gpus": 2, "include_dashboard": False,
        "dashboard_agent_listen_port": free_port(), "object_store_memory": 200 * 2**20})
    c.wait_for_nodes()
    yield c
    stop_ray(c.shutdown, daemon_pids(*c.list_all_nodes()))


PLACEMENT = textwrap.dedent('''
    import json, os, sys, time
    import numpy as np
    import ray, ray.data
    from pipeline import dataflow

    class Where:
        """A replica that says where Ray put it (slowly, so that both get batches)."""
        def __call__(self, batch):
            time.sleep(0.3)
            n = len(batch["id"])
            return {"id": batch["id"], "pid": np.full(n, os.getpid()),
                    "devices": np.full(n, os.environ.get("CUDA_VISIBLE_DEVICES", ""), object),
                    "gpu_ids": np.full(n, ",".join(map(str, ray.get_gpu_ids())), object)}

    ray.init(address=sys.argv[1], log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.range(64, override_num_blocks=16)
    out = dataflow.through_replicas(ds, Where, {}, replicas=2, batch_size=2, cpus=0.5,
                                    gpus=1, in_flight=1)
    rows = out.take_all()
    print(json.dumps([{k: (int(v) if k != "devices" and k != "gpu_ids" else v)
                       for k, v in r.items()} for r in rows]))
''')


def test_each_replica_gets_its_own_gpu(gpu_ray):
    proc = run_bounded([sys.executable, "-c", PLACEMENT, gpu_ray.address], timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:]
    rows = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("[{")))
    assert sorted(r["id"] for r in rows) == list(range(64))
    by_pid: dict[int, set[str]] = {}
    for r in rows:
        by_pid.setdefault(r["pid"], set()).add(r["devices"])
        assert r["devices"] == r["gpu_ids"], r  # what Ray says it gave is what CUDA sees
    assert len(by_pid) == 2, by_pid  # two replicas...
    devices = [d for ds in by_pid.values() for d in ds]
    assert len(devices) == 2 and sorted(devices) == ["0", "1"], by_pid  # ...one GPU each


def test_a_gpu_its_torch_cannot_see_is_refused_before_anything_is_written(gpu_ray,
                                                                          tmp_path):
    write_video(tmp_path / "v.mp4", moving_texture(20, 64, 80, seed=1))
    (tmp_path / "m.csv").write_text("path\nv.mp4\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "gpu-check", "manifest": "m.csv",
        "sampling": {"clips_per_video": 1, "frames_per_clip": 4, "short_side": 32,
                     "crop_size": 32},
        "model": {"arch": "r3d_18", "num_classes": 3},
        "resources": {"gpus_per_replica": 1, "cpus_per_replica": 0.5},
        "output": {"path": "out"}}))
    proc = run_bounded([str(Path(sys.executable).parent / "vidbatch"), "submit", str(spec),
                        "--address", gpu_ray.address], timeout=240)
    said = proc.stdout
    assert proc.returncode == 2, (proc.returncode, said[-2000:])
    assert "resources.gpus_per_replica" in said and "CUDA_VISIBLE_DEVICES=" in said, said
    assert "Install a CUDA build of torch" in said, said
    assert not (tmp_path / "out").exists()


def test_a_replica_given_a_gpu_it_cannot_see_fails_loudly(gpu_ray):
    """The replica's own check, for GPUs an autoscaler adds after the job's first check."""
    script = textwrap.dedent('''
        import sys, ray
        from pipeline.infer.gpu_check import refuse_unseen_gpu
        ray.init(address=sys.argv[1], log_to_driver=False)
        try:
            ray.get(ray.remote(num_gpus=1, num_cpus=0, max_retries=0)(refuse_unseen_gpu)
                    .remote())
        except ray.exceptions.RayTaskError as e:
            print("REFUSED", str(e).splitlines()[-1])
    ''')
    proc = run_bounded([sys.executable, "-c", script, gpu_ray.address], timeout=120)
    assert "REFUSED" in proc.stdout and "gpus_per_replica: 0" in proc.stdout, \
        proc.stdout[-2000:]
