"""Plan a training run: everything that can fail for a configuration reason, before Ray.

:func:`plan_training` reads the manifests (``pipeline.manifest``), splits and labels the
rows, resolves the starting weights and the card of the model to be trained
(``pipeline.models``), derives the decode specs (``pipeline.decode``) and checks that the
run directory can be written. It starts nothing and writes only a probe file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.decode.base import DecodeSpec
from pipeline.errors import ConfigError, ManifestError, OutputError
from pipeline.manifest import read_manifest
from pipeline.model.card import ModelCard
from pipeline.model.checkpoint import CHECKPOINT_FILE
from pipeline.model.spec import ModelSpec
from pipeline.model.zoo import model_card
from pipeline.output.outdir import STAGING_SUFFIX, write_atomically
from pipeline.spec import ManifestSpec
from pipeline.train.augment import ClipAugment
from pipeline.train.metrics import CONFUSION_CSV, CONFUSION_JSON
from pipeline.train.spec import TrainSpec

# Written by Ray Train into the run directory; its presence means "a run to resume".
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"


@dataclass(frozen=True)
class TrainPlan:
    spec: TrainSpec
    start: ModelCard  # the starting weights
    card: ModelCard  # the model being trained: class names, normalisation, input size
    train_decode: DecodeSpec  # candidate clips for the random temporal offset, uncropped
    val_decode: DecodeSpec  # exactly what inference decodes
    augment: ClipAugment
    train_rows: pa.Table  # manifest rows + "target" (class index)
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


def read_splits(spec: TrainSpec) -> tuple[pa.Table, pa.Table, tuple[str, ...]]:
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


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """The run directory must be writable; a new run must not reuse an old one's name."""
    exists = (run_dir / RAY_SNAPSHOT).exists()
    if resume and not exists:
        raise ConfigError(f"--resume: no run to resume in {run_dir} (no {RAY_SNAPSHOT}). "
                          "Check name and checkpoint.storage_path, or drop --resume.")
    if not resume and exists:
        raise ConfigError(f"a run named {run_dir.name!r} already exists in {run_dir.parent}. "
                          "Continue it with `vidbatch train JOB --resume`, pick another name "
                          "(--set name=...), or delete the directory.")
    probe = run_dir / f".write-probe-{uuid.uuid4().hex}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"checkpoint.storage_path: cannot write to {run_dir} ({e}). Point "
                          "it at a writable directory (shared storage on a multi-node "
                          "cluster).") from e


def plan_training(spec: TrainSpec, resume: bool = False) -> TrainPlan:
    """Validate a training spec against its data and storage. Starts nothing."""
    train, val, names = read_splits(spec)
    start = model_card(ModelSpec(arch=spec.model.arch, weights=spec.model.weights))
    val_decode = DecodeSpec.from_sampling(spec.sampling, spec.resources, start.short_side,
                                          start.crop_size,
                                          allow_uri_options=spec.allow_uri_options)
    # Without a stride, clips spread over 1/positions of the video would play faster than
    # the clips seen at validation and inference: then only the inference clips are
    # candidates (see docs/training.md).
    s = spec.sampling
    positions = spec.augment.temporal_positions if s.frame_stride else s.clips_per_video
    train_decode = replace(val_decode, clips=positions, crop_size=val_decode.short_side)
    a = spec.augment
    augment = ClipAugment(crop_size=val_decode.crop_size, crop_scale=a.crop_scale,
                          crop_ratio=a.crop_ratio, hflip=a.hflip)
    run_dir = Path(spec.checkpoint.storage_path) / spec.name
    check_run_dir(run_dir, resume)
    card = replace(start, weights=str(run_dir / "best"), source="checkpoint",
                   class_names=names, short_side=val_decode.short_side,
                   crop_size=val_decode.crop_size, meaningful=True, extra={})
    return TrainPlan(spec, start, card, train_decode, val_decode, augment, train, val,
                     run_dir, resume)


def publish_best(checkpoint_dir: Path, best_dir: Path,
                 files: tuple[str, ...] = (CHECKPOINT_FILE, CONFUSION_JSON, CONFUSION_CSV)
                 ) -> Path:
    """Publish what inference needs of the best checkpoint (``model.pt`` and the confusion
    files, not the optimizer state) at the run's stable path, replacing it whole.

    The files go to a new folder ``best.<id>`` beside it, each written and flushed to disk
    (:func:`~pipeline.output.outdir.write_atomically`); then ``best``, a symbolic link, is
    switched to that folder by one rename. A reader sees the old checkpoint or the new
    one, never a mix or nothing, and a crash at any step leaves the old one in place (and
    at worst a folder that the next publish removes)."""
    target = best_dir.with_name(f"{best_dir.name}.{uuid.uuid4().hex[:8]}")
    target.mkdir(parents=True)
    for name in files:
        write_atomically(target / name, (checkpoint_dir / name).read_bytes())
    link = best_dir.with_name(f"{best_dir.name}.link{STAGING_SUFFIX}")
    link.unlink(missing_ok=True)
    os.symlink(target.name, link)
    if best_dir.is_dir() and not best_dir.is_symlink():  # a folder published before links
        best_dir.rename(best_dir.with_name(f"{best_dir.name}.{uuid.uuid4().hex[:8]}"))
    os.replace(link, best_dir)
    for old in best_dir.parent.glob(f"{best_dir.name}.*"):
        if old != target and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
    return best_dir
