"""Altered copies of videos, and distinct originals to make them from: the data that
tests near-duplicate search (``tests/test_near_duplicates.py``) and proves it
(``scripts/prove.py``).

A copy is what a collection gathers by accident: the same video re-encoded (another codec,
container and bitrate), resized (two thirds of the size), cropped (a 10% border cut away on every
side, then the rest at its own size) or trimmed (the first and last 10% of its frames
dropped). PyAV decodes and encodes; nothing calls ffmpeg's command line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.synth import motion_clip, moving_texture, texture, write_manifest, write_video

MAX_FRAMES = 450  # frames of a source kept for its copies (15 s at 30 fps): bounds the cost


def read_frames(path: str | Path, limit: int = MAX_FRAMES) -> tuple[np.ndarray, int]:
    """Up to ``limit`` RGB frames of ``path``'s first video stream, upright as a player
    shows them (a display rotation applied, as vidbatch's decoders do: a copy carries no
    rotation), and its frame rate (rounded; 25 when the stream does not say)."""
    import av

    from pipeline.decode.video_pyav import upright_turns

    frames = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        fps = round(float(stream.average_rate or 25)) or 25
        for frame in c.decode(stream):
            frames.append(np.rot90(frame.to_ndarray(format="rgb24"), k=upright_turns(frame)))
            if len(frames) == limit:
                break
    return np.ascontiguousarray(np.stack(frames)), fps


def _even(frames: np.ndarray) -> np.ndarray:
    """Cut the last row/column off odd sizes: yuv420p needs even width and height."""
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    return frames[:, :h, :w]


def _resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    import av

    out = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(width, height)
           .to_ndarray(format="rgb24") for f in frames]
    return np.stack(out)


def reencoded(frames: np.ndarray, fps: int, out: Path) -> Path:
    """MPEG-4 Part 2 in AVI at a low bitrate (the originals are H.264 or VP9, in MP4,
    MKV or WebM)."""
    return write_video(out.with_suffix(".avi"), _even(frames), fps=fps, codec="mpeg4",
                       options={"b": "300k"})


def resized(frames: np.ndarray, fps: int, out: Path) -> Path:
    """Two thirds of the size (1080p to 720p, 360p to 240p)."""
    h, w = frames.shape[1] // 3 * 2 // 2 * 2, frames.shape[2] // 3 * 2 // 2 * 2
    return write_video(out, _resize(frames, max(h, 16), max(w, 16)), fps=fps)


def cropped(frames: np.ndarray, fps: int, out: Path) -> Path:
    h, w = frames.shape[1:3]
    dy, dx = h // 10, w // 10
    return write_video(out, _even(frames[:, dy:h - dy, dx:w - dx]), fps=fps)


def trimmed(frames: np.ndarray, fps: int, out: Path) -> Path:
    cut = len(frames) // 10
    return write_video(out, _even(frames[cut:len(frames) - cut]), fps=fps)


ALTERATIONS: dict[str, Callable[[np.ndarray, int, Path], Path]] = {
    "reencoded": reencoded, "resized": resized, "cropped": cropped, "trimmed": trimmed}


def make_copies(source: str | Path, out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Every alteration of ``source``, written as ``out_dir/<stem>__<alteration>.*``."""
    frames, fps = read_frames(source)
    return {name: make(frames, fps, Path(out_dir) / f"{stem}__{name}.mp4")
            for name, make in ALTERATIONS.items()}


def _drifting_gradient(frames: int, h: int, w: int, seed: int) -> np.ndarray:
    """Colour ramps whose phase drifts: smooth content, unlike the textures."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    freq, phase = rng.uniform(0.01, 0.08, size=(3, 2)), rng.uniform(0, 6.3, size=3)
    out = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        for ch in range(3):
            wave = np.sin(freq[ch, 0] * yy + freq[ch, 1] * xx + phase[ch] + 0.2 * t)
            out[t, :, :, ch] = (127.5 + 127.5 * wave).astype(np.uint8)
    return out


def _blinking_texture(frames: int, h: int, w: int, seed: int) -> np.ndarray:
    """Two textures alternating every few frames: content that changes over time."""
    rng = np.random.default_rng(seed)
    a, b = texture(h, w, rng, cell=16), texture(h, w, rng, cell=2)
    period = int(rng.integers(3, 8))
    return np.stack([a if (t // period) % 2 else b for t in range(frames)])


SIZES = [(240, 320), (270, 480), (288, 384), (240, 426)]


def original_frames(i: int, h: int, w: int, seed: int, frames: int = 48) -> np.ndarray:
    """Video ``i``'s content: kind ``i % 4`` (panning texture, square crossing a texture,
    drifting colour ramps, alternating textures), drawn from ``seed``."""
    kind = i % 4
    if kind == 0:
        return moving_texture(frames, h, w, seed, velocity=(i % 3 - 1, 1 + i % 4))
    if kind == 1:
        return motion_clip(["left", "right", "up", "down"][i // 4 % 4], frames, min(h, w),
                           seed, speed=1)
    if kind == 2:
        return _drifting_gradient(frames, h, w, seed)
    return _blinking_texture(frames, h, w, seed)


def make_originals(out_dir: str | Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` synthetic videos of distinct content (:func:`original_frames`), H.264 in
    MP4 or VP9 in WebM, 48 frames at 25 fps, sizes from 320x240 to 480x270."""
    out = Path(out_dir)
    paths = []
    for i in range(count):
        h, w = SIZES[i % len(SIZES)]
        webm = i % 5 == 4
        paths.append(write_video(out / f"orig{i:02d}.{'webm' if webm else 'mp4'}",
                                 original_frames(i, h, w, seed + i), fps=25,
                                 codec="libvpx-vp9" if webm else "libx264"))
    return paths


