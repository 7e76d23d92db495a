"""Every frame of a video, tiny and in order: what shot-boundary detectors read.

The peer of the sampled-clip decoders (:mod:`pipeline.decode.fallback`) for tasks that need
consecutive frames (``task: shots``): each frame of the segment, squashed to ``size``
(TransNetV2 reads 48x27 RGB, whatever the aspect), ordered by presentation time (PyAV
yields B-frame pictures of some files out of order: ../shared/FIELD_NOTES.md), with each
frame's start time in seconds.

PyAV decodes first here: over whole sequences it was as fast as decord (BBB 30 s VP9:
1.7 s against 2.1 s) and resizes to odd sizes, which decord's resizer cannot (48x27 fails
in its array copy); decord, at twice the size then averaged down, is the fallback. A
video longer than ``max_frames`` is an error row, not an unbounded allocation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.decode.base import DecodedVideo, open_source, reader_input, short_error
from pipeline.decode.sampling import segment_frames
from pipeline.decode.video_pyav import decode_packet, upright_turns
from pipeline.errors import VideoError


@dataclass(frozen=True, kw_only=True)
class SequenceSpec:
    """What a sequence task decodes from each video (the peer of ``DecodeSpec``)."""

    size: tuple[int, int] = (27, 48)  # (height, width) of every frame, aspect not kept
    max_frames: int = 360_000  # 4 hours at 25 fps: 1.4 GB at 48x27
    threads: int = 1
    timeout_s: float | None = None  # per video; decodes then run in a killable child
    memory_mb: int | None = None
    max_file_mb: int | None = None
    allow_uri_options: bool = False

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """A typical video's frames (6 minutes at 25 fps): how much of a decode task's
        output Ray Data gathers into one block before handing it on."""
        return (9_000, *self.size, 3)

    def memory(self, videos: int) -> int:
        """Bytes a decode task of ``videos`` videos may use: decoder state and an hour of
        frames per video."""
        return 256 * 2**20 + videos * 90_000 * self.size[0] * self.size[1] * 3

    def describe(self) -> str:
        return (f"PyAV (decord fallback), every frame at {self.size[1]}x{self.size[0]} in "
                f"presentation order (at most {self.max_frames} per video)")

    def record(self) -> dict[str, Any]:
        return {"every_frame": True, "size": list(self.size), "max_frames": self.max_frames}


def decode_sequence(path: str, spec: SequenceSpec, start_s: float | None = None,
                    end_s: float | None = None, src: str | bytes | None = None
                    ) -> DecodedVideo:
    """Every frame of ``[start_s, end_s)``: ``frames`` ``(T, h, w, 3)``, ``indices`` the
    frames' numbers in the video, ``times`` their start in seconds. Raises ``VideoError``."""
    if src is None:
        src = open_source(path, spec.allow_uri_options, spec.max_file_mb)
    try:
        return _with_pyav(src, spec, start_s, end_s)
    except VideoError as e:
        if e.stage == "sample":
            raise
        reason = e.message
    except Exception as e:  # PyAV's errors: InvalidDataError, ValueError, ...
        reason = short_error(e)
    try:
        video = _with_decord(src, spec, start_s, end_s)
    except VideoError as e:
        raise VideoError(e.stage, f"{e.message} (PyAV also failed: {reason})") from None
    except Exception as e:
        raise VideoError("decode", f"not a decodable video: PyAV: {reason}; decord: "
                         f"{short_error(e)}") from None
    video.note = f"PyAV failed ({reason}); decoded by decord"
    return video


def _too_long(n: int, spec: SequenceSpec) -> VideoError:
    return VideoError("decode", f"{n} frames or more, above the {spec.max_frames} a sequence "
                      "may hold; split the video with start_s/end_s rows in the manifest")


