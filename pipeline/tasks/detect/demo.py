"""The detection demo set: shapes that move, enter, leave and cross over a textured
background, with a box label for every object in every frame.

Three kinds of object, each with its own colour and shape (``KINDS``), in sizes that vary
per object. Each object moves in a straight line at its own speed; some start or end
outside the frame (they enter or leave it), and each video has a pair whose paths cross, so
a tracker must keep two ids apart while one hides the other. Labels give the box of the
part of each shape inside the frame (a part hidden by another shape included), in the
frame's pixels, for frames where at least :data:`MIN_VISIBLE` of the shape is inside it.

Everything comes from the seed: the same arguments write the same files and labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pipeline.demo_commands import ManifestsDir, VideosDir, write_labels, write_splits
from pipeline.synth import texture, write_video

KINDS = {"disc": (230, 60, 50), "square": (50, 110, 235), "triangle": (245, 215, 40)}
MIN_VISIBLE = 0.3  # fraction of an object's area inside the frame for it to be labelled
LABEL_COLUMNS = ("video_id", "frame", "label", "x1", "y1", "x2", "y2", "object")


@dataclass(frozen=True)
class Mover:
    """One object: its kind, size and straight path (top-left corner per frame)."""

    kind: str
    size: int
    start: tuple[float, float]  # (x, y) of the top-left corner at frame 0
    velocity: tuple[float, float]  # pixels per frame

    def corner(self, t: int) -> tuple[int, int]:
        return (round(self.start[0] + self.velocity[0] * t),
                round(self.start[1] + self.velocity[1] * t))


def shape_mask(kind: str, size: int) -> np.ndarray:
    """A bool ``(size, size)`` mask of the shape ``kind`` filling its box."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if kind == "disc":
        r = size / 2
        return (xx - r) ** 2 + (yy - r) ** 2 <= r * r
    if kind == "triangle":  # apex at the top centre, base along the bottom
        return np.abs(xx - size / 2) <= yy / 2
    return np.ones((size, size), bool)