# Photographs in scikit-image's wheel (no download): natural content for the training set,
# so that the embedding learns what real footage looks like, not only generated textures.
PHOTOS = ["astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins",
          "colorwheel", "grass", "gravel", "hubble_deep_field", "immunohistochemistry",
          "logo", "moon", "page", "retina", "rocket", "text"]


def photo(name: str) -> np.ndarray:
    """scikit-image's sample ``name`` as uint8 RGB (grey images repeated, alpha dropped)."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def photo_frames(i: int, h: int, w: int, seed: int, frames: int = 48) -> np.ndarray:
    """A slow pan and zoom (Ken Burns) over one quarter of a photograph: photo ``i % 19``,
    quarter ``i // 19 % 4``, mirrored when ``i // 76`` is odd, so that videos up to 152 never
    share content. The path is drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    image = photo(PHOTOS[i % len(PHOTOS)])
    H, W = image.shape[:2]
    q = i // len(PHOTOS) % 4
    image = image[q // 2 * H // 2:(q // 2 + 1) * H // 2, q % 2 * W // 2:(q % 2 + 1) * W // 2]
    if i // (4 * len(PHOTOS)) % 2:
        image = image[:, ::-1]
    H, W = image.shape[:2]
    # Windows of the output's aspect, from 60-90% of the quarter, moving and zooming.
    fit = min(H / h, W / w)
    scales = rng.uniform(0.6, 0.9, size=2) * fit
    out = np.empty((frames, h, w, 3), np.uint8)
    starts = rng.uniform(0, 1, size=(2, 2))
    for t in range(frames):
        a = t / max(frames - 1, 1)
        s = scales[0] + a * (scales[1] - scales[0])
        ch, cw = int(h * s), int(w * s)
        y0 = int((starts[0, 0] + a * (starts[1, 0] - starts[0, 0])) * (H - ch))
        x0 = int((starts[0, 1] + a * (starts[1, 1] - starts[0, 1])) * (W - cw))
        out[t] = _resize(np.ascontiguousarray(image[None, y0:y0 + ch, x0:x0 + cw]), h, w)[0]
    return out


# Training videos draw their content from seeds at and above this, so that they never
# repeat the test's originals (make_originals with seeds 0.. a few dozen).
TRAINING_SEED = 100_000
TRAINING_SIZES = [(144, 192), (160, 288), (192, 256), (120, 160), (180, 320)]


def make_copy_training_set(out_dir: str | Path, n: int, seed: int = TRAINING_SEED,
                           photos: int = 4 * 2 * len(PHOTOS)) -> tuple[Path, Path]:
    """Instance-discrimination data for a copy-detection embedding: ``n`` generated videos
    (the kinds of :func:`original_frames`) and ``photos`` pans over photographs
    (:func:`photo_frames`), 48 frames at 25 fps, sizes from 160x120 to 320x180, each its own
    class, and one altered copy of each (the :data:`ALTERATIONS` in turn) labelled with its
    source, so that val accuracy is the share of copies recognised.

    Writes the videos and ``out_dir/train.csv``, ``out_dir/val.csv``; returns the two
    manifests. Content seeds are ``seed + i``: keep them apart from the videos the
    embedding is evaluated on.
    """
    out = Path(out_dir)
    train, val = [], []
    alterations = list(ALTERATIONS.items())
    for i in range(n + photos):
        h, w = TRAINING_SIZES[i // 4 % len(TRAINING_SIZES)]
        if i < n:
            name, frames = f"v{seed + i:06d}", original_frames(i, h, w, seed + i)
        else:
            name, frames = f"p{seed + i:06d}", photo_frames(i - n, h, w, seed + i)
        write_video(out / f"{name}.mp4", frames, fps=25)
        alteration, make = alterations[i % len(alterations)]
        copy = make(frames, 25, out / f"{name}__{alteration}.mp4")
        train.append({"video_id": name, "path": f"{name}.mp4", "label": name})
        val.append({"video_id": copy.stem, "path": copy.name, "label": name})
    return write_manifest(out / "train.csv", train), write_manifest(out / "val.csv", val)
