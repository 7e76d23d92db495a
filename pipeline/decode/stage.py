"""The decode stages: manifest rows in, the same rows with decoded frames (or soundtrack
windows) and metadata out.

Plain functions over ``dict[str, np.ndarray]`` batches, without Ray: ``pipeline.dataflow``
maps the task's stage over the manifest's blocks, for inference and training alike. Neither
raises for a bad file: the row gets ``status="error"`` and the reason.
"""

from __future__ import annotations

import pickle
import time

import numpy as np

from pipeline.decode.audio import AudioSpec, decode_audio
from pipeline.decode.base import DecodeSpec, short_error
from pipeline.decode.fallback import decode_video
from pipeline.decode.sequence import SequenceSpec, decode_sequence
from pipeline.decode.worker import worker_for
from pipeline.errors import VideoError

Batch = dict[str, np.ndarray]
META = ("num_frames", "fps", "duration_s", "width", "height")


# What each kind of spec decodes: in-process, and its method of the confined worker.
_DECODERS = {DecodeSpec: (decode_video, "decode"), AudioSpec: (decode_audio, "decode_audio"),
             SequenceSpec: (decode_sequence, "decode_sequence")}


def timed_decode(path: str, spec: DecodeSpec | AudioSpec | SequenceSpec,
                 start_s: float | None = None, end_s: float | None = None):
    """``(DecodedVideo | DecodedAudio | None, error | None, seconds)``: the video's sampled
    frames (a ``DecodeSpec``), every frame (a ``SequenceSpec``) or its soundtrack's windows
    (an ``AudioSpec``), in the confined worker when the spec has a time limit; never raises
    for a bad file."""
    def run():
        decode, method = _DECODERS[type(spec)]
        if spec.timeout_s:
            decode = getattr(worker_for(spec.timeout_s, spec.memory_mb), method)
        return decode(path, spec, start_s, end_s)

    return attempted(run)


def attempted(decode):
    """``(decode() | None, error | None, seconds)``: a bad file's :class:`VideoError`, or
    any other exception, becomes the row's reason; never raises."""
    t0 = time.perf_counter()
    try:
        return decode(), None, time.perf_counter() - t0
    except VideoError as e:
        return None, str(e), time.perf_counter() - t0
    except Exception as e:  # a bug or a native-library surprise: still one error row
        return None, f"decode: unexpected {type(e).__name__}: {short_error(e)}", \
            time.perf_counter() - t0


def float_or_none(v) -> float | None:
    return None if v is None or v != v else float(v)


def each_row(batch: Batch, spec: DecodeSpec | AudioSpec, guard=None):
    """``(row, decoded | None, error | None, seconds)`` for every row of a batch.

    ``guard`` (decoding in the Ray worker only: ``pipeline.infer.progress.RowGuard``):
    ``guard.refuse(video_id)`` gives a reason not to decode a file again (earlier attempts
    died with their worker), else ``guard.done(video_id)`` follows its decode. A row that
    arrives as an error (its shots could not be found) keeps its reason undecoded.
    """
    for i in range(len(batch["video_id"])):
        path, video_id = batch["path"][i], str(batch["video_id"][i])
        if "status" in batch and batch["status"][i] == "error":  # failed upstream (shots)
            yield i, None, batch["error"][i], batch["decode_s"][i] if "decode_s" in batch \
                else 0.0
            continue
        refused = guard.refuse(video_id) if guard is not None else None
        if refused:
            yield i, None, refused, 0.0
            continue
        if path is None or path != path or not str(path).strip():
            decoded, err, dt = None, "read: the manifest row has an empty path", 0.0
        else:
            decoded, err, dt = timed_decode(str(path), spec, float_or_none(batch["start_s"][i]),
                                            float_or_none(batch["end_s"][i]))
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
PACKED = "packed_failures"  # in inference's decode output: see in_batches()


def _take(batch: Batch, rows: np.ndarray) -> Batch:
    return {k: v[rows] for k, v in batch.items()}


def _concat(batches: list[Batch]) -> Batch:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def pack_failed(failed: Batch, shapes: dict[str, tuple[tuple[int, ...], np.dtype]]) -> Batch:
    """Failed rows, without their sample columns, as one carrier row: the first row's
    values, empty ``(1, 0, ..., 0)`` samples, and in :data:`PACKED` the pickled rows with
    their samples' per-row ``shapes`` (shape, dtype), which :func:`unpack` restores.

    Ray Data cuts a replica's input into batches of ``inference.batch_size`` rows, and a
    call cost a missing file's whole row (~2 ms); a failed row's zero frames were 1.2 MB
    of the classify job's object store. 256 failed rows now travel as one small row."""
    carrier = {k: v[:1] for k, v in failed.items()}
    for k, (shape, dtype) in shapes.items():
        carrier[k] = np.zeros((1,) + (0,) * len(shape), dtype)
    carrier[PACKED] = np.array([pickle.dumps((failed, shapes), protocol=5)], dtype=object)
    return carrier


