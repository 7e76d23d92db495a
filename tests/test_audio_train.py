"""task: audio through real Ray: training a keyword-spotting ResNet (Ray Train, 2 gloo
workers) through a worker failure and a resume, then an audio job on its checkpoint with
real spoken-command videos and bad input: one row per manifest row, queried with DuckDB."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from pipeline.errors import ConfigError, JobFailed
from pipeline.infer.plan import plan_job
from pipeline.infer.run import execute
from pipeline.infer.spec import parse_jobspec
from pipeline.infer.summary import render_summary
from pipeline.model.checkpoint import read_checkpoint
from pipeline.synth import moving_texture, write_manifest, write_video
from pipeline.tasks.audio.demo import make_speech_set
from pipeline.train.plan import parse_training, plan_training
from pipeline.train.run import HISTORY, run_training

pytestmark = pytest.mark.slow
CLASSES = ("yes", "no", "_silence_")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("speech")
    train = make_speech_set(out / "train", "train", 4, seed=0, classes=CLASSES)
    val = make_speech_set(out / "val", "val", 2, seed=100_000, classes=CLASSES)
    val.append({"video_id": "broken", "path": "broken.mp4", "label": "yes"})
    (out / "val" / "broken.mp4").write_bytes(b"not a video")
    return {"train": write_manifest(out / "train.csv", train, prefix="train/"),
            "val": write_manifest(out / "val.csv", val, prefix="val/"), "root": out,
            "val_rows": val}


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / HISTORY).read_text().splitlines()]


def train_spec(speech, tmp: Path, **extra) -> dict:
    return {"task": "audio", "name": "tiny",
            "data": {"train": str(speech["train"]), "val": str(speech["val"])},
            "model": {"arch": "res8"},
            "optim": {"epochs": 2, "batch_size": 4, "optimizer": "adamw", "lr": 3e-3},
            "resources": {"workers": 2, "cpus_per_worker": 0.5, "videos_per_decode_task": 4},
            "checkpoint": {"storage_path": str(tmp / "runs"), "keep": 1}, "max_failures": 1,
            **extra}


@pytest.fixture(scope="module")
def trained(ray_session, speech, tmp_path_factory) -> dict:
    """Two epochs, one run. Recovering a failed worker and --resume are the runner's,
    the same for every task: tests/test_train.py proves them once."""
    tmp = tmp_path_factory.mktemp("audio_run")
    spec = parse_training(train_spec(speech, tmp))
    lines: list[str] = []
    summary = run_training(plan_training(spec), log=lines.append)
    return {"summary": summary, "lines": lines, "run_dir": tmp / "runs" / "tiny", "tmp": tmp,
            "spec": spec}


def test_training_scores_top1_top5_confusion(trained):
    h = history(trained["run_dir"])
    assert [e["epoch"] for e in h] == [1, 2]
    assert all(e["train_clips"] == 12 and e["val_clips"] == 6 for e in h)
    assert all(0 <= e["val_acc"] <= e["val_top5"] <= 1 and e["val_decode_errors"] == 1
               for e in h)
    assert any("val: 6 of 7 videos decoded, 1 failed" in line for line in trained["lines"])
    confusion = json.loads((Path(trained["summary"]["best_dir"]) / "confusion.json")
                           .read_text())
    assert sum(map(sum, confusion["matrix"])) == 6
    assert trained["summary"]["task"] == "audio"


def test_the_checkpoint_records_the_features_and_the_training_window(trained, speech):
    ckpt = read_checkpoint(trained["summary"]["best_dir"])
    assert ckpt["task"] == "audio" and ckpt["arch"] == "res8"
    assert ckpt["class_names"] == sorted(CLASSES)
    assert ckpt["features"]["sample_rate"] == 16000 and ckpt["features"]["n_mels"] == 40
    assert ckpt["sampling"]["window_s"] == pytest.approx(1.2)  # 1 s + 0.1 s shift each way
    # Fine-tuning may not change the features the weights learned from.
    spec = parse_training(train_spec(
        speech, trained["tmp"], name="again",
        model={"arch": "res8", "weights": trained["summary"]["best_dir"]},
        features={"n_mels": 64}))
    with pytest.raises(ConfigError, match="features.n_mels"):
        plan_training(spec)


def test_an_audio_job_on_the_checkpoint_gives_one_row_per_manifest_row(trained, speech):
    root = speech["root"]
    frames = moving_texture(20, 32, 32, seed=3)
    write_video(root / "mute.mp4", frames, fps=10)
    write_video(root / "silent.mp4", frames, fps=10, audio=np.zeros(32000, np.float32))
    rows = [{"video_id": r["video_id"], "path": f"val/{r['path']}"}
            for r in speech["val_rows"]] + [
        {"video_id": "mute", "path": "mute.mp4"}, {"video_id": "silent", "path": "silent.mp4"},
        {"video_id": "missing", "path": "missing.mp4"}]
    manifest = write_manifest(root / "job.csv", rows)
    out = trained["tmp"] / "out"
    spec = parse_jobspec({
        "task": "audio", "name": "speech", "manifest": str(manifest),
        "sampling": {"hop_s": 0.5}, "model": {"arch": "res8",
                                              "weights": trained["summary"]["best_dir"]},
        "resources": {"decode_timeout_s": 30, "videos_per_decode_task": 3},
        "max_error_fraction": 1.0, "output": {"path": str(out)}})
    plan = plan_job(spec)
    record = execute(plan, log=lambda _: None)
    got = {r["video_id"]: r for r in pads.dataset(str(out), format="parquet").to_table()
           .to_pylist()}
    assert sorted(got) == sorted(r["video_id"] for r in rows)
    speech_rows = [got[r["video_id"]] for r in speech["val_rows"][:-1]]
    for row in speech_rows:
        assert row["status"] == "ok" and row["windows"] == 5  # 3 s, 1-s windows every 0.5 s
        assert row["pred_label"] in CLASSES and len(row["window_predictions"]) == 5
        assert row["audio_sample_rate"] == 16000 and row["audio_codec"] == "aac"
        assert 0 <= row["speech_fraction"] <= 1 and len(row["audio_embedding"]) == 45
    assert got["mute"]["error"].startswith("no_audio:")
    assert got["silent"]["status"] == "ok" and got["silent"]["silent"] is True
    assert "not found" in got["missing"]["error"] and got["broken"]["status"] == "error"
    assert record["task"] == "audio" and record["model"]["features"]["n_mels"] == 40
    # "When was each word heard": one row per window.
    import duckdb

    heard = duckdb.sql(f"SELECT count(*) FROM '{out}/*.parquet', UNNEST(window_predictions) "
                       "AS t(w) WHERE status = 'ok'").fetchall()[0][0]
    assert heard == sum(len(r["window_predictions"]) for r in got.values()
                        if r["status"] == "ok")
    summary = render_summary(plan.output, record)
    assert f"{len(rows)} rows for {len(rows)} manifest rows -> 7 ok, 3 error" in summary
    assert "1 silent throughout); 1 file(s) without an audio stream" in summary
    assert "errors by stage: " in summary and "no_audio 1" in summary


def test_files_without_audio_do_not_count_as_failures(trained, speech):
    """A collection where most files have no soundtrack is not a failed job: no_audio rows
    stay error rows but are outcomes, not failures (max_error_fraction at its default)."""
    root = speech["root"]
    frames = moving_texture(20, 32, 32, seed=4)
    rows = [{"video_id": "spoken", "path": f"val/{speech['val_rows'][0]['path']}"}]
    for i in range(3):
        write_video(root / f"mute{i}.mp4", frames, fps=10)
        rows.append({"video_id": f"mute{i}", "path": f"mute{i}.mp4"})
    rows.append({"video_id": "missing", "path": "missing.mp4"})
    out = trained["tmp"] / "mostly_mute"
    spec = parse_jobspec({
        "task": "audio", "name": "mostly-mute",
        "manifest": str(write_manifest(root / "mute.csv", rows)),
        "model": {"arch": "res8", "weights": trained["summary"]["best_dir"]},
        "output": {"path": str(out)}})
    record = execute(plan_job(spec), log=lambda _: None)  # 4 of 5 are errors: no JobFailed
    assert record["counts"]["error"] == 4 and record["counts"]["outcomes"] == 3
    with pytest.raises(JobFailed, match="1 of 5 videos failed"):
        execute(plan_job(parse_jobspec({**spec.model_dump(mode="json"),
                                        "max_error_fraction": 0.1,
                                        "output": {"path": str(out), "if_exists": "overwrite"}})),
                log=lambda _: None)
