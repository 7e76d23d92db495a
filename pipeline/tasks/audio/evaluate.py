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
from pipeline.output.store import read_rows


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
    """How close the windows that heard each video's word are to its onset, by their
    centre (``t_s``) and by where Silero VAD puts the speech in them (``speech_s``)."""
    heard_by_video, spoken = [], 0
    for r in ok:
        label = str(truth[r["video_id"]]["label"])
        onset = _onset(truth[r["video_id"]].get("onset_s"))
        if onset is None:
            continue
        spoken += 1
        heard = [w for w in r["window_predictions"] if w["label"] == label]
        if heard:
            heard_by_video.append((onset, heard))
    if not spoken:
        return {}
    out: dict[str, Any] = {"videos_with_onset": spoken, "word_heard": len(heard_by_video),
                           "word_windows": sum(len(h) for _, h in heard_by_video)}
    for key in ("t_s", "speech_s"):
        best = [abs(max(h, key=lambda w: w["score"])[key] - onset)
                for onset, h in heard_by_video if max(h, key=lambda w: w["score"])[key]
                is not None]
        every = [abs(w[key] - onset) for onset, h in heard_by_video for w in h
                 if w[key] is not None]
        if best:
            out[f"{key}: best_window_within_{within:g}s"] = float(np.mean(np.less_equal(
                best, within)))
            out[f"{key}: best_window_median_error_s"] = float(np.median(best))
            out[f"{key}: word_windows_within_{within:g}s"] = float(np.mean(np.less_equal(
                every, within)))
    return {"timing": out}
