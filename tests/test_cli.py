"""The command line, through typer's CliRunner, as a user types it."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import bounded, spawn
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.synth import DEMO_GOOD, moving_texture, write_video

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def small_job(tmp_path):
    """A two-video job (one good, one broken) with a tiny model input."""
    write_video(tmp_path / "good.mp4", moving_texture(12, 32, 40, seed=1))
    (tmp_path / "bad.mp4").write_text("nope")
    (tmp_path / "m.csv").write_text("path\ngood.mp4\nbad.mp4\n")
    spec = {"name": "cli", "manifest": "m.csv",
            "sampling": {"frames_per_clip": 2, "short_side": 32, "crop_size": 32},
            "model": {"arch": "resnet18", "num_classes": 3},
            "resources": {"cpus_per_decode_task": 0.5},
            "output": {"path": "out"}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_unknown_key_exits_2_with_the_field_and_writes_nothing(small_job):
    data = yaml.safe_load(small_job.read_text())
    data["inference"] = {"batch_sise": 4}
    small_job.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["submit", str(small_job)])
    assert result.exit_code == 2
    assert "inference.batch_sise: unknown key" in result.output
    assert "Traceback" not in result.output
    assert not (small_job.parent / "out").exists()


def test_broken_yaml_exits_2(tmp_path):
    (tmp_path / "job.yaml").write_text("name: [oops\n")
    result = runner.invoke(app, ["submit", str(tmp_path / "job.yaml")])
    assert result.exit_code == 2 and "not valid YAML" in result.output


def test_missing_manifest_exits_2_before_ray(small_job):
    (small_job.parent / "m.csv").unlink()
    result = runner.invoke(app, ["submit", str(small_job)])
    assert result.exit_code == 2 and "manifest" in result.output and "not found" in result.output
    assert not (small_job.parent / "out").exists()


def test_dry_run_prints_the_plan_and_runs_nothing(small_job):
    result = runner.invoke(app, ["submit", str(small_job), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "2 videos" in result.output and "resnet18" in result.output
    assert "checked 2 sampled paths: 2 exist" in result.output
    assert "meaningless" in result.output
    assert not (small_job.parent / "out").exists()


def test_resume_and_overwrite_together_are_refused(small_job):
    result = runner.invoke(app, ["submit", str(small_job), "--resume", "--overwrite"])
    assert result.exit_code == 2


@pytest.mark.slow
def test_submit_then_summary(small_job, ray_session):
    result = runner.invoke(app, ["submit", str(small_job), "--set", "output.top_k=2"])
    assert result.exit_code == 0, result.output
    assert "2 rows for 2 manifest rows -> 1 ok, 1 error" in result.output
    assert "progress: 2/2 videos (1 ok, 1 error)" in result.output
    assert "error bad-" in result.output and "not a decodable video" in result.output
    again = runner.invoke(app, ["submit", str(small_job)])
    assert again.exit_code == 2 and "--resume" in again.output
    summary = runner.invoke(app, ["summary", str(small_job.parent / "out")])
    assert summary.exit_code == 0 and "1 ok, 1 error" in summary.output


@pytest.mark.slow
def test_bad_checkpoint_found_while_ray_starts_stops_that_ray_and_writes_nothing(small_job):
    # The model is resolved in a thread while the job's own Ray starts (run.start): a bad
    # checkpoint must still end with the field, the fix, no output and no Ray left behind.
    (small_job.parent / "broken.pt").write_bytes(b"not a checkpoint")
    cmd = [sys.executable, "-m", "pipeline.cli", "submit", str(small_job),
           "--set", "model.weights=broken.pt", "--set", "model.num_classes=null",
           "--set", "resources.num_cpus=1"]
    proc = spawn(cmd)
    out = bounded(proc, 180)
    assert proc.returncode == 2, out
    assert "started a local Ray" in out and "model.weights" in out
    assert "not a PyTorch checkpoint" in out
    assert "Traceback" not in out
    assert not (small_job.parent / "out").exists()
    # Ray names the session directory after the driver's pid; none of its processes remain.
    left = subprocess.run(["pgrep", "-f", f"session_[0-9_-]*_{proc.pid}"],
                          capture_output=True, text=True)
    assert left.stdout == "", left.stdout


def test_schema_command_lists_the_columns():
    result = runner.invoke(app, ["schema", "--arch", "resnet50"])
    assert result.exit_code == 0
    assert '"embedding": "fixed_size_list<item: float>[2048]"' in result.output


def test_committed_demo_manifest_matches_the_generator(tmp_path):
    result = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "data" / "demo"),
                                 "--manifest", str(tmp_path / "manifests" / "demo.csv")])
    assert result.exit_code == 0, result.output
    generated = (tmp_path / "manifests" / "demo.csv").read_text(encoding="utf-8")
    committed = (REPO / "manifests" / "demo.csv").read_text(encoding="utf-8")
    assert generated == committed
    rows = list(csv.DictReader(committed.splitlines()))
    present = [r for r in rows if os.path.exists(tmp_path / "manifests" / r["path"])]
    assert len(present) == len(DEMO_GOOD) + 3  # all but the deliberately missing file


def test_decode_only_dry_run_says_the_model_is_skipped(small_job):
    result = runner.invoke(app, ["submit", str(small_job), "--dry-run", "--decode-only",
                                 "--set", "sampling.snap_to_keyframes=true"])
    assert result.exit_code == 0, result.output
    assert "model  : skipped (mode: decode_only)" in result.output
    assert "frames snapped to keyframes" in result.output and "meaningless" not in result.output


def test_a_python_without_the_dependencies_is_told_what_to_install(tmp_path):
    """The Jobs API entrypoint on a cluster whose Python lacks vidbatch's dependencies: a
    sentence naming the interpreter and the packages, exit 2, no traceback. (-S: no
    site-packages, as on a bare interpreter.)"""
    repo = Path(__file__).resolve().parents[1]
    code = (f"import sys, runpy; sys.path.insert(0, {str(repo)!r}); sys.argv = ['x', 'submit', "
            "'job.yaml']; runpy.run_module('pipeline.bootstrap', run_name='__main__')")
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert f"this cluster's Python ({sys.executable}" in run.stderr
    assert "lacks typer" in run.stderr and "decord" in run.stderr
    assert "librosa" in run.stderr and "silero-vad" in run.stderr  # what task: audio needs


@pytest.mark.slow
def test_ctrl_c_stops_a_job_cleanly_and_resume_writes_only_the_rest(small_job):
    """A real SIGINT, as Ctrl-C sends to the terminal's process group, once a data file is
    on disk: exit 130, the record says interrupted, no Ray process left; --resume then
    writes exactly the missing rows."""
    import pyarrow.parquet as pq

    rows = 40_000  # missing files, ~4,000 rows/s: the job is still running when stopped
    (small_job.parent / "m.csv").write_text("path\n" + "".join(
        f"/nonexistent-vidbatch/v{i}.mp4\n" for i in range(rows)))
    out = small_job.parent / "out"
    cmd = [sys.executable, "-m", "pipeline.cli", "submit", str(small_job), "--set",
           "max_error_fraction=1", "--set", "resources.num_cpus=2"]
    proc = spawn(cmd)
    for _ in range(240):
        if proc.poll() is not None or any(_readable(f) for f in out.glob("*.parquet")):
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    said = bounded(proc, 60)
    assert proc.returncode == 130, said
    assert "--resume finishes the rest" in said and "Traceback" not in said
    record = json.loads((out / "_vidbatch_job.json").read_text())
    assert record["state"] == "interrupted" and record["timing"]["first_decode_s"]
    left = subprocess.run(["pgrep", "-f", f"session_[0-9_-]*_{proc.pid}"],
                          capture_output=True, text=True)
    assert left.stdout == "", left.stdout
    done = sum(pq.read_metadata(f).num_rows for f in out.glob("*.parquet") if _readable(f))
    assert 0 < done < rows
    again = spawn([*cmd, "--resume"])
    said = bounded(again, 300)
    assert again.returncode == 0, said
    record = json.loads((out / "_vidbatch_job.json").read_text())
    assert record["state"] == "finished"
    assert record["counts"]["skipped_already_done"] == done
    ids = pq.read_table(out, columns=["video_id"])["video_id"].to_pylist()
    assert len(ids) == len(set(ids)) == rows


def _readable(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
        return True
    except Exception:  # being written
        return False
