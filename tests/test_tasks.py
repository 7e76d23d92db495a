"""The task seam: a job's ``task`` key picks a plug-in, and the pipeline runs a task it was
never written for, registered with one line, through a real Ray job; the same task is
trained through Ray Train (``vidbatch train``'s runner) and evaluated by ``vidbatch
evaluate``, both through the seam."""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.dataset as pads
import pytest
import torch
import torch.nn as nn
from ray import cloudpickle
from typer.testing import CliRunner

from pipeline.decode.base import DecodeSpec
from pipeline.errors import ConfigError
from pipeline.fit.classifier import ClassifierLoop
from pipeline.fit.epochs import LoopConfig
from pipeline.fit.plan import TrainPlan, read_splits
from pipeline.fit.spec import TrainSpecBase
from pipeline.fit.training import ClassifierTraining
from pipeline.infer.plan import describe, plan_job
from pipeline.infer.run import execute
from pipeline.infer.spec import parse_jobspec
from pipeline.infer.summary import render_summary
from pipeline.output.rows import HEAD, TAIL, Provenance, per_ok, rows_table
from pipeline.output.store import read_rows
from pipeline.spec import JobSpec, SamplingSpec, Spec
from pipeline.synth import write_video
from pipeline.tasks.base import Task, TaskLines
from pipeline.tasks.registry import TASKS
from pipeline.train.plan import parse_training, plan_training
from pipeline.train.run import HISTORY, run_training


def score_brightness(output: str, labels: str) -> dict:
    """The toy task's evaluation: mean absolute error against a CSV of video_id, brightness."""
    with open(labels, newline="") as f:
        truth = {r["video_id"]: float(r["brightness"]) for r in csv.DictReader(f)}
    errors = [abs(r["brightness"] - truth[r["video_id"]]) for r in read_rows(output).to_pylist()
              if r["status"] == "ok" and r["video_id"] in truth]
    return {"videos": len(errors), "mean_abs_error": sum(errors) / len(errors)}


class BrightnessJobSpec(JobSpec):
    task: Literal["brightness"] = "brightness"


class BrightnessReplica:
    """The mean pixel value of each video's sampled frames: no network, no torch."""

    def __init__(self, schema: pa.Schema, provenance: Provenance):
        self.schema, self.provenance = schema, provenance

    def __call__(self, batch):
        ok = batch["status"] == "ok"
        frames = batch["frames"][ok]  # (0, ...) when no row of the batch was decoded
        means = frames.mean(axis=tuple(range(1, frames.ndim)))
        columns = {"brightness": per_ok(len(ok), ok, means.tolist(), pa.float32())}
        return rows_table(batch, self.schema, self.provenance, ok, columns)


class BrightnessTask(Task):
    name = "brightness"
    spec_class = BrightnessJobSpec
    resume_keys = ()

    def resolve(self, spec):
        return "mean-pixel"

    def fetch(self, model):
        pass

    def decode_spec(self, spec, model):
        return DecodeSpec.from_sampling(spec.sampling, spec.resources, 48, 48)

    def output_fields(self, arch):
        return [pa.field("brightness", pa.float32())]

    def replica(self, spec, model, runtime):
        return BrightnessReplica, {"schema": self.schema(model),
                                   "provenance": self.provenance(spec, model)}

    def provenance(self, spec, model):
        return Provenance(model, "none", spec.name)

    def describe(self, spec, model):
        return TaskLines(model="mean pixel value (no network)", output="brightness")

    def record(self, model):
        return {"arch": model}

    summary_figures = {"mean": "avg(brightness)"}

    def summary(self, record, figures=None):
        mean = figures["mean"]  # computed over the output's rows by summary_figures' SQL
        return [f"brightness: the mean pixel value of the sampled frames ({mean:.0f} on "
                "average over the ok rows)"]

    evaluation = staticmethod(score_brightness)

    def training(self):
        return BrightnessTraining()


class BrightnessModelSpec(Spec):
    arch: Literal["mean-pixel"] = "mean-pixel"
    weights: str = "none"


class BrightnessTrainSpec(TrainSpecBase):
    task: Literal["brightness"] = "brightness"
    sampling: SamplingSpec = SamplingSpec()
    model: BrightnessModelSpec = BrightnessModelSpec()


@dataclass(frozen=True)
class BrightnessCard:
    class_names: tuple[str, ...]


def mean_pixel(frames: torch.Tensor) -> torch.Tensor:
    return frames.float().mean(dim=tuple(range(1, frames.ndim)))[:, None] / 255


