"""Decode the sampled frames of one video: decord or PyAV, each the other's fallback.

decord (the default, ``resources.decoder``) seeks to the sampled frames and resizes while
decoding (``width``/``height``). Its bundled FFmpeg has no AV1 and it refuses some WebM
files without a duration; for those, and for any decord failure, PyAV (which ships its own,
newer FFmpeg) decodes the same indices. The result records which decoder ran.

The PyAV path decodes only what the sampled frames need (:func:`packet_plan`): each group
of pictures up to its last sampled frame, with unsampled non-reference pictures skipped
by the decoder. decord decodes every picture from the keyframe to each sampled frame, so
PyAV first is faster for sparse sampling of B-frame video (benchmarks/README.md).

Output frames are uint8 ``(clips, frames, crop, crop, 3)``: normalisation happens on the
model replica, so the object store carries 4x fewer bytes than float32 would.
"""

from __future__ import annotations

import io
import os
import re
import time
from dataclasses import dataclass
from functools import cached_property

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


def _plan(num_frames: int, fps: float, spec: DecodeSpec, start_s: float | None,
          end_s: float | None, timestamps=None, keyframes=None) -> np.ndarray:
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


def _reader_input(src):
    return io.BytesIO(src) if isinstance(src, bytes) else src


def decode_with_decord(src, spec: DecodeSpec, start_s=None, end_s=None) -> DecodedVideo:
    import decord

    probe = decord.VideoReader(_reader_input(src), ctx=decord.cpu(0), num_threads=spec.threads)
    n, fps = len(probe), float(probe.get_avg_fps())
    ts = None
    if start_s is not None or end_s is not None:
        ts = probe.get_frame_timestamp(range(n))[:, 0] if n else None
    keys = probe.get_key_indices() if spec.snap_to_keyframes and n else None
    idx = _plan(n, fps, spec, start_s, end_s, ts, keys)
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
        reader = decord.VideoReader(_reader_input(src), ctx=decord.cpu(0), width=tw, height=th,
                                    num_threads=spec.threads)
    frames = reader.get_batch([int(i) for i in uniq]).asnumpy()
    frames = center_crop(frames, spec.crop_size)[inverse.reshape(idx.shape)]
    return DecodedVideo(np.ascontiguousarray(frames), "decord", n, fps, width, height)


def _av_open(src):
    import av

    return av.open(_reader_input(src), mode="r")


@dataclass
class _Packets:
    """What one demux pass tells about a stream's packets, in decode order."""

    pts: list  # None where the container gives none
    keyframe: np.ndarray  # bool

    @cached_property  # read by the plan, packet_plan and the decode loop of one video
    def ranks(self) -> dict[int, int] | None:
        """Display index of every pts, or None when pts cannot identify frames."""
        if any(p is None for p in self.pts) or len(set(self.pts)) != len(self.pts):
            return None
        return {p: i for i, p in enumerate(sorted(self.pts))}


# A video's packets up to this size stay in memory between planning and decoding, so it
# is opened and demuxed once (opening costs ~10 ms, as much as decoding a keyframe: it
# matters for short videos). A larger one, whose decoding dwarfs a second open, is demuxed
# again rather than held in the decode task's memory.
KEEP_PACKETS_BYTES = 32 * 2**20


def _demux(container, stream) -> tuple[_Packets, list | None]:
    """Every packet's pts and keyframe flag, and the packets themselves when they fit."""
    pts, keys, kept, size = [], [], [], 0
    for p in container.demux(stream):
        if p.size <= 0:
            continue
        pts.append(p.pts)
        keys.append(p.is_keyframe)
        if kept is not None:
            size += p.size
            kept = kept if size <= KEEP_PACKETS_BYTES else None
        if kept is not None:
            kept.append(p)
    return _Packets(pts, np.array(keys, bool)), kept


def _video_stream(container):
    stream = container.streams.best("video")
    if stream is None:
        raise VideoError("decode", "no video stream in the file")
    return stream


