"""Deterministic synthetic videos: the demo set, test fixtures and benchmark data.

Content is textured and moving (flat colour would decode unrealistically fast and would
teach a model nothing). :func:`motion_clip` draws a textured square drifting in one of four
directions over a textured background: one frame alone does not tell the direction, a
clip does. That is the training demo's task (only a model that uses time can solve it).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


def texture(height: int, width: int, rng: np.random.Generator, cell: int = 8) -> np.ndarray:
    """Smooth-ish random colour texture, uint8 ``(height, width, 3)``."""
    small = rng.integers(0, 256, size=(-(-height // cell), -(-width // cell), 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, cell, axis=0), cell, axis=1)[:height, :width]
    fine = rng.integers(-24, 25, size=(height, width, 1), dtype=np.int16)
    return np.clip(big.astype(np.int16) + fine, 0, 255).astype(np.uint8)


def moving_texture(frames: int, height: int, width: int, seed: int,
                   velocity: tuple[int, int] = (1, 2)) -> np.ndarray:
    """A texture panning at ``velocity`` pixels/frame: ``(frames, height, width, 3)``."""
    rng = np.random.default_rng(seed)
    base = texture(height, width, rng)
    dy, dx = velocity
    return np.stack([np.roll(base, (t * dy, t * dx), axis=(0, 1)) for t in range(frames)])


def motion_clip(direction: str, frames: int, size: int, seed: int, speed: int = 2,
                square: int | None = None, contrast: bool = False) -> np.ndarray:
    """A textured square moving ``direction`` over a static textured background.

    ``contrast`` draws the background in the dark half of the range and the square in the
    bright half, so that one frame shows where the square is (but not where it goes).
    """
    rng = np.random.default_rng(seed)
    dy, dx = DIRECTIONS[direction]
    square = square or size // 3
    bg = texture(size, size, rng, cell=4)
    fg = texture(square, square, rng, cell=2)
    if contrast:
        bg, fg = bg // 2, 128 + fg // 2
    travel = speed * (frames - 1)
    lo, hi = 0, size - square
    # Start where the whole path stays inside the frame; position jittered by the seed.
    y0 = int(rng.integers(lo + max(0, -dy) * travel, hi - max(0, dy) * travel + 1))
    x0 = int(rng.integers(lo + max(0, -dx) * travel, hi - max(0, dx) * travel + 1))
    out = np.repeat(bg[None], frames, axis=0)
    for t in range(frames):
        y, x = y0 + dy * speed * t, x0 + dx * speed * t
        out[t, y:y + square, x:x + square] = fg
    return out


def write_video(path: str | Path, frames: np.ndarray, fps: int = 30, codec: str = "libx264",
                lossless: bool = False, gop: int | None = None,
                options: dict[str, str] | None = None, audio: np.ndarray | None = None,
                sample_rate: int = 16000) -> Path:
    """Encode uint8 RGB frames ``(T, H, W, 3)`` with PyAV.

    ``lossless`` uses libx264rgb at crf 0: decoded frames then equal the frames written,
    which is how tests check that the pipeline decodes the frames it claims to.
    ``options`` are added to the encoder's (e.g. ``{"x264-params": "bframes=3"}``).
    ``audio`` (float mono samples in -1..1 at ``sample_rate``) adds an AAC sound track: the
    spoken-command demo (:mod:`pipeline.tasks.audio.demo`) has its label in the sound only.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = _video_stream(container, frames.shape[1:3], fps, codec, lossless, gop,
                               options)
        # Both streams exist before the first packet: the header is written with it.
        sound = None if audio is None else container.add_stream("aac", rate=sample_rate,
                                                                 layout="mono")
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            _encode_audio(container, sound, audio, sample_rate)
    return path


def _video_stream(container, size: tuple[int, int], fps: int, codec: str, lossless: bool,
                  gop: int | None, options: dict[str, str] | None):
    """The video stream of :func:`write_video`, configured."""
    stream = container.add_stream("libx264rgb" if lossless else codec, rate=fps)
    stream.height, stream.width = size
    if lossless:
        stream.pix_fmt = "rgb24"
        stream.options = {"crf": "0", "preset": "ultrafast"}
    elif codec in ("libx264", "h264"):
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
    else:
        stream.pix_fmt = "yuv420p"
    if options:
        stream.options = {**stream.options, **options}
    if gop:
        stream.codec_context.gop_size = gop
    return stream


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int,
                  chunk: int = 1024) -> None:
    """Encode mono float ``audio`` into ``stream`` in AAC-sized frames (1024 samples; the
    last may be shorter), then flush the encoder. The muxer interleaves the packets with
    the video's."""
    import av

    samples = np.clip(np.asarray(audio, np.float32).reshape(-1), -1.0, 1.0)
    for start in range(0, len(samples), chunk):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + chunk],
                                           format="fltp", layout="mono")
        frame.sample_rate, frame.pts = sample_rate, start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


# ---------------------------------------------------------------- the demo set

DEMO_GOOD = [
    # name, frames, height, width, fps, codec
    ("pan_h264_640x360.mp4", 90, 360, 640, 30, "libx264"),
    ("pan_h264_portrait.mp4", 60, 320, 180, 30, "libx264"),
    ("pan_mpeg4.avi", 75, 240, 320, 25, "mpeg4"),
    ("pan_vp9.webm", 45, 180, 320, 15, "libvpx-vp9"),
    ("pan_h264.mkv", 60, 240, 426, 30, "libx264"),
    ("short_4_frames.mp4", 4, 128, 160, 30, "libx264"),
    ("single_frame.mp4", 1, 128, 160, 30, "libx264"),
    ("vidéo avec espaces.mp4", 48, 144, 256, 24, "libx264"),
]


def make_demo_set(out_dir: str | Path, seed: int = 0) -> list[dict[str, str]]:
    """Write the demo videos (and a few broken files) and return their manifest rows.

    Paths in the rows are relative to ``out_dir``. The broken files are there on purpose:
    the job must give each of them an error row and carry on.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, t, h, w, fps, codec) in enumerate(DEMO_GOOD):
        write_video(out / name, moving_texture(t, h, w, seed + i, velocity=(i % 3 - 1, 2)),
                    fps=fps, codec=codec)
        rows.append({"path": name, "label": "pan"})
    good = (out / DEMO_GOOD[0][0]).read_bytes()
    (out / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (out / "empty.mp4").write_bytes(b"")
    (out / "not_a_video.mp4").write_text("this is a text file with a video's name\n")
    rows += [{"path": n, "label": "broken"}
             for n in ("truncated.mp4", "empty.mp4", "not_a_video.mp4", "missing.mp4")]
    return rows


def write_manifest(path: str | Path, rows: list[dict[str, str]], prefix: str = "",
                   videos_dir: str | Path | None = None) -> Path:
    """A CSV manifest of ``rows``, each path prefixed with ``prefix``, or with
    ``videos_dir`` as seen from the manifest's folder (manifest paths are relative to it)."""
    path = Path(path)
    if videos_dir is not None:
        prefix = os.path.relpath(Path(videos_dir).resolve(), path.resolve().parent) + "/"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "path": prefix + row["path"]})
    return path
