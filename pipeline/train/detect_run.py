"""Run a detection training plan on Ray Train, as :mod:`pipeline.train.run` runs a
classification one: decode both splits once (the rows carry their boxes), fit a
``TorchTrainer`` running :func:`pipeline.train.detect_loop.detect_loop_per_worker`, and
publish the checkpoint with the best ``val_map50`` at ``<run>/best``."""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import JobFailed
from pipeline.model.checkpoint import CHECKPOINT_FILE
from pipeline.model.detectors import ensure_detector_weights
from pipeline.ray_session import connect, disconnect
from pipeline.train.detect_loop import METRIC, DetectLoopConfig, detect_loop_per_worker
from pipeline.train.detect_plan import DetectTrainPlan
from pipeline.train.plan import publish_best
from pipeline.train.run import SUMMARY, build_trainer, check_cluster, fit, prepare_data

COLUMNS = ("row", "frames", "frame_indices", "boxes", "width", "height")


def describe(plan: DetectTrainPlan) -> str:
    s, res, d = plan.spec, plan.spec.resources, plan.decode
    return "\n".join([
        f"train {s.name} (detect): {plan.train_rows.num_rows} train / "
        f"{plan.val_rows.num_rows} val videos, {len(plan.card.class_names) - 1} classes "
        f"{list(plan.card.class_names[1:11])}",
        f"  model : {s.model.arch} from weights {s.model.weights}, input "
        f"{plan.card.max_size}x{plan.card.min_size}, {s.optim.optimizer} lr {s.optim.lr:g} "
        f"({s.optim.schedule}), {s.optim.epochs} epochs x {s.optim.batch_size} "
        "frames/worker/step",
        f"  frames: {d.describe()}",
        f"  ray   : {res.workers} workers x {res.cpus_per_worker:g} CPU, "
        f"{res.gpus_per_worker:g} GPU; max_failures {s.max_failures}"
        + ("; resuming" if plan.resume else ""),
        f"  run   : {plan.run_dir} (best by {METRIC} -> {plan.best_dir})",
    ])


def format_epoch(m: dict[str, Any], epochs: int) -> str:
    errors = m.get("train_decode_errors", 0) + m.get("val_decode_errors", 0)
    return (f"epoch {m['epoch']}/{epochs}: train loss {m['train_loss']:.3f} "
            f"({m['train_frames']} frames, {m['frames_per_s']:.1f} frames/s) | val mAP@0.5 "
            f"{m['val_map50']:.3f} mAP@[.5:.95] {m['val_map']:.3f} ({m['val_frames']} "
            f"frames) | lr {m['lr']:.2g}, {m['epoch_s']:.0f} s, decode errors {errors}"
            + (f" | checkpoint {m['checkpoint']}" if m.get("checkpoint") else ""))


def render_summary(summary: dict[str, Any]) -> str:
    return "\n".join([
        f"best val mAP@0.5 {summary['best_val_map50']:.3f} (mAP@[.5:.95] "
        f"{summary['best_val_map']:.3f}) at epoch {summary['best_epoch']}; "
        f"{summary['wall_s']:.0f} s in all",
        f"best checkpoint: {summary['best_dir']} (use it as model.weights, task: detect)",
        f"checkpoints and history: {summary['run_dir']}"])


def loop_config(plan: DetectTrainPlan, ok_train: int, counts: dict[str, int],
                fail_at_epochs: tuple[int, ...] = ()) -> DetectLoopConfig:
    spec = plan.spec
    frames = (ok_train // spec.resources.workers) * plan.decode.clips
    return DetectLoopConfig(
        start=plan.start, card=plan.card, optim=spec.optim, hflip=spec.augment.hflip,
        steps_per_epoch=max(1, math.ceil(frames / spec.optim.batch_size)),
        checkpoint_every=spec.checkpoint.every, fail_at_epochs=fail_at_epochs,
        extra={"decode_errors": counts, "spec": spec.model_dump(mode="json"),
               "sampling": plan.decode.record()})


def run_detect_training(plan: DetectTrainPlan, address: str | None = None,
                        log: Callable[[str], None] = print,
                        fail_at_epochs: tuple[int, ...] = ()) -> dict[str, Any]:
    """Train; return the summary (also written to ``<run>/train_summary.json``)."""
    ensure_detector_weights(plan.start)
    t0 = time.perf_counter()
    handle = connect(plan.spec.resources, address, log)
    try:
        check_cluster(plan)
        log(describe(plan))
        train_ds, val_ds, ok_train, counts = prepare_data(plan, log, plan.decode, plan.decode,
                                                          COLUMNS)
        cfg = loop_config(plan, ok_train, counts, fail_at_epochs)
        trainer = build_trainer(plan, cfg, train_ds, val_ds, detect_loop_per_worker, METRIC)
        result = fit(plan, trainer, log, format_epoch)
        summary = finish(plan, result, time.perf_counter() - t0, counts)
    finally:
        disconnect(handle)
    return summary


def finish(plan: DetectTrainPlan, result, wall_s: float, counts: dict[str, int]
           ) -> dict[str, Any]:
    best = result.get_best_checkpoint(metric=METRIC, mode="max")
    if best is None:
        raise JobFailed(f"training finished without a checkpoint in {plan.run_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        publish_best(Path(best.to_directory(tmp)), plan.best_dir, (CHECKPOINT_FILE,))
    m = next(m for c, m in result.best_checkpoints if c.path == best.path)
    summary = {"name": plan.spec.name, "task": "detect", "run_dir": str(plan.run_dir),
               "best_dir": str(plan.best_dir), "best_epoch": m["epoch"],
               "best_val_map50": m["val_map50"], "best_val_map": m["val_map"],
               "last": result.metrics, "wall_s": round(wall_s, 1), **counts}
    (plan.run_dir / SUMMARY).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
