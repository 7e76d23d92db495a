"""The commands that write the demo data sets (videos, manifests, labels), as plain typer
functions that ``pipeline.cli`` registers under :data:`COMMANDS`' names. Each writes the
same files every time it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo_data(
    out: Annotated[Path, typer.Option(help="Where the demo videos go")] = Path("data/demo"),
    manifest: Annotated[Path, typer.Option(help="Manifest to write")] = Path(
        "manifests/demo.csv"),
) -> None:
    """Generate the demo videos (some deliberately broken) and their manifest."""
    from pipeline.synth import make_demo_set, write_manifest

    rows = make_demo_set(out)
    write_manifest(manifest, rows, videos_dir=out)
    typer.echo(f"wrote {len(rows)} manifest rows to {manifest} (videos in {out})")


def demo_train_data(
    out: Annotated[Path, typer.Option(help="Where the videos go")] = Path("data/motion"),
    manifests: Annotated[Path, typer.Option(help="Where motion_train.csv and motion_val.csv "
                                            "go")] = Path("manifests"),
    train_per_class: Annotated[int, typer.Option(help="Train videos per class")] = 40,
    val_per_class: Annotated[int, typer.Option(help="Held-out val videos per class")] = 12,
) -> None:
    """Generate the motion demo: 4 classes (left/right/up/down) only a clip model can tell
    apart; the same command always writes the same videos."""
    from pipeline.synth import make_motion_set, write_manifest

    for split, per_class, seed in (("train", train_per_class, 0), ("val", val_per_class,
                                                                   100_000)):
        rows = make_motion_set(out / split, per_class, seed)
        manifest = manifests / f"motion_{split}.csv"
        write_manifest(manifest, rows, videos_dir=out / split)
        typer.echo(f"wrote {len(rows)} {split} videos to {out / split} and {manifest}")


def demo_detect_data(
    out: Annotated[Path, typer.Option(help="Where the videos go")] = Path("data/shapes"),
    manifests: Annotated[Path, typer.Option(help="Where shapes_train.csv, shapes_val.csv "
                                            "and shapes_labels.csv go")] = Path("manifests"),
    train_videos: Annotated[int, typer.Option(help="Train videos")] = 60,
    val_videos: Annotated[int, typer.Option(help="Held-out val videos")] = 16,
) -> None:
    """Generate the detection demo: discs, squares and triangles that move, enter, leave
    and cross over a textured background, with a box for every object in every frame;
    the same command always writes the same videos and labels."""
    from pipeline.synth import write_manifest
    from pipeline.synth_detect import make_detect_set, write_labels

    labels = []
    for split, count, seed in (("train", train_videos, 0), ("val", val_videos, 100_000)):
        rows, boxes = make_detect_set(out / split, count, seed)
        labels += boxes
        manifest = manifests / f"shapes_{split}.csv"
        write_manifest(manifest, rows, videos_dir=out / split)
        typer.echo(f"wrote {len(rows)} {split} videos ({len(boxes)} boxes) to {out / split} "
                   f"and {manifest}")
    path = write_labels(manifests / "shapes_labels.csv", labels)
    typer.echo(f"wrote the boxes of both splits to {path}")


def demo_speech_data(
    out: Annotated[Path, typer.Option(help="Where the videos go")] = Path("data/speech"),
    manifests: Annotated[Path, typer.Option(help="Where speech_train.csv and speech_val.csv "
                                            "go")] = Path("manifests"),
    train_per_class: Annotated[int, typer.Option(help="Train videos per class")] = 200,
    val_per_class: Annotated[int, typer.Option(help="Held-out val videos per class")] = 20,
    extras: Annotated[bool, typer.Option(
        "--extras/--no-extras", help="Also the _silence_ (noise only) and _unknown_ (another "
        "word) classes, besides the ten command words")] = True,
) -> None:
    """Generate the spoken-command demo: 3-second videos whose sound track speaks one of ten
    command words over noise and whose picture says nothing about it; validation speaks
    with voices training never hears. The same command always writes the same videos."""
    from pipeline.synth import write_manifest
    from pipeline.synth_speech import CLASSES, WORDS, make_speech_set

    classes = CLASSES if extras else WORDS
    for split, per_class, seed in (("train", train_per_class, 0),
                                   ("val", val_per_class, 100_000)):
        rows = make_speech_set(out / split, split, per_class, seed, classes)
        manifest = manifests / f"speech_{split}.csv"
        write_manifest(manifest, rows, videos_dir=out / split)
        typer.echo(f"wrote {len(rows)} {split} videos ({len(classes)} classes) to "
                   f"{out / split} and {manifest}")


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
    from pipeline.synth_copies import make_copy_training_set

    train, val = make_copy_training_set(out, videos, photos=photos)
    typer.echo(f"wrote {videos + photos} videos and their copies to {out}: {train}, {val}")


COMMANDS = {"demo-data": demo_data, "demo-train-data": demo_train_data,
            "demo-detect-data": demo_detect_data, "demo-speech-data": demo_speech_data,
            "demo-copies-data": demo_copies_data}
