"""What every decoder shares: the decode spec, the decoded video, frame geometry and the
source of a file (a local path, or the bytes of a remote one).

Output frames are uint8 ``(clips, frames, crop, crop, 3)``, or with a ``canvas`` (what a
detector wants: whole frames) ``(clips, frames, H, W, 3)``, each frame scaled to fit the
canvas with its aspect kept and padded at the bottom and right. Normalisation happens on
the model replica, so the object store carries 4x fewer bytes than float32 would.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.decode.sampling import (
    clip_indices,
    rate_indices,
    segment_frames,
    snap_to_keyframes,
)
from pipeline.errors import ConfigError, VideoError
from pipeline.paths import local_path, uri_problem

if TYPE_CHECKING:  # the decode worker's child process starts without pydantic
    from pipeline.spec import DecodeResourcesSpec, SamplingSpec

# How messages and plans name each decoder.
NAMES = {"decord": "decord", "pyav": "PyAV", "torchcodec": "torchcodec",
         "nvdec": "torchcodec on NVDEC"}


def other(decoder: str) -> str:
    """The fallback of ``decoder``: PyAV for decord and torchcodec (PyAV ships its own
    FFmpeg), decord for PyAV."""
    return "decord" if decoder == "pyav" else "pyav"


# Spec keys a checkpoint's sampling record fills in when a job spec leaves them out, and
# the record's name for each.
TRAINED_KEYS = {"clips_per_video": "clips", "frames_per_clip": "frames",
                "frame_stride": "stride"}


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
    allow_uri_options: bool = False  # video URIs may carry query options (job spec opts in)
    memory_mb: int | None = None  # address-space limit of the decode worker's child
    max_file_mb: int | None = None  # a larger remote file is refused (it is read into memory)
    # Whole frames fitted into (height, width) and padded, instead of short side + crop.
    canvas: tuple[int, int] | None = None
    rate: float | None = None  # frames per second to sample (at most clips x frames)
    # Only open the file and choose its frames: the result has metadata and indices, no
    # frames (decoding on the replica: the decode task probes, the replica decodes).
    probe_only: bool = False

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        h, w = self.canvas or (self.crop_size, self.crop_size)
        return (self.clips, self.frames, h, w, 3)

    @classmethod
    def from_sampling(cls, s: SamplingSpec, res: DecodeResourcesSpec, short_side: int,
                      crop_size: int, trained: Mapping[str, Any] | None = None,
                      allow_uri_options: bool = False) -> DecodeSpec:
        """The decode spec of a job or a training run.

        Args:
            s, res: the spec's sampling and decode resources.
            short_side, crop_size: the model's input size, used where ``s`` gives none.
            trained: a checkpoint's sampling record (:meth:`record`): its clips, frames and
                stride fill in what ``s`` leaves out.
        """
        short, crop = s.short_side or short_side, s.crop_size or crop_size
        if crop > short:
            raise ConfigError(f"sampling.crop_size ({crop}) is larger than "
                              f"sampling.short_side ({short}); raise short_side or lower "
                              "crop_size")
        if res.decoder == "torchcodec":
            from pipeline.decode.optional import unavailable

            if unavailable():
                raise ConfigError(f"resources.decoder: torchcodec: {unavailable()}; or use "
                                  "decord or pyav")
        trained = trained or {}
        clip = {key: trained[rec] if key not in s.model_fields_set and rec in trained
                else getattr(s, key) for key, rec in TRAINED_KEYS.items()}
        return cls(clips=clip["clips_per_video"], frames=clip["frames_per_clip"],
                   stride=clip["frame_stride"], short_side=short, crop_size=crop,
                   threads=res.decode_threads, timeout_s=res.decode_timeout_s,
                   snap_to_keyframes=s.snap_to_keyframes, decoder=res.decoder,
                   allow_uri_options=allow_uri_options, memory_mb=res.decode_memory_mb,
                   max_file_mb=res.max_remote_file_mb)

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """The decode size of a ``height`` x ``width`` frame (:func:`resized_dims`, or
        :func:`fitted_dims` with a canvas)."""
        if self.canvas:
            return fitted_dims(height, width, self.canvas)
        return resized_dims(height, width, self.short_side)

    def crop(self, frames: np.ndarray) -> np.ndarray:
        """Decoded frames ``(..., H, W, 3)`` at their output size: the centre crop
        (:func:`center_crop`), or with a canvas padded to it (:func:`pad_to`)."""
        if self.canvas:
            return pad_to(frames, self.canvas)
        return center_crop(frames, self.crop_size)

    def indices(self, num_frames: int, fps: float, start_s: float | None,
                end_s: float | None, timestamps=None, keyframes=None,
                given: np.ndarray | None = None) -> np.ndarray:
        """The frame indices to decode, ``(clips, frames)``: the segment's clips, moved to
        the nearest keyframes when the spec asks for it and the decoder knows them.
        ``given``: indices a probe chose already (decoding on the replica), used as they
        are."""
        if given is not None:
            return np.asarray(given, dtype=np.int64).reshape(self.clips, self.frames)
        first, last = segment_frames(num_frames, fps, start_s, end_s, timestamps)
        if self.rate:
            idx = rate_indices(first, last, fps, self.rate, self.clips * self.frames)
            idx = idx.reshape(self.clips, self.frames)
        else:
            idx = clip_indices(first, last, self.clips, self.frames, self.stride)
        if self.snap_to_keyframes and keyframes is not None:
            idx = snap_to_keyframes(idx, keyframes)
        return idx

    def memory(self, videos: int) -> int:
        """Bytes a decode task of ``videos`` videos may use: decoder state plus its frames at
        decode size (a 16:9 frame, x2 for the copy made by cropping)."""
        frame = self.short_side * (self.short_side * 16 // 9) * 3
        if self.canvas:
            frame = self.canvas[0] * self.canvas[1] * 3
        return 256 * 2**20 + videos * self.clips * self.frames * frame * 2

    def describe(self) -> str:
        """This spec in the plan that ``vidbatch submit`` prints."""
        if self.canvas:
            count = self.clips * self.frames
            how = (f"{self.rate:g} frame(s)/s, at most {count}" if self.rate
                   else f"{count} frame(s) spread evenly")
            return (f"{NAMES[self.decoder]} ({NAMES[other(self.decoder)]} fallback), {how} "
                    f"per video, whole frames fitted into {self.canvas[1]}x{self.canvas[0]}"
                    + (", snapped to keyframes" if self.snap_to_keyframes else ""))
        return (f"{NAMES[self.decoder]} ({NAMES[other(self.decoder)]} fallback), {self.clips} "
                f"clip(s) x {self.frames} frames"
                f" ({'stride ' + str(self.stride) if self.stride else 'uniform spread'}), "
                f"short side {self.short_side}, crop {self.crop_size}"
                + (", frames snapped to keyframes" if self.snap_to_keyframes else ""))

    def record(self) -> dict[str, Any]:
        """The sampling as checkpoints and job records store it (what
        :meth:`from_sampling` reads back as ``trained``)."""
        record = {"clips": self.clips, "frames": self.frames, "stride": self.stride,
                  "short_side": self.short_side, "crop_size": self.crop_size}
        if self.canvas:
            record.update(canvas=list(self.canvas), rate=self.rate)
        return record


@dataclass
class DecodedVideo:
    frames: Any  # numpy uint8; a torch tensor on the GPU (NVDEC); None from a probe
    decoder: str
    num_frames: int
    fps: float
    width: int
    height: int
    note: str | None = None
    indices: np.ndarray | None = None  # the frame index of each output frame, flat
    times: np.ndarray | None = None  # each output frame's start in seconds (sequences)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else float("nan")


def resized_dims(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side scaled to ``short_side``, aspect kept."""
    if height <= width:
        return short_side, max(short_side, round(width * short_side / height))
    return max(short_side, round(height * short_side / width)), short_side


