"""The decode stage: manifest rows in, the same rows with decoded frames and metadata out.

A plain function over ``dict[str, np.ndarray]`` batches, without Ray: ``pipeline.dataflow``
maps it over the manifest's blocks, for inference and training alike. It never raises for a
bad video: the row gets ``status="error"`` and the reason.
"""

from __future__ import annotations

import time

import numpy as np

from pipeline.decode.base import DecodedVideo, DecodeSpec, short_error
from pipeline.decode.fallback import decode_video
from pipeline.decode.worker import worker_for
from pipeline.errors import VideoError

Batch = dict[str, np.ndarray]
META = ("num_frames", "fps", "duration_s", "width", "height")


def timed_decode(path: str, spec: DecodeSpec, start_s: float | None = None,
                 end_s: float | None = None
                 ) -> tuple[DecodedVideo | None, str | None, float]:
    """``(DecodedVideo | None, error | None, seconds)``; never raises for a bad video."""
    t0 = time.perf_counter()
    try:
        if spec.timeout_s:
            video = worker_for(spec.timeout_s, spec.memory_mb).decode(path, spec, start_s,
                                                                      end_s)
        else:
            video = decode_video(path, spec, start_s, end_s)
        return video, None, time.perf_counter() - t0
    except VideoError as e:
        return None, str(e), time.perf_counter() - t0
    except Exception as e:  # a bug or a native-library surprise: still one error row
        return None, f"decode: unexpected {type(e).__name__}: {short_error(e)}", \
            time.perf_counter() - t0


def _float_or_none(v) -> float | None:
    return None if v is None or v != v else float(v)


def decode_batch(batch: Batch, spec: DecodeSpec, guard=None) -> Batch:
    """Decode every row of a batch; a failed row keeps all-zero frames, so that the batch
    stays one dense tensor.

    ``guard`` (decoding in the Ray worker only: ``pipeline.infer.progress.RowGuard``):
    ``guard.refuse(video_id)`` gives a reason not to decode a video again (earlier attempts
    died with their worker), else ``guard.done(video_id)`` follows its decode.
    """
    n = len(batch["video_id"])
    frames = np.zeros((n, *spec.shape), dtype=np.uint8)
    status = np.full(n, "ok", dtype=object)
    error = np.full(n, None, dtype=object)
    decoder = np.full(n, None, dtype=object)
    note = np.full(n, None, dtype=object)
    meta = {k: np.full(n, np.nan) for k in META}
    decode_s = np.zeros(n)
    indices = np.full((n, spec.clips * spec.frames), -1, dtype=np.int64)
    for i in range(n):
        path, video_id = batch["path"][i], str(batch["video_id"][i])
        refused = guard.refuse(video_id) if guard is not None else None
        if path is None or path != path or not str(path).strip():
            video, err, dt = None, "read: the manifest row has an empty path", 0.0
        elif refused:
            video, err, dt = None, refused, 0.0
        else:
            video, err, dt = timed_decode(str(path), spec, _float_or_none(batch["start_s"][i]),
                                          _float_or_none(batch["end_s"][i]))
        if guard is not None and not refused:
            guard.done(video_id)
        decode_s[i] = dt
        if video is None:
            status[i], error[i] = "error", err
            continue
        frames[i] = video.frames
        if video.indices is not None:
            indices[i] = video.indices
        decoder[i], note[i] = video.decoder, video.note
        for k in meta:
            meta[k][i] = getattr(video, k)
    return {**batch, "frames": frames, "status": status, "error": error, "decoder": decoder,
            "decode_note": note, "decode_s": decode_s, "frame_indices": indices, **meta}
