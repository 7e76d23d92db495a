"""The detection replica: decoded frames in, one row of detections per video out.

Frames of all the batch's videos go through the detector together, ``detect.frames_per_batch``
frames per forward pass (split over the replica's streams on CPU). Each video's frames
arrive fitted into the detector's canvas (:class:`~pipeline.decode.base.DecodeSpec` with a
canvas): the detector sees the canvas at its own input size, so it does not resize again,
and each box is mapped back to the original frame by the fitted size's scale
(:func:`to_original`). A frame sampled twice (a short video, keyframe snapping) is detected
once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.decode.base import fitted_dims
from pipeline.model.runtime import Runtime, Streams, bf16_cpu_warning, pick_device
from pipeline.output.rows import Batch, Provenance, inference_failed, per_ok, rows_table
from pipeline.tasks.detect.models import DetectorCard
from pipeline.tasks.detect.tracks import (
    FrameDetections,
    detection_rows,
    label_rows,
    track,
    track_rows,
)


@dataclass(frozen=True, kw_only=True)
class DetectConfig:
    """What each replica is built from (pickled to the actors; ``DetectTask.replica``)."""

    card: DetectorCard
    runtime: Runtime
    batch_size: int  # frames per forward pass (detect.frames_per_batch)
    score_threshold: float
    max_per_frame: int
    keep: tuple[int, ...] | None  # label indices kept; None keeps all
    track: bool
    tracker: str
    lost_s: float
    schema: pa.Schema
    provenance: Provenance


def to_original(boxes: np.ndarray, height: int, width: int,
                canvas: tuple[int, int]) -> np.ndarray:
    """Boxes in canvas pixels -> the original ``height`` x ``width`` frame's pixels,
    clipped to it. The frame filled the canvas's top-left ``fitted_dims`` (aspect kept)."""
    fh, fw = fitted_dims(height, width, canvas)
    out = boxes.astype(np.float64) * np.array([width / fw, height / fh] * 2)
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out.astype(np.float32)


def distinct_positions(indices: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each sampled frame index, in time order."""
    _, first = np.unique(indices, return_index=True)
    return np.sort(first)


class DetectReplica:
    """One detector replica; Ray Data constructs it once per actor, tests call it directly."""

    def __init__(self, config: DetectConfig):
        import torch

        from pipeline.tasks.detect.models import build_detector

        self.config = c = config
        self.streams = Streams(c.runtime)
        self.device = torch.device(pick_device(c.runtime.device))
        warning = bf16_cpu_warning(c.runtime.precision, self.device.type)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        self.net = build_detector(c.card, c.score_threshold, c.max_per_frame).to(
            self.device).eval()
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[
            c.runtime.precision]
        self.canvas = (c.card.min_size, c.card.max_size)

    def detect(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(boxes, scores, labels)`` in canvas pixels for uint8 frames ``(n, H, W, 3)``,
        ``batch_size`` frames per forward pass, spread over the streams."""
        out: list = []
        step = self.config.batch_size
        for a in range(0, len(frames), step):
            out.extend(self.streams.map(self._forward, frames[a:a + step]))
        return out

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        import torch

        # np.stack copies: Ray hands batches over read-only, which torch warns about.
        images = list(torch.from_numpy(np.stack(frames)).to(self.device).permute(0, 3, 1, 2)
                      .float().div_(255))
        with torch.inference_mode(), torch.autocast(
                self.device.type, dtype=self.dtype or torch.float32,
                enabled=self.dtype is not None):
            found = self.net(images)
        result = np.empty(len(found), dtype=object)
        for i, f in enumerate(found):
            result[i] = (f["boxes"].float().cpu().numpy(), f["scores"].float().cpu().numpy(),
                         f["labels"].cpu().numpy())
        return result

    def video(self, indices: np.ndarray, picks: np.ndarray, fps: float, height: int,
              width: int, found: list) -> list[FrameDetections]:
        """One video's detections on its distinct sampled frames (positions ``picks`` of
        ``indices``), in original pixels, filtered by class and tracked."""
        c = self.config
        out = []
        for p, (boxes, scores, labels) in zip(picks, found):
            keep = np.ones(len(scores), bool) if c.keep is None else np.isin(labels, c.keep)
            t_s = float(indices[p] / fps) if fps > 0 else 0.0
            out.append(FrameDetections(int(indices[p]), t_s,
                                       to_original(boxes[keep], height, width, self.canvas),
                                       scores[keep], labels[keep].astype(np.int64)))
        if c.track:
            track(out, fps, c.score_threshold, c.lost_s, c.tracker)
        return out

    def run(self, batch: Batch, ok: np.ndarray) -> list[list[FrameDetections]]:
        rows = np.flatnonzero(ok)
        picks = [distinct_positions(batch["frame_indices"][i]) for i in rows]
        frames = [batch["frames"][i, p, 0] for i, p in zip(rows, picks)]
        found = self.detect(np.concatenate(frames)) if frames else []
        per_video, start = [], 0
        for i, p in zip(rows, picks):
            mine = found[start:start + len(p)]
            start += len(p)
            per_video.append(self.video(batch["frame_indices"][i], p,
                                        float(batch["fps"][i]), int(batch["height"][i]),
                                        int(batch["width"][i]), mine))
        return per_video

    def __call__(self, batch: Batch) -> pa.Table:
        ok = batch["status"] == "ok"
        n, n_ok = len(ok), int(ok.sum())
        per_video: list[list[FrameDetections]] = []
        infer_s = np.full(n, np.nan)
        if n_ok:
            t0 = time.perf_counter()
            try:
                per_video = self.run(batch, ok)
            except Exception as e:  # one bad batch must not end the job: its rows say why
                batch = inference_failed(batch, ok, e)
                ok, per_video = np.zeros_like(ok), []
            infer_s[ok] = (time.perf_counter() - t0) / max(1, n_ok)
        c, names = self.config, self.config.card.class_names
        s = c.schema
        columns = {
            "frames_sampled": per_ok(n, ok, [len(v) for v in per_video], pa.int32()),
            "sampled_frames": per_ok(n, ok, [[f.frame_index for f in v] for v in per_video],
                                     pa.list_(pa.int32())),
            "detections": per_ok(n, ok, [detection_rows(v, names) for v in per_video],
                                 s.field("detections").type),
            "labels_found": per_ok(n, ok, [label_rows(v, names) for v in per_video],
                                   s.field("labels_found").type),
            "tracks": per_ok(n, ok, [track_rows(v, names) for v in per_video],
                             s.field("tracks").type),
        }
        return rows_table(batch, s, c.provenance, ok, columns, infer_s)
