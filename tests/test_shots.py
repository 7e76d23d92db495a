"""Shots: every frame decoded in order, the detectors on real encoded videos, the shots'
lengths fitted, TransNetV2 leaving the process as it found it, and the jobs on a real local
Ray: ``task: shots``, and a classify job per shot (``segments: shots``), resumed per shot
and fed by a shots job's output."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipeline.decode.sequence import SequenceSpec, decode_sequence
from pipeline.decode.stage import decode_sequence_batch
from pipeline.errors import OutputError
from pipeline.infer.plan import plan_job
from pipeline.infer.run import execute
from pipeline.infer.spec import parse_jobspec
from pipeline.segments.detectors import (
    ContentScorer,
    Shot,
    TransNetV2Scorer,
    process_state_kept,
    shots_from_scores,
)
from pipeline.segments.shots import fit_lengths
from pipeline.synth import write_video
from pipeline.tasks.shots.demo import edited_video


def _shot(start: float, end: float, i: int = 0) -> Shot:
    return Shot(i, int(start * 25), int(end * 25) - 1, start, end, None)


def test_fit_lengths_merges_short_shots_and_splits_long_ones():
    # The module's worked example: 10, 1, 30, 130 s -> 11, 30, then 130 s in three.
    edges = np.cumsum([0, 10, 1, 30, 130])
    shots = [_shot(a, b, i) for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
    fitted = fit_lengths(shots, min_s=2, max_s=60)
    lengths = [round(s.end_s - s.start_s, 1) for s in fitted]
    assert lengths == [11, 30, 43.3, 43.3, 43.3]
    assert [s.index for s in fitted] == [0, 1, 2, 3, 4]
    assert fitted[0].start_s == 0 and fitted[-1].end_s == 171
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(fitted, fitted[1:]))
    # A video shorter than min_s stays one shot.
    assert len(fit_lengths([_shot(0, 1.5)], min_s=2, max_s=60)) == 1


def test_shots_from_scores_cuts_and_gradual_transitions():
    scores = np.zeros(100, np.float32)
    scores[29] = 0.9  # a hard cut: the last frame before it scores
    scores[60:70] = 0.6  # a dissolve: its frames belong to no shot
    times = np.arange(100) / 25
    shots = shots_from_scores(scores, 0.4, times, first_frame=10, fps=25)
    assert [(s.start_frame, s.end_frame) for s in shots] == [(10, 39), (40, 69), (80, 109)]
    assert shots[0].score is None and shots[1].score == pytest.approx(0.9)
    assert shots[2].start_s == pytest.approx(70 / 25) and shots[2].end_s == pytest.approx(4.0)
    # Nothing above the threshold: one shot, the whole sequence.
    assert len(shots_from_scores(np.zeros(10), 0.4, times[:10])) == 1
    # TransNetV2's all-frames head widens a transition to its whole span: a dissolve whose
    # middle frame alone scored becomes a gradual transition between two shots.
    scores, extent = np.zeros(100, np.float32), np.zeros(100, np.float32)
    scores[50], extent[44:57] = 0.9, 0.8
    shots = shots_from_scores(scores, 0.4, times, fps=25, extent=extent)
    assert [(s.start_frame, s.end_frame) for s in shots] == [(0, 43), (57, 99)]
    assert len(shots_from_scores(scores, 0.4, times, fps=25)) == 2  # without: a cut at 51


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    """A real encoded video with known transitions (the shots demo's generator)."""
    frames, labels = edited_video(seed=3, video_s=(10.0, 12.0))
    path = write_video(tmp_path_factory.mktemp("edited") / "edited.mp4", frames, fps=25)
    return path, frames, labels


def _found(shots: list[Shot]) -> list[int]:
    return [s.start_frame for s in shots[1:]]


def test_sequence_decodes_every_frame_in_order(edited, numbered_b_frames):
    path, frames, _ = edited
    video = decode_sequence(str(path), SequenceSpec())
    assert video.frames.shape == (len(frames), 27, 48, 3)
    assert np.all(np.diff(video.times) > 0) and video.indices[0] == 0
    # A B-frame file whose frames say their number by brightness: decoded in order.
    b_path, count = numbered_b_frames, 60
    confined = decode_sequence_batch(
        {"video_id": np.array(["b"], object), "path": np.array([str(b_path)], object),
         "start_s": np.array([np.nan]), "end_s": np.array([np.nan])},
        SequenceSpec(timeout_s=30))
    assert confined["status"][0] == "ok", confined["error"][0]
    brightness = confined["sequence"][0].mean(axis=(1, 2, 3))
    assert len(brightness) == count and np.all(np.diff(brightness) > 0)


def test_both_detectors_find_the_hard_cuts(edited):
    path, _, labels = edited
    video = decode_sequence(str(path), SequenceSpec())
    cuts = [t["frame"] for t in labels if t["kind"] == "cut"]
    assert cuts, "the generated video has hard cuts"
    content = ContentScorer(27.0).scores(video.frames, video.fps)
    found = _found(shots_from_scores(content, 27.0, video.times, 0, video.fps))
    assert all(min(abs(f - c) for f in found) <= 2 for c in cuts), (found, labels)
    single, every = TransNetV2Scorer("cpu").heads(video.frames)
    shots = shots_from_scores(single, 0.55, video.times, 0, video.fps, every)
    spans = [(a.end_frame + 1, b.start_frame) for a, b in zip(shots, shots[1:])]
    assert len(spans) == len(labels), (spans, labels)
    for t, (a, b) in zip(labels, spans):  # each transition found, a dissolve's whole span
        lo, hi = t["frame"] - 2, t["frame"] + t["length"] + 1
        assert lo <= a <= b <= hi, (t, spans)
        if t["kind"] == "dissolve":
            assert b - a >= t["length"] - 2, (t, spans)


def test_transnetv2_leaves_the_process_as_it_found_it():
    import torch

    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    TransNetV2Scorer("cpu")  # seeds everything with 42 and turns deterministic mode on
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError), process_state_kept():
        torch.use_deterministic_algorithms(True)
        raise RuntimeError("the state comes back even when the body fails")
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.fixture(scope="module")
def shot_videos(tmp_path_factory, edited):
    """Two edited videos, one single shot, and a missing file."""
    root = tmp_path_factory.mktemp("shot_jobs")
    frames, labels = edited_video(seed=5, video_s=(8.0, 9.0))
    write_video(root / "a.mp4", edited[1], fps=25)
    write_video(root / "b.mp4", frames, fps=25)
    write_video(root / "c.mp4", edited[1][:40], fps=25)  # 1.6 s of one shot
    (root / "manifest.csv").write_text("video_id,path\na,a.mp4\nb,b.mp4\nc,c.mp4\n"
                                       "gone,missing.mp4\n")
    return root, {"a": edited[2], "b": labels}


