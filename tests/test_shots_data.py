"""The shot-boundary demo data (pipeline.tasks.shots.demo) and its scoring
(pipeline.tasks.shots.evaluate): the generated videos change where their cuts file says, and
evaluate() counts what a job found against it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from pipeline.errors import ManifestError
from pipeline.segments.shots import SHOT
from pipeline.tasks.shots.demo import DEMOS, FPS
from pipeline.tasks.shots.evaluate import evaluate, predicted_spans, read_cuts

SCHEMA = pa.schema([("video_id", pa.string()), ("status", pa.string()),
                    ("error", pa.string()), ("fps", pa.float64()),
                    ("num_frames", pa.int64()), ("duration_s", pa.float64()),
                    ("shots", pa.list_(SHOT)), ("shot_count", pa.int32()),
                    ("mean_shot_s", pa.float64())])


# ------------------------------------------------------------------ the generated set

@pytest.fixture(scope="module")
def demo_set(tmp_path_factory) -> Path:
    """``vidbatch demo-shots-data`` at its smallest: train holds one edited video (seed 0:
    three cuts, two dissolves), val one 8-second single-shot video."""
    root = tmp_path_factory.mktemp("shots")
    app = typer.Typer()
    app.command()(DEMOS["demo-shots-data"])
    result = CliRunner().invoke(app, [
        "--out", str(root / "data"), "--manifests", str(root / "manifests"),
        "--train-videos", "1", "--train-single", "0", "--val-videos", "0",
        "--val-single", "1", "--single-seconds", "8"])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def edited(demo_set) -> tuple[list, np.ndarray]:
    """The edited video's transitions (from its cuts file) and decoded frames."""
    (video, path), = _manifest(demo_set, "train").items()
    cuts = read_cuts(str(demo_set / "manifests" / "shots_train_cuts.csv"))[video]
    return cuts, _decode(path)


def _decode(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def _manifest(root: Path, split: str) -> dict[str, Path]:
    path = root / "manifests" / f"shots_{split}.csv"
    with path.open() as f:
        return {r["video_id"]: path.parent / r["path"] for r in csv.DictReader(f)}


def test_cuts_are_where_the_cuts_file_says(edited):
    cuts, frames = edited
    # step[t]: how much frame t differs from frame t - 1.
    step = np.r_[0.0, np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))]
    hard = [f for kind, f, _ in cuts if kind == "cut"]
    assert len(hard) == 3 and len(cuts) == 5
    # Frames whose step is not a transition's: the inside of shots.
    gradual = {f + k for kind, f, n in cuts if kind == "dissolve" for k in range(n + 1)}
    inside = [t for t in range(1, len(frames)) if t not in gradual and t not in hard]
    # The biggest steps outside dissolves are exactly the cuts, and each stands out of its
    # neighbourhood.
    assert max(step[inside]) < min(step[hard])
    for f in hard:
        near = [t for t in inside if abs(t - f) <= 25]
        assert step[f] > 2.5 * np.median(step[near])


