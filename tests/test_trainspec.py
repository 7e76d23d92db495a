"""Training specs, planning and the bad-input checks: everything that fails before Ray."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ConfigError, ManifestError, OutputError
from pipeline.fit.plan import split_rows
from pipeline.synth import write_manifest
from pipeline.tasks.classify.demo import make_motion_set
from pipeline.train.plan import load_training, parse_training, plan_training

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def motion_videos(tmp_path_factory) -> Path:
    """2 tiny videos per direction; manifests are written per test."""
    out = tmp_path_factory.mktemp("motion")
    rows = make_motion_set(out / "videos", per_class=2, seed=0, frames=12, size=32)
    write_manifest(out / "all.csv", rows, prefix="videos/")
    return out


def spec_dict(tmp_path: Path, train: str, **over) -> dict:
    d = {"name": "t", "data": {"train": train, "val_fraction": 0.5},
         "sampling": {"frames_per_clip": 4, "frame_stride": 2, "short_side": 32,
                      "crop_size": 32},
         "model": {"arch": "r3d_18"}, "checkpoint": {"storage_path": str(tmp_path / "runs")}}
    d.update(over)
    return d


def write_rows(path: Path, rows: list[dict]) -> str:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def test_repo_train_specs_validate():
    from pipeline.train.plan import load_training

    names = sorted(p.name for p in (REPO / "jobs").glob("train*.yaml"))
    tasks = {"train.yaml": "classify", "train_copies.yaml": "classify",
             "train_detect.yaml": "detect",
             "train_frames.yaml": "classify", "train_speech.yaml": "audio",
             "train_speech_picture.yaml": "classify"}
    assert names == sorted(tasks)
    for name in names:
        spec = load_training(REPO / "jobs" / name)
        assert Path(spec.data.train.path).is_absolute()
        assert spec.checkpoint.storage_path.endswith("runs")
        assert spec.task == tasks[name]
    assert load_training(REPO / "jobs" / "train_frames.yaml").model.arch == "resnet18"
    assert Path(load_training(REPO / "jobs" / "train_detect.yaml").data.labels).is_absolute()


def test_a_training_spec_of_an_untrainable_task_names_the_trainable_ones(tmp_path):
    from pipeline.train.plan import load_training

    path = tmp_path / "t.yaml"
    path.write_text("task: nope\nname: x\n")
    with pytest.raises(ConfigError, match=r"task: 'nope' cannot be trained; choose one of "
                                          r"\['classify', 'detect', 'audio'\]"):
        load_training(path)


def test_unknown_key_and_bad_values_name_the_field(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_training(spec_dict(tmp_path, "x.csv", optim={"epochz": 3}))
    assert "optim.epochz: unknown key" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_training(spec_dict(tmp_path, "x.csv", optim={"optimizer": "lamb"}))
    assert "optim.optimizer" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_training(spec_dict(tmp_path, "x.csv", optim={"epochs": 2, "warmup_epochs": 2}))
    assert "warmup_epochs" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_training(spec_dict(tmp_path, "x.csv", augment={"crop_scale": [0.9, 0.5]}))
    assert "augment.crop_scale" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_training(spec_dict(tmp_path, "x.csv", checkpoint={"storage_path": "gs://b/r"}))
    assert "checkpoint.storage_path: gs:// URIs are not supported here" in str(e.value)


def test_overrides_and_relative_paths(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec_dict(tmp_path, "m/train.csv")))
    spec = load_training(p, ["optim.epochs=3", "model.weights=ck/best"])
    assert spec.optim.epochs == 3
    assert spec.data.train.path == str(tmp_path / "m" / "train.csv")
    assert spec.model.weights == str(tmp_path / "ck" / "best")


def test_split_is_stratified_deterministic_and_order_free(motion_videos):
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(motion_videos / "all.csv")
    table = table.append_column("row", table.column(0))  # any extra column passes through
    train, val = split_rows(table, 0.5, seed=3)
    assert sorted(val["label"].to_pylist()) == ["down", "left", "right", "up"]
    again = split_rows(table.take(list(reversed(range(table.num_rows)))), 0.5, seed=3)[1]
    assert sorted(again["video_id"].to_pylist()) == sorted(val["video_id"].to_pylist())
    other = split_rows(table, 0.5, seed=4)[1]
    assert train.num_rows + val.num_rows == table.num_rows
    assert other.num_rows == val.num_rows


def test_plan_reads_classes_and_decode_specs(motion_videos, tmp_path):
    plan = plan_training(parse_training(spec_dict(tmp_path, str(motion_videos / "all.csv"))))
    assert plan.card.class_names == ("down", "left", "right", "up")
    assert plan.train_rows.num_rows == plan.val_rows.num_rows == 4
    assert plan.train_decode.clips == 4 and plan.train_decode.crop_size == 32
    assert plan.val_decode.clips == 1 and plan.val_decode.frames == 4
    assert plan.card.weights == str(tmp_path / "runs" / "t" / "best")


def test_missing_labels_fail_before_training(motion_videos, tmp_path):
    rows = [{"path": f"{motion_videos}/videos/left_000001.mp4"},
            {"path": f"{motion_videos}/videos/right_000002.mp4"}]
    spec = parse_training(spec_dict(tmp_path, write_rows(tmp_path / "nolabel.csv", rows)))
    with pytest.raises(ManifestError, match="no labels in column 'label'.*label_column"):
        plan_training(spec)
    rows = [{"path": "a.mp4", "label": "left"}, {"path": "b.mp4", "label": ""},
            {"path": "c.mp4", "label": "up"}]
    spec = parse_training(spec_dict(tmp_path, write_rows(tmp_path / "some.csv", rows)))
    with pytest.raises(ManifestError, match=r"1 rows have no label \(rows 2"):
        plan_training(spec)


def test_one_class_fails(tmp_path):
    rows = [{"path": f"{i}.mp4", "label": "cat"} for i in range(4)]
    spec = parse_training(spec_dict(tmp_path, write_rows(tmp_path / "one.csv", rows)))
    with pytest.raises(ManifestError, match="one class .'cat'.*at least two"):
        plan_training(spec)


def test_empty_splits_fail(tmp_path):
    rows = [{"path": "a.mp4", "label": "x"}, {"path": "b.mp4", "label": "y"}]
    spec = parse_training(spec_dict(tmp_path, write_rows(tmp_path / "two.csv", rows)))
    with pytest.raises(ManifestError, match="val split is empty.*val_fraction"):
        plan_training(spec)  # one video per class: none can be held out
    header_only = tmp_path / "empty.csv"
    header_only.write_text("path,label\n")
    spec = parse_training(spec_dict(tmp_path, str(tmp_path / "two.csv"),
                                     data={"train": str(tmp_path / "two.csv"),
                                           "val": str(header_only)}))
    with pytest.raises(ManifestError, match="no labels|val split is empty"):
        plan_training(spec)


def test_val_class_unknown_to_train(tmp_path):
    train = write_rows(tmp_path / "tr.csv", [{"path": "a.mp4", "label": "x"},
                                             {"path": "b.mp4", "label": "y"}])
    val = write_rows(tmp_path / "va.csv", [{"path": "c.mp4", "label": "z"}])
    spec = parse_training(spec_dict(tmp_path, train, data={"train": train, "val": val}))
    with pytest.raises(ManifestError, match=r"val labels \['z'\] do not occur"):
        plan_training(spec)


def test_unwritable_storage_fails(motion_videos, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    spec = parse_training(spec_dict(tmp_path, str(motion_videos / "all.csv"),
                                     checkpoint={"storage_path": str(blocker / "runs")}))
    with pytest.raises(OutputError, match="checkpoint.storage_path: cannot write"):
        plan_training(spec)


def test_existing_run_needs_resume_and_resume_needs_a_run(motion_videos, tmp_path):
    spec = parse_training(spec_dict(tmp_path, str(motion_videos / "all.csv")))
    with pytest.raises(ConfigError, match="no run to resume"):
        plan_training(spec, resume=True)
    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    with pytest.raises(ConfigError, match="already exists.*--resume"):
        plan_training(spec)
    assert plan_training(spec, resume=True).resume


def test_cli_train_prints_the_fix_without_traceback(tmp_path):
    rows = [{"path": f"{i}.mp4", "label": "cat"} for i in range(4)]
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec_dict(tmp_path, write_rows(tmp_path / "one.csv", rows))))
    result = CliRunner().invoke(app, ["train", str(p)])
    assert result.exit_code == 2
    assert "one class" in result.output and "Traceback" not in result.output


def test_more_gpus_than_the_cluster_has(ray_session, motion_videos, tmp_path):
    from pipeline.train.run import check_cluster

    spec = parse_training(spec_dict(tmp_path, str(motion_videos / "all.csv"),
                                     resources={"workers": 2, "gpus_per_worker": 1}))
    with pytest.raises(ConfigError, match="resources.gpus_per_worker.*asks for 2 GPUs"):
        check_cluster(plan_training(spec))
    spec = parse_training(spec_dict(tmp_path, str(motion_videos / "all.csv"),
                                     name="t2", resources={"workers": 3}))
    with pytest.raises(ConfigError, match="asks for 3 CPUs"):
        check_cluster(plan_training(spec))