def _job(root, name: str, extra: dict):
    spec = parse_jobspec({"name": name, "manifest": "manifest.csv",
                          "resources": {"videos_per_decode_task": 2},
                          "output": {"path": name}, "max_error_fraction": 1.0, **extra},
                         base_dir=root)
    return execute(plan_job(spec), log=lambda _: None), root / name


def _rows(out) -> list[dict]:
    return pads.dataset(str(out), format="parquet").to_table().to_pylist()


CLASSIFY = {"model": {"arch": "r3d_18", "num_classes": 3},
            "sampling": {"frames_per_clip": 4, "short_side": 32, "crop_size": 32}}


def test_shots_job_and_a_classify_job_per_shot(ray_session, shot_videos):
    root, labels = shot_videos
    record, out = _job(root, "shots", {"task": "shots", "shots": {"detector": "content"}})
    by_id = {r["video_id"]: r for r in _rows(out)}
    assert by_id["gone"]["status"] == "error" and by_id["c"]["shot_count"] == 1
    for vid, truth in labels.items():
        row = by_id[vid]
        cuts = [t["frame"] for t in truth if t["kind"] == "cut"]
        starts = [s["start_frame"] for s in row["shots"][1:]]
        assert all(min(abs(s - c) for s in starts) <= 2 for c in cuts), (starts, truth)
        assert row["shot_count"] == len(row["shots"])
    # The same videos per shot: shots found again in the job (content detector), each a
    # row with its seconds; the missing file one error row; short c one shot.
    per_shot = {"segments": {"by": "shots", "detector": "content", "min_s": 1.0,
                             "max_s": 4.0}, **CLASSIFY}
    record, out = _job(root, "per_shot", per_shot)
    rows = _rows(out)
    assert record["counts"]["rows"] == len(rows) > 4
    gone = [r for r in rows if r["video_id"] == "gone"]
    assert len(gone) == 1 and gone[0]["shot"] is None and gone[0]["error"].startswith("read:")
    for vid in ("a", "b", "c"):
        mine = sorted((r for r in rows if r["video_id"] == vid), key=lambda r: r["shot"])
        assert [r["shot"] for r in mine] == list(range(mine[0]["shot_count"]))
        assert all(r["status"] == "ok" and r["pred_label"] for r in mine)
        assert all(1.0 - 0.05 <= r["end_s"] - r["start_s"] <= 4.0 + 1e-6 for r in mine[:-1])
        assert all(a["end_s"] <= b["start_s"] + 1e-6 for a, b in zip(mine, mine[1:]))


