"""Each video's shots, and the manifest rows they become (``segments: shots``).

:class:`ShotFinder` sets a detector up once per process and finds a decoded sequence's
shots (the shots task's replicas use it, and so does :func:`split_into_shots`).
:func:`fit_lengths` makes shots fit a task's limits: a shot shorter than ``min_s`` is
merged with its shorter neighbour (the one that keeps the merged shot shortest), then one
longer than ``max_s`` is cut into the fewest equal parts of at most ``max_s``.

Worked example (``min_s=2, max_s=60``): shots of 10, 1, 30 and 130 s -> the 1 s shot joins
the 10 s one (its shorter neighbour) -> 11, 30, 130 -> the 130 s shot is cut in three
(43.3 s each) -> 11, 30, 43.3, 43.3, 43.3: five rows, shots 0..4.

:func:`split_into_shots` is the stage that turns manifest rows into shot rows, in decode
tasks before the task's own decode: every frame of the video (48x27), its shots (or the
shots a shots job found, carried in the row), one row per shot with the shot's ``start_s``
and ``end_s``. A video whose shots cannot be found becomes one error row with the reason.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from pipeline.decode.sequence import SequenceSpec
from pipeline.decode.stage import decode_sequence_batch
from pipeline.model.runtime import Runtime, bf16_cpu_warning, pick_device
from pipeline.segments.detectors import (
    THRESHOLDS,
    ContentScorer,
    Shot,
    TransNetV2Scorer,
    shots_from_scores,
)

Batch = dict[str, np.ndarray]
# The ``shots`` column: a shots job's output, and what a row carries to split_into_shots.
SHOT = pa.struct([("shot", pa.int32()), ("start_frame", pa.int64()),
                  ("end_frame", pa.int64()), ("start_s", pa.float64()),
                  ("end_s", pa.float64()), ("score", pa.float32())])


@dataclass(frozen=True)
class Detector:
    """Which detector, and its threshold (pickled to the actors and decode tasks)."""

    name: str
    threshold: float

    @classmethod
    def of(cls, spec) -> Detector:
        """The detector of a ``ShotDetectorSpec``: its threshold, or the detector's own."""
        threshold = spec.threshold if spec.threshold is not None else THRESHOLDS[spec.detector]
        return cls(spec.detector, threshold)


def shot_dicts(shots: list[Shot]) -> list[dict]:
    """Shots as :data:`SHOT` structs."""
    return [{"shot": s.index, "start_frame": s.start_frame, "end_frame": s.end_frame,
             "start_s": s.start_s, "end_s": s.end_s, "score": s.score} for s in shots]


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
        extent = None
        if self.detector.name == "content":
            scores = self.scorer.scores(frames, fps or 25.0)
        else:
            scores, extent = self.scorer.heads(frames)
        return shots_from_scores(scores, self.detector.threshold, times, first_frame, fps,
                                 extent)


def _merge(a: Shot, b: Shot) -> Shot:
    return Shot(a.index, a.start_frame, b.end_frame, a.start_s, b.end_s, a.score)


def fit_lengths(shots: list[Shot], min_s: float, max_s: float) -> list[Shot]:
    """``shots`` merged and split to lengths in ``[min_s, max_s]`` (the module's worked
    example), numbered again from 0. A video shorter than ``min_s`` stays one shot."""
    out = list(shots)
    while len(out) > 1:
        lengths = [s.end_s - s.start_s for s in out]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_s:
            break
        left = lengths[i - 1] if i > 0 else np.inf
        right = lengths[i + 1] if i + 1 < len(out) else np.inf
        j = i - 1 if left <= right else i
        out[j:j + 2] = [_merge(out[j], out[j + 1])]
    fitted = []
    for s in out:
        parts = max(1, int(np.ceil((s.end_s - s.start_s) / max_s - 1e-9)))
        edges = np.linspace(s.start_s, s.end_s, parts + 1)
        frames = np.linspace(s.start_frame, s.end_frame + 1, parts + 1).round().astype(int)
        for k in range(parts):
            fitted.append(Shot(0, int(frames[k]), int(frames[k + 1]) - 1, float(edges[k]),
                               float(edges[k + 1]), s.score if k == 0 else None))
    return [replace(s, index=i) for i, s in enumerate(fitted)]


def sequence_spec(spec) -> SequenceSpec:
    """What a job (a ``JobSpec``) decodes to find shots: every frame at the detectors'
    48x27, within its decode resources."""
    res = spec.resources
    return SequenceSpec(threads=res.decode_threads, timeout_s=res.decode_timeout_s,
                        memory_mb=res.decode_memory_mb, max_file_mb=res.max_remote_file_mb,
                        allow_uri_options=spec.allow_uri_options)


