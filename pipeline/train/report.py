"""What a training run prints: its plan, each epoch as it finishes, and the summary; the
task's :class:`~pipeline.fit.training.Training` gives its own figures in each."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.fit.plan import TrainPlan
from pipeline.fit.training import Training


def describe(plan: TrainPlan, parts: Training) -> str:
    s, res, o = plan.spec, plan.spec.resources, plan.spec.optim
    classes = parts.classes(plan)
    label, inputs = parts.inputs(plan)
    return "\n".join([
        f"train {s.name} ({s.task}): {plan.train_rows.num_rows} train / "
        f"{plan.val_rows.num_rows} val videos, {len(classes)} classes {list(classes)[:10]}",
        f"  model : {s.model.arch} from weights {s.model.weights}{parts.model_note(plan)}, "
        f"{o.optimizer} lr {o.lr:g} ({o.schedule}), {o.epochs} epochs x {o.batch_size} "
        f"{parts.unit}/worker/step",
        f"  {label:<6}: {inputs}",
        f"  ray   : {res.workers} workers x {res.cpus_per_worker:g} CPU, "
        f"{res.gpus_per_worker:g} GPU; max_failures {s.max_failures}"
        + ("; resuming" if plan.resume else ""),
        f"  run   : {plan.run_dir} (checkpoints every {s.checkpoint.every} epoch(s), keep "
        f"{s.checkpoint.keep}; best by {parts.metric} -> {plan.best_dir})",
    ])


def epoch_formatter(parts: Training) -> Callable[[dict[str, Any], int], str]:
    """``format(metrics, epochs)``: an epoch's line, the task's figures in the middle."""
    def format_epoch(m: dict[str, Any], epochs: int) -> str:
        errors = m.get("train_decode_errors", 0) + m.get("val_decode_errors", 0)
        return (f"epoch {m['epoch']}/{epochs}: {parts.epoch_line(m)} | lr {m['lr']:.2g}, "
                f"{m['epoch_s']:.0f} s, decode errors {errors}"
                + (f" | checkpoint {m['checkpoint']}" if m.get("checkpoint") else ""))

    return format_epoch


def fit_with_progress(trainer, history: Path, epochs: int, log: Callable[[str], None],
                      fmt: Callable[[dict[str, Any], int], str],
                      show: Callable[[dict[str, Any]], None] | None = None):
    """``trainer.fit()`` in a thread while this one prints the epochs as they finish
    (each as ``fmt(metrics, epochs)`` gives it) and, twice a second, calls ``show`` with
    the last finished epoch's metrics (a live display)."""
    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # re-raised in the caller's thread below
            box["error"] = e

    offset = history.stat().st_size if history.exists() else 0
    last: dict[str, Any] = {}
    thread = threading.Thread(target=target, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
        offset = _print_new(history, offset, epochs, log, fmt, last)
        if show is not None:
            show(last)
    _print_new(history, offset, epochs, log, fmt, last)
    if show is not None:
        show(last)
    if "error" in box:
        raise box["error"]
    return box["result"]


def _print_new(history: Path, offset: int, epochs: int, log, fmt,
               last: dict[str, Any]) -> int:
    if not history.exists():
        return offset
    with history.open("rb") as f:
        f.seek(offset)
        data = f.read()
    complete = data[:data.rfind(b"\n") + 1]
    for line in complete.decode("utf-8").splitlines():
        last.update(json.loads(line))
        log(fmt(last, epochs))
    return offset + len(complete)


def render_summary(summary: dict[str, Any], parts: Training) -> str:
    return "\n".join([
        f"{parts.headline(summary)} at epoch {summary['best_epoch']}; "
        f"{summary['wall_s']:.0f} s in all",
        f"best checkpoint: {summary['best_dir']} (use it as model.weights, task: "
        f"{summary['task']})",
        f"checkpoints and history: {summary['run_dir']}", *parts.details(summary)])