def _movers(rng: np.random.Generator, height: int, width: int, frames: int) -> list[Mover]:
    """2-4 objects: a crossing pair, and others that enter, leave or pass through."""
    kinds = list(KINDS)
    out = []
    # The crossing pair: opposite horizontal directions on rows that overlap, meeting
    # near the middle of the video.
    a, b = rng.choice(len(kinds), size=2, replace=True)
    y = float(rng.uniform(0.25, 0.6) * height)
    for kind, sign in ((kinds[a], 1), (kinds[b], -1)):
        size = int(rng.integers(height // 7, height // 3.5))
        speed = float(rng.uniform(0.5, 0.9)) * (width * 0.8) / frames
        mid_x = width / 2 - size / 2 + rng.uniform(-0.1, 0.1) * width
        x0 = mid_x - sign * speed * frames / 2
        out.append(Mover(kind, size, (x0, y + rng.uniform(-0.1, 0.1) * height),
                         (sign * speed, float(rng.uniform(-0.3, 0.3)))))
    for _ in range(int(rng.integers(0, 3))):
        kind = kinds[int(rng.integers(len(kinds)))]
        size = int(rng.integers(height // 7, height // 3.5))
        # From one edge towards (and possibly through) the opposite one.
        vy = float(rng.uniform(0.6, 1.4)) * height / frames * rng.choice([-1, 1])
        x0 = float(rng.uniform(0, width - size))
        y0 = -size * 0.8 if vy > 0 else height - size * 0.2
        out.append(Mover(kind, size, (x0, y0), (float(rng.uniform(-1, 1)), vy)))
    return out


def render(movers: list[Mover], background: np.ndarray, frames: int,
           rng: np.random.Generator) -> tuple[np.ndarray, list[list[tuple]]]:
    """The frames ``(T, H, W, 3)`` and, per frame, ``(object, kind, x1, y1, x2, y2)``."""
    height, width = background.shape[:2]
    skins = [np.clip(np.array(KINDS[m.kind], np.int16) + rng.integers(-20, 21, (m.size, m.size,
             3)), 0, 255).astype(np.uint8) for m in movers]
    masks = [shape_mask(m.kind, m.size) for m in movers]
    video = np.repeat(background[None], frames, axis=0)
    labels = []
    for t in range(frames):
        boxes = []
        for k, (m, skin, mask) in enumerate(zip(movers, skins, masks)):
            x, y = m.corner(t)
            x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + m.size, width), min(y + m.size, height)
            if x2 <= x1 or y2 <= y1:
                continue
            sub = mask[y1 - y:y2 - y, x1 - x:x2 - x]
            video[t, y1:y2, x1:x2][sub] = skin[y1 - y:y2 - y, x1 - x:x2 - x][sub]
            if sub.sum() >= MIN_VISIBLE * mask.sum():
                ys, xs = np.nonzero(sub)  # the visible shape's own extent
                boxes.append((k, m.kind, x1 + int(xs.min()), y1 + int(ys.min()),
                              x1 + int(xs.max()) + 1, y1 + int(ys.max()) + 1))
        labels.append(boxes)
    return video, labels


def detect_clip(seed: int, frames: int = 30, height: int = 192, width: int = 320
                ) -> tuple[np.ndarray, list[list[tuple]]]:
    """One demo video's frames and labels (:func:`render`)."""
    rng = np.random.default_rng(seed)
    background = (texture(height, width, rng, cell=12) * 0.55 + 40).astype(np.uint8)
    return render(_movers(rng, height, width, frames), background, frames, rng)


def make_detect_set(out_dir: str | Path, videos: int, seed: int, frames: int = 30,
                    height: int = 192, width: int = 320, fps: int = 10
                    ) -> tuple[list[dict[str, str]], list[dict[str, object]]]:
    """Write ``videos`` demo videos; return their manifest rows (paths relative to
    ``out_dir``) and label rows (:data:`LABEL_COLUMNS`). Video ``i`` uses seed
    ``seed + i``: disjoint seed ranges give disjoint (held-out) sets."""
    out = Path(out_dir)
    rows, labels = [], []
    for i in range(videos):
        s = seed + i
        name = f"shapes_{s:06d}"
        clip, boxes = detect_clip(s, frames, height, width)
        write_video(out / f"{name}.mp4", clip, fps=fps, options={"crf": "18"})
        rows.append({"video_id": name, "path": f"{name}.mp4"})
        for t, frame_boxes in enumerate(boxes):
            for k, kind, x1, y1, x2, y2 in frame_boxes:
                labels.append({"video_id": name, "frame": t, "label": kind, "x1": x1,
                               "y1": y1, "x2": x2, "y2": y2, "object": k})
    return rows, labels


def demo_detect_data(
    out: VideosDir = Path("data/shapes"),
    manifests: ManifestsDir = Path("manifests"),
    train_videos: Annotated[int, typer.Option(help="Train videos")] = 60,
    val_videos: Annotated[int, typer.Option(help="Held-out val videos")] = 16,
) -> None:
    """Generate the detection demo: discs, squares and triangles that move, enter, leave
    and cross over a textured background, with a box for every object in every frame;
    the same command always writes the same videos and labels."""
    labels: dict[str, list] = {}

    def make(folder: Path, split: str, count: int, seed: int) -> list[dict]:
        rows, labels[split] = make_detect_set(folder, count, seed)
        return rows

    counts = {"train": train_videos, "val": val_videos}
    for split, rows, manifest in write_splits(out, manifests, "shapes", counts, make):
        typer.echo(f"wrote {len(rows)} {split} videos ({len(labels[split])} boxes) to "
                   f"{out / split} and {manifest}")
    path = write_labels(manifests / "shapes_labels.csv", [b for s in counts for b in labels[s]],
                        LABEL_COLUMNS)
    typer.echo(f"wrote the boxes of both splits to {path}")


COMMANDS = {"demo-detect-data": demo_detect_data}
