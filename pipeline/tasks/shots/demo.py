"""The shot-boundary demo (``vidbatch demo-shots-data``): videos whose transitions are known
to the frame, and long single-shot videos in which a good detector finds none.

* **Edited videos** (``shots_<seed>``, 20 to about 45 s): shots of 1.5 to 8 s, each a slow pan
  and zoom over a photograph of scikit-image's wheel (:func:`photo_frames`) or a generated
  scene (a slowly panning texture or drifting colour ramps, :func:`original_frames`), joined
  by hard cuts and by dissolves (linear cross-fades) of 8 to 24 frames. Consecutive shots
  show different content (:data:`MIN_CHANGE`).
* **Single-shot videos** (``single_<seed>``, 75 s): one continuous shot that is hard on a
  detector: fast pans (8 to 20 px/frame), fast zooms with camera shake, objects that cross
  the frame at up to 30 px/frame, and flashes (1 to 3 frames of a brightness burst).

H.264 in MP4, 320x180 at 25 fps. The labels (:mod:`pipeline.tasks.shots.evaluate` reads
them) list each transition as ``video, frame, kind, length``: ``frame`` is the first frame
of the transition (for a cut, the first frame of the new shot; for a dissolve, its first
blended frame), ``kind`` is ``cut`` or ``dissolve`` and ``length`` the frames it lasts (1
for a cut). A single-shot video has one row of kind ``none`` with ``frame`` and ``length``
empty. Everything comes from the seed: the same arguments write the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pipeline.demo_commands import ManifestsDir, VideosDir, write_labels, write_splits
from pipeline.synth import texture, write_video
from pipeline.tasks.classify.copies import PHOTOS, original_frames, photo, photo_frames

FPS, HEIGHT, WIDTH = 25, 180, 320
SHOT_S = (1.5, 8.0)  # a shot's length without its transitions
VIDEO_S = (20.0, 40.0)  # shots are added until an edited video is at least this long
DISSOLVE_FRAMES = (8, 24)
DISSOLVE_SHARE = 0.4  # of the transitions; the rest are hard cuts
# Mean absolute difference (0-255) that the last frame of a shot and the first of the next
# must at least have: a cut between two near-identical pictures is no cut to see.
MIN_CHANGE = 30.0
PHOTO_SOURCES = 4 * 2 * len(PHOTOS)  # distinct photo_frames contents
SINGLE_S = 75.0
PAN_SPEED = (8.0, 20.0)  # px/frame of the single-shot videos' fast pans
OBJECT_SPEED = (12.0, 30.0)
FLASH_GAP_S = (2.0, 6.0)
LABEL_COLUMNS = ("video", "frame", "kind", "length")


def shot_content(source: int, frames: int, seed: int) -> np.ndarray:
    """``frames`` frames of one shot: source ``s`` < :data:`PHOTO_SOURCES` is a pan over a
    photograph (``photo_frames(s)``); above it, a generated scene: drifting colour ramps
    (``original_frames`` kind 2) for odd sources, else a soft texture (``texture`` drawn at
    a quarter of the size, scaled up) panning by 1 or 2 px a frame. The other generated
    kinds are unlike a shot: a sharp texture that pans changes by as much from frame to
    frame as a cut does, alternating textures blink. Frame 0 does not depend on
    ``frames``."""
    if source < PHOTO_SOURCES:
        return photo_frames(source, HEIGHT, WIDTH, seed, frames=frames)
    if source % 2:
        return original_frames(2, HEIGHT, WIDTH, seed, frames=frames)
    rng = np.random.default_rng(seed)
    small = texture(HEIGHT // 4, WIDTH // 4, rng, cell=4)
    smooth = _scaled(small, HEIGHT, WIDTH)
    dy, dx = int(rng.integers(-1, 2)), int(rng.choice([-2, -1, 1, 2]))
    return np.stack([np.roll(smooth, (t * dy, t * dx), axis=(0, 1)) for t in range(frames)])


def _next_source(rng: np.random.Generator, previous: np.ndarray | None,
                 previous_source: int | None) -> tuple[int, int]:
    """A shot's ``(source, seed)``: 70% photographs, never the previous shot's photograph,
    and a first frame at least :data:`MIN_CHANGE` away from ``previous`` (the last frame)."""
    while True:
        photo_shot = rng.random() < 0.7
        source = int(rng.integers(0, PHOTO_SOURCES) if photo_shot
                     else PHOTO_SOURCES + rng.integers(0, 64))
        seed = int(rng.integers(0, 2**31))
        if previous_source is not None and (
                source % len(PHOTOS) == previous_source % len(PHOTOS) if photo_shot
                else source == previous_source):
            continue
        first = shot_content(source, 1, seed)[0]
        if previous is None or _mad(first, previous) >= MIN_CHANGE:
            return source, seed


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _plan(rng: np.random.Generator, video_s: tuple[float, float]) -> list[tuple[int, int]]:
    """``(pure frames, frames of the dissolve that follows; 0: a cut)`` of each shot, until
    the video lasts a length drawn from ``video_s``; the last shot is followed by none."""
    target, total, shots = rng.uniform(*video_s) * FPS, 0, []
    while total < target:
        pure = int(rng.uniform(*SHOT_S) * FPS)
        fade = int(rng.integers(DISSOLVE_FRAMES[0], DISSOLVE_FRAMES[1] + 1)) \
            if rng.random() < DISSOLVE_SHARE else 0
        shots.append((pure, fade))
        total += pure + fade
    shots[-1] = (shots[-1][0], 0)
    return shots


def edited_video(seed: int, video_s: tuple[float, float] = VIDEO_S
                 ) -> tuple[np.ndarray, list[dict]]:
    """An edited video's frames and its transitions ``{frame, kind, length}``.

    A dissolve of ``L`` frames blends the ``L`` frames that follow shot A's pure part with
    the ``L`` that precede shot B's: frame ``t`` of it is ``(1 - a) A + a B`` with ``a =
    (t + 1) / (L + 1)``, so none of its frames is pure A or pure B. E.g. A pure for 50
    frames then a 10-frame dissolve: frames 50..59 are blends (``frame=50, length=10``) and
    B starts at 60; a cut after A would put B's first frame at 50 (``frame=50, length=1``).
    """
    rng = np.random.default_rng(seed)
    plan = _plan(rng, video_s)
    pieces, cuts, at, fade_in = [], [], 0, 0
    previous, source = None, None
    for pure, fade_out in plan:
        source, shot_seed = _next_source(rng, previous, source)
        content = shot_content(source, fade_in + pure + fade_out, shot_seed)
        if fade_in:
            a = (np.arange(1, fade_in + 1) / (fade_in + 1))[:, None, None, None]
            pieces[-1] = ((1 - a) * pieces[-1] + a * content[:fade_in] + 0.5).astype(np.uint8)
            cuts.append({"frame": at, "kind": "dissolve", "length": fade_in})
            at += fade_in
        elif pieces:
            cuts.append({"frame": at, "kind": "cut", "length": 1})
        pieces.append(content[fade_in:fade_in + pure])
        at += pure
        if fade_out:
            pieces.append(content[fade_in + pure:])  # blended with the next shot's head
        previous, fade_in = content[-1], fade_out
    return np.concatenate(pieces), cuts


def _scaled(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (uint8 RGB) resized by FFmpeg's scaler."""
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(width, height).to_ndarray(format="rgb24")


