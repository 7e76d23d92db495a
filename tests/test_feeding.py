"""Planning the CPU cores per GPU before a job runs (``pipeline.infer.feeding``): the dry
run of a shipped GPU job spec measures the decode cost on real files and the model's FLOPs
with torch's counter, and warns when the GPUs would wait for decoding."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.infer.feeding import REPLICA_DECODE_CORE_S, FeedPlan, accelerator_of
from pipeline.report.job import _feeding
from pipeline.synth import moving_texture, write_video

ROOT = Path(__file__).resolve().parents[1]


def feed(decode_core_s=0.5, gflop=81.0, cores=16.0, **kw) -> FeedPlan:
    base = dict(decode_core_s=decode_core_s, measured_on="3 rows", replica_core_s=0.0,
                gflop=gflop, accelerator="H100", accelerator_known=True, cores_per_gpu=cores,
                cores_known=True)
    return FeedPlan(**{**base, **kw})


def test_cores_per_gpu_are_the_rate_times_the_decode_cost():
    f = feed()
    assert f.gpu_videos_per_s == pytest.approx(142_000 / 81)
    assert f.cores_needed == pytest.approx(142_000 / 81 * 0.5)
    assert f.busy == pytest.approx(16 / f.cores_needed)
    lines = f.lines("tasks")
    assert "WARNING" in lines[-1] and "decode_on: replica" in lines[-1]
    assert "snap_to_keyframes" in lines[-1]
    on_replica = feed(decode_core_s=0.01, replica_core_s=REPLICA_DECODE_CORE_S)
    assert on_replica.cores_needed == pytest.approx(142_000 / 81 * 0.055)
    assert "decode_on: replica" not in on_replica.lines("replica")[-1]


def test_a_busy_enough_gpu_gets_no_warning_and_unknowns_say_so():
    assert not any("WARNING" in ln for ln in feed(decode_core_s=0.005).lines("tasks"))
    assert "unknown for this task" in feed(gflop=None).lines("tasks")[-1]
    assert "not planned" in feed(decode_core_s=None).lines("tasks")[0]


def test_the_cluster_says_which_accelerator():
    assert accelerator_of({"CPU": 16, "GPU": 1, "accelerator_type:H100": 1}) == "H100"
    assert accelerator_of({"accelerator_type:A10G": 1}) == "A10G"
    assert accelerator_of({"accelerator_type:L40S": 1}) == "L40S"
    assert accelerator_of({"accelerator_type:L4": 1}) == "L4"
    assert accelerator_of({"accelerator_type:B200": 1}) is None
    assert accelerator_of({"CPU": 2}) is None


def test_the_report_shows_the_feed_plan():
    text = _feeding(feed().record())
    assert "1,753 videos/s on one H100" in text and "GPUs ~2% busy" in text


@pytest.mark.slow
def test_the_dry_run_of_the_gpu_job_spec_plans_its_cores(tmp_path):
    for i in range(3):
        write_video(tmp_path / f"v{i}.mp4", moving_texture(60, 96, 128, seed=i), gop=30)
    (tmp_path / "m.csv").write_text("path\n" + "".join(f"v{i}.mp4\n" for i in range(3)))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "vidbatch"), "submit",
         str(ROOT / "cluster/jobs/classify-gpu.yaml"), "--dry-run",
         "--set", f"manifest={tmp_path / 'm.csv'}", "--set", f"output.path={tmp_path / 'out'}",
         "--set", "model.weights=none"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    decode = re.search(r"decode ([\d.]+) CPU core-s per video in decode tasks \(measured on "
                       r"3 of the manifest's first rows\)", out)
    assert decode and float(decode.group(1)) > 0, out
    # r3d_18 on 2 clips of 16 x 112 x 112: ~81 GFLOP a clip (docs/cluster.md).
    model = re.search(r"model ([\d.]+) GFLOP per video, ~([\d,]+) videos/s on one H100 "
                      r"\(assumed\): ([\d,]+) CPU cores per GPU replica", out)
    assert model and 150 < float(model.group(1)) < 175, out
    rate = float(model.group(2).replace(",", ""))
    assert rate == pytest.approx(142_000 / float(model.group(1)), rel=0.01)
    cores = float(model.group(3).replace(",", ""))
    assert cores == pytest.approx(rate * float(decode.group(1)), rel=0.1, abs=1)
    assert not (tmp_path / "out").exists()
