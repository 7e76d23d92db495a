"""Plan a detection training run: read and check videos and boxes before Ray starts.

:func:`plan_detect_training` reads the manifests and the labels file, splits the videos,
and checks every label row: a row that names a video no manifest lists, a class or box
that makes no sense, or a box outside its video's frame (each labelled video's frame size
is read from its header with PyAV) fails here, with the row named. Videos that cannot be
opened are left to the decode stage, which counts them as decode errors, as in
classification training. Each video's boxes travel with its manifest row as JSON (column
``boxes``: frame index -> ``[[x1, y1, x2, y2, class index], ...]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.decode.base import DecodeSpec
from pipeline.errors import ManifestError
from pipeline.labels import read_labels
from pipeline.manifest import read_manifest
from pipeline.model.detectors import BACKGROUND, DetectorCard, detector_card
from pipeline.tasks.detect import detect_decode_spec
from pipeline.train.detect_spec import DetectTrainSpec
from pipeline.train.plan import check_run_dir, split_rows


@dataclass(frozen=True)
class DetectTrainPlan:
    spec: DetectTrainSpec
    start: DetectorCard  # the starting weights
    card: DetectorCard  # the detector being trained: our classes, input size
    decode: DecodeSpec  # train and val alike: what inference decodes
    train_rows: pa.Table  # manifest rows + "boxes" (JSON)
    val_rows: pa.Table
    run_dir: Path
    resume: bool

    @property
    def best_dir(self) -> Path:
        return self.run_dir / "best"


def frame_size(path: str) -> tuple[int, int] | None:
    """``(width, height)`` of a video's frames as the decoders give them (upright after a
    rotation tag), from its first frame; None when the file cannot be decoded."""
    import av

    from pipeline.decode.video_pyav import upright_turns

    try:
        with av.open(path) as c:
            frame = next(c.decode(video=0))
            turned = upright_turns(frame) % 2
            return (frame.height, frame.width) if turned else (frame.width, frame.height)
    except Exception:
        return None


def check_labels(labels: pa.Table, videos: pa.Table, uri: str) -> None:
    """Every label row names a listed video, a class, a frame index >= 0 and a box with
    positive size inside its video's frame."""
    where = dict(zip(videos["video_id"].to_pylist(), videos["path"].to_pylist()))
    sizes: dict[str, tuple[int, int] | None] = {}
    for i, r in enumerate(labels.to_pylist()):
        at = f"labels file {uri}, row {i + 1}"
        vid = r["video_id"]
        if vid not in where:
            raise ManifestError(f"{at}: video {vid!r} is in no manifest (data.train, "
                                "data.val); fix its video_id or add the video")
        if not r["label"]:  # read_labels trimmed it
            raise ManifestError(f"{at}: the label is empty")
        if r["frame"] is None or r["frame"] < 0:
            raise ManifestError(f"{at}: frame must be a frame index >= 0")
        x1, y1, x2, y2 = (r[k] for k in ("x1", "y1", "x2", "y2"))
        if None in (x1, y1, x2, y2) or not (x2 > x1 and y2 > y1):
            raise ManifestError(f"{at}: box ({x1}, {y1}, {x2}, {y2}) needs x1 < x2 and "
                                "y1 < y2 (pixels)")
        if vid not in sizes:
            sizes[vid] = frame_size(where[vid]) if where[vid] else None
        size = sizes[vid]
        if x1 < 0 or y1 < 0 or (size and (x2 > size[0] or y2 > size[1])):
            frame = f"the {size[0]}x{size[1]} frame" if size else "the frame"
            raise ManifestError(f"{at}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is outside "
                                f"{frame} of video {vid!r}")


def with_boxes(rows: pa.Table, labels: pa.Table, names: tuple[str, ...]) -> pa.Table:
    """``rows`` with a ``boxes`` JSON column from ``labels`` (class indices of ``names``)."""
    index = {n: i for i, n in enumerate(names)}
    per: dict[str, dict[str, list]] = {}
    for r in labels.to_pylist():
        per.setdefault(r["video_id"], {}).setdefault(str(r["frame"]), []).append(
            [r["x1"], r["y1"], r["x2"], r["y2"], index[r["label"]]])
    return rows.append_column("boxes", pa.array(
        [json.dumps(per.get(v, {})) for v in rows["video_id"].to_pylist()], pa.string()))


def detect_splits(spec: DetectTrainSpec) -> tuple[pa.Table, pa.Table, tuple[str, ...]]:
    """``(train rows, val rows, class names with the background first)``."""
    data = spec.data
    train = read_manifest(data.train)
    if data.val is None:
        flat = train.set_column(train.schema.get_field_index("label"), "label",
                                pa.array([""] * train.num_rows, pa.string()))
        train_ids, val_ids = (set(t["video_id"].to_pylist())
                              for t in split_rows(flat, data.val_fraction, data.split_seed))
        val = train.filter(pa.array([v in val_ids for v in train["video_id"].to_pylist()]))
        train = train.filter(pa.array([v in train_ids for v in
                                       train["video_id"].to_pylist()]))
    else:
        val = read_manifest(data.val)
    for what, rows in (("train", train), ("val", val)):
        if rows.num_rows == 0:
            raise ManifestError(f"the {what} split is empty; add videos to data.{what}"
                                + (" or raise data.val_fraction" if what == "val" else ""))
    labels = read_labels(data.labels)
    check_labels(labels, pa.concat_tables([train, val]), data.labels)
    in_train = pc.is_in(labels["video_id"], value_set=train["video_id"])
    classes = sorted(set(labels.filter(in_train)["label"].to_pylist()))
    if not classes:
        raise ManifestError(f"labels file {data.labels} has no boxes for the train videos")
    unknown = sorted(set(labels["label"].to_pylist()) - set(classes))
    if unknown:
        raise ManifestError(f"classes {unknown[:5]} have boxes only in val videos; add "
                            "training videos with them or drop those boxes")
    names = (BACKGROUND, *classes)
    return with_boxes(train, labels, names), with_boxes(val, labels, names), names


def plan_detect_training(spec: DetectTrainSpec, resume: bool = False) -> DetectTrainPlan:
    """Validate a detection training spec against its data and storage. Starts nothing."""
    train, val, names = detect_splits(spec)
    m = spec.model
    start = detector_card(m.arch, m.weights, None, m.min_size, m.max_size)
    run_dir = Path(spec.checkpoint.storage_path) / spec.name
    check_run_dir(run_dir, resume)
    card = DetectorCard(m.arch, str(run_dir / "best"), "checkpoint", names, start.min_size,
                        start.max_size, meaningful=True)
    decode = detect_decode_spec(spec.sampling, spec.resources, card, spec.allow_uri_options)
    return DetectTrainPlan(spec, start, card, decode, train, val, run_dir, resume)
