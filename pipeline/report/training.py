"""The report of a training run: its curves per epoch (from ``history.jsonl``), its best
checkpoint and the confusion matrix of that checkpoint's validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import OutputError
from pipeline.report import charts
from pipeline.report.page import Page, key_values, table

HISTORY = "history.jsonl"
# Curves drawn when the history has them: (title, y axis, {series name: history key}).
CURVES = (
    ("loss", "loss", {"train": "train_loss", "val": "val_loss"}),
    ("accuracy", "top-1 / top-5", {"train top-1": "train_acc", "val top-1": "val_acc",
                                   "val top-5": "val_top5"}),
    ("detection mAP", "mAP", {"val mAP@[.5:.95]": "val_map", "val mAP@.5": "val_map50"}),
    ("throughput", "per second", {"clips/s": "clips_per_s", "frames/s": "frames_per_s"}),
    ("learning rate", "lr", {"lr": "lr"}),
)


def is_training_run(location: str) -> bool:
    return (Path(location) / HISTORY).is_file()


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def training_report(location: str) -> str:
    run = Path(location)
    history = [json.loads(line) for line in (run / HISTORY).read_text().splitlines()
               if line.strip()]
    if not history:
        raise OutputError(f"{run / HISTORY} has no epochs yet; report it once an epoch ends")
    summary = _read_json(run / "train_summary.json") or {}
    page = Page(f"vidbatch training run {summary.get('name', run.name)}", str(run))
    page.section("Run", key_values([
        ("run", str(run)), ("epochs", len(history)), ("best epoch", summary.get("best_epoch")),
        ("best val top-1", summary.get("best_val_acc")),
        ("best val mAP", summary.get("best_val_map")),
        ("best checkpoint", summary.get("best_dir")), ("wall time (s)", summary.get("wall_s")),
        ("decode errors (train / val)", f"{summary.get('train_decode_errors', '?')} / "
                                        f"{summary.get('val_decode_errors', '?')}")]), key="run")
    epochs = [h["epoch"] for h in history]
    plots = []
    for title, axis, series in CURVES:
        got = {name: [h.get(key) for h in history] for name, key in series.items()
               if any(h.get(key) is not None for h in history)}
        if got:
            plots.append(page.chart(charts.line(epochs, got, title, "epoch", axis), title))
    page.section("Curves per epoch", "<div class='grid'>" + "".join(plots) + "</div>",
                 key="curves")
    confusion = _read_json(run / "best" / "confusion.json")
    if confusion:
        page.section("Confusion matrix of the best checkpoint (validation)", page.chart(
            charts.heatmap(confusion["matrix"], confusion["classes"], "confusion matrix"),
            "confusion"), key="confusion")
    per_class = summary.get("per_class") or (confusion or {}).get("per_class")
    if per_class:
        page.section("Per class", table(
            ["class", "videos", "correct", "recall", "most confused with", "times"],
            [(c.get("class"), c.get("videos"), c.get("correct"),
              f"{c['recall']:.3f}" if c.get("recall") is not None else "",
              c.get("most_confused_with"), c.get("times")) for c in per_class],
            numeric=[1, 2, 3, 5]), key="per-class")
    return page.render()
