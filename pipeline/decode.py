"""Decode the sampled frames of one video: decord or PyAV, each the other's fallback.

decord (the default, ``resources.decoder``) seeks to the sampled frames and resizes while
decoding (``width``/``height``). Its bundled FFmpeg has no AV1 and it refuses some WebM
files without a duration; for those, and for any decord failure, PyAV (which ships its own,
newer FFmpeg; :mod:`pipeline.decode_pyav`) decodes the same indices. The result records
which decoder ran.

Output frames are uint8 ``(clips, frames, crop, crop, 3)``: normalisation happens on the
model replica, so the object store carries 4x fewer bytes than float32 would.
"""

from __future__ import annotations

import io
import os
import re
import time
from dataclasses import dataclass

import numpy as np

from pipeline.errors import VideoError
from pipeline.guard import worker_for
from pipeline.sampling import clip_indices, segment_frames, snap_to_keyframes


@dataclass(frozen=True, kw_only=True)
class DecodeSpec:
    clips: int
    frames: int
    stride: int | None
    short_side: int
    crop_size: int
    threads: int = 1
    timeout_s: float | None = None  # per video; decodes then run in a killable child
    snap_to_keyframes: bool = False  # sampled frames move to the nearest keyframe
    decoder: str = "decord"  # tried first; the other one is the fallback

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (self.clips, self.frames, self.crop_size, self.crop_size, 3)


@dataclass
class DecodedVideo:
    frames: np.ndarray
    decoder: str
    num_frames: int
    fps: float
    width: int
    height: int
    note: str | None = None

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else float("nan")


def resized_dims(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side scaled to ``short_side``, aspect kept."""
    if height <= width:
        return short_side, max(short_side, round(width * short_side / height))
    return max(short_side, round(height * short_side / width)), short_side


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Crop the last-but-one two axes (H, W) of ``(..., H, W, C)`` to ``size``."""
    h, w = frames.shape[-3], frames.shape[-2]
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top:top + size, left:left + size, :]


def plan_indices(num_frames: int, fps: float, spec: DecodeSpec, start_s: float | None,
                 end_s: float | None, timestamps=None, keyframes=None) -> np.ndarray:
    """The frame indices to decode, ``(clips, frames)``: the segment's clips, moved to the
    nearest keyframes when the spec asks for it and the decoder knows them."""
    first, last = segment_frames(num_frames, fps, start_s, end_s, timestamps)
    idx = clip_indices(first, last, spec.clips, spec.frames, spec.stride)
    if spec.snap_to_keyframes and keyframes is not None:
        idx = snap_to_keyframes(idx, keyframes)
    return idx


def _source(path: str):
    """A local path for decord/PyAV, or an in-memory file for remote URIs."""
    if "://" not in path or path.startswith("file://"):
        local = path.removeprefix("file://")
        if not os.path.exists(local):
            raise VideoError("read", f"file not found: {local}. Check the manifest's path "
                             "column.")
        # Only regular files have a meaningful size (a named pipe is legitimate input).
        if os.path.isfile(local) and os.path.getsize(local) == 0:
            raise VideoError("read", f"file is empty (0 bytes): {local}")
        return local
    import pyarrow.fs as pafs

    try:
        fs, inner = pafs.FileSystem.from_uri(path)
        with fs.open_input_stream(inner) as f:
            data = f.read()
    except Exception as e:  # any filesystem error becomes the row's reason
        raise VideoError("read", f"cannot read {path}: {e}") from e
    if not data:
        raise VideoError("read", f"file is empty (0 bytes): {path}")
    return data


def reader_input(src):
    """What decord and PyAV open: a local path, or the bytes of a remote file as a file."""
    return io.BytesIO(src) if isinstance(src, bytes) else src


def decode_with_decord(src, spec: DecodeSpec, start_s=None, end_s=None) -> DecodedVideo:
    import decord

    probe = decord.VideoReader(reader_input(src), ctx=decord.cpu(0), num_threads=spec.threads)
    n, fps = len(probe), float(probe.get_avg_fps())
    ts = None
    if start_s is not None or end_s is not None:
        ts = probe.get_frame_timestamp(range(n))[:, 0] if n else None
    keys = probe.get_key_indices() if spec.snap_to_keyframes and n else None
    idx = plan_indices(n, fps, spec, start_s, end_s, ts, keys)
    uniq, inverse = np.unique(idx, return_inverse=True)
    # decord reports no frame size before decoding, and its width/height are the output
    # size after rotation, so decode the first frame (a keyframe: one frame's work) at full
    # size to learn the aspect ratio, then decode the sampled frames resized.
    first = probe.next().asnumpy()
    height, width = first.shape[0], first.shape[1]
    th, tw = resized_dims(height, width, spec.short_side)
    reader = probe
    if (th, tw) != (height, width):
        del probe
        reader = decord.VideoReader(reader_input(src), ctx=decord.cpu(0), width=tw, height=th,
                                    num_threads=spec.threads)
    frames = reader.get_batch([int(i) for i in uniq]).asnumpy()
    frames = center_crop(frames, spec.crop_size)[inverse.reshape(idx.shape)]
    return DecodedVideo(np.ascontiguousarray(frames), "decord", n, fps, width, height)


