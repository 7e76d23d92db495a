"""task: detect through real Ray: training a detector (Ray Train, 2 gloo workers) through
a worker failure and a resume, and detect jobs on its checkpoint with bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from pipeline.demo_commands import write_labels
from pipeline.infer.plan import plan_job
from pipeline.infer.run import execute
from pipeline.infer.spec import parse_jobspec
from pipeline.infer.summary import render_summary
from pipeline.model.checkpoint import read_checkpoint
from pipeline.synth import write_manifest
from pipeline.tasks.detect.demo import LABEL_COLUMNS, make_detect_set
from pipeline.train.plan import parse_training, plan_training
from pipeline.train.run import HISTORY, run_training

pytestmark = pytest.mark.slow
SIZE = {"frames": 12, "height": 96, "width": 160}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("shapes")
    train, train_boxes = make_detect_set(out / "train", 4, seed=0, **SIZE)
    val, val_boxes = make_detect_set(out / "val", 2, seed=500, **SIZE)
    val.append({"video_id": "broken", "path": "broken.mp4"})
    (out / "val" / "broken.mp4").write_bytes(b"not a video")
    return {"train": write_manifest(out / "train.csv", train, prefix="train/"),
            "val": write_manifest(out / "val.csv", val, prefix="val/"),
            "labels": write_labels(out / "labels.csv", train_boxes + val_boxes, LABEL_COLUMNS),
            "root": out}


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / HISTORY).read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(ray_session, shapes, tmp_path_factory) -> dict:
    """Two epochs, one run. Recovering a failed worker and --resume are the runner's,
    the same for every task: tests/test_train.py proves them once."""
    tmp = tmp_path_factory.mktemp("detect_run")
    spec = parse_training({
        "task": "detect", "name": "tiny",
        "data": {"train": str(shapes["train"]), "val": str(shapes["val"]),
                 "labels": str(shapes["labels"])},
        "sampling": {"frames": 3},
        "model": {"arch": "fasterrcnn_resnet18_fpn", "min_size": 96, "max_size": 160},
        "optim": {"epochs": 2, "batch_size": 2, "optimizer": "adamw", "lr": 1e-3},
        "resources": {"workers": 2, "cpus_per_worker": 0.5, "videos_per_decode_task": 4,
                      "decode_timeout_s": None},
        "checkpoint": {"storage_path": str(tmp / "runs"), "keep": 1},
        "max_failures": 1})
    lines: list[str] = []
    summary = run_training(plan_training(spec), log=lines.append)
    return {"summary": summary, "lines": lines, "run_dir": tmp / "runs" / "tiny", "tmp": tmp}


def test_training_reports_map_per_epoch(trained):
    h = history(trained["run_dir"])
    assert [e["epoch"] for e in h] == [1, 2]
    assert all(e["train_frames"] == 12 and e["val_frames"] == 6 for e in h)
    assert all(0 <= e["val_map50"] <= 1 and e["val_decode_errors"] == 1 for e in h)
    assert any("val: 2 of 3 videos decoded, 1 failed" in line for line in trained["lines"])
    assert any(line.startswith("epoch 2/2: ") and "val mAP@0.5" in line
               for line in trained["lines"])


def test_the_best_checkpoint_is_a_detection_checkpoint(trained):
    best = Path(trained["summary"]["best_dir"])
    assert {p.name for p in best.iterdir()} == {"model.pt"}
    ckpt = read_checkpoint(str(best))
    assert ckpt["task"] == "detect" and ckpt["arch"] == "fasterrcnn_resnet18_fpn"
    assert ckpt["class_names"][0] == "__background__"
    assert set(ckpt["class_names"][1:]) <= {"disc", "square", "triangle"}
    assert (ckpt["min_size"], ckpt["max_size"]) == (96, 160)


def test_a_detect_job_runs_on_the_checkpoint_with_one_row_per_manifest_row(trained, shapes):
    root = shapes["root"]
    (root / "empty.mp4").write_bytes(b"")
    rows = [{"video_id": r["video_id"], "path": f"val/{r['video_id']}.mp4"}
            for r in make_rows(shapes["val"])] + [
        {"video_id": "empty", "path": "empty.mp4"},
        {"video_id": "missing", "path": "missing.mp4"}]
    manifest = write_manifest(root / "job.csv", rows)
    spec = parse_jobspec({
        "task": "detect", "name": "det", "manifest": str(manifest),
        "sampling": {"fps": 5, "frames": 6},
        "model": {"arch": "fasterrcnn_resnet18_fpn", "weights": trained["summary"]["best_dir"]},
        "detect": {"score_threshold": 0.3},
        "resources": {"decode_timeout_s": 30, "videos_per_decode_task": 2},
        "max_error_fraction": 1.0, "output": {"path": str(trained["tmp"] / "out")}})
    plan = plan_job(spec)
    record = execute(plan, log=lambda _: None)
    table = pads.dataset(str(trained["tmp"] / "out"), format="parquet").to_table()
    got = {r["video_id"]: r for r in table.to_pylist()}
    assert sorted(got) == sorted(r["video_id"] for r in rows)
    for vid in ("shapes_000500", "shapes_000501"):
        row = got[vid]
        assert row["status"] == "ok" and row["frames_sampled"] == 6
        assert row["sampled_frames"] == [0, 2, 4, 6, 8, 10]  # 12 frames at 10 fps, 5/s
        assert isinstance(row["detections"], list) and (row["width"], row["height"]) == \
            (160, 96)
        for d in row["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 96 and d["score"] >= 0.3
    assert "not a decodable video" in got["broken"]["error"] or got["broken"]["error"]
    assert "empty" in got["empty"]["error"] and "not found" in got["missing"]["error"]
    assert record["task"] == "detect" and record["model"]["min_size"] == 96
    # docs/detection.md's first query: one row per detection.
    import duckdb

    found = duckdb.sql(f"SELECT count(*) FROM '{trained['tmp']}/out/*.parquet', "
                       "UNNEST(detections) AS t(d) WHERE status = 'ok'").fetchall()[0][0]
    assert found == sum(len(r["detections"]) for r in got.values() if r["status"] == "ok")
    summary = render_summary(plan.output, record)
    assert "5 rows for 5 manifest rows -> 2 ok, 3 error" in summary


def make_rows(manifest: Path) -> list[dict]:
    import csv

    with manifest.open() as f:
        return list(csv.DictReader(f))
