"""Streaming a soundtrack into windows: the sample-placing half of :mod:`pipeline.decode.audio`.

:func:`stream_samples` decodes an audio stream packet by packet, resamples each frame to
mono float (FFmpeg's resampler) and places the samples on the segment's timeline, measured
from the stream's first timestamp (a broadcast MPEG-TS stream starts at some 10 s, not 0),
again after corrupt packets were skipped. :class:`Windows` copies into each window the
samples that fall in it and keeps nothing else, so memory is the windows', whatever the
soundtrack's length.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import VideoError


class Windows:
    """Copies a stream of samples into the windows that overlap it; holds nothing else.
    Window ``w`` covers segment samples ``[first[w], first[w] + length)``."""

    def __init__(self, length: int, first: np.ndarray):
        self.length, self.first = length, first
        self.buf = np.zeros((len(first), length), np.float32)
        self.filled = np.zeros(len(first), np.int64)  # last sample index written + 1
        self.open = 0  # windows before this one are complete

    @property
    def done(self) -> bool:
        return self.open >= len(self.first)

    def add(self, at: int, samples: np.ndarray) -> None:
        """Samples ``[at, at + len(samples))`` of the segment (sample 0 = its start)."""
        end = at + len(samples)
        w = self.open
        while w < len(self.first) and self.first[w] < end:
            lo, hi = max(at, self.first[w]), min(end, self.first[w] + self.length)
            if hi > lo:
                self.buf[w, lo - self.first[w]:hi - self.first[w]] = samples[lo - at:hi - at]
                self.filled[w] = max(self.filled[w], hi - self.first[w])
            if w == self.open and self.first[w] + self.length <= end:
                self.open += 1
            w += 1


def origin(stream) -> float:
    """The stream's first timestamp in seconds: times are measured from it."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def measured_duration(container, stream) -> float:
    """The stream's length from its packets' timestamps (demuxed, not decoded); NaN when
    they carry none."""
    end = None
    for packet in container.demux(stream):
        if packet.pts is not None and stream.time_base is not None:
            t = float((packet.pts + (packet.duration or 0)) * stream.time_base)
            end = t if end is None else max(end, t)
    return float("nan") if end is None else max(0.0, end - origin(stream))


def stream_samples(container, stream, rate: int, first: float, last: float | None,
                   windows: Windows) -> tuple[float, int]:
    """Decode the stream from ``first`` seconds, resample it to mono at ``rate`` and hand
    the samples before ``last`` to ``windows``: ``(peak, corrupt packets skipped)``.
    Stops once every window is complete."""
    import av

    if first > 1.0 and stream.time_base is not None:
        container.seek(int((first + origin(stream)) / stream.time_base), stream=stream,
                       backward=True)
    feed = _Feed(rate, windows, first, origin(stream), last)
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            feed.skipped += 1
            continue
        for frame in frames:
            feed.frame(frame)
        if feed.finished:
            break
    return feed.close()


class _Feed:
    """Resampled frames onto the segment's timeline: placed by the first frame's
    timestamp, and again after skipped packets when the gap is over 50 ms."""

    def __init__(self, rate: int, windows: Windows, first: float, start: float,
                 last: float | None):
        self.rate, self.windows, self.first, self.start = rate, windows, first, start
        self.limit = None if last is None else round((last - first) * rate)
        self.at: int | None = None
        self.peak, self.skipped, self._synced = 0.0, 0, 0
        self.resampler = self._resampler()

    def _resampler(self):
        import av

        return av.AudioResampler(format="flt", layout="mono", rate=self.rate)

    @property
    def finished(self) -> bool:
        return self.windows.done or (self.limit is not None and self.at is not None
                                     and self.at >= self.limit)

    def frame(self, frame) -> None:
        if frame.time is not None and (self.at is None or self.skipped > self._synced):
            at = round((frame.time - self.start - self.first) * self.rate)
            if self.at is None or at - self.at > self.rate // 20:
                self.at = at
            self._synced = self.skipped
        if self.at is None:
            self.at = 0
        try:
            outs = self.resampler.resample(frame)
        except ValueError:  # the layout or rate changed mid-stream: a new resampler
            self.resampler = self._resampler()
            outs = self.resampler.resample(frame)
        for out in outs:
            self.take(out.to_ndarray().reshape(-1))

    def take(self, samples: np.ndarray) -> None:
        """Feed the part of ``samples`` (from segment sample ``at``) inside the segment."""
        lo = max(0, -self.at)
        hi = len(samples) if self.limit is None else max(lo, min(len(samples),
                                                                 self.limit - self.at))
        if hi > lo:
            part = samples[lo:hi]
            self.windows.add(self.at + lo, part)
            self.peak = max(self.peak, float(np.abs(part).max()))
        self.at += len(samples)

    def close(self) -> tuple[float, int]:
        if self.at is None:
            raise VideoError("decode", "the audio stream holds no decodable audio"
                             + (f" ({self.skipped} corrupt packet(s))" if self.skipped
                                else ""))
        for out in self.resampler.resample(None):
            self.take(out.to_ndarray().reshape(-1))
        return self.peak, self.skipped