class BrightnessLoop(ClassifierLoop):
    """Dark or bright from the mean pixel: one linear layer."""

    key = "frames"

    def build(self):
        return nn.Linear(1, len(self.cfg.card.class_names))

    def train_logits(self, model, batch):
        return model(mean_pixel(batch["frames"]).to(self.device))

    val_logits = train_logits

    def save_model(self, path, net, **extra):
        torch.save({"class_names": list(self.cfg.card.class_names),
                    "state_dict": net.state_dict(), **extra}, path)


class BrightnessTraining(ClassifierTraining):
    spec_class = BrightnessTrainSpec
    columns = ("row", "frames", "target")

    def plan(self, spec, run_dir, resume):
        train, val, names = read_splits(spec)
        decode = DecodeSpec.from_sampling(spec.sampling, spec.resources, 48, 48)
        card = BrightnessCard(names)
        return TrainPlan(spec, card, card, decode, decode, train, val, run_dir, resume)

    def loop_config(self, plan, **common):
        return LoopConfig(worker=BrightnessLoop, **common)

    def inputs(self, plan):
        return "frames", plan.val_decode.describe()


@pytest.fixture
def brightness(monkeypatch):
    """The task registered (the one line a new task adds to pipeline/tasks/registry.py),
    and this module pickled by value, as Ray ships a task's replica to its actors."""
    monkeypatch.setitem(TASKS, "brightness", BrightnessTask())
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield TASKS["brightness"]
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_spec_without_a_task_is_a_classify_job(tmp_path):
    spec = parse_jobspec({"name": "j", "manifest": "m.csv", "model": {"arch": "r3d_18"},
                          "output": {"path": "out"}}, base_dir=tmp_path)
    assert spec.task == "classify" and type(spec).__name__ == "ClassifyJobSpec"


def test_an_unknown_task_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"task: unknown task 'nope'; choose one of "
                                          r"\['audio', 'classify', 'detect', 'shots'\]"):
        parse_jobspec({"name": "j", "task": "nope", "manifest": "m.csv",
                       "output": {"path": "out"}})


def test_a_task_checks_its_own_sections(brightness):
    with pytest.raises(ConfigError, match="model: unknown key"):
        parse_jobspec({"name": "j", "task": "brightness", "manifest": "m.csv",
                       "model": {"arch": "r3d_18"}, "output": {"path": "out"}})


def test_the_schema_puts_the_tasks_columns_between_the_common_ones(brightness):
    names = brightness.schema("mean-pixel").names
    assert names == [f.name for f in HEAD] + ["brightness"] + [f.name for f in TAIL]


@pytest.mark.slow
def test_a_new_task_runs_end_to_end(ray_session, brightness, tmp_path, numbered_frames):
    # Frame t of video k is filled with 8 * t + k: the mean of 2 uniformly sampled frames
    # of 20 (frames 5 and 15) is 8 * 10 + k.
    rows = []
    for k in range(3):
        write_video(tmp_path / f"v{k}.mp4", numbered_frames(20) + k, lossless=True)
        rows.append(f"v{k}.mp4")
    (tmp_path / "m.csv").write_text("video_id,path\n" + "".join(
        f"{r.removesuffix('.mp4')},{r}\n" for r in [*rows, "missing.mp4"]))
    spec = parse_jobspec({"name": "bright", "task": "brightness", "manifest": "m.csv",
                          "sampling": {"frames_per_clip": 2},
                          "resources": {"decode_timeout_s": None},
                          "output": {"path": "out"}}, base_dir=tmp_path)
    plan = plan_job(spec)
    assert "mean pixel value (no network)" in describe(plan)
    record = execute(plan, log=lambda _: None)
    table = pads.dataset(str(tmp_path / "out"), format="parquet").to_table()
    assert table.schema.names == brightness.schema("mean-pixel").names
    got = {r["path"].rsplit("/", 1)[-1]: r for r in table.to_pylist()}
    for k in range(3):
        assert got[f"v{k}.mp4"]["status"] == "ok"
        assert got[f"v{k}.mp4"]["brightness"] == pytest.approx(80 + k, abs=0.5)
        assert got[f"v{k}.mp4"]["model"] == "mean-pixel"
    assert got["missing.mp4"]["status"] == "error" and got["missing.mp4"]["brightness"] is None
    assert record["task"] == "brightness" and record["model"] == {"arch": "mean-pixel"}
    summary = render_summary(plan.output, record)
    assert "4 rows for 4 manifest rows -> 3 ok, 1 error" in summary
    assert summary.endswith("brightness: the mean pixel value of the sampled frames (81 on "
                            "average over the ok rows)")
    # vidbatch evaluate finds the task's evaluation through the job record's task
    from pipeline.cli import app

    labels = tmp_path / "labels.csv"
    labels.write_text("video_id,brightness\n" + "".join(f"v{k},{80 + k}\n" for k in range(3)))
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "out"), "--labels",
                                      str(labels)])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["videos"] == 3 and scores["mean_abs_error"] < 0.5