def test_dissolves_are_blends(edited):
    cuts, frames = edited
    assert [kind for kind, _, _ in cuts].count("dissolve") == 2
    for kind, f, n in cuts:
        if kind != "dissolve":
            continue
        before, after = frames[f - 1], frames[f + n]  # the last of A, the first of B
        mid = f + n // 2
        a = (n // 2 + 1) / (n + 1)
        blend = (1 - a) * before.astype(np.float32) + a * after
        assert _mad(frames[mid], blend) < 0.5 * min(_mad(frames[mid], before),
                                                   _mad(frames[mid], after))
        # Gradual: no step inside it is near the change from A to B.
        steps = [_mad(frames[t], frames[t - 1]) for t in range(f, f + n + 1)]
        assert max(steps) < 0.5 * _mad(before, after)


def test_single_shot_video_is_labelled_none_and_flashes(demo_set):
    (video, path), = _manifest(demo_set, "val").items()
    assert video.startswith("single_")
    assert read_cuts(str(demo_set / "manifests" / "shots_val_cuts.csv")) == {video: []}
    frames = _decode(path)
    assert len(frames) == 8 * FPS
    brightness = frames.reshape(len(frames), -1).mean(axis=1)
    assert (brightness[1:-1] - np.maximum(brightness[:-2], brightness[2:])).max() > 20


def test_the_generated_labels_score_perfect(demo_set, tmp_path):
    labels = str(demo_set / "manifests" / "shots_train_cuts.csv")
    truth = read_cuts(labels)
    (video, cuts), = truth.items()
    out = _output(tmp_path, [_row(video, cuts, 900)])
    result = evaluate(out, labels)
    assert result["overall"]["f1"] == 1.0 and result["overall"]["true"] == 5


# ------------------------------------------------------------------ evaluate()

def _shots(cuts: list[tuple[str, int, int]], num_frames: int) -> list[dict]:
    """The shots a perfect detector finds: each transition ends one shot the frame before it
    and starts the next on the frame after it."""
    starts = [0] + [f + n if kind == "dissolve" else f for kind, f, n in cuts]
    ends = [f - 1 for _, f, _ in cuts] + [num_frames - 1]
    return [{"shot": i, "start_frame": s, "end_frame": e, "start_s": s / FPS,
             "end_s": (e + 1) / FPS, "score": 0.9}
            for i, (s, e) in enumerate(zip(starts, ends))]


def _row(video: str, cuts: list, num_frames: int, status: str = "ok") -> dict:
    shots = _shots(cuts, num_frames) if status == "ok" else None
    return {"video_id": video, "status": status, "error": None if status == "ok" else "x",
            "fps": float(FPS), "num_frames": num_frames, "duration_s": num_frames / FPS,
            "shots": shots, "shot_count": len(shots or []),
            "mean_shot_s": num_frames / FPS / max(len(shots or []), 1)}


def _output(folder: Path, rows: list[dict]) -> str:
    out = folder / "out"
    out.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out / "part-0.parquet")
    return str(out)


TRUTH = [("cut", 100, 1), ("dissolve", 200, 10), ("cut", 300, 1), ("dissolve", 400, 16)]
ROWS = ["video,frame,kind,length", "a,100,cut,1", "a,200,dissolve,10", "a,300,cut,",
        "a,400,dissolve,16", "s,,none,", "m,50,cut,1"]


@pytest.fixture
def labels(tmp_path) -> str:
    path = tmp_path / "cuts.csv"
    path.write_text("\n".join(ROWS) + "\n")
    return str(path)


def test_read_cuts_reads_csv_and_jsonl_alike(labels, tmp_path):
    assert read_cuts(labels) == {"a": TRUTH, "s": [], "m": [("cut", 50, 1)]}
    jsonl = tmp_path / "cuts.jsonl"
    keys = ROWS[0].split(",")
    values = [[int(v) if v.isdigit() else v or None for v in r.split(",")] for r in ROWS[1:]]
    jsonl.write_text("\n".join(json.dumps(dict(zip(keys, v))) for v in values))
    assert read_cuts(str(jsonl)) == read_cuts(labels)


def test_predicted_spans():
    shots = [{"start_frame": 0, "end_frame": 99}, {"start_frame": 100, "end_frame": 199},
             {"start_frame": 210, "end_frame": 300}]
    assert predicted_spans(shots) == [(100, 100), (200, 210)]
    assert predicted_spans(None) == [] and predicted_spans(shots[:1]) == []


def test_perfect_output_scores_one_and_counts_videos(labels, tmp_path):
    rows = [_row("a", TRUTH, 500), _row("s", [], 1500), _row("e", [], 100),
            _row("s2", [], 100, status="error")]
    result = evaluate(_output(tmp_path, rows), labels)
    assert result["cut"] == {"true": 2, "predicted": 2, "matched": 2, "precision": 1.0,
                             "recall": 1.0, "f1": 1.0}
    assert result["dissolve"]["f1"] == result["overall"]["f1"] == 1.0
    # e and s2 are not in the cuts file; m is not in the output.
    assert result["videos"] == {"ok": 2, "error": 0, "unlabelled": 2, "missing": 1}
    assert result["single_shot"] == {"videos": 1, "false_cuts": 0, "minutes": 1.0,
                                     "false_cuts_per_10_min": 0.0}


