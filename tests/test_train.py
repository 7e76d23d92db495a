"""Training: the pure parts (augmentation, schedule, metrics), then real Ray Train runs.

The slow tests run 2 gloo DDP workers on the session's 2-CPU Ray. Each worker asks for
half a CPU: the two of them plus the Ray Data tasks that decode before training and feed
the shards during it fit on a 2-core machine without waiting on each other.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import torch

from pipeline.console import Console
from pipeline.errors import JobFailed
from pipeline.fit.epochs import lr_at
from pipeline.fit.metrics import Tally, confusion_summary
from pipeline.fit.spec import OptimSpec
from pipeline.infer.plan import plan_job
from pipeline.infer.run import execute
from pipeline.infer.spec import parse_jobspec
from pipeline.model.card import ModelCard
from pipeline.model.checkpoint import read_checkpoint
from pipeline.synth import write_manifest
from pipeline.tasks.classify.augment import ClipAugment, crop_box, pick_positions
from pipeline.tasks.classify.demo import make_motion_set
from pipeline.tasks.classify.loop import ClassifyLoop, ClassifyLoopConfig, ClipClassifier
from pipeline.train.plan import parse_training, plan_training
from pipeline.train.run import HISTORY, run_training


def test_augment_keeps_each_clip_whole():
    # Clip n, position p, frame t is filled with 100 * n + 10 * p + t: after augmentation
    # every frame of a clip must come from one position, in order, cropped the same way.
    n, positions, t, size = 3, 4, 5, 16
    clips = torch.zeros(n, positions, t, size, size, 3, dtype=torch.uint8)
    for i in range(n):
        for p in range(positions):
            for f in range(t):
                clips[i, p, f] = 100 * i + 10 * p + f
    out = ClipAugment(crop_size=8, hflip=True)(clips, torch.Generator().manual_seed(0))
    assert out.shape == (n, t, 8, 8, 3) and out.dtype == torch.float32
    for i in range(n):
        values = out[i].mean(dim=(1, 2, 3))
        assert torch.allclose(values - values[0], torch.arange(t, dtype=torch.float32))
        assert int(values[0]) // 100 == i
    a = ClipAugment(crop_size=8)(clips, torch.Generator().manual_seed(1))
    b = ClipAugment(crop_size=8)(clips, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_flip_and_positions_are_random_but_seeded():
    gen = torch.Generator().manual_seed(0)
    clips = torch.arange(64 * 4).view(64, 4, 1, 1, 1, 1)
    picked = pick_positions(clips, gen).flatten() % 4
    assert set(picked.tolist()) == {0, 1, 2, 3}
    ramp = torch.arange(8, dtype=torch.uint8).view(1, 1, 1, 1, 8, 1).expand(64, 1, 1, 8, 8, 3)
    out = ClipAugment(crop_size=8, crop_scale=(1, 1), crop_ratio=(1, 1))(ramp.contiguous(), gen)
    flipped = out[:, 0, 0, 0, 0] > out[:, 0, 0, -1, 0]
    assert 10 < int(flipped.sum()) < 54


def test_crop_box_stays_inside():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = crop_box(24, 40, (0.3, 1.0), (3 / 4, 4 / 3), gen)
        assert 0 <= top and top + h <= 24 and 0 <= left and left + w <= 40 and h > 0 < w


def test_lr_schedule():
    o = OptimSpec(epochs=10, lr=1.0, warmup_epochs=1)
    assert lr_at(0, 10, o) == pytest.approx(0.1)
    assert lr_at(10, 10, o) == pytest.approx(1.0)
    assert lr_at(55, 10, o) == pytest.approx(0.5)
    assert lr_at(99, 10, o) < 0.01
    s = OptimSpec(epochs=10, lr=1.0, schedule="step", step_epochs=3, step_gamma=0.1)
    assert [lr_at(e * 10, 10, s) for e in (0, 2, 3, 6)] == pytest.approx([1, 1, 0.1, 0.01])


def test_tally_reduces_exactly_and_summarises_confusion():
    a, b = Tally.empty(3), Tally.empty(3)
    logits = torch.tensor([[3.0, 1, 0], [0, 3, 1], [0, 3, 1]])
    a.add(logits, torch.tensor([0, 1, 2]), torch.tensor(1.5))
    b.add(logits[:1], torch.tensor([2]), torch.tensor(0.5))
    total = a.reduced(lambda t: t + _flat(b))  # what all_reduce(SUM) over two workers gives
    assert (total.top1, total.count) == (2, 4)
    assert total.confusion.tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]
    m = total.metrics("val")
    assert m["val_acc"] == 0.5 and m["val_loss"] == pytest.approx(0.5)
    summary = confusion_summary(total.confusion.tolist(), ["a", "b", "c"])
    assert summary[2] == {"class": "c", "videos": 2, "correct": 0, "recall": 0.0,
                          "most_confused_with": "b", "times": 1}


def _flat(t: Tally) -> torch.Tensor:
    return torch.cat([torch.tensor([t.loss_sum, t.top1, t.top5, t.count], dtype=torch.float64),
                      t.confusion.flatten().double()])


@pytest.mark.parametrize("arch,kind", [("r3d_18", "clip"), ("resnet18", "frame")])
def test_classifier_takes_uint8_layout_clips(arch, kind):
    from torchvision.models import get_model

    card = ModelCard(arch, kind, "none", "none", ("a", "b"), (0.5,) * 3, (0.25,) * 3, 32, 32,
                     False)
    model = ClipClassifier(get_model(arch, weights=None, num_classes=2), card).eval()
    x = torch.randint(0, 255, (2, 4, 32, 32, 3)).float()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 2)
    if kind == "frame":  # order-invariant: the reason the 2D model cannot learn direction
        with torch.no_grad():
            assert torch.allclose(model(x.flip(1)), out, atol=1e-5)


# ---------------------------------------------------------------- real Ray Train runs


@pytest.fixture(scope="module")
def motion_manifests(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("motion")
    train = make_motion_set(out / "train", per_class=3, seed=0, frames=12)
    val = make_motion_set(out / "val", per_class=1, seed=1000, frames=12)
    val.append({"video_id": "broken", "path": "broken.mp4", "label": "up"})
    (out / "val" / "broken.mp4").write_bytes(b"not a video")
    return (write_manifest(out / "train.csv", train, prefix="train/"),
            write_manifest(out / "val.csv", val, prefix="val/"))


def tiny_spec(tmp_path: Path, manifests, **over):
    d = {"name": "tiny", "data": {"train": str(manifests[0]), "val": str(manifests[1])},
         "sampling": {"frames_per_clip": 4, "frame_stride": 2, "short_side": 32,
                      "crop_size": 32},
         "augment": {"hflip": False, "temporal_positions": 2},
         # mc3_18: a clip model with a third of r3d_18's weights, so checkpoints are small
         "model": {"arch": "mc3_18"},
         "optim": {"epochs": 2, "batch_size": 3, "optimizer": "adamw", "lr": 1e-3},
         "resources": {"workers": 2, "cpus_per_worker": 0.5, "videos_per_decode_task": 4,
                       "decode_timeout_s": None},  # in-process: no decode child to start
         "checkpoint": {"storage_path": str(tmp_path / "runs"), "keep": 1},
         "max_failures": 0}
    d.update(over)
    return parse_training(d)


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / HISTORY).read_text().splitlines()]


@pytest.fixture(scope="module")
def recovered_run(ray_session, motion_manifests, tmp_path_factory) -> dict:
    """One real run (2 gloo workers) through every recovery path, shared by the tests below.

    Workers fail at the start of epoch 2 (Ray Train restarts them from the epoch-1
    checkpoint: max_failures=1) and again at epoch 3 (no failures left: the run stops, as
    an interrupted run would). ``--resume`` then trains epoch 3 only.
    """
    tmp_path = tmp_path_factory.mktemp("recovered")
    spec = tiny_spec(tmp_path, motion_manifests, max_failures=1,
                     optim={"epochs": 3, "batch_size": 3, "optimizer": "sgd", "lr": 0.01})
    run_dir = tmp_path / "runs" / "tiny"
    lines: list[str] = []
    with pytest.raises(JobFailed, match="--resume") as failed:
        run_training(plan_training(spec), log=lines.append, fail_at_epochs=(2, 3))
    interrupted = history(run_dir)
    # The resumed run on a live display, as `vidbatch train` shows it in a terminal.
    screen = io.StringIO()
    console = Console(live=True, file=screen)
    summary = run_training(plan_training(spec, resume=True), log=lines.append,
                           console=console)
    return {"run_dir": run_dir, "lines": lines, "failure": str(failed.value),
            "interrupted": interrupted, "summary": summary, "tmp_path": tmp_path,
            "screen": screen.getvalue()}


@pytest.mark.slow
def test_a_failed_worker_recovers_and_the_next_failure_stops_the_run(recovered_run):
    assert [h["epoch"] for h in recovered_run["interrupted"]] == [1, 2], \
        recovered_run["failure"]
    assert any(line.startswith("epoch 2/3: ") for line in recovered_run["lines"])


@pytest.mark.slow
def test_the_live_display_shows_steps_loss_and_the_validation_metric(recovered_run):
    # Rank 0 posts its steps from the Ray Train worker (fit.progress); the bar of the last
    # refresh shows the resumed epoch's last step, its loss and epoch 3's val_acc.
    frames = re.findall(r"epoch (\d)/3  step (\d+)/(\d+)  loss ([\d.]+)(  val_acc [\d.]+)?",
                        recovered_run["screen"])
    assert frames, recovered_run["screen"][-2000:]
    epoch, step, steps, _, val = frames[-1]
    assert (epoch, step) == ("3", steps) and val, frames[-1]
    assert f"val_acc {recovered_run['summary']['last']['val_acc']:.3f}" in val


@pytest.mark.slow
def test_decode_failures_are_counted_listed_and_reported(recovered_run):
    run_dir = recovered_run["run_dir"]
    assert any("val: 4 of 5 videos decoded, 1 failed" in line
               for line in recovered_run["lines"])
    assert "broken" in (run_dir / "decode_errors.csv").read_text()
    assert all(h["val_decode_errors"] == 1 for h in history(run_dir))


@pytest.mark.slow
def test_resume_trains_only_the_missing_epochs(recovered_run):
    h = history(recovered_run["run_dir"])
    assert [e["epoch"] for e in h] == [1, 2, 3]  # 1 and 2 were not redone
    assert h[2]["train_clips"] == 12 and h[2]["val_clips"] == 4


@pytest.mark.slow
def test_the_best_checkpoint_records_what_inference_needs(recovered_run):
    summary = recovered_run["summary"]
    best = Path(summary["best_dir"])
    assert {p.name for p in best.iterdir()} == {"model.pt", "confusion.json", "confusion.csv"}
    ckpt = read_checkpoint(str(best))
    assert ckpt["class_names"] == ["down", "left", "right", "up"]
    assert ckpt["sampling"]["frames"] == 4 and ckpt["spec"]["name"] == "tiny"
    assert ckpt["epoch"] == summary["best_epoch"]
    assert ckpt["metrics"]["val_acc"] == summary["best_val_acc"]
    confusion = json.loads((best / "confusion.json").read_text())
    assert sum(map(sum, confusion["matrix"])) == 4


@pytest.mark.slow
def test_a_job_runs_on_the_trained_checkpoint(recovered_run, motion_manifests):
    out = recovered_run["tmp_path"] / "out"
    job = parse_jobspec({
        "name": "use-trained", "manifest": str(motion_manifests[1]),
        "sampling": {"frames_per_clip": 4, "frame_stride": 2},
        "model": {"arch": "mc3_18", "weights": recovered_run["summary"]["best_dir"]},
        "resources": {"decode_timeout_s": None},
        "output": {"path": str(out)}})
    plan = plan_job(job)
    assert plan.model.class_names == ("down", "left", "right", "up")
    assert (plan.decode.short_side, plan.decode.crop_size) == (32, 32)
    execute(plan, log=lambda _: None)
    rows = pads.dataset(str(out), format="parquet").to_table().to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(rows) == 5 and len(ok) == 4
    assert {r["pred_label"] for r in ok} <= {"down", "left", "right", "up"}


def test_fine_tune_from_a_checkpoint_replaces_the_head(tmp_path):
    from torchvision.models import get_model

    from pipeline.model.checkpoint import save_checkpoint
    from pipeline.model.spec import ModelSpec
    from pipeline.model.zoo import model_card

    three = ModelCard("resnet18", "frame", "none", "none", ("a", "b", "c"), (0.5,) * 3,
                      (0.25,) * 3, 32, 32, False)
    net = get_model("resnet18", weights=None, num_classes=3)
    save_checkpoint(tmp_path / "start" / "model.pt", net, three)
    start = model_card(ModelSpec(arch="resnet18", weights=str(tmp_path / "start")))
    assert start.source == "checkpoint" and start.mean == (0.5,) * 3
    two = ModelCard("resnet18", "frame", "", "checkpoint", ("x", "y"), start.mean, start.std,
                    32, 32, True)
    cfg = ClassifyLoopConfig(worker=ClassifyLoop, start=start, card=two, optim=OptimSpec(),
                             augment=ClipAugment(crop_size=32), steps_per_epoch=1,
                             checkpoint_every=1, extra={})
    loop = ClassifyLoop(cfg, 0, 1, torch.device("cpu"), torch.Generator())
    model = loop.wrap(loop.build())
    assert model.net.fc.out_features == 2
    assert torch.equal(model.net.conv1.weight, net.conv1.weight)  # the body was loaded


def test_publishing_the_best_checkpoint_switches_it_whole(tmp_path):
    from pipeline.fit.training import ClassifierTraining
    from pipeline.model.checkpoint import CHECKPOINT_FILE
    from pipeline.output.outdir import STAGING_SUFFIX
    from pipeline.train.plan import publish_best

    PUBLISHED = ClassifierTraining.published  # noqa: N806

    def checkpoint(tag: str) -> Path:
        d = tmp_path / tag
        d.mkdir()
        for name in (CHECKPOINT_FILE, "confusion.json", "confusion.csv", "train_state.pt"):
            (d / name).write_text(f"{tag} {name}")
        return d

    run = tmp_path / "run"
    run.mkdir()
    (run / "best").mkdir()  # as an older vidbatch published it: a folder
    (run / "best" / CHECKPOINT_FILE).write_text("oldest")
    best = publish_best(checkpoint("epoch1"), run / "best", PUBLISHED)
    assert (best / CHECKPOINT_FILE).read_text() == f"epoch1 {CHECKPOINT_FILE}"
    # What a crash mid-publish leaves: a half-written folder and a dangling link.
    (run / "best.deadbeef").mkdir()
    (run / f"best.link{STAGING_SUFFIX}").symlink_to("best.deadbeef")
    publish_best(checkpoint("epoch2"), run / "best", PUBLISHED)
    assert best.is_symlink() and (best / CHECKPOINT_FILE).read_text().startswith("epoch2")
    assert sorted(p.name for p in best.iterdir()) == ["confusion.csv", "confusion.json",
                                                      CHECKPOINT_FILE]
    assert sorted(p.name for p in run.iterdir()) == ["best", best.resolve().name]
