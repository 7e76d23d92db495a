"""Run a training plan on Ray Train: decode with Ray Data, fit a ``TorchTrainer``, publish.

The flow of :func:`run_training`:

1. connect to (or start) Ray and check that the cluster has the CPUs/GPUs asked for;
2. decode the train and val rows with the decode stage in Ray Data tasks
   (``pipeline.dataflow``, as inference does) and **materialize** them once (object
   store, spilled to disk when large): the clips are small, and decoding once instead of
   every epoch is what makes CPU training affordable.
   The random temporal offset still varies per epoch because several clip positions per
   video are decoded (``augment.temporal_positions``). Videos that fail to decode are
   counted, listed in ``<run>/decode_errors.csv``, printed, and reported with every epoch;
3. ``TorchTrainer`` with DDP workers runs :func:`pipeline.train.loop.train_loop_per_worker`;
   a controller-side callback appends each epoch's metrics to ``<run>/history.jsonl``,
   which the driver prints as it grows;
4. the best checkpoint (by ``val_acc``) is copied to ``<run>/best`` with its confusion
   files: ``model.weights: <run>/best`` in an inference job uses it.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import dataflow
from pipeline.decode.stage import decode_batch
from pipeline.errors import ConfigError, JobFailed, ManifestError
from pipeline.model.zoo import ensure_weights_available
from pipeline.ray_session import connect, disconnect
from pipeline.train.loop import LoopConfig, train_loop_per_worker
from pipeline.train.metrics import CONFUSION_JSON
from pipeline.train.plan import TrainPlan, publish_best
from pipeline.train.report import describe, fit_with_progress, format_epoch

HISTORY = "history.jsonl"
DECODE_ERRORS = "decode_errors.csv"
SUMMARY = "train_summary.json"


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


CLASSIFY_COLUMNS = ("row", "frames", "target")


def decode_rows(rows: pa.Table, spec, plan, keep: tuple[str, ...],
                stage: Callable = decode_batch):
    """``(dataset of the ok rows' ``keep`` columns, held in the object store; list of the
    failed rows)``: decoded once, read every epoch."""
    return dataflow.decoded_once(rows, spec, plan.spec.resources, keep, stage)


def prepare_data(plan, log: Callable[[str], None], train_decode, val_decode,
                 keep: tuple[str, ...] = CLASSIFY_COLUMNS, stage: Callable = decode_batch):
    """Decode both splits (of a classification, detection or audio plan: ``stage`` and
    its specs); write and print the decode failures; refuse empty splits."""
    train, train_err = decode_rows(plan.train_rows, train_decode, plan, keep, stage)
    val, val_err = decode_rows(plan.val_rows, val_decode, plan, keep, stage)
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


def loop_config(plan: TrainPlan, ok_train: int, counts: dict[str, int],
                fail_at_epochs: tuple[int, ...] = ()) -> LoopConfig:
    spec = plan.spec
    # Ray Train splits the train set into equal shards (streaming_split(equal=True)), so
    # every worker takes the same number of steps, which DDP requires.
    per_worker = ok_train // spec.resources.workers
    return LoopConfig(
        start=plan.start, card=plan.card, optim=spec.optim, augment=plan.augment,
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


def build_trainer(plan, cfg, train_ds, val_ds, loop: Callable = train_loop_per_worker,
                  metric: str = "val_acc"):
    """The ``TorchTrainer`` of a plan (classification or detection) running ``loop`` on
    every worker; checkpoints are kept by ``metric``, highest first."""
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
        loop,
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
        # no val video is dropped to make shards equal (see loop.val_batches).
        dataset_config=DataConfig(datasets_to_split=["train"]))


def fit(plan, trainer, log: Callable[[str], None], fmt: Callable = format_epoch):
    """Run ``trainer`` (of a classification or detection plan), printing each epoch as
    ``fmt`` gives it; a failure becomes a ``JobFailed`` that says how to resume."""
    try:
        return fit_with_progress(trainer, plan.run_dir / HISTORY, plan.spec.optim.epochs,
                                 log, fmt)
    except Exception as e:
        raise JobFailed(f"training failed: {str(e).strip()[:1500]}\nCheckpoints so far are "
                        f"in {plan.run_dir}; continue with `vidbatch train JOB --resume`.") from e


def run_training(plan: TrainPlan, address: str | None = None,
                 log: Callable[[str], None] = print,
                 fail_at_epochs: tuple[int, ...] = ()) -> dict[str, Any]:
    """Train; return the summary (also written to ``<run>/train_summary.json``).

    Args:
        plan: from :func:`pipeline.train.plan.plan_training`.
        address: Ray cluster address; None uses the initialized Ray or starts a local one.
        log: where progress lines go.
        fail_at_epochs: tests only: make the workers fail at the start of these epochs
            (once per attempt that got past an earlier epoch; see loop.maybe_fail).
    """
    ensure_weights_available(plan.start)
    t0 = time.perf_counter()
    handle = connect(plan.spec.resources, address, log)
    try:
        check_cluster(plan)
        log(describe(plan))
        train_ds, val_ds, ok_train, counts = prepare_data(plan, log, plan.train_decode,
                                                          plan.val_decode)
        cfg = loop_config(plan, ok_train, counts, fail_at_epochs)
        result = fit(plan, build_trainer(plan, cfg, train_ds, val_ds), log)
        summary = finish(plan, result, time.perf_counter() - t0, counts)
    finally:
        disconnect(handle)
    return summary


def finish(plan: TrainPlan, result, wall_s: float, counts: dict[str, int]) -> dict[str, Any]:
    """Publish the best checkpoint and write the run summary."""
    import tempfile

    best = result.get_best_checkpoint(metric="val_acc", mode="max")
    if best is None:
        raise JobFailed(f"training finished without a checkpoint in {plan.run_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        publish_best(Path(best.to_directory(tmp)), plan.best_dir)
    best_metrics = next(m for c, m in result.best_checkpoints if c.path == best.path)
    confusion = json.loads((plan.best_dir / CONFUSION_JSON).read_text(encoding="utf-8"))
    summary = {
        "name": plan.spec.name, "task": getattr(plan.spec, "task", "classify"),
        "run_dir": str(plan.run_dir), "best_dir": str(plan.best_dir),
        "best_epoch": best_metrics["epoch"], "best_val_acc": best_metrics["val_acc"],
        "best_val_top5": best_metrics["val_top5"], "last": result.metrics,
        "wall_s": round(wall_s, 1), **counts, "per_class": confusion["per_class"],
    }
    (plan.run_dir / SUMMARY).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
