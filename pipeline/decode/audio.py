"""Audio decoding: a file's first audio stream, mono, resampled, cut into windows.

The peer of the video decoders for audio tasks. PyAV (which ships FFmpeg) decodes the
first audio stream, FFmpeg's resampler downmixes it to mono float at ``sample_rate``, and
the samples are copied into fixed-length windows as they stream past
(:mod:`pipeline.decode.audio_stream`): only the windows are held, never the whole
soundtrack, so an hour of audio costs the same memory as a minute. Times are measured from
the stream's first timestamp. Windows start every ``hop_s`` over the segment
(``start_s``/``end_s``, the end clamped to the soundtrack's); when that gives more than
``max_windows``, that many are spread evenly over it instead (the audio counterpart of
sampling frames). A soundtrack shorter than one window gives one window, padded with
silence. When the container does not say how long the stream is, its packets are demuxed
once (not decoded) to measure it; only a pipe, which cannot be read twice, gets
consecutive windows from its start instead.

Outcomes besides audio: a file without an audio stream raises ``VideoError("no_audio",
...)`` (its row is an error row whose reason starts with ``no_audio:``); audio whose every
sample is below ``silence_dbfs`` decodes, and says so (``peak_dbfs``, the task's
``silent`` column).

Worked example: a 3.0 s soundtrack, ``window_s=1.0, hop_s=0.25``: windows start at 0.0,
0.25, ..., 2.0 (9 windows); with ``max_windows=5`` they start at 0.0, 0.5, 1.0, 1.5, 2.0.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.decode.audio_stream import Windows, measured_duration, stream_samples
from pipeline.decode.base import open_source, reader_input, short_error
from pipeline.errors import VideoError


@dataclass(frozen=True, kw_only=True)
class AudioSpec:
    """What an audio task decodes from each file (the peer of ``DecodeSpec``)."""

    sample_rate: int = 16_000
    window_s: float = 1.0
    hop_s: float = 0.5
    max_windows: int = 60
    pick: str = "all"  # "all" windows, or only the "loudest" one, centred on its loudest
    # part (training examples)
    silence_dbfs: float = -60.0  # every sample below this: the soundtrack is silent
    timeout_s: float | None = None  # per file; decodes then run in a killable child
    memory_mb: int | None = None  # address-space limit of the decode worker's child
    max_file_mb: int | None = None  # a larger remote file is refused
    allow_uri_options: bool = False

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def windows(self) -> int:
        """Windows per row of a decoded batch."""
        return 1 if self.pick == "loudest" else self.max_windows

    @property
    def shape(self) -> tuple[int, int]:
        return (self.windows, self.window_samples)

    def starts(self, first_s: float, last_s: float | None) -> np.ndarray:
        """Window start times over the segment ``[first_s, last_s)`` (``last_s`` None: the
        length is unknown, windows follow each other from ``first_s``)."""
        if last_s is None:
            return first_s + self.hop_s * np.arange(self.max_windows)
        span = max(0.0, last_s - first_s - self.window_s)
        count = 1 + int(math.floor(span / self.hop_s + 1e-9))
        if count > self.max_windows:
            return first_s + np.linspace(0.0, span, self.max_windows)
        return first_s + self.hop_s * np.arange(count)

    def memory(self, videos: int) -> int:
        """Bytes a decode task of ``videos`` files may use: decoder state plus every
        candidate window of each file, twice."""
        return 256 * 2**20 + videos * self.max_windows * self.window_samples * 4 * 2

    def describe(self) -> str:
        how = ("the loudest window of each file" if self.pick == "loudest" else
               f"a window every {self.hop_s:g} s (at most {self.max_windows}, spread evenly "
               "beyond)")
        return (f"PyAV, first audio stream, mono at {self.sample_rate} Hz, "
                f"{self.window_s:g}-s windows: {how}")

    def record(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "window_s": self.window_s,
                "hop_s": self.hop_s, "max_windows": self.max_windows}


@dataclass
class DecodedAudio:
    windows: np.ndarray  # float32 (spec.windows, window_samples), unused rows zero
    starts: np.ndarray  # float64 start time of each window (s), NaN for unused rows
    count: int  # windows filled
    codec: str
    source_rate: int
    channels: int
    duration_s: float  # NaN when the container does not say
    peak_dbfs: float  # loudest sample of the decoded segment; -inf for digital silence
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """Everything but the samples, as plain JSON data (the decode worker's reply)."""
        return {"starts": [None if s != s else float(s) for s in self.starts],
                "count": self.count, "codec": self.codec, "source_rate": self.source_rate,
                "channels": self.channels, "duration_s": _num(self.duration_s),
                "peak_dbfs": _num(self.peak_dbfs), "note": self.note}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], windows: np.ndarray) -> DecodedAudio:
        starts = np.array([np.nan if s is None else s for s in meta["starts"]], np.float64)
        return cls(windows, starts, int(meta["count"]), str(meta["codec"]),
                   int(meta["source_rate"]), int(meta["channels"]),
                   _float(meta["duration_s"]), _float(meta["peak_dbfs"]), meta.get("note"))


