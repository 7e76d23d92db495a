"""Plan a training run of any task: everything that can fail for a configuration reason,
before Ray.

The spec's ``task`` key picks the task (the registry, :mod:`pipeline.tasks.registry`), and
the task's :class:`~pipeline.fit.training.Training` validates the spec and plans the run
(manifests, splits, labels, starting weights, decodes). Here, what is the same for every
task: the run directory (``<checkpoint.storage_path>/<name>``) must be writable and must
not hold another run, unless resuming it; and, after training, publishing the best
checkpoint. Planning starts nothing and writes only a probe file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, OutputError
from pipeline.fit.plan import TrainPlan
from pipeline.fit.spec import TrainSpecBase
from pipeline.fit.training import Training
from pipeline.output.outdir import STAGING_SUFFIX, write_atomically
from pipeline.spec import read_spec_yaml
from pipeline.tasks.registry import DEFAULT_TASK, TASKS, trainable

# Written by Ray Train into the run directory; its presence means "a run to resume".
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"


def training_of(task: object) -> Training:
    """The training parts of the task named ``task``; a ``ConfigError`` when it has none."""
    parts = TASKS[task].training() if isinstance(task, str) and task in TASKS else None
    if parts is None:
        raise ConfigError(f"task: {task!r} cannot be trained; choose one of {trainable()}")
    return parts


def parse_training(data: Any, source: str = "<spec>", base_dir: Path | None = None
                   ) -> TrainSpecBase:
    """Validate a parsed training spec of any task; resolve relative paths against
    ``base_dir``."""
    task = data.get("task", DEFAULT_TASK) if isinstance(data, dict) else DEFAULT_TASK
    return training_of(task).parse(data, source, base_dir)


def load_training(path: str | Path, overrides: list[str] | tuple[str, ...] = ()
                  ) -> TrainSpecBase:
    """Read, override (``--set a.b=value``) and validate a YAML training spec."""
    data = read_spec_yaml(path, overrides, "training spec", "jobs/train.yaml")
    return parse_training(data, str(path), Path(path).resolve().parent)


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


def plan_training(spec: TrainSpecBase, resume: bool = False) -> TrainPlan:
    """Validate a training spec against its data and storage. Starts nothing."""
    run_dir = Path(spec.checkpoint.storage_path) / spec.name
    plan = training_of(spec.task).plan(spec, run_dir, resume)
    check_run_dir(run_dir, resume)
    return plan


def publish_best(checkpoint_dir: Path, best_dir: Path, files: tuple[str, ...]) -> Path:
    """Publish what inference needs of the best checkpoint (``files``: ``model.pt`` and
    the task's own, such as the confusion files; not the optimizer state) at the run's
    stable path, replacing it whole.

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
