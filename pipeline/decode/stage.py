"""The decode stages: manifest rows in, the same rows with decoded frames (or soundtrack
windows) and metadata out.

Plain functions over ``dict[str, np.ndarray]`` batches, without Ray: ``pipeline.dataflow``
maps the task's stage over the manifest's blocks, for inference and training alike. Neither
raises for a bad file: the row gets ``status="error"`` and the reason.
"""

from __future__ import annotations

import time

import numpy as np

from pipeline.decode.audio import AudioSpec, decode_audio
from pipeline.decode.base import DecodeSpec, short_error
from pipeline.decode.fallback import decode_video
from pipeline.decode.worker import worker_for
from pipeline.errors import VideoError

Batch = dict[str, np.ndarray]
META = ("num_frames", "fps", "duration_s", "width", "height")


def timed_decode(path: str, spec: DecodeSpec | AudioSpec, start_s: float | None = None,
                 end_s: float | None = None):
    """``(DecodedVideo | DecodedAudio | None, error | None, seconds)``: the video's frames
    (a ``DecodeSpec``) or its soundtrack's windows (an ``AudioSpec``), in the confined
    worker when the spec has a time limit; never raises for a bad file."""
    audio = isinstance(spec, AudioSpec)
    t0 = time.perf_counter()
    try:
        if spec.timeout_s:
            worker = worker_for(spec.timeout_s, spec.memory_mb)
            run = worker.decode_audio if audio else worker.decode
        else:
            run = decode_audio if audio else decode_video
        return run(path, spec, start_s, end_s), None, time.perf_counter() - t0
    except VideoError as e:
        return None, str(e), time.perf_counter() - t0
    except Exception as e:  # a bug or a native-library surprise: still one error row
        return None, f"decode: unexpected {type(e).__name__}: {short_error(e)}", \
            time.perf_counter() - t0


def _float_or_none(v) -> float | None:
    return None if v is None or v != v else float(v)


def each_row(batch: Batch, spec: DecodeSpec | AudioSpec, guard=None):
    """``(row, decoded | None, error | None, seconds)`` for every row of a batch.

    ``guard`` (decoding in the Ray worker only: ``pipeline.infer.progress.RowGuard``):
    ``guard.refuse(video_id)`` gives a reason not to decode a file again (earlier attempts
    died with their worker), else ``guard.done(video_id)`` follows its decode.
    """
    for i in range(len(batch["video_id"])):
        path, video_id = batch["path"][i], str(batch["video_id"][i])
        refused = guard.refuse(video_id) if guard is not None else None
        if refused:
            yield i, None, refused, 0.0
            continue
        if path is None or path != path or not str(path).strip():
            decoded, err, dt = None, "read: the manifest row has an empty path", 0.0
        else:
            decoded, err, dt = timed_decode(str(path), spec, _float_or_none(batch["start_s"][i]),
                                            _float_or_none(batch["end_s"][i]))
        if guard is not None:
            guard.done(video_id)
        yield i, decoded, err, dt


def _common(n: int) -> Batch:
    """The per-row columns every decode stage fills: status, error, decoder, note, time,
    and the video metadata (NaN until known)."""
    return {"status": np.full(n, "ok", dtype=object), "error": np.full(n, None, dtype=object),
            "decoder": np.full(n, None, dtype=object),
            "decode_note": np.full(n, None, dtype=object), "decode_s": np.zeros(n),
            **{k: np.full(n, np.nan) for k in META}}


SAMPLE_COLUMNS = ("frames", "audio")  # what decode stages decode, per row


def compact_failed(batch: Batch) -> Batch:
    """``batch``, its decoded samples (:data:`SAMPLE_COLUMNS`) emptied to ``(n, 0, ...,
    0)`` when no row of it was decoded: a batch of failed rows then carries nothing to the
    replicas (an error row of a clip job carries 1.2 MB of zeros); the replica's wrapper
    restores dense columns where Ray Data joins such a batch to others
    (:func:`dense_samples`)."""
    if (batch["status"] == "ok").any():
        return batch
    return {k: np.zeros((len(v),) + (0,) * (v.ndim - 1), v.dtype)
            if k in SAMPLE_COLUMNS and isinstance(v, np.ndarray) else v
            for k, v in batch.items()}