def decode_video(path: str, spec: DecodeSpec, start_s: float | None = None,
                 end_s: float | None = None) -> DecodedVideo:
    """Decode the sampled clips of one video. Raises :class:`VideoError` with the reason.

    ``spec.decoder`` runs first; any failure of it falls back to the other decoder, except
    a sampling error (e.g. a segment past the end), which is final: another decoder would
    see the same video.
    """
    src = _source(path)
    first, second = (spec.decoder, "pyav") if spec.decoder == "decord" else ("pyav", "decord")
    try:
        return _decoder(first)(src, spec, start_s, end_s)
    except VideoError as e:
        if e.stage == "sample":
            raise
        reason = e.message
    except Exception as e:  # decord raises DECORDError, RuntimeError, ...
        reason = _short(e)
    try:
        video = _decoder(second)(src, spec, start_s, end_s)
    except VideoError as e:
        raise VideoError(e.stage, f"{e.message} ({NAMES[first]} also failed: {reason})") \
            from None
    except Exception as e:
        raise VideoError("decode", f"not a decodable video: {NAMES[first]}: {reason}; "
                         f"{NAMES[second]}: {_short(e)}") from None
    video.note = f"{NAMES[first]} failed ({reason}); " + (
        video.note or f"decoded by {NAMES[second]}")
    return video


def _decoder(name: str):
    if name == "decord":
        return decode_with_decord
    from pipeline.decode_pyav import decode_with_pyav  # imports this module: not at the top

    return decode_with_pyav


NAMES = {"decord": "decord", "pyav": "PyAV"}


# decord prefixes messages with "[12:00:00] /path/file.cc:123: " once per stack level.
_NATIVE_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+\.(?:cc|h|cpp):\d+: ")


def _short(e: BaseException, limit: int = 300) -> str:
    """A native-library error without its source-location noise, trimmed."""
    text = " ".join((str(e).strip() or type(e).__name__).split())
    return _NATIVE_PREFIX.sub("", text)[:limit]


def timed_decode(path: str, spec: DecodeSpec, start_s=None, end_s=None):
    """``(DecodedVideo | None, error | None, seconds)``; never raises for a bad video."""
    t0 = time.perf_counter()
    try:
        if spec.timeout_s:
            video = worker_for(spec.timeout_s).decode(path, spec, start_s, end_s)
        else:
            video = decode_video(path, spec, start_s, end_s)
        return video, None, time.perf_counter() - t0
    except VideoError as e:
        return None, str(e), time.perf_counter() - t0
    except Exception as e:  # a bug or a native-library surprise: still one error row
        return None, f"decode: unexpected {type(e).__name__}: {_short(e)}", \
            time.perf_counter() - t0


def _float_or_none(v) -> float | None:
    return None if v is None or v != v else float(v)


def decode_batch(batch: dict[str, np.ndarray], spec: DecodeSpec) -> dict[str, np.ndarray]:
    """The decode stage: manifest rows in, the same rows with frames and metadata out.

    Never raises for a bad video: its row gets ``status="error"`` and the reason, and
    all-zero frames so that the batch stays one dense tensor.
    """
    n = len(batch["video_id"])
    frames = np.zeros((n, *spec.shape), dtype=np.uint8)
    status = np.full(n, "ok", dtype=object)
    error = np.full(n, None, dtype=object)
    decoder = np.full(n, None, dtype=object)
    note = np.full(n, None, dtype=object)
    meta = {k: np.full(n, np.nan)
            for k in ("num_frames", "fps", "duration_s", "width", "height")}
    decode_s = np.zeros(n)
    for i in range(n):
        path = batch["path"][i]
        if path is None or path != path or not str(path).strip():
            video, err, dt = None, "read: the manifest row has an empty path", 0.0
        else:
            video, err, dt = timed_decode(str(path), spec, _float_or_none(batch["start_s"][i]),
                                          _float_or_none(batch["end_s"][i]))
        decode_s[i] = dt
        if video is None:
            status[i], error[i] = "error", err
            continue
        frames[i] = video.frames
        decoder[i], note[i] = video.decoder, video.note
        for k in meta:
            meta[k][i] = getattr(video, k)
    return {**batch, "frames": frames, "status": status, "error": error, "decoder": decoder,
            "decode_note": note, "decode_s": decode_s, **meta}