def _canvas(rng: np.random.Generator, min_h: int, min_w: int) -> np.ndarray:
    """A photograph scaled up to at least ``min_h`` x ``min_w``, mirrored half the time."""
    image = photo(PHOTOS[int(rng.integers(0, len(PHOTOS)))])
    h, w = image.shape[:2]
    scale = max(min_h / h, min_w / w)
    big = _scaled(image, int(np.ceil(h * scale)), int(np.ceil(w * scale)))
    return big[:, ::-1] if rng.random() < 0.5 else big


def _bounce(rng: np.random.Generator, frames: int, span: float, speed: tuple[float, float]
            ) -> np.ndarray:
    """Positions in ``[0, span]`` of a point moving at ``speed`` px/frame (its speed drifts
    within the range), turning back at either end."""
    v = np.interp(np.arange(frames), np.linspace(0, frames, 8), rng.uniform(*speed, size=8))
    x = rng.uniform(0, span) + np.cumsum(v)
    x = np.mod(x, 2 * span)
    return np.where(x > span, 2 * span - x, x)


def _camera(rng: np.random.Generator, kind: int, frames: int) -> np.ndarray:
    """The frames a camera films over a photograph: kind 0 pans fast (both axes bounce),
    kind 1 pans slowly, kind 2 zooms fast in and out (x1 to x2.5 and back about every 1.5 s)
    and shakes by a few pixels. Nearest-neighbour sampling: it is a test of motion."""
    canvas = _canvas(rng, 4 * HEIGHT, 4 * WIDTH)
    ch, cw = canvas.shape[:2]
    top = 2.5 if kind == 2 else 1.0
    zoom = np.full(frames, 1.0)
    if kind == 2:
        zoom += 0.75 * (1 - np.cos(2 * np.pi * np.arange(frames) / rng.uniform(25, 50)))
    speed = PAN_SPEED if kind == 0 else (1.0, 3.0)
    out = np.empty((frames, HEIGHT, WIDTH, 3), np.uint8)
    xs0, ys0 = np.arange(WIDTH), np.arange(HEIGHT)
    x = _bounce(rng, frames, cw - WIDTH * top, speed)
    y = _bounce(rng, frames, ch - HEIGHT * top, (speed[0] / 3, speed[1] / 3))
    if kind == 2:
        x = x + rng.normal(0, 3, frames).round()
        y = np.clip(y + rng.normal(0, 3, frames).round(), 0, None)
    for t in range(frames):
        xi = np.clip((x[t] + xs0 * zoom[t]).astype(int), 0, cw - 1)
        yi = np.clip((y[t] + ys0 * zoom[t]).astype(int), 0, ch - 1)
        out[t] = canvas[yi[:, None], xi[None, :]]
    return out