@pytest.mark.slow
def test_a_new_task_trains_for_an_epoch_through_ray_train(ray_session, brightness, tmp_path,
                                                          numbered_frames):
    """The toy task's Training, found by the runner through the registry: its split decoded
    by the decode stage, one epoch on a Ray Train worker, the best checkpoint published
    with the classifier's confusion files and the summary in its words."""
    rows = ["path,label"]
    for k in range(6):
        level, label = (40, "dark") if k % 2 else (200, "bright")
        write_video(tmp_path / f"v{k}.mp4", numbered_frames(8) * 0 + level + k, lossless=True)
        rows.append(f"v{k}.mp4,{label}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    spec = parse_training({"task": "brightness", "name": "toy", "data": {
        "train": str(tmp_path / "m.csv"), "val_fraction": 0.34},
        "sampling": {"frames_per_clip": 2},
        "optim": {"epochs": 1, "batch_size": 2, "optimizer": "adamw", "lr": 0.1},
        "resources": {"workers": 1, "decode_timeout_s": None},
        "checkpoint": {"storage_path": str(tmp_path / "runs")}}, base_dir=tmp_path)
    lines: list[str] = []
    summary = run_training(plan_training(spec), log=lines.append)
    run = tmp_path / "runs" / "toy"
    assert summary["task"] == "brightness" and summary["best_epoch"] == 1
    assert sorted(p.name for p in (run / "best").iterdir()) == [
        "confusion.csv", "confusion.json", "model.pt"]
    epoch = json.loads((run / HISTORY).read_text().splitlines()[0])
    assert epoch["train_clips"] == 4 and epoch["val_clips"] == 2
    assert any(line.startswith("train toy (brightness): 4 train / 2 val videos") for line in lines)
    assert any(line.startswith("epoch 1/1: train loss") for line in lines)


# ---------------------------------------------------------------- a decoder that kills its worker


class CrashyJobSpec(JobSpec):
    task: Literal["crashy"] = "crashy"


def _decord_that_crashes_on_killer(src, spec, start_s=None, end_s=None, indices=None):
    """decord, except that on one file it takes its process down, as a native crash would."""
    import signal

    from pipeline.decode.video_decord import decode_with_decord

    if "killer" in str(src):
        os.kill(os.getpid(), signal.SIGSEGV)
    return decode_with_decord(src, spec, start_s, end_s, indices)


def _crashing_stage(batch, spec, guard=None):
    from pipeline.decode import fallback
    from pipeline.decode.stage import decode_batch

    fallback.DECODERS["decord"] = _decord_that_crashes_on_killer  # in this worker only
    return decode_batch(batch, spec, guard=guard)


class CrashyTask(BrightnessTask):
    name = "crashy"
    spec_class = CrashyJobSpec
    decode_stage = staticmethod(_crashing_stage)


@pytest.mark.slow
def test_a_video_that_kills_its_worker_ends_as_an_error_row(ray_session, brightness,
                                                             monkeypatch, tmp_path,
                                                             numbered_frames):
    """Decoding in the Ray worker (decode_timeout_s: null): the worker dies on one video,
    Ray retries its task; after two deaths on it the video is an error row and the job
    finishes with every row."""
    monkeypatch.setitem(TASKS, "crashy", CrashyTask())
    for name in ("a.mp4", "killer.mp4", "b.mp4"):
        write_video(tmp_path / name, numbered_frames(8), lossless=True)
    (tmp_path / "m.csv").write_text("path\na.mp4\nkiller.mp4\nb.mp4\n")
    spec = parse_jobspec({"name": "crashy", "task": "crashy", "manifest": "m.csv",
                          "sampling": {"frames_per_clip": 2},
                          "resources": {"decode_timeout_s": None,
                                        "videos_per_decode_task": 1},
                          "output": {"path": "out"}, "max_error_fraction": 1.0},
                         base_dir=tmp_path)
    execute(plan_job(spec), log=lambda _: None)
    rows = pads.dataset(str(tmp_path / "out"), format="parquet").to_table().to_pylist()
    got = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert sorted(got) == ["a.mp4", "b.mp4", "killer.mp4"]
    assert got["a.mp4"]["status"] == got["b.mp4"]["status"] == "ok"
    assert got["killer.mp4"]["status"] == "error"
    assert got["killer.mp4"]["error"].startswith("decode: the decode task died 2 times")
