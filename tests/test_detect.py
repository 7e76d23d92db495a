"""task: detect without Ray: sampling, decoding whole frames, the box mapping back to the
original pixels, tracks, the spec, labels checks and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.decode.base import DecodeSpec, fitted_dims, pad_to
from pipeline.decode.fallback import decode_video
from pipeline.decode.sampling import rate_indices
from pipeline.decode.stage import decode_batch
from pipeline.errors import ConfigError, ManifestError, WeightsError
from pipeline.infer.spec import parse_jobspec
from pipeline.model.runtime import Runtime
from pipeline.output.rows import Provenance
from pipeline.synth import write_video
from pipeline.tasks.detect.job import DetectTask, class_filter
from pipeline.tasks.detect.models import detector_card
from pipeline.tasks.detect.replica import (
    DetectConfig,
    DetectReplica,
    distinct_positions,
    to_original,
)
from pipeline.tasks.detect.tracks import TRACKERS, FrameDetections, iou_matrix, track


def test_rate_indices_take_frames_at_a_rate_and_at_least_one():
    assert rate_indices(0, 99, 10, 2, 8).tolist() == [0, 15, 25, 40, 55, 70, 80, 95]
    assert rate_indices(0, 99, 10, 2, 30)[:21].tolist() == [*range(0, 100, 5), 95]
    # shorter than one interval: the first frame, repeated to the count
    assert rate_indices(0, 3, 30, 1, 4).tolist() == [0, 0, 0, 0]
    assert rate_indices(30, 59, 30, 10, 3).tolist() == [30, 42, 57]  # 10 thinned to 3


def test_fitting_keeps_the_aspect_and_pads_bottom_right():
    assert fitted_dims(360, 640, (192, 320)) == (180, 320)
    assert fitted_dims(640, 360, (192, 320)) == (192, 108)
    frames = np.full((2, 180, 320, 3), 7, np.uint8)
    out = pad_to(frames, (192, 320))
    assert out.shape == (2, 192, 320, 3)
    assert (out[:, :180] == 7).all() and (out[:, 180:] == 0).all()


def canvas_spec(canvas=(64, 96), count=4, rate=None, decoder="decord") -> DecodeSpec:
    return DecodeSpec(clips=count, frames=1, stride=None, short_side=canvas[0],
                      crop_size=canvas[0], canvas=canvas, rate=rate, decoder=decoder)


def square_video(path, size=(120, 200), box=(50, 30, 90, 70), frames=10):
    """Lossless frames, black with a white box (x1, y1, x2, y2)."""
    f = np.zeros((frames, *size, 3), np.uint8)
    x1, y1, x2, y2 = box
    f[:, y1:y2, x1:x2] = 255
    return write_video(path, f, fps=10, lossless=True)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_whole_frames_decode_into_the_canvas_with_their_indices(tmp_path, decoder):
    path = square_video(tmp_path / "sq.mp4", size=(64, 96))
    spec = canvas_spec((64, 96), count=6, rate=5, decoder=decoder)  # 10 frames at 10 fps
    v = decode_video(str(path), spec)
    assert v.frames.shape == (6, 1, 64, 96, 3) and v.decoder == decoder
    assert v.indices.tolist() == [0, 2, 4, 6, 8, 8]
    assert (v.frames[0, 0, 30:70, 50:90] > 250).all() and v.frames[0, 0, :30].max() < 5


class BrightBox(torch.nn.Module):
    """A detector whose output is known: one box around the bright pixels of each image
    (label 1, score 0.9), in the image's pixels, as torchvision's detectors report."""

    def forward(self, images):
        out = []
        for img in images:
            ys, xs = torch.nonzero(img.mean(0) > 0.5, as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]],
                               dtype=torch.float32) if len(xs) else torch.zeros((0, 4))
            out.append({"boxes": box, "scores": torch.full((len(box),), 0.9),
                        "labels": torch.ones(len(box), dtype=torch.int64)})
        return out


def replica(card=None, **kw) -> DetectReplica:
    card = card or detector_card("fasterrcnn_resnet18_fpn", "none", min_size=64, max_size=96)
    task = DetectTask()
    config = DetectConfig(card=card, runtime=Runtime(), batch_size=kw.pop("batch_size", 4),
                          score_threshold=0.5, max_per_frame=10, keep=kw.pop("keep", None),
                          track=kw.pop("track", True), tracker="bytetrack", lost_s=1.0,
                          schema=task.schema(card.arch),
                          provenance=Provenance(card.arch, card.weights, "t"))
    return DetectReplica(config)


def manifest_batch(paths) -> dict[str, np.ndarray]:
    n = len(paths)
    return {"video_id": np.array([f"v{i}" for i in range(n)], dtype=object),
            "path": np.array([str(p) for p in paths], dtype=object),
            "label": np.array([None] * n, dtype=object),
            "start_s": np.full(n, np.nan), "end_s": np.full(n, np.nan)}


@pytest.mark.parametrize("size,box", [((120, 200), (50, 30, 90, 70)),  # landscape
                                      ((200, 120), (20, 100, 60, 180))])  # portrait
def test_boxes_come_back_in_the_original_frames_pixels(tmp_path, size, box):
    path = square_video(tmp_path / "sq.mp4", size=size, box=box)
    r = replica()
    r.net = BrightBox()
    batch = decode_batch(manifest_batch([path, tmp_path / "missing.mp4"]),
                         canvas_spec((64, 96), count=3))
    table = r(batch)
    rows = table.to_pylist()
    assert [x["status"] for x in rows] == ["ok", "error"]
    assert rows[1]["detections"] is None and "not found" in rows[1]["error"]
    dets = rows[0]["detections"]
    assert rows[0]["frames_sampled"] == 3 and len(dets) == 3
    assert (rows[0]["width"], rows[0]["height"]) == (size[1], size[0])
    for d in dets:  # within the resize's rounding: a canvas pixel is ~2 original pixels
        assert np.allclose(d["box"], box, atol=3), d["box"]
        assert d["label"] == "class_1" and d["track_id"] == 1
    assert rows[0]["tracks"][0]["frames"] == 3
    assert rows[0]["labels_found"] == [{"label": "class_1", "frames": 3, "max_score":
                                        pytest.approx(0.9), "tracks": 1}]


def test_rotated_video_boxes_are_upright_pixels(shared_videos):
    """A box over the whole fitted frame maps to the whole upright frame (320x568 for
    this 90-degree file, stored 568x320)."""
    path = shared_videos / "decord__video_90.mov"
    v = decode_video(str(path), canvas_spec((96, 96), count=1))
    assert (v.width, v.height) == (320, 568)
    fh, fw = fitted_dims(v.height, v.width, (96, 96))
    back = to_original(np.array([[0, 0, fw, fh], [fw / 4, fh / 4, fw * 3 / 4, fh * 3 / 4]]),
                       v.height, v.width, (96, 96))
    assert np.allclose(back, [[0, 0, 320, 568], [80, 142, 240, 426]], atol=1e-3)


def test_files_only_pyav_decodes_give_whole_frames_too(shared_videos):
    for name in ("torchcodec__av1_video.mkv", "moviepy__no_duration.webm"):
        v = decode_video(str(shared_videos / name), canvas_spec((96, 160), count=3, rate=1))
        assert v.decoder == "pyav" and v.frames.shape == (3, 1, 96, 160, 3)
        assert v.indices[0] == 0 and (np.diff(v.indices) >= 0).all()


def test_a_frame_sampled_twice_is_detected_once():
    assert distinct_positions(np.array([0, 0, 3, 3, 5])).tolist() == [0, 2, 4]


def test_no_detections_is_an_empty_list_and_a_model_failure_an_error_row(tmp_path):
    path = write_video(tmp_path / "dark.mp4", np.zeros((5, 64, 96, 3), np.uint8), fps=10,
                       lossless=True)
    r = replica()
    r.net = BrightBox()
    rows = r(decode_batch(manifest_batch([path]), canvas_spec((64, 96), count=2))).to_pylist()
    assert rows[0]["status"] == "ok" and rows[0]["detections"] == []
    assert rows[0]["tracks"] == [] and rows[0]["frames_sampled"] == 2

    def broken(images):
        raise RuntimeError("boom")
    r.net = broken
    rows = r(decode_batch(manifest_batch([path]), canvas_spec((64, 96), count=2))).to_pylist()
    assert rows[0]["status"] == "error" and rows[0]["error"].startswith("inference: ")
    assert rows[0]["detections"] is None


def test_random_weight_detector_runs_on_real_frames(tmp_path):
    path = square_video(tmp_path / "sq.mp4")
    rows = replica()(decode_batch(manifest_batch([path]),
                                  canvas_spec((64, 96), count=2))).to_pylist()
    assert rows[0]["status"] == "ok" and isinstance(rows[0]["detections"], list)


def frames_of(boxes_per_frame, labels=None, fps=10.0):
    out = []
    for t, boxes in enumerate(boxes_per_frame):
        b = np.array(boxes, np.float32).reshape(-1, 4)
        lab = np.array(labels[t] if labels else [1] * len(b), np.int64)
        out.append(FrameDetections(t, t / fps, b, np.full(len(b), 0.9, np.float32), lab))
    return out


@pytest.mark.parametrize("method", TRACKERS)
def test_tracks_keep_their_ids_through_a_crossing(method):
    """Two boxes of one class cross at constant speeds; ids follow the objects."""
    seq = []
    for t in range(20):
        a = 10 + 8 * t
        b = 170 - 8 * t
        seq.append([[a, 50, a + 30, 80], [b, 56, b + 30, 86]])
    frames = frames_of(seq)
    track(frames, 10.0, 0.5, 1.0, method)
    first = {tuple(frames[0].boxes[i][:1]): frames[0].track_ids[i] for i in range(2)}
    ids_a = [f.track_ids[0] for f in frames]
    ids_b = [f.track_ids[1] for f in frames]
    assert len(set(ids_a)) == 1 and len(set(ids_b)) == 1 and ids_a[0] != ids_b[0], first


def test_classes_are_tracked_apart_and_a_long_gap_starts_a_new_track():
    seq = [[[10, 10, 40, 40], [12, 12, 42, 42]]] * 3
    frames = frames_of(seq, labels=[[1, 2]] * 3)
    track(frames, 10.0, 0.5, 1.0)
    assert all(f.track_ids[0] != f.track_ids[1] for f in frames)
    gap = frames_of([[[10, 10, 40, 40]]] * 2 + [[]] * 30 + [[[10, 10, 40, 40]]])
    track(gap, 10.0, 0.5, 1.0)  # 3 s without it: more than lost_s
    assert gap[0].track_ids[0] == gap[1].track_ids[0] != gap[-1].track_ids[0]


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    assert np.allclose(iou_matrix(a, b), [[1, 1 / 3, 0]])


def detect_spec(**detect):
    return parse_jobspec({"task": "detect", "name": "d", "manifest": "m.csv",
                          "output": {"path": "out"},
                          "model": {"arch": "fasterrcnn_resnet50_fpn_v2", "weights": "none"},
                          "detect": detect})


def test_class_filter_names_unknown_classes():
    spec = detect_spec(classes=["person", "car"])
    card = DetectTask().resolve(spec)
    assert [card.class_names[i] for i in class_filter(card, ["person", "car"])] == \
        ["person", "car"]
    with pytest.raises(ConfigError, match=r"detect.classes: \['unicorn'\]"):
        DetectTask().resolve(detect_spec(classes=["person", "unicorn"]))


def test_detect_spec_rejects_classify_keys_and_bad_sizes():
    with pytest.raises(ConfigError, match="top_k"):
        parse_jobspec({"task": "detect", "name": "d", "manifest": "m.csv",
                       "output": {"path": "out", "top_k": 3}})
    with pytest.raises(ConfigError, match="min_size"):
        detect_spec(min_size=800, max_size=400)


def test_weights_names_and_downloads_fail_with_the_fix(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="not a weights name"):
        detector_card("fasterrcnn_resnet50_fpn_v2", "IMAGENET1K_V1")
    with pytest.raises(WeightsError, match="no published weights"):
        detector_card("fasterrcnn_resnet18_fpn", "COCO_V1")
    card = detector_card("fasterrcnn_resnet50_fpn_v2", "COCO_V1")
    assert card.class_names[1] == "person" and card.meaningful
    # An empty hub cache on a machine that cannot reach the download host.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setattr("urllib.request.urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("network unreachable")))
    from pipeline.tasks.detect.models import ensure_detector_weights

    with pytest.raises(WeightsError, match="cannot download .* put the file at") as e:
        ensure_detector_weights(card)
    assert str(tmp_path) in str(e.value) and "weights: none" in str(e.value)


def test_a_torchvision_style_state_dict_loads(tmp_path, monkeypatch):
    """COCO files come from frozen-batch-norm models, without num_batches_tracked keys:
    build_detector loads such a file, verified and weights_only, into plain batch norm."""
    import dataclasses
    import hashlib

    from pipeline.tasks.detect.models import build_detector, new_detector

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    card = detector_card("fasterrcnn_resnet18_fpn", "none", min_size=64, max_size=96)
    torch.manual_seed(1)
    state = {k: v for k, v in new_detector(card).state_dict().items()
             if not k.endswith("num_batches_tracked")}
    raw = tmp_path / "raw.pth"
    torch.save(state, raw)
    name = f"det-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.pth"
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    raw.rename(tmp_path / "hub" / "checkpoints" / name)
    published = dataclasses.replace(card, weights="COCO_V1", source="torchvision",
                                    extra={"url": f"https://example.invalid/{name}"})
    net = build_detector(published)
    key = "backbone.body.layer1.0.conv1.weight"
    assert torch.equal(net.state_dict()[key], state[key])
    state.pop(key)
    torch.save(state, tmp_path / "hub" / "checkpoints" / name)  # altered: hash differs
    with pytest.raises(WeightsError, match="does not have the SHA-256"):
        build_detector(published)


# ---------------------------------------------------------------- training's pre-flight


def labels_file(tmp_path, rows, name="labels.csv"):
    import csv

    path = tmp_path / name
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["video_id", "frame", "label", "x1", "y1", "x2", "y2"])
        w.writeheader()
        w.writerows(rows)
    return path


def train_spec(tmp_path, labels):
    from pipeline.synth import write_manifest
    from pipeline.train.plan import parse_training

    videos = [square_video(tmp_path / f"v{i}.mp4") for i in range(3)]
    manifest = write_manifest(tmp_path / "m.csv", [{"video_id": f"v{i}", "path": str(p)}
                                                   for i, p in enumerate(videos)])
    return parse_training({
        "task": "detect", "name": "t", "data": {"train": str(manifest), "labels": str(labels),
                                                "val_fraction": 0.34},
        "checkpoint": {"storage_path": str(tmp_path / "runs")}})


def test_preflight_names_the_bad_label_row(tmp_path):
    from pipeline.train.plan import plan_training

    good = [{"video_id": f"v{i}", "frame": 0, "label": "sq", "x1": 50, "y1": 30, "x2": 90,
             "y2": 70} for i in range(3)]
    plan = plan_training(train_spec(tmp_path, labels_file(tmp_path, good)))
    assert plan.card.class_names == ("__background__", "sq")
    assert plan.train_rows.num_rows + plan.val_rows.num_rows == 3
    boxes = json.loads(plan.train_rows["boxes"][0].as_py())
    assert boxes == {"0": [[50.0, 30.0, 90.0, 70.0, 1]]}

    cases = [({"video_id": "nope"}, r"row 2: video 'nope' is in no manifest"),
             ({"x2": 260}, r"row 2: box \(50, 30, 260, 70\) is outside the 200x120 frame"),
             ({"x1": 95}, r"row 2: box .* needs x1 < x2"),
             ({"frame": "x"}, r"row 2: frame is 'x', not an integer")]
    for change, message in cases:
        rows = [good[0], {**good[1], **change}, good[2]]
        spec = train_spec(tmp_path, labels_file(tmp_path, rows, "bad.csv"))
        with pytest.raises(ManifestError, match=message):
            plan_training(spec)


# ---------------------------------------------------------------- evaluation


def test_evaluation_scores_boxes_and_counts_id_switches(tmp_path):
    """Perfect boxes score mAP 1 and IoU 1; swapping two tracks' ids midway is 2 switches
    (each object changes id once); a missed box lowers recall."""
    from pipeline.tasks.detect.evaluate import evaluate

    truth, dets = [], []
    for f in range(6):
        for obj, x in ((0, 10 + 5 * f), (1, 100 - 5 * f)):
            truth.append({"video_id": "v", "frame": f, "label": "sq", "x1": x, "y1": 10,
                          "x2": x + 20, "y2": 30, "object": obj})
            tid = (obj + 1) if f < 3 else (2 - obj)  # ids swap at frame 3
            dets.append({"frame_index": f, "t_s": f / 10, "track_id": tid, "label_index": 1,
                         "label": "sq", "score": 0.9, "box": [x, 10, x + 20, 30]})
    import csv

    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, list(truth[0]))
        w.writeheader()
        w.writerows(truth)
    schema = DetectTask().schema("fasterrcnn_resnet18_fpn")
    row = {name: None for name in schema.names}
    row.update(video_id="v", status="ok", sampled_frames=list(range(6)), detections=dets[:-1])
    err = {name: None for name in schema.names}
    err.update(video_id="w", status="error", error="decode: bad")
    out = tmp_path / "out"
    out.mkdir()
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([row, err], schema=schema), out / "part.parquet")
    r = evaluate(str(out), str(tmp_path / "labels.csv"))
    assert r["videos"] == {"ok": 1, "error": 1} and r["frames"] == 6
    assert r["mean_iou"] == pytest.approx(1.0) and r["recall"] == pytest.approx(11 / 12)
    assert 0.85 < r["map50"] <= 1.0
    assert r["tracking"]["id_switches"] == 2 and r["tracking"]["objects"] == 2