def _num(v: float) -> float | str | None:
    """A float as JSON can carry it (infinities as strings)."""
    if v != v:
        return None
    return v if math.isfinite(v) else str(v)


def _float(v) -> float:
    return float("nan") if v is None else float(v)


def _stream_facts(container, stream) -> tuple[str, int, int, float]:
    """``(codec, sample rate, channels, duration in s or NaN)`` of an audio stream."""
    cc = stream.codec_context
    channels = getattr(getattr(cc, "layout", None), "nb_channels", None) or \
        getattr(cc, "channels", 0)
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = float("nan")
    duration = duration if duration > 0 else float("nan")  # <= 0: unknown too
    return cc.name, int(cc.sample_rate or 0), int(channels or 0), duration


def decode_audio(path: str, spec: AudioSpec, start_s: float | None = None,
                 end_s: float | None = None, src: str | bytes | None = None) -> DecodedAudio:
    """Decode the windows of one file's soundtrack. Raises :class:`VideoError`."""
    if src is None:
        src = open_source(path, spec.allow_uri_options, spec.max_file_mb)
    with _open(src) as container:
        stream = _first_audio(container)
        codec, rate, channels, duration = _stream_facts(container, stream)
        if duration != duration and _reopenable(src):  # unknown: measured from packets
            with _open(src) as probe:
                duration = measured_duration(probe, _first_audio(probe))
        first = start_s or 0.0
        last = end_s
        if duration == duration:  # a segment ends with the soundtrack at the latest
            last = duration if last is None else min(last, duration)
        if last is not None and first >= last:
            raise VideoError("sample", f"the segment starts at {first:g} s, at or after its "
                             f"end ({last:g} s; the soundtrack lasts {duration:g} s)")
        starts = spec.starts(first, last)
        windows = Windows(spec.window_samples, np.round(
            (starts - first) * spec.sample_rate).astype(np.int64))
        peak, skipped = stream_samples(container, stream, spec.sample_rate, first, last,
                                       windows)
    peak_dbfs = 20 * math.log10(peak) if peak > 0 else -math.inf
    note = f"{skipped} corrupt audio packet(s) skipped" if skipped else None
    return DecodedAudio(*_finish(spec, windows, starts), codec, rate, channels, duration,
                        peak_dbfs, note)


def _open(src):
    import av

    try:
        return av.open(reader_input(src), mode="r")
    except Exception as e:
        raise VideoError("decode", f"not a readable media file: {short_error(e)}") from None


def _first_audio(container):
    if not container.streams.audio:
        raise VideoError("no_audio", "the file has no audio stream; an audio task has "
                         "nothing to analyse in it")
    return container.streams.audio[0]


def _reopenable(src) -> bool:
    """Whether the file can be read twice (not a pipe)."""
    return isinstance(src, bytes) or os.path.isfile(src)


def _finish(spec: AudioSpec, w: Windows, starts: np.ndarray):
    """``(windows, starts, count)`` at the spec's shape: the windows that got samples (a
    track shorter than one window: that one, padded), or the loudest of them."""
    filled = np.flatnonzero(w.filled > 0)
    if not len(filled):
        filled = np.array([0])
    out = np.zeros(spec.shape, np.float32)
    at = np.full(spec.windows, np.nan)
    if spec.pick == "loudest":
        # Energy weighted towards the window's middle: of the windows that hold a loud
        # event whole, the one centred on it wins (a plain sum ties them all).
        best = int(filled[np.argmax(np.square(w.buf[filled]) @ np.hanning(w.length))])
        n = int(w.filled[best]) or w.length
        shift = (w.length - n) // 2  # a short track is centred, as training crops the centre
        out[0, shift:shift + n], at[0] = w.buf[best, :n], starts[best] - shift / spec.sample_rate
        return out, at, 1
    out[:len(filled)], at[:len(filled)] = w.buf[filled], starts[filled]
    return out, at, len(filled)
