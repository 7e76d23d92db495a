"""How good an audio job's rows are against labels: ``vidbatch evaluate`` for ``task:
audio``.

The labels are a manifest-like file (CSV, Parquet or JSONL) with ``video_id`` and
``label``, and optionally ``onset_s`` (when the word starts, in seconds; empty for clips
without one). On the job's ok rows:

* **top-1** (``pred_label``) and **top-5** (``topk_labels``), and the confusion matrix
  (torchmetrics), over the videos the labels name;
* **when** (with ``onset_s``): for each video whose word some window heard, the time
  (``t_s``, the window's centre) of the window that heard it most surely, and its distance
  from the true onset: the share within ``--within`` seconds (0.5) and the median; also
  the share of all windows labelled with the word whose time is within it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import ManifestError
from pipeline.manifest import read_table
from pipeline.tasks.detect_eval import read_rows


def _labels(path: str) -> dict[str, dict[str, Any]]:
    table = read_table(path, "labels file", "video_id")
    if "label" not in table.column_names:
        raise ManifestError(f"labels file {path} has no 'label' column; give video_id, label "
                            "and optionally onset_s")
    return {r["video_id"]: r for r in table.to_pylist()}


def _onset(v) -> float | None:
    try:
        return None if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return None


def evaluate(output: str, labels_path: str, within: float = 0.5) -> dict[str, Any]:
    """The figures of the module docstring for the audio job at ``output``."""
    import torch
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    truth = _labels(labels_path)
    rows = [r for r in read_rows(output).to_pylist() if r["video_id"] in truth]
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise ManifestError(f"no ok row of {output} has a label in {labels_path}")
    names = sorted({str(truth[r["video_id"]]["label"]) for r in ok}
                   | {r["pred_label"] for r in ok})
    index = {n: i for i, n in enumerate(names)}
    true = [index[str(truth[r["video_id"]]["label"])] for r in ok]
    pred = [index[r["pred_label"]] for r in ok]
    confusion = multiclass_confusion_matrix(torch.tensor(pred), torch.tensor(true),
                                            num_classes=len(names)).tolist()
    result = {
        "videos": {"labelled": len(rows), "ok": len(ok), "error": len(rows) - len(ok)},
        "top1": float(np.mean([p == t for p, t in zip(pred, true)])),
        "top5": float(np.mean([str(truth[r["video_id"]]["label"]) in r["topk_labels"][:5]
                               for r in ok])),
        "classes": names, "confusion": confusion,
        "per_class_recall": {n: round(row[i] / sum(row), 4) if sum(row) else None
                             for i, (n, row) in enumerate(zip(names, confusion))}}
    return {**result, **_timing(ok, truth, within)}


def _timing(ok: list[dict], truth: dict[str, dict], within: float) -> dict[str, Any]:
    """How close the windows that heard each video's word are to its onset."""
    best, near, heard_windows, spoken = [], 0, 0, 0
    for r in ok:
        label = str(truth[r["video_id"]]["label"])
        onset = _onset(truth[r["video_id"]].get("onset_s"))
        if onset is None:
            continue
        spoken += 1
        heard = [w for w in r["window_predictions"] if w["label"] == label]
        heard_windows += len(heard)
        near += sum(abs(w["t_s"] - onset) <= within for w in heard)
        if heard:
            best.append(abs(max(heard, key=lambda w: w["score"])["t_s"] - onset))
    if not spoken:
        return {}
    best_arr = np.asarray(best)
    return {"timing": {
        "videos_with_onset": spoken, "word_heard": len(best),
        f"best_window_within_{within:g}s": float(np.mean(best_arr <= within)) if best else None,
        "best_window_median_error_s": float(np.median(best_arr)) if best else None,
        f"word_windows_within_{within:g}s": near / heard_windows if heard_windows else None,
        "word_windows": heard_windows}}
