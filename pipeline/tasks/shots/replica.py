"""The shots replica: a video's every frame (``sequence``, from
:func:`pipeline.decode.stage.decode_sequence_batch`) through a shot-boundary detector
(:mod:`pipeline.tasks.shots.detectors`), on the GPU when there is one, into the video's
shots. Rows whose decode failed pass through, so every input row leaves as one row.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.model.runtime import Runtime, bf16_cpu_warning, pick_device
from pipeline.output.rows import Batch, Provenance, inference_failed, per_ok, rows_table
from pipeline.tasks.shots.detectors import ContentScorer, Shot, TransNetV2Scorer, shots_from_scores

SHOT = pa.struct([("shot", pa.int32()), ("start_frame", pa.int64()),
                  ("end_frame", pa.int64()), ("start_s", pa.float64()),
                  ("end_s", pa.float64()), ("score", pa.float32())])


def shots_fields() -> list[pa.Field]:
    """The task's own output columns."""
    return [pa.field("shots", pa.list_(SHOT)), pa.field("shot_count", pa.int32()),
            pa.field("mean_shot_s", pa.float64())]


def shot_dicts(shots: list[Shot]) -> list[dict]:
    """Shots as the ``shots`` column's structs."""
    return [{"shot": s.index, "start_frame": s.start_frame, "end_frame": s.end_frame,
             "start_s": s.start_s, "end_s": s.end_s, "score": s.score} for s in shots]


@dataclass(frozen=True)
class Detector:
    """Which detector, and its threshold (pickled to the actors and decode tasks)."""

    name: str
    threshold: float


class ShotFinder:
    """A detector set up once per process: :meth:`find` gives a decoded video's shots."""

    def __init__(self, detector: Detector, runtime: Runtime | None = None):
        import torch

        rt = runtime or Runtime()
        self.detector = detector
        if rt.threads:
            torch.set_num_threads(rt.threads)
        if detector.name == "content":
            self.scorer = ContentScorer(detector.threshold)
            return
        device = pick_device(rt.device)
        warning = bf16_cpu_warning(rt.precision, device)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[rt.precision]
        self.scorer = TransNetV2Scorer(device, dtype)

    def find(self, frames: np.ndarray, times: np.ndarray, first_frame: int,
             fps: float) -> list[Shot]:
        """The shots of uint8 frames ``(T, 27, 48, 3)`` whose first is ``first_frame``."""
        if self.detector.name == "content":
            scores = self.scorer.scores(frames, fps or 25.0)
        else:
            scores = self.scorer.scores(frames)
        return shots_from_scores(scores, self.detector.threshold, times, first_frame, fps)


@dataclass(frozen=True, kw_only=True)
class ShotsConfig:
    detector: Detector
    runtime: Runtime
    schema: pa.Schema
    provenance: Provenance


class ShotsReplica:
    """One replica; Ray Data constructs it once per actor, tests call it directly."""

    def __init__(self, config: ShotsConfig):
        self.config = config
        self.finder = ShotFinder(config.detector, config.runtime)

    def __call__(self, batch: Batch) -> pa.Table:
        ok = batch["status"] == "ok"
        found, infer_s = [], np.full(len(ok), np.nan)
        try:
            for i in np.flatnonzero(ok):
                t0 = time.perf_counter()
                found.append(self.finder.find(np.asarray(batch["sequence"][i]),
                                              np.asarray(batch["sequence_times"][i]),
                                              int(batch["first_frame"][i]),
                                              float(batch["fps"][i])))
                infer_s[i] = time.perf_counter() - t0
        except Exception as e:  # one bad batch must not end the job: its rows say why
            batch, found = inference_failed(batch, ok, e), []
            ok = np.zeros_like(ok)
        lengths = [[s.end_s - s.start_s for s in shots] for shots in found]
        columns = {
            "shots": per_ok(len(ok), ok, [shot_dicts(s) for s in found], pa.list_(SHOT)),
            "shot_count": per_ok(len(ok), ok, [len(s) for s in found], pa.int32()),
            "mean_shot_s": per_ok(len(ok), ok, [float(np.mean(x)) for x in lengths],
                                  pa.float64()),
        }
        c = self.config
        return rows_table(_without_sequence(batch), c.schema, c.provenance, ok, columns,
                          infer_s)


def _without_sequence(batch: Batch) -> Batch:
    return {k: v for k, v in batch.items() if k not in ("sequence", "sequence_times")}
