"""How good a detect job's rows are against box labels: ``vidbatch evaluate``.

On the sampled frames of the ok rows (``detections``' ``frame_index``), against a labels
file (:mod:`pipeline.tasks.detect.labels`):

* **mAP** (COCO-style, @0.5 and @[.5:.95]) by torchmetrics' ``MeanAveragePrecision`` on
  pycocotools;
* **box IoU**: each frame's true boxes matched one-to-one to its detections of the same
  class (Hungarian assignment on IoU, scipy), the mean IoU of the pairs with IoU >= 0.5,
  and the recall and precision at that threshold;
* **tracking** (when the labels have an ``object`` column and the rows have track ids):
  CLEAR MOT metrics from the ``trackers`` package: ID switches, MOTA, and the objects
  whose frames carry one track id throughout.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.output.store import read_rows
from pipeline.tasks.detect.labels import read_labels
from pipeline.tasks.detect.tracks import iou_matrix

MATCH_IOU = 0.5


def coco_map(metric) -> dict[str, Any]:
    """``metric.compute()`` of a pycocotools-backed ``MeanAveragePrecision``, without the
    12-line table pycocotools prints on every call (the figures are returned)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return metric.compute()


def _truth(labels: pa.Table) -> dict[tuple[str, int], list[dict]]:
    by_frame: dict[tuple[str, int], list[dict]] = {}
    for r in labels.to_pylist():
        by_frame.setdefault((r["video_id"], r["frame"]), []).append(r)
    return by_frame


def _match(truth: list[dict], found: list[dict]) -> list[tuple[int, int, float]]:
    """One-to-one ``(truth index, detection index, IoU)`` pairs of the same class."""
    from scipy.optimize import linear_sum_assignment

    if not truth or not found:
        return []
    t_boxes = np.array([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in truth])
    d_boxes = np.array([d["box"] for d in found])
    iou = iou_matrix(t_boxes, d_boxes)
    same = np.array([[r["label"] == d["label"] for d in found] for r in truth])
    rows, cols = linear_sum_assignment(-(iou * same))
    return [(i, j, float(iou[i, j])) for i, j in zip(rows, cols)
            if same[i, j] and iou[i, j] >= MATCH_IOU]


def _map_inputs(truth: list[dict], found: list[dict], names: dict[str, int]):
    """One frame as ``MeanAveragePrecision.update`` takes it: ``([prediction], [target])``
    (detections of classes the labels never name are left out)."""
    import torch

    known = [d for d in found if d["label"] in names]
    pred = {"boxes": torch.tensor([d["box"] for d in known]).reshape(-1, 4),
            "scores": torch.tensor([d["score"] for d in known]),
            "labels": torch.tensor([names[d["label"]] for d in known], dtype=torch.int64)}
    target = {"boxes": torch.tensor([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in truth],
                                    dtype=torch.float32).reshape(-1, 4),
              "labels": torch.tensor([names[r["label"]] for r in truth], dtype=torch.int64)}
    return [pred], [target]


def evaluate(output: str, labels_path: str) -> dict[str, Any]:
    """The figures of the module docstring for the job at ``output``."""
    from torchmetrics.detection import MeanAveragePrecision

    rows = read_rows(output).to_pylist()
    labels = read_labels(labels_path)
    truth = _truth(labels)
    names = {n: i for i, n in enumerate(sorted(set(labels["label"].to_pylist())))}
    has_objects = "object" in labels.column_names
    metric = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")
    ious, n_truth, n_found, frames = [], 0, 0, 0
    mot: dict[str, Any] = {"gt": [], "trk": [], "sim": [], "ids": {}}
    videos = {"ok": 0, "error": 0}
    for row in rows:
        videos[row["status"]] = videos.get(row["status"], 0) + 1
        if row["status"] != "ok":
            continue
        per_frame: dict[int, list[dict]] = {}
        for d in row["detections"]:
            per_frame.setdefault(d["frame_index"], []).append(d)
        for f in row["sampled_frames"]:
            t, found = truth.get((row["video_id"], f), []), per_frame.get(f, [])
            metric.update(*_map_inputs(t, found, names))
            pairs = _match(t, found)
            ious += [p[2] for p in pairs]
            n_truth, n_found, frames = n_truth + len(t), n_found + len(found), frames + 1
            if has_objects:
                _mot_frame(mot, row["video_id"], t, found)
    result = coco_map(metric)
    out = {"videos": videos, "frames": frames, "true_boxes": n_truth, "detections": n_found,
           "map50": float(result["map_50"]), "map": float(result["map"]),
           "mean_iou": float(np.mean(ious)) if ious else 0.0,
           "recall": len(ious) / n_truth if n_truth else 0.0,
           "precision": len(ious) / n_found if n_found else 0.0}
    if has_objects and mot["gt"]:
        out["tracking"] = _clear(mot)
    return out


def _mot_frame(mot: dict, video: str, truth: list[dict], found: list[dict]) -> None:
    """One frame's CLEAR MOT inputs; ids are numbered uniquely across videos."""
    ids = mot["ids"]

    def number(key):
        return ids.setdefault(key, len(ids))

    tracked = [d for d in found if d["track_id"] is not None]
    mot["gt"].append(np.array([number(("truth", video, r["object"])) for r in truth], int))
    mot["trk"].append(np.array([number(("track", video, d["track_id"])) for d in tracked],
                               int))
    t_boxes = np.array([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in truth]).reshape(-1, 4)
    d_boxes = np.array([d["box"] for d in tracked]).reshape(-1, 4)
    sim = iou_matrix(t_boxes, d_boxes)
    same = np.array([[r["label"] == d["label"] for d in tracked] for r in truth]).reshape(
        sim.shape)
    mot["sim"].append(sim * same)


def _clear(mot: dict) -> dict[str, Any]:
    from trackers.eval import compute_clear_metrics

    m = compute_clear_metrics(mot["gt"], mot["trk"], mot["sim"], threshold=MATCH_IOU)
    return {"id_switches": int(m["IDSW"]), "mota": float(m["MOTA"]),
            "mostly_tracked": int(m["MT"]), "fragmentations": int(m["Frag"]),
            "objects": int(m["MT"] + m["PT"] + m["ML"])}