@dataclass(frozen=True, kw_only=True)
class SplitSpec:
    """What :func:`split_into_shots` needs (the decode stage's ``spec``)."""

    sequence: SequenceSpec
    detector: Detector
    min_s: float
    max_s: float

    @property
    def timeout_s(self) -> float | None:
        return self.sequence.timeout_s

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, 1)  # its output is a few short rows per video

    def memory(self, videos: int) -> int:
        return self.sequence.memory(videos)


_finders: dict[Detector, ShotFinder] = {}


def finder_for(detector: Detector) -> ShotFinder:
    """One :class:`ShotFinder` per process and detector (Ray reuses its workers)."""
    if detector not in _finders:
        _finders[detector] = ShotFinder(detector, Runtime(device="cpu", threads=1))
    return _finders[detector]


# What a shot row keeps of its manifest row, and what it adds.
KEPT = ("row", "video_id", "path", "label")
SHOT_COLUMNS = ("shot", "shot_count")


def _given(value) -> list[Shot]:
    """A row's ``given_shots`` (a shots job's :data:`SHOT` structs) as shots."""
    return [Shot(int(d["shot"]), int(d["start_frame"]), int(d["end_frame"]),
                 float(d["start_s"]), float(d["end_s"]),
                 None if d["score"] is None else float(d["score"])) for d in value]


def _video_shots(batch: Batch, i: int, decoded: Batch | None, at: int,
                 spec: SplitSpec) -> tuple[list[Shot] | None, str | None]:
    """Row ``i``'s shots, or why there are none."""
    given = batch.get("given_shots")
    if given is not None and given[i] is not None:
        return _given(given[i]), None
    if "given_error" in batch and batch["given_error"][i] is not None:
        return None, str(batch["given_error"][i])
    if decoded["status"][at] != "ok":
        return None, str(decoded["error"][at])
    try:
        shots = finder_for(spec.detector).find(
            np.asarray(decoded["sequence"][at]), np.asarray(decoded["sequence_times"][at]),
            int(decoded["first_frame"][at]), float(decoded["fps"][at]))
    except Exception as e:  # one video's detector failure is its error row
        return None, f"shots: {type(e).__name__}: {str(e)[:300]}"
    return shots, None


def split_into_shots(batch: Batch, spec: SplitSpec, guard=None) -> Batch:
    """Manifest rows -> one row per shot of each video (``start_s``, ``end_s``, ``shot``,
    ``shot_count``, ``status`` ok), or one error row for a video whose shots cannot be
    found. Shots listed in a row's ``done_shots`` (written by an earlier run: resume)
    are left out. ``guard``: see :func:`pipeline.decode.stage.each_row`."""
    n = len(batch["video_id"])
    given, refused = batch.get("given_shots"), batch.get("given_error")
    need = [i for i in range(n) if given is None or (given[i] is None and refused[i] is None)]
    decoded = decode_sequence_batch({k: v[need] for k, v in batch.items()},
                                    spec=spec.sequence, guard=guard) if need else None
    at = {i: k for k, i in enumerate(need)}  # row i's place among the decoded rows
    rows: list[dict] = []
    for i in range(n):
        base = {c: batch[c][i] for c in KEPT}
        shots, error = _video_shots(batch, i, decoded, at.get(i, -1), spec)
        if shots is None:  # the row keeps the time its failed decode took
            rows.append({**base, "start_s": batch["start_s"][i], "end_s": batch["end_s"][i],
                         "shot": -1, "shot_count": -1, "status": "error", "error": error,
                         "decode_s": decoded["decode_s"][at[i]] if i in at else 0.0})
            continue
        fitted = fit_lengths(shots, spec.min_s, spec.max_s)
        done = batch.get("done_shots")
        skip = set(done[i]) if done is not None and done[i] is not None else set()
        rows += [{**base, "start_s": s.start_s, "end_s": s.end_s, "shot": s.index,
                  "shot_count": len(fitted), "status": "ok", "error": None, "decode_s": 0.0}
                 for s in fitted if s.index not in skip]
    return _columns(rows)


def _columns(rows: list[dict]) -> Batch:
    kinds = {"row": np.int64, "start_s": np.float64, "end_s": np.float64,
             "shot": np.int32, "shot_count": np.int32, "decode_s": np.float64}
    names = (*KEPT, "start_s", "end_s", *SHOT_COLUMNS, "status", "error", "decode_s")
    return {c: np.array([r[c] for r in rows], dtype=kinds.get(c, object)) for c in names}