def _objects(rng: np.random.Generator, video: np.ndarray, count: int) -> None:
    """Draw ``count`` textured squares (24 to 56 px) that bounce across ``video`` at
    :data:`OBJECT_SPEED`."""
    frames = len(video)
    for _ in range(count):
        size = int(rng.integers(24, 57))
        patch = texture(size, size, rng, cell=4)
        x = _bounce(rng, frames, WIDTH - size, OBJECT_SPEED).astype(int)
        y = _bounce(rng, frames, HEIGHT - size, (OBJECT_SPEED[0] / 2, OBJECT_SPEED[1] / 2)
                    ).astype(int)
        for t in range(frames):
            video[t, y[t]:y[t] + size, x[t]:x[t] + size] = patch


def _flashes(rng: np.random.Generator, video: np.ndarray) -> None:
    """Brighten 1 to 3 frames towards white (by 50 to 90%, fading over the burst) every 2
    to 6 s: a camera flash, which is no cut."""
    t = int(rng.uniform(*FLASH_GAP_S) * FPS)
    while t < len(video) - 3:
        gain = rng.uniform(0.5, 0.9)
        for k in range(int(rng.integers(1, 4))):
            g = gain / (k + 1)
            video[t + k] = (video[t + k] + g * (255 - video[t + k].astype(np.float32))
                            ).astype(np.uint8)
        t += int(rng.uniform(*FLASH_GAP_S) * FPS)


def single_shot_video(seed: int, seconds: float = SINGLE_S) -> np.ndarray:
    """A single-shot video's frames: camera ``seed % 3`` of :func:`_camera`, 1 to 2 fast
    objects (2 over the slow pan, where they are the motion), and flashes."""
    rng = np.random.default_rng(seed)
    kind = seed % 3
    video = _camera(rng, kind, int(seconds * FPS))
    _objects(rng, video, 2 if kind == 1 else int(rng.integers(0, 2)))
    _flashes(rng, video)
    return video


def make_shots_set(out_dir: str | Path, videos: int, singles: int, seed: int,
                   video_s: tuple[float, float] = VIDEO_S, single_s: float = SINGLE_S
                   ) -> tuple[list[dict], list[dict]]:
    """Write ``videos`` edited videos (seeds ``seed``, ``seed + 1``, ...) and ``singles``
    single-shot ones (seeds from ``seed + videos``); return their manifest rows (paths
    relative to ``out_dir``) and their label rows (:data:`LABEL_COLUMNS`)."""
    out = Path(out_dir)
    rows, labels = [], []
    for s in range(seed, seed + videos + singles):
        edited = s < seed + videos
        name = f"{'shots' if edited else 'single'}_{s:06d}"
        frames, cuts = edited_video(s, video_s) if edited else (single_shot_video(s, single_s),
                                                               [])
        write_video(out / f"{name}.mp4", frames, fps=FPS)
        rows.append({"video_id": name, "path": f"{name}.mp4"})
        labels += [{"video": name, **c} for c in cuts] or [
            {"video": name, "frame": "", "kind": "none", "length": ""}]
    return rows, labels


def demo_shots_data(
    out: VideosDir = Path("data/shots"),
    manifests: ManifestsDir = Path("manifests"),
    train_videos: Annotated[int, typer.Option(help="Edited train videos (cuts and "
                                              "dissolves), for tuning")] = 8,
    val_videos: Annotated[int, typer.Option(help="Edited held-out val videos")] = 16,
    train_single: Annotated[int, typer.Option(help="Single-shot train videos (fast motion, "
                                              "flashes)")] = 2,
    val_single: Annotated[int, typer.Option(help="Single-shot val videos")] = 8,
    single_seconds: Annotated[float, typer.Option(help="Length of a single-shot "
                                                  "video")] = SINGLE_S,
) -> None:
    """Generate the shot-boundary demo: edited videos with hard cuts and dissolves at known
    frames, and single-shot videos with fast motion and flashes; writes shots_<split>.csv
    and shots_<split>_cuts.csv. The same command always writes the same files."""
    counts = {"train": train_videos, "val": val_videos}
    singles = {"train": train_single, "val": val_single}
    labels: dict[str, list] = {}

    def make(folder: Path, split: str, count: int, seed: int) -> list[dict]:
        rows, labels[split] = make_shots_set(folder, count, singles[split], seed,
                                             single_s=single_seconds)
        return rows

    for split, rows, manifest in write_splits(out, manifests, "shots", counts, make):
        path = write_labels(manifests / f"shots_{split}_cuts.csv", labels[split],
                            LABEL_COLUMNS)
        found = sum(r["kind"] != "none" for r in labels[split])
        typer.echo(f"wrote {len(rows)} {split} videos ({found} transitions) to "
                   f"{out / split}, {manifest} and {path}")


DEMOS = {"demo-shots-data": demo_shots_data}