def test_per_shot_resume_and_shots_from(ray_session, shot_videos):
    root, _ = shot_videos
    per_shot = {"segments": {"by": "shots", "detector": "content", "min_s": 1.0,
                             "max_s": 4.0}, **CLASSIFY}
    _, out = _job(root, "resumed", per_shot)
    full = _rows(out)
    # Lose two shot rows of video a (as a run killed mid-write would): --resume writes
    # exactly those again.
    data = next(out.glob("*.parquet"))
    table = pq.read_table(data)
    lost = [(r["video_id"], r["shot"]) for r in table.to_pylist()
            if r["video_id"] == "a" and r["shot"] in (1, 2)]
    assert len(lost) == 2
    keep = [not (v == "a" and s in (1, 2)) for v, s in
            zip(table["video_id"].to_pylist(), table["shot"].to_pylist())]
    pq.write_table(table.filter(pa.array(keep)), data)
    spec = parse_jobspec({"name": "resumed", "manifest": "manifest.csv",
                          "output": {"path": "resumed", "if_exists": "resume"},
                          "max_error_fraction": 1.0, **per_shot}, base_dir=root)
    plan = plan_job(spec)
    assert plan.inputs.already_done == 3 and plan.todo.read_all()["video_id"].to_pylist() == ["a"]
    changed = spec.model_copy(update={"segments": spec.segments.model_copy(
        update={"max_s": 8.0})})
    with pytest.raises(OutputError, match="different segments settings"):
        plan_job(changed)  # other shots would mix with these
    record = execute(plan, log=lambda _: None)
    again = _rows(out)
    assert record["state"] == "finished" and len(again) == len(full)
    key = sorted((r["video_id"], r["shot"] if r["shot"] is not None else -1) for r in again)
    assert key == sorted((r["video_id"], r["shot"] if r["shot"] is not None else -1)
                         for r in full)
    # A shots job's output names the shots instead: the rows cover the same seconds.
    _job(root, "found", {"task": "shots", "shots": {"detector": "content"}})
    given = {**per_shot, "segments": {**per_shot["segments"], "shots_from": "found"}}
    _, out = _job(root, "given", given)
    spans = sorted((r["video_id"], r["shot"], r["start_s"], r["end_s"]) for r in _rows(out)
                   if r["shot"] is not None)
    assert spans == sorted((r["video_id"], r["shot"], r["start_s"], r["end_s"])
                           for r in full if r["shot"] is not None)


@pytest.mark.parametrize("extra, field", [
    ({"segments": {"min_s": 20, "max_s": 30}}, "segments: max_s (30) must be at least twice"),
    ({"segments": {"detector": "transnetv2", "threshold": 2}}, "segments: threshold 2 is out"),
    ({"segments": "scenes"}, "segments.by:"),
    ({"task": "shots", "segments": "shots"}, "segments: a shots job finds the shots"),
    ({"task": "shots", "sampling": {"frames_per_clip": 4}}, "sampling: a shots job reads"),
])
def test_bad_shot_settings_fail_fast_naming_the_field(tmp_path, extra, field):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_jobspec({"name": "j", "manifest": "m.csv", "output": {"path": "out"}, **extra},
                      base_dir=tmp_path)
    assert field in str(e.value)
    assert not (tmp_path / "out").exists()


def test_shots_from_must_name_a_shots_jobs_output(tmp_path, shot_videos):
    from pipeline.errors import ConfigError

    root, _ = shot_videos
    spec = parse_jobspec({"name": "j", "manifest": str(root / "manifest.csv"),
                          "segments": {"shots_from": str(tmp_path)},
                          "output": {"path": str(tmp_path / "out")}, **CLASSIFY})
    with pytest.raises(ConfigError, match="segments.shots_from: .* holds no shots job"):
        plan_job(spec)
    assert not (tmp_path / "out").exists()