@pytest.mark.parametrize("shift, cuts_matched", [(2, 2), (3, 0), (-3, 0)])
def test_cuts_match_within_two_frames(labels, tmp_path, shift, cuts_matched):
    moved = [(k, f + shift, n) for k, f, n in TRUTH]
    result = evaluate(_output(tmp_path, [_row("a", moved, 500)]), labels)
    assert result["cut"]["matched"] == cuts_matched
    # The moved cuts are false cuts (1-frame spans), not false dissolves.
    assert result["cut"]["predicted"] == 2
    assert result["cut"]["precision"] == cuts_matched / 2
    # A dissolve only has to overlap: 3 frames off still matches.
    assert result["dissolve"]["matched"] == 2


def test_a_false_cut_in_a_single_shot_video(labels, tmp_path):
    rows = [_row("a", TRUTH, 500), _row("s", [("cut", 700, 1)], 1500)]
    result = evaluate(_output(tmp_path, rows), labels)
    assert result["single_shot"]["false_cuts"] == 1
    assert result["single_shot"]["false_cuts_per_10_min"] == pytest.approx(10.0)
    assert result["cut"]["precision"] == pytest.approx(2 / 3)
    assert result["cut"]["recall"] == 1.0 and result["dissolve"]["precision"] == 1.0


def test_a_missed_dissolve_lowers_recall(labels, tmp_path):
    found = [t for t in TRUTH if t[1] != 400]
    result = evaluate(_output(tmp_path, [_row("a", found, 500)]), labels)
    assert result["dissolve"] == {"true": 2, "predicted": 1, "matched": 1,
                                  "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)}
    assert result["cut"]["f1"] == 1.0
    assert result["overall"]["recall"] == 0.75


def test_matching_is_one_to_one_and_a_long_span_is_no_cut(labels, tmp_path):
    # Two boundaries at the first cut (100 and 101): one matches, the other is a false cut.
    # A 10-frame gradual span over the second cut does not lie within +-2 of it.
    found = [("cut", 100, 1), ("cut", 101, 1), ("dissolve", 200, 10),
             ("dissolve", 295, 9), ("dissolve", 400, 16)]
    result = evaluate(_output(tmp_path, [_row("a", found, 500)]), labels)
    assert result["cut"]["matched"] == 1 and result["cut"]["predicted"] == 2
    assert result["dissolve"]["matched"] == 2 and result["dissolve"]["predicted"] == 3


@pytest.mark.parametrize("text, words", [
    ("video,frame,length\na,1,1\n", ["lacks columns", "kind"]),
    ("video,frame,kind,length\na,10,fade,5\n", ["row 1", "kind", "fade"]),
    ("video,frame,kind,length\na,10,cut,1\na,ten,cut,1\n", ["row 2", "frame", "ten"]),
    ("video,frame,kind,length\na,10,dissolve,\n", ["row 1", "length"]),
    ("video,frame,kind,length\na,10,cut,4\n", ["row 1", "length is 4"]),
    ("video,frame,kind,length\na,,cut,1\n", ["row 1", "frame"]),
    ("video,frame,kind,length\na,,none,\na,10,cut,1\n", ["row 2", "none"]),
    ("video,frame,kind,length\n,10,cut,1\n", ["row 1", "video"]),
])
def test_bad_cuts_files_name_the_column_and_row(tmp_path, text, words):
    path = tmp_path / "cuts.csv"
    path.write_text(text)
    with pytest.raises(ManifestError) as e:
        read_cuts(str(path))
    assert all(w in str(e.value) for w in words), str(e.value)
