"""Box labels files: one row per object per frame, for detection training and evaluation.

Columns: ``video_id``, ``frame`` (the frame's index in the video, from 0), ``label`` (a
class name) and the box ``x1, y1, x2, y2`` in the frame's pixels; optionally ``object``,
an id of the object within its video (evaluation counts tracking's ID switches with it).
CSV, Parquet or JSON Lines, local or a URI, as manifests are. Training checks every row
against its videos (:func:`check_labels`) and carries each video's boxes with its manifest
row (:func:`with_boxes`).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ManifestError
from pipeline.manifest import read_table

LABEL_NUMBERS = ("frame", "x1", "y1", "x2", "y2")


def read_labels(uri: str) -> pa.Table:
    """The labels file with ``frame`` (and ``object``) as int64 and the box as float64; a
    ``ManifestError`` names a missing column or a row whose numbers do not parse."""
    table = read_table(uri, "labels file", "data.labels")
    missing = [c for c in ("video_id", "label", *LABEL_NUMBERS) if c not in table.column_names]
    if missing:
        raise ManifestError(f"labels file {uri} lacks columns {missing}; it needs video_id, "
                            "frame, label, x1, y1, x2, y2 (box in pixels)")
    cols = {"video_id": table["video_id"].cast(pa.string()),
            "label": pc.utf8_trim_whitespace(table["label"].cast(pa.string()))}
    numbers = LABEL_NUMBERS + (("object",) if "object" in table.column_names else ())
    for name in numbers:
        typ = pa.float64() if name in ("x1", "y1", "x2", "y2") else pa.int64()
        try:
            cols[name] = pc.cast(table[name], typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = table[name].to_pylist()
            bad = next(i for i, v in enumerate(values) if not _parses(v, typ))
            kind = "a number" if typ == pa.float64() else "an integer"
            raise ManifestError(f"labels file {uri}, row {bad + 1}: {name} is "
                                f"{values[bad]!r}, not {kind}") from None
    return pa.table(cols)


def _parses(value, typ: pa.DataType) -> bool:
    try:
        pc.cast(pa.array([value]), typ)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


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
