"""The classification demos' data: the motion set (``vidbatch demo-train-data``), whose
class only a model that sees time can tell, and the copy-detection training set
(``vidbatch demo-copies-data``, :mod:`pipeline.tasks.classify.copies`). The same command
always writes the same files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.demo_commands import ManifestsDir, VideosDir, write_splits
from pipeline.synth import DIRECTIONS, motion_clip, write_video
from pipeline.tasks.classify.copies import make_copy_training_set


def make_motion_set(out_dir: str | Path, per_class: int, seed: int, frames: int = 20,
                    size: int = 32, speed: int = 1) -> list[dict[str, str]]:
    """Write ``per_class`` videos for each direction in :data:`DIRECTIONS`; return their
    manifest rows (paths relative to ``out_dir``, label = direction).

    A bright textured square crosses a dark textured background (``motion_clip`` with
    ``contrast``): any frame shows where the square is, only the order of the frames shows
    where it goes. Lossless, so the clips decoded for training are the frames drawn here.
    Video ``i`` of a class uses seed ``seed + 4 * i + class index``: disjoint seed ranges
    give disjoint (held-out) sets, and the same arguments give the same files.
    """
    out = Path(out_dir)
    rows = []
    for i in range(per_class):
        for c, direction in enumerate(DIRECTIONS):
            s = seed + 4 * i + c
            name = f"{direction}_{s:06d}"
            clip = motion_clip(direction, frames, size, s, speed=speed, contrast=True)
            write_video(out / f"{name}.mp4", clip, fps=10, lossless=True)
            rows.append({"video_id": name, "path": f"{name}.mp4", "label": direction})
    return rows


def demo_train_data(
    out: VideosDir = Path("data/motion"),
    manifests: ManifestsDir = Path("manifests"),
    train_per_class: Annotated[int, typer.Option(help="Train videos per class")] = 40,
    val_per_class: Annotated[int, typer.Option(help="Held-out val videos per class")] = 12,
) -> None:
    """Generate the motion demo: 4 classes (left/right/up/down) only a clip model can tell
    apart; the same command always writes the same videos."""
    counts = {"train": train_per_class, "val": val_per_class}
    for split, rows, manifest in write_splits(
            out, manifests, "motion", counts,
            lambda folder, _, per_class, seed: make_motion_set(folder, per_class, seed)):
        typer.echo(f"wrote {len(rows)} {split} videos to {out / split} and {manifest}")


def demo_copies_data(
    out: Annotated[Path, typer.Option(help="Where the videos and train.csv / val.csv "
                                      "go")] = Path("data/copies"),
    videos: Annotated[int, typer.Option(help="Generated training videos (each its own "
                                        "class)")] = 256,
    photos: Annotated[int, typer.Option(help="Pans over photographs (each its own class; "
                                        "at most 152 distinct)")] = 152,
) -> None:
    """Generate the copy-detection training set for jobs/train_copies.yaml: generated
    videos and pans over scikit-image's sample photographs, each its own class, and an
    altered copy of each (re-encoded, resized, cropped or trimmed) for validation."""
    train, val = make_copy_training_set(out, videos, photos=photos)
    typer.echo(f"wrote {videos + photos} videos and their copies to {out}: {train}, {val}")


COMMANDS = {"demo-train-data": demo_train_data, "demo-copies-data": demo_copies_data}