def _with_pyav(src, spec: SequenceSpec, start_s, end_s) -> DecodedVideo:
    """Packet by packet, so that a corrupt packet costs its frames, not the video's."""
    import av

    pictures, stamps, bad = [], [], 0
    with av.open(reader_input(src), mode="r") as container:
        if not container.streams.video:
            raise VideoError("decode", "the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = spec.threads
        ctx, base, picture = stream.codec_context, stream.time_base, _Picture(spec)
        for packet in itertools.chain(container.demux(stream), [None]):  # None: drain
            if packet is not None and packet.size <= 0:
                continue
            frames = decode_packet(ctx, packet)
            if frames is None:
                bad += 1
                continue
            for frame in frames:
                if len(pictures) >= spec.max_frames:
                    raise _too_long(len(pictures), spec)
                pictures.append(picture(frame))
                stamps.append(float(frame.pts * base) if frame.pts is not None else np.nan)
        rate = float(stream.average_rate or stream.guessed_rate or 0)
    if not pictures:
        raise VideoError("decode", "the video stream holds no decodable picture"
                         + (f" ({bad} corrupt packets)" if bad else ""))
    frames, times = _in_order(np.stack(pictures), np.asarray(stamps), rate)
    video = _segment(frames, times, rate, picture.size, "pyav", start_s, end_s)
    video.note = f"{bad} corrupt packets skipped" if bad else None
    return video


class _Picture:
    """A decoded picture squashed to the spec's size, upright (a rotation tag turns it as
    a player would); ``size``: the upright source size, from the first picture."""

    def __init__(self, spec: SequenceSpec):
        self.spec, self.size, self.turns = spec, None, 0

    def __call__(self, frame) -> np.ndarray:
        h, w = self.spec.size
        if self.size is None:
            self.turns = upright_turns(frame)
            self.size = (frame.width, frame.height) if self.turns % 2 else \
                (frame.height, frame.width)
        rw, rh = (h, w) if self.turns % 2 else (w, h)
        arr = frame.to_ndarray(format="rgb24", width=rw, height=rh)
        return np.ascontiguousarray(np.rot90(arr, k=self.turns)) if self.turns else arr


def _in_order(frames: np.ndarray, times: np.ndarray, rate: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Frames in presentation order and their times from the first; without timestamps,
    in decode order at ``rate``."""
    if np.isnan(times).any():
        return frames, (np.arange(len(frames)) / rate if rate > 0 else
                        np.zeros(len(frames)))
    order = np.argsort(times, kind="stable")
    return frames[order], times[order] - times[order][0]


def _with_decord(src, spec: SequenceSpec, start_s, end_s) -> DecodedVideo:
    """decord at twice the size (its resizer needs even sizes), averaged down."""
    import decord

    h, w = spec.size
    reader = decord.VideoReader(reader_input(src), ctx=decord.cpu(0), width=2 * w,
                                height=2 * h, num_threads=spec.threads)
    n = len(reader)
    if n > spec.max_frames:
        raise _too_long(n, spec)
    chunks = [reader.get_batch(list(range(a, min(n, a + 256)))).asnumpy()
              for a in range(0, n, 256)]
    frames = np.concatenate(chunks).reshape(n, h, 2, w, 2, 3).mean(axis=(2, 4))
    times = reader.get_frame_timestamp(range(n))[:, 0] if n else np.zeros(0)
    full = decord.VideoReader(reader_input(src), ctx=decord.cpu(0))
    size = full[0].shape[:2] if n else (0, 0)
    return _segment(np.rint(frames).astype(np.uint8), np.asarray(times, float),
                    float(reader.get_avg_fps()), size, "decord", start_s, end_s)


def _segment(frames: np.ndarray, times: np.ndarray, rate: float, size, decoder: str,
             start_s, end_s) -> DecodedVideo:
    """The frames of ``[start_s, end_s)`` as a :class:`DecodedVideo`; ``num_frames`` and
    ``fps`` describe the whole video."""
    n = len(frames)
    fps = rate if rate > 0 else (n / times[-1] if n > 1 and times[-1] > 0 else 0.0)
    first, last = segment_frames(n, fps, start_s, end_s, times)
    return DecodedVideo(np.ascontiguousarray(frames[first:last + 1]), decoder, n, fps,
                        int(size[1]), int(size[0]), indices=np.arange(first, last + 1),
                        times=times[first:last + 1])