def fitted_dims(height: int, width: int, canvas: tuple[int, int]) -> tuple[int, int]:
    """(height, width) scaled to fit in ``canvas`` (height, width), aspect kept."""
    scale = min(canvas[0] / height, canvas[1] / width)
    return (min(canvas[0], max(1, round(height * scale))),
            min(canvas[1], max(1, round(width * scale))))


def pad_to(frames: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    """Frames ``(..., h, w, C)`` padded with black at the bottom and right to ``canvas``:
    pixel (x, y) stays at (x, y), so boxes need no offset to map back."""
    h, w = frames.shape[-3], frames.shape[-2]
    if (h, w) == tuple(canvas):
        return frames
    out = np.zeros((*frames.shape[:-3], canvas[0], canvas[1], frames.shape[-1]), frames.dtype)
    out[..., :h, :w, :] = frames
    return out


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Crop the last-but-one two axes (H, W) of ``(..., H, W, C)`` to ``size``."""
    h, w = frames.shape[-3], frames.shape[-2]
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top:top + size, left:left + size, :]


def open_source(path: str, allow_uri_options: bool = False,
                max_file_mb: int | None = None) -> str | bytes:
    """A local path for decord/PyAV, or the bytes of a remote file (a URI that carries
    credentials, or query options the job did not allow, is refused: ``uri_problem``; so is
    a remote file larger than ``max_file_mb``, which would be read into memory whole)."""
    problem = uri_problem(path, allow_uri_options)
    if problem:
        raise VideoError("read", f"{problem}. Check the manifest's path column.")
    local = local_path(path)
    if local is not None:
        if not os.path.exists(local):
            raise VideoError("read", f"file not found: {local}. Check the manifest's path "
                             "column.")
        if os.path.isdir(local):
            raise VideoError("read", f"is a directory, not a video file: {local}. Check the "
                             "manifest's path column.")
        # Only regular files have a meaningful size (a named pipe is legitimate input).
        if os.path.isfile(local) and os.path.getsize(local) == 0:
            raise VideoError("read", f"file is empty (0 bytes): {local}")
        return local
    import pyarrow.fs as pafs

    try:
        fs, inner = pafs.FileSystem.from_uri(path)
        size = fs.get_file_info(inner).size
        if max_file_mb and size is not None and size > max_file_mb * 2**20:
            raise VideoError("read", f"{path} is {size / 2**20:.0f} MiB, more than "
                             f"resources.max_remote_file_mb ({max_file_mb}); a remote file is "
                             "read into memory whole: raise it if the decode tasks have the "
                             "memory")
        with fs.open_input_stream(inner) as f:
            data = f.read()
    except VideoError:
        raise
    except Exception as e:  # any filesystem error becomes the row's reason
        raise VideoError("read", f"cannot read {path}: {e}") from e
    if not data:
        raise VideoError("read", f"file is empty (0 bytes): {path}")
    return data


def reader_input(src: str | bytes):
    """What decord and PyAV open: a local path, or the bytes of a remote file as a file."""
    return io.BytesIO(src) if isinstance(src, bytes) else src


# decord prefixes messages with "[12:00:00] /path/file.cc:123: " once per stack level.
_NATIVE_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+\.(?:cc|h|cpp):\d+: ")


def short_error(e: BaseException, limit: int = 300) -> str:
    """A native-library error without its source-location noise, trimmed."""
    text = " ".join((str(e).strip() or type(e).__name__).split())
    return _NATIVE_PREFIX.sub("", text)[:limit]
