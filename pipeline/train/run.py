"""Run a training plan of any task on Ray Train: decode with Ray Data, fit a
``TorchTrainer``, publish.

The flow of :func:`run_training`:

1. connect to (or start) Ray and check that the cluster has the CPUs/GPUs asked for;
2. decode the train and val rows with the task's decode stage in Ray Data tasks
   (``pipeline.dataflow``, as inference does) and **materialize** them once (object
   store, spilled to disk when large): decoding once instead of every epoch is what makes
   CPU training affordable. Random clip positions still vary per epoch where a task
   decodes several per video. Videos that fail to decode are counted, listed in
   ``<run>/decode_errors.csv``, printed, and reported with every epoch;
3. ``TorchTrainer`` with DDP workers runs :func:`pipeline.fit.epochs.train_worker` with
   the task's worker loop; a controller-side callback appends each epoch's metrics to
   ``<run>/history.jsonl``, which the driver prints as it grows;
4. the best checkpoint (by the task's metric) is published at ``<run>/best`` with the
   task's files: ``model.weights: <run>/best`` in an inference job uses it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline import dataflow
from pipeline.errors import ConfigError, JobFailed, ManifestError
from pipeline.fit.epochs import LoopConfig, train_worker
from pipeline.fit.plan import TrainPlan
from pipeline.fit.training import Training
from pipeline.ray_session import connect, disconnect
from pipeline.train.plan import plan_training, publish_best, training_of
from pipeline.train.report import describe, epoch_formatter, fit_with_progress, render_summary

HISTORY = "history.jsonl"
DECODE_ERRORS = "decode_errors.csv"
SUMMARY = "train_summary.json"

if TYPE_CHECKING:
    from pipeline.console import Console


def check_cluster(plan: TrainPlan) -> None:
    """Fail now, not after a silent wait for resources that will never come."""
    import ray

    res, have = plan.spec.resources, ray.cluster_resources()
    for kind, per in (("GPU", res.gpus_per_worker), ("CPU", res.cpus_per_worker)):
        want = res.workers * per
        if want > have.get(kind, 0) + 1e-9:
            key = f"resources.{kind.lower()}s_per_worker"
            raise ConfigError(
                f"{key} x resources.workers asks for {want:g} {kind}s but the cluster has "
                f"{have.get(kind, 0):g}; lower {key} or resources.workers"
                + (", or add GPU nodes" if kind == "GPU" else ", or add nodes"))


def _decode(rows: pa.Table, spec, plan: TrainPlan, parts: Training):
    """``(dataset of the ok rows' columns that the loop reads, held in the object store;
    list of the failed rows)``: decoded once, read every epoch."""
    return dataflow.decoded_once(rows, spec, plan.spec.resources, parts.columns,
                                 parts.decode_stage)


def prepare_data(plan: TrainPlan, parts: Training, log: Callable[[str], None]):
    """Decode both splits; write and print the decode failures; refuse empty splits."""
    train, train_err = _decode(plan.train_rows, plan.train_decode, plan, parts)
    val, val_err = _decode(plan.val_rows, plan.val_decode, plan, parts)
    with (plan.run_dir / DECODE_ERRORS).open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["split", "row", "video_id", "path", "error"])
        w.writeheader()
        for split, errs in (("train", train_err), ("val", val_err)):
            for e in errs:
                w.writerow({"split": split, **{k: e[k] for k in w.fieldnames[1:]}})
    for split, errs, total in (("train", train_err, plan.train_rows.num_rows),
                               ("val", val_err, plan.val_rows.num_rows)):
        log(f"{split}: {total - len(errs)} of {total} videos decoded"
            + (f", {len(errs)} failed (listed in {plan.run_dir / DECODE_ERRORS})" if errs
               else ""))
        for e in errs[:5]:
            log(f"  decode error {e['video_id']}: {str(e['error'])[:160]}")
        if len(errs) == total:
            raise ManifestError(f"every {split} video failed to decode; see "
                                f"{plan.run_dir / DECODE_ERRORS}")
    ok_train = plan.train_rows.num_rows - len(train_err)
    if ok_train < plan.spec.resources.workers:
        raise ConfigError(f"{ok_train} decodable train videos for "
                          f"{plan.spec.resources.workers} workers; lower resources.workers")
    counts = {"train_decode_errors": len(train_err), "val_decode_errors": len(val_err)}
    return train, val, ok_train, counts


def loop_config(plan: TrainPlan, parts: Training, ok_train: int, counts: dict[str, int],
                fail_at_epochs: tuple[int, ...] = ()) -> LoopConfig:
    spec = plan.spec
    # Ray Train splits the train set into equal shards (streaming_split(equal=True)), so
    # every worker takes the same number of steps, which DDP requires.
    per_worker = ok_train // spec.resources.workers * parts.examples_per_video(plan)
    return parts.loop_config(
        plan, start=plan.start, card=plan.card, optim=spec.optim,
        steps_per_epoch=max(1, math.ceil(per_worker / spec.optim.batch_size)),
        checkpoint_every=spec.checkpoint.every, fail_at_epochs=fail_at_epochs,
        extra={"decode_errors": counts, "spec": spec.model_dump(mode="json"),
               "sampling": plan.val_decode.record()})


def _epoch_log_callback(path: Path):
    from ray.train import UserCallback

    class EpochLog(UserCallback):
        """Runs in the Train controller, which Ray places on the driver's node: appends
        each epoch's metrics (and where its checkpoint went) to the run's history."""

        def after_report(self, run_context, metrics, checkpoint):
            row = {**metrics[0], "checkpoint": checkpoint.path if checkpoint else None}
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    return EpochLog()


def build_trainer(plan: TrainPlan, cfg: LoopConfig, train_ds, val_ds, metric: str):
    """The ``TorchTrainer`` of a plan, running :func:`~pipeline.fit.epochs.train_worker`
    on every worker; checkpoints are kept by ``metric``, highest first."""
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    spec, res = plan.spec, plan.spec.resources
    per_worker = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker:
        per_worker["GPU"] = res.gpus_per_worker
    return TorchTrainer(
        train_worker,
        train_loop_config={"loop": cfg, "threads": max(1, int(res.cpus_per_worker))},
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=res.gpus_per_worker > 0,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(
            name=spec.name, storage_path=str(plan.run_dir.parent),
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.keep,
                                               checkpoint_score_attribute=metric,
                                               checkpoint_score_order="max"),
            callbacks=[_epoch_log_callback(plan.run_dir / HISTORY)],
            # Ray Train logs every report at INFO; the epoch lines printed by the driver
            # say the same once, readably.
            logging_config=LoggingConfig(log_level="WARNING")),
        datasets={"train": train_ds.randomize_block_order(), "val": val_ds},
        # val is not split: each worker evaluates the rows row % world == rank of it, so
        # no val video is dropped to make shards equal (see fit.epochs.val_batches).
        dataset_config=DataConfig(datasets_to_split=["train"]))


def fit(plan: TrainPlan, trainer, log: Callable[[str], None], fmt: Callable,
        show: Callable[[dict[str, Any]], None] | None = None):
    """Run ``trainer``, printing each epoch as ``fmt`` gives it; a failure becomes a
    ``JobFailed`` that says how to resume."""
    try:
        return fit_with_progress(trainer, plan.run_dir / HISTORY, plan.spec.optim.epochs,
                                 log, fmt, show)
    except Exception as e:
        raise JobFailed(f"training failed: {str(e).strip()[:1500]}\nCheckpoints so far are "
                        f"in {plan.run_dir}; continue with `vidbatch train JOB --resume`.") from e


class LiveSteps:
    """The driver's side of the step board (:mod:`pipeline.fit.progress`): rank 0's latest
    step and the last finished epoch's metric, on a live display ``view(name, epochs,
    steps_per_epoch)`` (:class:`pipeline.console.TrainBar`)."""

    def __init__(self, view: Callable, plan: TrainPlan, cfg: LoopConfig, metric: str):
        import ray

        from pipeline.fit.progress import StepBoard, StepPoster

        name = f"vidbatch-steps-{plan.spec.name}-{time.time_ns()}"
        self.board = StepBoard.options(name=name).remote()
        self.cfg = dataclasses.replace(
            cfg, post_step=StepPoster(name, ray.get_runtime_context().namespace))
        self.view = view(plan.spec.name, plan.spec.optim.epochs, cfg.steps_per_epoch)
        self.metric, self.latest = metric, {}

    def show(self, last_epoch: dict[str, Any]) -> None:
        import ray

        try:
            step = ray.get(self.board.read.remote(), timeout=2)
        except Exception:  # noqa: BLE001  (the display only)
            step = {}
        if last_epoch.get("epoch", 0) >= step.get("epoch", 1):  # between epochs
            step = {"epoch": last_epoch["epoch"], "step": self.cfg.steps_per_epoch,
                    "loss": last_epoch.get("train_loss")}
        self.latest = {**step, "metric": self.metric, "value": last_epoch.get(self.metric)}
        self.view.update(self.latest)

    def close(self) -> None:
        import ray

        self.view.finish(self.latest)
        ray.kill(self.board)


def run_training(plan: TrainPlan, address: str | None = None,
                 log: Callable[[str], None] = print,
                 fail_at_epochs: tuple[int, ...] = (),
                 console: Console | None = None) -> dict[str, Any]:
    """Train; return the summary (also written to ``<run>/train_summary.json``).

    Args:
        plan: from :func:`pipeline.train.plan.plan_training`.
        address: Ray cluster address; None uses the initialized Ray or starts a local one.
        log: where progress lines go.
        fail_at_epochs: tests only: make the workers fail at the start of these epochs
            (once per attempt that got past an earlier epoch; see epochs.maybe_fail).
        console: the terminal's (:mod:`pipeline.console`): Ray's output in Ray's logs
            unless verbose (:func:`~pipeline.ray_session.connect`), and on a terminal a
            live display of the steps (:class:`LiveSteps`). Without one, as Ray prints,
            and the epoch lines are the progress.
    """
    parts = training_of(plan.spec.task)
    parts.fetch(plan.start)
    t0 = time.perf_counter()
    handle = connect(plan.spec.resources, address, log, console)
    view, live = console and console.train_view(), None
    try:
        check_cluster(plan)
        log(describe(plan, parts))
        train_ds, val_ds, ok_train, counts = prepare_data(plan, parts, log)
        cfg = loop_config(plan, parts, ok_train, counts, fail_at_epochs)
        if view is not None:
            live = LiveSteps(view, plan, cfg, parts.metric)
            cfg = live.cfg
        trainer = build_trainer(plan, cfg, train_ds, val_ds, parts.metric)
        result = fit(plan, trainer, log, epoch_formatter(parts), live and live.show)
        summary = finish(plan, parts, result, time.perf_counter() - t0, counts)
    finally:
        if live is not None:
            live.close()
        disconnect(handle)
    return summary


def finish(plan: TrainPlan, parts: Training, result, wall_s: float,
           counts: dict[str, int]) -> dict[str, Any]:
    """Publish the best checkpoint and write the run summary."""
    best = result.get_best_checkpoint(metric=parts.metric, mode="max")
    if best is None:
        raise JobFailed(f"training finished without a checkpoint in {plan.run_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        publish_best(Path(best.to_directory(tmp)), plan.best_dir, parts.published)
    metrics = next(m for c, m in result.best_checkpoints if c.path == best.path)
    summary = {"name": plan.spec.name, "task": plan.spec.task, "run_dir": str(plan.run_dir),
               "best_dir": str(plan.best_dir), "best_epoch": metrics["epoch"],
               **parts.best(metrics, plan), "last": result.metrics,
               "wall_s": round(wall_s, 1), **counts}
    (plan.run_dir / SUMMARY).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def train(spec, resume: bool = False, address: str | None = None,
          log: Callable[[str], None] = print, console: Console | None = None
          ) -> tuple[dict[str, Any], str]:
    """``vidbatch train``: plan and run ``spec``; ``(summary, the summary as text)``."""
    summary = run_training(plan_training(spec, resume), address, log, console=console)
    return summary, render_summary(summary, training_of(spec.task))
