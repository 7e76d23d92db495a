"""The shots replica: a video's every frame (``sequence``, from
:func:`pipeline.decode.stage.decode_sequence_batch`) through a shot-boundary detector
(:mod:`pipeline.segments.detectors`), on the GPU when there is one, into the video's
shots. Rows whose decode failed pass through, so every input row leaves as one row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.model.runtime import Runtime
from pipeline.output.rows import Batch, Provenance, inference_failed, per_ok, rows_table
from pipeline.segments.shots import SHOT, Detector, ShotFinder, shot_dicts


def shots_fields() -> list[pa.Field]:
    """The task's own output columns."""
    return [pa.field("shots", pa.list_(SHOT)), pa.field("shot_count", pa.int32()),
            pa.field("mean_shot_s", pa.float64())]


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
        return rows_table(batch, c.schema, c.provenance, ok, columns, infer_s)