def packet_plan(packets: _Packets, wanted: set[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Which packets to send to the decoder and which must come out as pictures.

    Returns ``(send, needed)`` per packet (decode order), or None when frames cannot be
    identified by pts. A group of pictures (keyframe to next keyframe) is sent up to its
    last needed packet only: in decode order references come first, so nothing after it is
    needed. Unneeded packets that are sent are decoded with ``skip_frame=NONREF``: the
    decoder drops them unless other frames reference them. The next group is an exception
    when it is open (its leading pictures reference this group's tail): then this group is
    sent whole.
    """
    ranks = packets.ranks
    if ranks is None:
        return None
    n = len(packets.pts)
    needed = np.array([ranks[p] in wanted for p in packets.pts], bool)
    send = np.ones(n, bool)
    starts = [*np.flatnonzero(packets.keyframe).tolist(), n]
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    for g, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        c = starts[g + 2] if g + 2 < len(starts) else n
        next_open = b < n and any(packets.pts[j] < packets.pts[b] for j in range(b + 1, c))
        if next_open:
            continue
        hits = np.flatnonzero(needed[a:b])
        send[a + (hits[-1] + 1 if hits.size else 0):b] = False
    return send, needed


def _to_rgb(frame, spec: DecodeSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """A decoded picture as uint8 RGB, rotated upright, short side resized."""
    turns = (int(getattr(frame, "rotation", 0) or 0) // 90) % 4
    fh, fw = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)
    th, tw = resized_dims(fh, fw, spec.short_side)
    rw, rh = (th, tw) if turns % 2 else (tw, th)
    arr = frame.to_ndarray(format="rgb24", width=rw, height=rh)
    return (np.rot90(arr, k=turns) if turns else arr), (fh, fw)


def _pyav_frames(stream, source, wanted: set[int], spec: DecodeSpec, packets: _Packets,
                 sparse: bool = True):
    """Decode packet by packet, so that one corrupt packet costs one frame, not the rest.

    ``source`` yields the stream's non-empty packets in decode order (then the decoder is
    drained). ``sparse`` decodes only what the wanted frames need (:func:`packet_plan`)
    and names pictures by pts; otherwise every packet is decoded and pictures are counted.
    Returns ``(frames by index, (height, width), pictures decoded, corrupt packets)``.
    """
    import av

    plan = packet_plan(packets, wanted) if sparse else None
    ranks = packets.ranks if plan is not None else None
    got: dict[int, np.ndarray] = {}
    size, decoded, bad = None, 0, 0
    stream.thread_count = max(1, spec.threads)
    ctx = stream.codec_context
    for k, packet in enumerate([*source, None]):  # None drains the decoder's delayed frames
        if plan is not None and packet is not None:
            if k >= len(plan[0]) or not plan[0][k]:
                continue
            ctx.skip_frame = "DEFAULT" if plan[1][k] else "NONREF"
        try:
            frames = ctx.decode(packet)
        except av.FFmpegError:
            bad += 1
            continue
        for frame in frames:
            i, decoded = decoded, decoded + 1
            if ranks is not None:
                i = ranks.get(frame.pts, -1)
            if i in wanted and i not in got:
                got[i], shape = _to_rgb(frame, spec)
                size = size or shape
        if len(got) == len(wanted):
            break
    return got, size, decoded, bad


def _decode_again(src, wanted: set[int], spec: DecodeSpec, packets: _Packets, sparse: bool):
    """:func:`_pyav_frames` from a new open of the file."""
    with _av_open(src) as container:
        stream = _video_stream(container)
        source = (p for p in container.demux(stream) if p.size > 0)
        return _pyav_frames(stream, source, wanted, spec, packets, sparse)


def decode_with_pyav(src, spec: DecodeSpec, start_s=None, end_s=None) -> DecodedVideo:
    """Demux once to count frames and read timestamps, then decode only what the sampled
    frames need from the same packets (falling back to decoding every packet, from a
    fresh open, if that misses any)."""
    with _av_open(src) as container:
        stream = _video_stream(container)
        packets, kept = _demux(container, stream)
        pts = packets.pts
        n = len(pts)
        tb = float(stream.time_base) if stream.time_base else 0.0
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else (n / (float(stream.duration) * tb) if stream.duration
                                        else 0.0)
        ranks = packets.ranks
        ts = keys = None
        if (start_s is not None or end_s is not None) and tb and ranks is not None:
            ts = (np.sort(np.asarray(pts, dtype=np.float64)) - min(pts)) * tb
        if spec.snap_to_keyframes and ranks is not None:
            keys = sorted(ranks[p] for p, key in zip(pts, packets.keyframe) if key)
        idx = _plan(n, fps, spec, start_s, end_s, ts, keys)
        wanted = set(int(i) for i in np.unique(idx))
        if kept is not None:
            result = _pyav_frames(stream, kept, wanted, spec, packets)
    if kept is None:  # too large to keep: demux again
        result = _decode_again(src, wanted, spec, packets, sparse=True)
    if len(result[0]) < len(wanted):
        result = _decode_again(src, wanted, spec, packets, sparse=False)
    got, size, decoded, bad_packets = result
    if len(got) < len(wanted):
        raise VideoError("decode", f"only {decoded} of {n} frames are decodable "
                         f"({bad_packets} corrupt packets); sampled frames are missing")
    note = f"{bad_packets} corrupt packets skipped" if bad_packets else None
    frames = np.stack([center_crop(got[int(i)], spec.crop_size) for i in idx.reshape(-1)])
    frames = frames.reshape(spec.shape)
    return DecodedVideo(frames, "pyav", n, fps, size[1], size[0], note)


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
        return DECODERS[first](src, spec, start_s, end_s)
    except VideoError as e:
        if e.stage == "sample":
            raise
        reason = e.message
    except Exception as e:  # decord raises DECORDError, RuntimeError, ...
        reason = _short(e)
    try:
        video = DECODERS[second](src, spec, start_s, end_s)
    except VideoError as e:
        raise VideoError(e.stage, f"{e.message} ({NAMES[first]} also failed: {reason})") \
            from None
    except Exception as e:
        raise VideoError("decode", f"not a decodable video: {NAMES[first]}: {reason}; "
                         f"{NAMES[second]}: {_short(e)}") from None
    video.note = f"{NAMES[first]} failed ({reason}); " + (
        video.note or f"decoded by {NAMES[second]}")
    return video


DECODERS = {"decord": decode_with_decord, "pyav": decode_with_pyav}
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
