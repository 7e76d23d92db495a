"""Clip sampling: which frame indices to decode. Pure index math, no I/O.

Two steps:

1. :func:`segment_frames` turns an optional ``[start_s, end_s)`` segment into an inclusive
   frame range ``(first, last)``. With per-frame timestamps (variable frame rate) it uses
   them; otherwise it assumes a constant rate.
2. :func:`clip_indices` places ``clips`` clips of ``frames`` frames in that range.

Worked examples (300-frame video, 30 fps):

* uniform spread, 1 clip x 4 frames: the range is cut into 4 equal windows of 75 frames and
  each window contributes its centre: ``[37, 112, 187, 262]``.
* uniform spread, 2 clips x 2 frames: two windows of 150 frames, each sampled like a clip
  of its own: ``[[37, 112], [187, 262]]``.
* stride 2, 1 clip x 4 frames: a clip spans ``(4 - 1) * 2 + 1 = 7`` frames, centred in the
  range: starts at ``(300 - 7) // 2 = 146`` -> ``[146, 148, 150, 152]``.
* stride 2, 3 clips x 4 frames: clip starts spread evenly from 0 to ``300 - 7 = 293``:
  ``0, 146, 293`` (rounded).
* a 5-frame video, stride 1, 1 clip x 8 frames: the clip does not fit, so the last frame is
  repeated: ``[0, 1, 2, 3, 4, 4, 4, 4]``.
* segment 2.0 s - 3.0 s at 30 fps: frames 60..89 (frames *starting* before 3.0 s).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.errors import VideoError


def segment_frames(num_frames: int, fps: float, start_s: float | None = None,
                   end_s: float | None = None,
                   timestamps: np.ndarray | None = None) -> tuple[int, int]:
    """Inclusive frame range ``(first, last)`` of a segment.

    Args:
        num_frames: frames in the video (>= 1).
        fps: average frame rate, used when ``timestamps`` is None.
        start_s, end_s: the segment in seconds; None means the start / end of the video.
            An ``end_s`` past the end is clamped; a ``start_s`` past the end is an error.
        timestamps: start time in seconds of every frame (monotonic), for variable frame
            rate videos.

    Raises:
        VideoError: the video has no frames, or the segment holds none of them.
    """
    if num_frames < 1:
        raise VideoError("sample", "the video has no frames")
    if start_s is None and end_s is None:
        return 0, num_frames - 1
    start_s = 0.0 if start_s is None or math.isnan(start_s) else float(start_s)
    end_s = math.inf if end_s is None or math.isnan(end_s) else float(end_s)
    if timestamps is not None:
        ts = np.asarray(timestamps, dtype=np.float64)
        first = int(np.searchsorted(ts, start_s - 1e-9, side="left"))
        last = int(np.searchsorted(ts, end_s - 1e-9, side="left")) - 1
    else:
        if fps <= 0:
            raise VideoError("sample", "the video reports no frame rate, so a segment in "
                             "seconds cannot be placed")
        first = math.ceil(start_s * fps - 1e-6)
        last = num_frames - 1 if math.isinf(end_s) else math.ceil(end_s * fps - 1e-6) - 1
    last = min(last, num_frames - 1)
    if first > num_frames - 1:
        duration = num_frames / fps if fps > 0 else float("nan")
        raise VideoError("sample", f"segment starts at {start_s:g} s, after the video ends "
                         f"(about {duration:.3g} s); fix start_s in the manifest")
    if last < first:
        raise VideoError("sample", f"segment {start_s:g}-{end_s:g} s holds no frame")
    return first, last


def _uniform(first: int, length: int, frames: int) -> np.ndarray:
    """``frames`` window centres over ``length`` frames starting at ``first``."""
    step = length / frames
    return first + np.floor((np.arange(frames) + 0.5) * step).astype(np.int64)


def clip_indices(first: int, last: int, clips: int, frames: int,
                 stride: int | None = None) -> np.ndarray:
    """Frame indices of each clip, shape ``(clips, frames)``, all within ``[first, last]``.

    Args:
        first, last: inclusive frame range (from :func:`segment_frames`).
        clips: clips per video.
        frames: frames per clip.
        stride: distance between consecutive frames of a clip; None spreads each clip's
            frames uniformly over its 1/``clips`` share of the range.
    """
    if last < first or clips < 1 or frames < 1:
        raise ValueError(f"bad sampling request: range {first}..{last}, {clips}x{frames}")
    length = last - first + 1
    if stride is None:
        bounds = np.linspace(first, last + 1, clips + 1)
        out = np.stack([_uniform(int(math.floor(a)), max(1, int(math.floor(b) - math.floor(a))),
                                 frames) for a, b in zip(bounds[:-1], bounds[1:])])
    else:
        span = (frames - 1) * stride + 1
        if clips == 1:
            starts = np.array([first + max(0, (length - span) // 2)])
        else:
            starts = first + np.round(np.linspace(0, max(0, length - span), clips))
        out = starts.astype(np.int64)[:, None] + np.arange(frames, dtype=np.int64) * stride
    return np.clip(out, first, last)


def rate_indices(first: int, last: int, fps: float, rate: float, count: int) -> np.ndarray:
    """Frames ``rate`` times a second over ``[first, last]``, at most ``count`` of them, as
    ``count`` indices (the last one repeated when fewer fit).

    The first frame of the range is always taken, so a video shorter than one interval
    still gives one frame. More than ``count`` frames at that rate: ``count`` of them, spread
    evenly. Without a frame rate, ``count`` frames are spread uniformly.

    Example: frames 0..99 at 10 fps, ``rate=2``, ``count=8``: every 5th frame,
    ``[0, 5, 10, ..., 95]`` (20 frames), thinned to 8: ``[0, 15, 25, 40, 55, 70, 80, 95]``.
    """
    if fps <= 0:
        return clip_indices(first, last, 1, count).reshape(-1)
    step = fps / rate
    idx = first + np.floor(np.arange(0, last - first + 1, step) + 1e-9).astype(np.int64)
    idx = idx[idx <= last]
    if idx.size > count:
        idx = idx[np.round(np.linspace(0, idx.size - 1, count)).astype(np.int64)]
    return np.concatenate([idx, np.full(count - idx.size, idx[-1], np.int64)])


def snap_to_keyframes(indices: np.ndarray, keyframes) -> np.ndarray:
    """Each index moved to the nearest keyframe (the earlier one on a tie), same shape.

    The opt-in ``sampling.snap_to_keyframes`` mode: a keyframe decodes on its own, without
    the frames before it in its group of pictures, so decoding costs a few frames per video
    instead of nearly all of them. The trade-off: frames land up to half a keyframe interval
    from where uniform sampling puts them (possibly outside a ``start_s``/``end_s`` segment
    that holds no keyframe), and several sampled frames may share one keyframe.

    Example: keyframes ``[0, 60, 120]``, indices ``[[20, 40, 95]]`` -> ``[[0, 60, 120]]``
    (95 is 35 from 60 and 25 from 120).
    """
    keys = np.unique(np.asarray(keyframes, dtype=np.int64))
    if keys.size == 0:
        return np.asarray(indices)
    idx = np.asarray(indices, dtype=np.int64)
    right = np.clip(np.searchsorted(keys, idx, side="left"), 0, keys.size - 1)
    left = np.clip(right - 1, 0, keys.size - 1)
    take_left = (idx - keys[left]) <= (keys[right] - idx)
    return np.where(take_left & (keys[left] <= idx), keys[left], keys[right])