def unpack(batch: Batch) -> list[Batch]:
    """``batch`` as the replicas expect it, without :data:`PACKED`: its plain rows, then
    the rows of each carrier (:func:`pack_failed`) in a batch of their own, with all-zero
    samples of the decoded shape (allocated lazily: a replica that only reads its decoded
    rows' samples never touches them)."""
    packed = batch.get(PACKED)
    if packed is None:
        return [batch]
    plain = np.array([len(p) == 0 for p in packed], dtype=bool)
    rest = {k: v for k, v in batch.items() if k != PACKED}
    out = [_take(rest, plain)] if plain.any() else []
    for failed, shapes in (pickle.loads(p) for p in packed[~plain]):
        n = len(failed["video_id"])
        out.append({**failed, **{k: np.zeros((n, *shape), dtype)
                                 for k, (shape, dtype) in shapes.items()}})
    return out


def dense_samples(batch: Batch) -> Batch:
    """``batch`` with dense sample columns again, as replicas expect them. Where Ray Data
    joins decoded rows and a carrier (:func:`pack_failed`, empty samples) into one batch,
    a sample column arrives as an object array of per-row arrays (a variable-shaped tensor
    column): the decoded rows are stacked again (:func:`unpack` leaves the carrier's own
    row out)."""
    out = dict(batch)
    for k in SAMPLE_COLUMNS:
        column = batch.get(k)
        if column is None or column.dtype != object or not len(column):
            continue
        out[k] = np.stack(list(column))
    return out


def in_batches(block: Batch, spec, decode_stage, videos: int, guard=None, on_start=None):
    """Inference's decode task over a whole block of manifest rows: ``decode_stage`` on
    ``videos`` rows at a time, each batch's decoded rows handed on at once, and its failed
    rows gathered at the end into one carrier row (:func:`pack_failed`; every batch has
    the :data:`PACKED` column, empty in plain rows). A block of missing files thus reaches
    the replica as one row instead of one call per ``inference.batch_size`` rows.
    ``on_start()``, if given, is called first (the job's clock: ``first_decode_s``)."""
    if on_start is not None:
        on_start()
    failed, shapes = [], {}
    for start in range(0, len(block["video_id"]), videos):
        out = decode_stage(_take(block, np.arange(start, min(start + videos,
                                                               len(block["video_id"])))),
                           spec=spec, guard=guard)
        ok = out["status"] == "ok"
        if ok.any():
            plain = out if ok.all() else _take(out, ok)
            yield {**plain, PACKED: np.full(int(ok.sum()), b"", dtype=object)}
        if not ok.all():
            samples = [k for k in SAMPLE_COLUMNS if k in out]
            shapes = {k: (out[k].shape[1:], out[k].dtype) for k in samples}
            failed.append({k: v[~ok] for k, v in out.items() if k not in samples})
    if failed:
        yield pack_failed(_concat(failed), shapes)


def decode_batch(batch: Batch, spec: DecodeSpec, guard=None) -> Batch:
    """Decode every row of a batch; a failed row keeps all-zero frames, so that the batch
    stays one dense tensor. ``guard``: see :func:`each_row`."""
    n = len(batch["video_id"])
    out = _common(n)
    # A probe (decoding on the replica) chooses the frames and decodes none.
    frames = None if spec.probe_only else np.zeros((n, *spec.shape), dtype=np.uint8)
    indices = np.full((n, spec.clips * spec.frames), -1, dtype=np.int64)
    for i, video, err, dt in each_row(batch, spec, guard):
        out["decode_s"][i] = dt
        if video is None:
            out["status"][i], out["error"][i] = "error", err
            continue
        if frames is not None:
            frames[i] = video.frames
        if video.indices is not None:
            indices[i] = video.indices
        out["decoder"][i], out["decode_note"][i] = video.decoder, video.note
        for k in META:
            out[k][i] = getattr(video, k)
    out["frame_indices"] = indices
    return {**batch, **out} if frames is None else {**batch, **out, "frames": frames}


def decode_sequence_batch(batch: Batch, spec: SequenceSpec, guard=None) -> Batch:
    """Decode every frame of every row (``sequence``: per row uint8 ``(T, h, w, 3)``;
    ``sequence_times``: each frame's start in seconds; ``first_frame``: the number of its
    first frame in the video); a failed row gets no frames."""
    n = len(batch["video_id"])
    out = _common(n)
    empty = np.zeros((0, *spec.size, 3), np.uint8)
    frames = np.empty(n, dtype=object)
    times = np.empty(n, dtype=object)
    first = np.zeros(n, dtype=np.int64)
    for i, video, err, dt in each_row(batch, spec, guard):
        out["decode_s"][i] = dt
        frames[i], times[i] = empty, np.zeros(0)
        if video is None:
            out["status"][i], out["error"][i] = "error", err
            continue
        frames[i], times[i], first[i] = video.frames, video.times, video.indices[0]
        out["decoder"][i], out["decode_note"][i] = video.decoder, video.note
        for k in META:
            out[k][i] = getattr(video, k)
    return {**batch, **out, "sequence": frames, "sequence_times": times, "first_frame": first}


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
