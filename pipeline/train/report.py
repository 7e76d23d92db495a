"""What a training run prints: its plan, each epoch as it finishes, and the summary."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.train.plan import TrainPlan


def describe(plan: TrainPlan) -> str:
    s, res, t = plan.spec, plan.spec.resources, plan.train_decode
    return "\n".join([
        f"train {s.name}: {plan.train_rows.num_rows} train / {plan.val_rows.num_rows} val "
        f"videos, {len(plan.card.class_names)} classes {list(plan.card.class_names)[:10]}",
        f"  model : {s.model.arch} from weights {s.model.weights}, {s.optim.optimizer} lr "
        f"{s.optim.lr:g} ({s.optim.schedule}), {s.optim.epochs} epochs x "
        f"{s.optim.batch_size} clips/worker/step",
        f"  clips : {t.frames} frames (stride {t.stride or 'uniform'}), "
        f"{t.clips} candidate position(s), short side {t.short_side} -> crop "
        f"{plan.card.crop_size}",
        f"  ray   : {res.workers} workers x {res.cpus_per_worker:g} CPU, "
        f"{res.gpus_per_worker:g} GPU; max_failures {s.max_failures}"
        + ("; resuming" if plan.resume else ""),
        f"  run   : {plan.run_dir} (checkpoints every {s.checkpoint.every} epoch(s), keep "
        f"{s.checkpoint.keep}; best -> {plan.best_dir})",
    ])


def format_epoch(m: dict[str, Any], epochs: int) -> str:
    errors = m.get("train_decode_errors", 0) + m.get("val_decode_errors", 0)
    return (f"epoch {m['epoch']}/{epochs}: train loss {m['train_loss']:.3f} acc "
            f"{m['train_acc']:.1%} ({m['train_clips']} clips, {m['clips_per_s']:.1f} clips/s)"
            f" | val loss {m['val_loss']:.3f} top-1 {m['val_acc']:.1%} top-5 "
            f"{m['val_top5']:.1%} ({m['val_clips']} videos) | lr {m['lr']:.2g}, "
            f"{m['epoch_s']:.0f} s, decode errors {errors}"
            + (f" | checkpoint {m['checkpoint']}" if m.get("checkpoint") else ""))


def fit_with_progress(trainer, history: Path, epochs: int, log: Callable[[str], None],
                      fmt: Callable[[dict[str, Any], int], str] = format_epoch):
    """``trainer.fit()`` in a thread while this one prints the epochs as they finish
    (each as ``fmt(metrics, epochs)`` gives it)."""
    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # re-raised in the caller's thread below
            box["error"] = e

    offset = history.stat().st_size if history.exists() else 0
    thread = threading.Thread(target=target, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
        offset = _print_new(history, offset, epochs, log, fmt)
    _print_new(history, offset, epochs, log, fmt)
    if "error" in box:
        raise box["error"]
    return box["result"]


def _print_new(history: Path, offset: int, epochs: int, log, fmt) -> int:
    if not history.exists():
        return offset
    with history.open("rb") as f:
        f.seek(offset)
        data = f.read()
    complete = data[:data.rfind(b"\n") + 1]
    for line in complete.decode("utf-8").splitlines():
        log(fmt(json.loads(line), epochs))
    return offset + len(complete)


def render_summary(summary: dict[str, Any]) -> str:
    lines = [f"best val accuracy {summary['best_val_acc']:.1%} (top-5 "
             f"{summary['best_val_top5']:.1%}) at epoch {summary['best_epoch']}; "
             f"{summary['wall_s']:.0f} s in all",
             f"best checkpoint: {summary['best_dir']} (use it as model.weights)",
             f"checkpoints and history: {summary['run_dir']}", "per class (val):"]
    for c in summary["per_class"]:
        confused = (f", most often taken for {c['most_confused_with']} ({c['times']}x)"
                    if c["most_confused_with"] else "")
        recall = "n/a" if c["recall"] is None else f"{c['recall']:.0%}"
        lines.append(f"  {c['class']}: {c['correct']}/{c['videos']} right ({recall})"
                     f"{confused}")
    return "\n".join(lines)
