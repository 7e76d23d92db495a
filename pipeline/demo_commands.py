"""The demo data commands: the main demo's (``vidbatch demo-data``: the videos of
jobs/classify.yaml, some deliberately broken, and their manifest), a plain typer function
that ``pipeline.cli`` registers under its :data:`COMMANDS` name beside the tasks' own
(``Task.demos``), and what those share: their options and the train/val splits. Each
command writes the same files every time it runs."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from pipeline.synth import write_manifest

# The options of a demo command that writes train and val sets.
VideosDir = Annotated[Path, typer.Option(help="Where the videos go")]
ManifestsDir = Annotated[Path, typer.Option(help="Where the demo's <name>_train.csv and "
                                            "<name>_val.csv (and labels) go")]


def demo_data(
    out: Annotated[Path, typer.Option(help="Where the demo videos go")] = Path("data/demo"),
    manifest: Annotated[Path, typer.Option(help="Manifest to write")] = Path(
        "manifests/demo.csv"),
) -> None:
    """Generate the demo videos (some deliberately broken) and their manifest."""
    from pipeline.synth import make_demo_set

    rows = make_demo_set(out)
    write_manifest(manifest, rows, videos_dir=out)
    typer.echo(f"wrote {len(rows)} manifest rows to {manifest} (videos in {out})")


def write_labels(path: str | Path, labels: list[dict], columns: tuple[str, ...]) -> Path:
    """A demo's labels file: a CSV of ``columns``, one row per dict of ``labels``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(labels)
    return path


# The seeds of a demo's splits: disjoint seed ranges give held-out val videos.
SPLIT_SEEDS = {"train": 0, "val": 100_000}


def write_splits(out: Path, manifests: Path, name: str, counts: dict[str, int],
                 make: Callable[[Path, str, int, int], list[dict]]
                 ) -> Iterator[tuple[str, list[dict], Path]]:
    """A demo's train and val sets: for each split, ``make(folder, split, count, seed)``
    writes ``count`` videos into ``out/<split>`` and returns their manifest rows, written
    to ``manifests/<name>_<split>.csv``. Yields ``(split, rows, manifest)``."""
    for split, count in counts.items():
        rows = make(out / split, split, count, SPLIT_SEEDS[split])
        manifest = manifests / f"{name}_{split}.csv"
        write_manifest(manifest, rows, videos_dir=out / split)
        yield split, rows, manifest


COMMANDS = {"demo-data": demo_data}
