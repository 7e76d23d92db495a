"""Manifests, videos, checkpoints and output on S3, through pyarrow's S3 filesystem, against a
local S3 server (moto): the manifest's relative paths resolve against its URI, the decode
tasks read the videos from the bucket, a missing object and an empty one become error rows,
the replicas load the checkpoint from it, the output is written, resumed and summarised
there."""

import json
import os
import sys

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import run_bounded

from pipeline.errors import OutputError, WeightsError
from pipeline.model.checkpoint import read_checkpoint_metadata, save_checkpoint
from pipeline.model.checkpoint_meta import TensorInfo
from pipeline.model.spec import ModelSpec
from pipeline.model.zoo import build_network, model_card
from pipeline.output.outdir import OutputDir
from pipeline.output.store import prepare_output
from pipeline.synth import moving_texture, write_video

pytest.importorskip("moto.server", reason="moto (a test dependency) is absent")


def vidbatch(env, *args, timeout=300):
    """``vidbatch ARGS`` in its own process group, all of which (its local Ray too) is
    killed if it runs past ``timeout``; (exit code, stdout + stderr)."""
    done = run_bounded([sys.executable, "-m", "pipeline.cli", *args], timeout,
                       env={**os.environ, **env})
    return done.returncode, done.stdout


def submit(job, env, *args):
    code, out = vidbatch(env, "submit", str(job), *args)
    assert code == 0, out
    return out


@pytest.mark.slow
def test_manifest_videos_checkpoint_and_output_on_s3(s3, tmp_path):
    fs, env = s3
    fs.create_dir("videos")
    for name, seed in (("a.mp4", 1), ("clips/b.mp4", 2)):
        local = write_video(tmp_path / name.replace("/", "_"), moving_texture(12, 32, 40, seed))
        with fs.open_output_stream(f"videos/{name}") as f:
            f.write(local.read_bytes())
    with fs.open_output_stream("videos/empty.mp4") as f:
        f.write(b"")
    with fs.open_output_stream("videos/m.csv") as f:
        f.write(b"path,label\na.mp4,x\nclips/b.mp4,y\nmissing.mp4,z\nempty.mp4,w\n")
    card = model_card(ModelSpec(arch="resnet18", num_classes=3))
    ckpt = save_checkpoint(tmp_path / "model.pt", build_network(card), card)
    with fs.open_output_stream("videos/model.pt") as f:
        f.write(ckpt.read_bytes())
    spec = {"name": "remote", "manifest": "s3://videos/m.csv",
            "sampling": {"frames_per_clip": 2, "short_side": 32, "crop_size": 32},
            "model": {"arch": "resnet18", "weights": "s3://videos/model.pt"},
            "resources": {"num_cpus": 2, "object_store_mb": 128},
            "max_error_fraction": 0.6, "output": {"path": "s3://videos/out/"}}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    submit(job, env)
    rows = pq.read_table("videos/out", filesystem=fs).to_pandas().set_index("path")
    assert sorted(rows.index) == sorted(f"s3://videos/{p}" for p in
                                        ("a.mp4", "clips/b.mp4", "missing.mp4", "empty.mp4"))
    assert rows.loc["s3://videos/a.mp4", "status"] == "ok"
    assert rows.loc["s3://videos/clips/b.mp4", "status"] == "ok"
    assert rows.loc["s3://videos/clips/b.mp4", "label"] == "y"
    assert rows.loc["s3://videos/a.mp4", "num_frames"] == 12
    assert (rows["weights"] == "s3://videos/model.pt").all()
    missing = rows.loc["s3://videos/missing.mp4"]
    assert missing["status"] == "error" and "cannot read s3://videos/missing.mp4" in \
        missing["error"], missing["error"]
    empty = rows.loc["s3://videos/empty.mp4"]
    assert empty["status"] == "error" and "empty (0 bytes)" in empty["error"]

    # A file cut short (a killed run): --resume sets it aside and does its rows again.
    files = OutputDir("s3://videos/out", fs, "videos/out").data_files()
    cut = pq.read_metadata(files[0], filesystem=fs).num_rows
    with fs.open_input_stream(files[0]) as f:
        head = f.read(100)
    with fs.open_output_stream(files[0]) as f:
        f.write(head)
    out = submit(job, env, "--resume")
    assert f"{cut} processed" in out, out
    ids = pq.read_table("videos/out", filesystem=fs, columns=["video_id"])["video_id"]
    assert len(ids) == len(set(ids.to_pylist())) == 4
    assert fs.get_file_info(f"videos/out/_partial/{files[0].rsplit('/', 1)[1]}").is_file

    code, summary = vidbatch(env, "summary", "s3://videos/out", timeout=120)
    assert code == 0, summary
    assert "4 rows for 4 manifest rows -> 2 ok, 2 error" in summary


def test_overwrite_on_s3_removes_only_what_vidbatch_wrote(s3):
    fs, env = s3
    fs.create_dir("bucket")
    files = {"vidbatch-r1_w_000000.parquet": b"x", "_partial/vidbatch-r1_w_000001.parquet": b"x",
             "_vidbatch_job.json": json.dumps({"job": "j", "runs": ["r1"]}).encode()}
    for name, data in files.items():
        with fs.open_output_stream(f"bucket/out/{name}") as f:
            f.write(data)
    out = OutputDir("s3://bucket/out", fs, "bucket/out")
    prepare_output(out, "overwrite")
    assert out.entries() == []
    for name, data in files.items():
        with fs.open_output_stream(f"bucket/out/{name}") as f:
            f.write(data)
    with fs.open_output_stream("bucket/out/notes.txt") as f:
        f.write(b"mine")
    with pytest.raises(OutputError, match="notes.txt"):
        prepare_output(out, "overwrite")
    assert fs.get_file_info("bucket/out/notes.txt").is_file


def test_checkpoint_on_s3_plans_and_loads(s3, tmp_path, monkeypatch):
    """``model.weights`` as a URI: the driver reads the checkpoint's metadata from the
    bucket, a replica loads its weights from it; a run's directory stands for its model.pt."""
    fs, env = s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    card = model_card(ModelSpec(arch="resnet18", num_classes=3))
    local = save_checkpoint(tmp_path / "model.pt", build_network(card), card)
    fs.create_dir("models")
    with fs.open_output_stream("models/run/best/model.pt") as f:
        f.write(local.read_bytes())
    remote = model_card(ModelSpec(arch="resnet18", weights="s3://models/run/best"))
    assert remote.source == "checkpoint" and remote.class_names == card.class_names
    meta = read_checkpoint_metadata("s3://models/run/best")  # shapes only: no torch.load
    assert meta["state_dict"]["fc.weight"] == TensorInfo((3, 512))
    want = torch.load(local, weights_only=True)["state_dict"]
    got = build_network(remote).state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())
    with pytest.raises(WeightsError, match="checkpoint s3://models/run/other/model.pt not found"):
        model_card(ModelSpec(arch="resnet18", weights="s3://models/run/other/model.pt"))
