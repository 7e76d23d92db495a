"""What a task's training plan is (:class:`TrainPlan`), and the labelled splits that the
classification-like tasks train on.

A task plans its run from its spec (``pipeline/tasks/<task>/train.py``): it reads the
manifests, splits and labels the rows, resolves the starting weights and the card of the
model it trains, and derives what each split decodes. Everything that can fail for a
configuration reason fails there, before Ray starts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ManifestError
from pipeline.manifest import read_manifest
from pipeline.spec import ManifestSpec


@dataclass(frozen=True)
class TrainPlan:
    spec: Any  # the task's training spec (a pipeline.fit.spec.TrainSpecBase)
    start: Any  # the card of the starting weights
    card: Any  # the card of the model being trained: class names, input
    train_decode: Any  # what the decode stage makes of each train video
    val_decode: Any  # ... and of each val video: what inference decodes
    train_rows: pa.Table  # manifest rows + what the loop needs ("target", "boxes")
    val_rows: pa.Table
    run_dir: Path
    resume: bool

    @property
    def best_dir(self) -> Path:
        return self.run_dir / "best"


def _labelled(table: pa.Table, manifest: ManifestSpec, what: str) -> pa.Table:
    labels = table["label"]
    empty = pc.or_(pc.is_null(labels), pc.equal(pc.utf8_trim_whitespace(labels), ""))
    empty = pc.fill_null(empty, True)
    missing = pc.sum(empty).as_py() or 0
    if missing == table.num_rows:
        raise ManifestError(
            f"{what} manifest {manifest.path} has no labels in column "
            f"{manifest.label_column!r}. Add that column (one class name per row), or set "
            f"data.{what}.label_column to the column that holds the classes.")
    if missing:
        rows = pc.indices_nonzero(empty).to_pylist()[:5]
        raise ManifestError(
            f"{what} manifest {manifest.path}: {missing} rows have no label (rows "
            f"{', '.join(str(r + 1) for r in rows)}{', ...' if missing > 5 else ''}, numbered "
            "from 1 after the header). Label them or remove them.")
    return table.set_column(table.schema.get_field_index("label"), "label",
                            pc.utf8_trim_whitespace(labels))


def _rank(video_id: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{video_id}".encode()).hexdigest()


def split_rows(table: pa.Table, fraction: float, seed: int) -> tuple[pa.Table, pa.Table]:
    """Hold out ``fraction`` of each class for validation, deterministically.

    Within a class, rows are ordered by a hash of ``(seed, video_id)``, so the split does
    not depend on the manifest's row order and stays stable when rows are added.
    ``round(n * fraction)`` rows of a class go to val, but a class keeps one train row.
    """
    val_rows: list[int] = []
    labels, ids = table["label"].to_pylist(), table["video_id"].to_pylist()
    for label in sorted(set(labels)):
        members = sorted((i for i, lb in enumerate(labels) if lb == label),
                         key=lambda i: _rank(ids[i], seed))
        take = min(round(len(members) * fraction), len(members) - 1)
        val_rows += members[:take]
    held_out = set(val_rows)
    is_val = pa.array([i in held_out for i in range(table.num_rows)])
    return table.filter(pc.invert(is_val)), table.filter(is_val)


def _with_targets(table: pa.Table, names: tuple[str, ...]) -> pa.Table:
    index = {n: i for i, n in enumerate(names)}
    return table.append_column("target", pa.array([index[v] for v in table["label"]
                                                   .to_pylist()], pa.int64()))


def read_splits(spec) -> tuple[pa.Table, pa.Table, tuple[str, ...]]:
    """``(train rows, val rows, class names)``; refuses unlabelled rows, empty splits, a
    single class and val classes that train lacks."""
    data = spec.data
    train = _labelled(read_manifest(data.train), data.train, "train")
    if data.val is None:
        train, val = split_rows(train, data.val_fraction, data.split_seed)
    else:
        val = _labelled(read_manifest(data.val), data.val, "val")
    for what, rows in (("train", train), ("val", val)):
        if rows.num_rows == 0:
            hint = ("add rows to data.train" if what == "train" or data.val is None
                    else f"add rows to {data.val.path}")
            raise ManifestError(f"the {what} split is empty; {hint}"
                                + (", or raise data.val_fraction" if what == "val"
                                   and data.val is None else ""))
    names = tuple(sorted(set(train["label"].to_pylist())))
    if len(names) < 2:
        raise ManifestError(f"the train split has one class ({names[0]!r}); a classifier "
                            "needs at least two. Check data.train.label_column, or add "
                            "videos of other classes.")
    unknown = sorted(set(val["label"].to_pylist()) - set(names))
    if unknown:
        raise ManifestError(f"val labels {unknown[:5]} do not occur in the train split; "
                            "add training videos of those classes or drop them from val")
    return _with_targets(train, names), _with_targets(val, names), names
