"""Tracks across a video's sampled frames, and the per-video summaries of detections.

Association is the ``trackers`` package's (clean-room implementations, no weights):
ByteTrack by default (a Kalman filter on each box, two rounds of IoU matching, confident
detections first), or OC-SORT (matching also weighs each track's direction of motion) or
SORT; docs/detection.md has how they compared. One
tracker runs per class, so two objects of different classes never swap ids where they
cross; ids are then numbered per video from 1, in order of first appearance.
Each detection is matched to its track's box by IoU (the trackers return boxes in their
own order), and a detection that no track took keeps ``track_id`` null.

Tracking links sampled frames, so it holds up when objects move less than about their own
size between two samples: dense sampling (``sampling.fps`` near the video's rate) for fast
objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FrameDetections:
    """What the detector found in one sampled frame, boxes in the original pixels."""

    frame_index: int
    t_s: float
    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (n,) float32
    labels: np.ndarray  # (n,) int64, the model's label indices
    track_ids: np.ndarray = field(default=None)  # (n,) int64, -1 for none

    def __post_init__(self):
        if self.track_ids is None:
            self.track_ids = np.full(len(self.scores), -1, np.int64)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (n, 4) and ``b`` (m, 4), x1 y1 x2 y2."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


TRACKERS = ("bytetrack", "ocsort", "sort")


def _new_tracker(method: str, fps: float, score_threshold: float, lost_s: float):
    import trackers

    common = {"lost_track_buffer": max(1, round(30 * lost_s)), "frame_rate": fps or 30.0,
              "minimum_consecutive_frames": 1}
    if method == "sort":
        return trackers.SORTTracker(track_activation_threshold=score_threshold, **common)
    high = max(score_threshold, 0.5)
    if method == "ocsort":
        return trackers.OCSORTTracker(high_conf_det_threshold=high, **common)
    return trackers.ByteTrackTracker(track_activation_threshold=score_threshold,
                                     high_conf_det_threshold=high, **common)


def track(frames: list[FrameDetections], fps: float, score_threshold: float,
          lost_s: float, method: str = "bytetrack") -> None:
    """Set ``track_ids`` of every frame's detections (in place); frames in time order.

    The trackers number a track from its second detection; the detection that started it
    is given the same id here once the track has one (a track seen in one frame keeps
    none). ``method``: one of :data:`TRACKERS`.
    """
    import supervision as sv

    trackers: dict[int, object] = {}
    numbering: dict[tuple[int, int], int] = {}
    started: dict[int, tuple] = {}  # tracklet -> (it, its label, first frame, detection)

    def number(label: int, tid: int) -> int:
        return numbering.setdefault((label, tid), len(numbering) + 1)

    for fd in frames:
        for label in np.unique(fd.labels):
            if label not in trackers:
                trackers[label] = _new_tracker(method, fps, score_threshold, lost_s)
        for label, tracker in trackers.items():
            mine = np.flatnonzero(fd.labels == label)
            before = {id(t) for t in tracker.tracks}
            dets = sv.Detections(xyxy=fd.boxes[mine].reshape(-1, 4).astype(np.float32),
                                 confidence=fd.scores[mine].astype(np.float32),
                                 class_id=np.full(len(mine), label, dtype=int))
            # Without a frame rate every t_s is 0: then one call is one step.
            out = tracker.update(dets, timestamp=fd.t_s if fps > 0 else None)
            if len(mine):
                _assign(fd, mine, out, lambda tid, lb=int(label): number(lb, tid))
                for t in tracker.tracks:
                    if id(t) not in before:
                        i = int(np.argmax(iou_matrix(fd.boxes[mine],
                                                     t.get_state_bbox()[None])[:, 0]))
                        started[id(t)] = (t, int(label), fd, int(mine[i]))
        for key, (t, label, first, i) in list(started.items()):
            if t.tracker_id >= 0:
                first.track_ids[i] = number(label, int(t.tracker_id))
                del started[key]


def _assign(fd: FrameDetections, mine: np.ndarray, out, number) -> None:
    """Copy the tracker's ids onto this frame's detections (the trackers return them in
    their own order, so each returned box is matched back to its detection)."""
    if len(out) == 0:
        return
    overlap = iou_matrix(fd.boxes[mine], out.xyxy)
    for j, tid in enumerate(np.asarray(out.tracker_id)):
        i = int(np.argmax(overlap[:, j]))
        if tid >= 0 and overlap[i, j] >= 0.99:
            fd.track_ids[mine[i]] = number(int(tid))


def detection_rows(frames: list[FrameDetections], names: tuple[str, ...]) -> list[dict]:
    """The ``detections`` column's entries of one video."""
    return [{"frame_index": fd.frame_index, "t_s": fd.t_s,
             "track_id": None if fd.track_ids[i] < 0 else int(fd.track_ids[i]),
             "label_index": int(fd.labels[i]), "label": names[fd.labels[i]],
             "score": float(fd.scores[i]), "box": [float(v) for v in fd.boxes[i]]}
            for fd in frames for i in range(len(fd.scores))]


def track_rows(frames: list[FrameDetections], names: tuple[str, ...]) -> list[dict]:
    """One entry per track: its label, first and last time, frames and mean score."""
    seen: dict[int, dict] = {}
    for fd in frames:
        for i in np.flatnonzero(fd.track_ids >= 0):
            t = seen.setdefault(int(fd.track_ids[i]), {
                "track_id": int(fd.track_ids[i]), "label": names[fd.labels[i]],
                "first_s": fd.t_s, "last_s": fd.t_s, "frames": 0, "score_sum": 0.0})
            t["last_s"] = fd.t_s
            t["frames"] += 1
            t["score_sum"] += float(fd.scores[i])
    return [{**{k: v for k, v in t.items() if k != "score_sum"},
             "mean_score": t["score_sum"] / t["frames"]} for t in seen.values()]


def label_rows(frames: list[FrameDetections], names: tuple[str, ...]) -> list[dict]:
    """One entry per label found: sampled frames it is in, its best score, its tracks."""
    out: dict[int, dict] = {}
    for fd in frames:
        for label in np.unique(fd.labels):
            mine = fd.labels == label
            s = out.setdefault(int(label), {"label": names[label], "frames": 0,
                                            "max_score": 0.0, "ids": set()})
            s["frames"] += 1
            s["max_score"] = max(s["max_score"], float(fd.scores[mine].max()))
            s["ids"].update(int(t) for t in fd.track_ids[mine] if t >= 0)
    return [{"label": s["label"], "frames": s["frames"], "max_score": s["max_score"],
             "tracks": len(s["ids"])} for _, s in sorted(out.items())]