def dense_samples(batch: Batch) -> Batch:
    """``batch`` with dense sample columns again, as replicas expect them. A batch that
    joins a :func:`compact_failed` one to others arrives from Ray Data as an object array
    of per-row arrays (a variable-shaped tensor column): the failed rows get zeros of the
    decoded rows' shape back (a batch of failed rows only stays ``(n, 0, ..., 0)``)."""
    out = dict(batch)
    for k in SAMPLE_COLUMNS:
        column = batch.get(k)
        if column is None or column.dtype != object:
            continue
        full = [a for a in column if a.size]
        dense = np.zeros((len(column), *(full[0].shape if full else column[0].shape)),
                         full[0].dtype if full else column[0].dtype)
        for i, a in enumerate(column):
            if a.size:
                dense[i] = a
        out[k] = dense
    return out


def _take(batch: Batch, rows: np.ndarray) -> Batch:
    return {k: v[rows] for k, v in batch.items()}


def _concat(batches: list[Batch]) -> Batch:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def in_batches(block: Batch, spec, decode_stage, videos: int, guard=None):
    """Inference's decode task over a whole block of manifest rows: ``decode_stage`` on
    ``videos`` rows at a time, each batch's decoded rows handed on at once, and its failed
    rows (their samples emptied: :func:`compact_failed`) gathered into one batch at the
    end. A block of missing files thus becomes one small output batch instead of one per
    ``videos`` rows (Ray Data's cost per output batch is a row's whole cost there)."""
    failed = []
    for start in range(0, len(block["video_id"]), videos):
        out = decode_stage(_take(block, np.arange(start, min(start + videos,
                                                               len(block["video_id"])))),
                           spec=spec, guard=guard)
        ok = out["status"] == "ok"
        if ok.any():
            yield out if ok.all() else _take(out, ok)
        if not ok.all():
            failed.append(compact_failed(_take(out, ~ok)))
    if failed:
        yield _concat(failed)


def decode_batch(batch: Batch, spec: DecodeSpec, guard=None) -> Batch:
    """Decode every row of a batch; a failed row keeps all-zero frames, so that the batch
    stays one dense tensor. ``guard``: see :func:`each_row`."""
    n = len(batch["video_id"])
    out = _common(n)
    frames = np.zeros((n, *spec.shape), dtype=np.uint8)
    indices = np.full((n, spec.clips * spec.frames), -1, dtype=np.int64)
    for i, video, err, dt in each_row(batch, spec, guard):
        out["decode_s"][i] = dt
        if video is None:
            out["status"][i], out["error"][i] = "error", err
            continue
        frames[i] = video.frames
        if video.indices is not None:
            indices[i] = video.indices
        out["decoder"][i], out["decode_note"][i] = video.decoder, video.note
        for k in META:
            out[k][i] = getattr(video, k)
    return {**batch, **out, "frames": frames, "frame_indices": indices}


AUDIO_META = {"audio_codec": "codec", "audio_sample_rate": "source_rate",
              "audio_channels": "channels", "audio_duration_s": "duration_s",
              "peak_dbfs": "peak_dbfs"}


def decode_audio_batch(batch: Batch, spec: AudioSpec, guard=None) -> Batch:
    """Decode the soundtrack windows of every row of a batch (``audio``: float32 ``(n,
    windows, samples)``, ``window_starts`` in seconds, ``windows`` filled per row); a failed
    row keeps silent windows. The common ``duration_s`` is the soundtrack's."""
    n = len(batch["video_id"])
    out = _common(n)
    audio = np.zeros((n, *spec.shape), dtype=np.float32)
    starts = np.full((n, spec.windows), np.nan)
    count = np.zeros(n, dtype=np.int32)
    meta = {k: np.full(n, np.nan) for k in AUDIO_META}
    meta["audio_codec"] = np.full(n, None, dtype=object)
    for i, decoded, err, dt in each_row(batch, spec, guard):
        out["decode_s"][i] = dt
        if decoded is None:
            out["status"][i], out["error"][i] = "error", err
            continue
        audio[i], starts[i], count[i] = decoded.windows, decoded.starts, decoded.count
        out["decoder"][i], out["decode_note"][i] = "pyav", decoded.note
        out["duration_s"][i] = decoded.duration_s
        for k, attr in AUDIO_META.items():
            meta[k][i] = getattr(decoded, attr)
    return {**batch, **out, **meta, "audio": audio, "window_starts": starts,
            "windows": count}
