"""Classification metrics for training: running sums, their all-reduce, confusion files.

Workers keep sums (never means), so that adding them up across workers gives exact
dataset-wide numbers however unevenly the rows were spread.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

CONFUSION_JSON = "confusion.json"
CONFUSION_CSV = "confusion.csv"


@dataclass
class Tally:
    loss_sum: float
    top1: int
    top5: int
    count: int
    confusion: torch.Tensor  # (true, predicted) counts; 0x0 when not tracked

    @classmethod
    def empty(cls, num_classes: int) -> Tally:
        return cls(0.0, 0, 0, 0, torch.zeros(num_classes, num_classes, dtype=torch.int64))

    def add(self, logits: torch.Tensor, target: torch.Tensor, loss_sum: torch.Tensor) -> None:
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices.cpu()
        target = target.cpu()
        self.top1 += int((top[:, 0] == target).sum())
        self.top5 += int((top == target[:, None]).any(dim=1).sum())
        self.count += len(target)
        self.loss_sum += float(loss_sum)
        if self.confusion.numel():
            n = self.confusion.shape[0]
            self.confusion += torch.bincount(target * n + top[:, 0], minlength=n * n).view(n, n)

    def reduced(self, reduce) -> Tally:
        """The sums over all workers; ``reduce`` all-reduces a float64 tensor in place."""
        flat = torch.cat([torch.tensor([self.loss_sum, self.top1, self.top5, self.count],
                                       dtype=torch.float64),
                          self.confusion.flatten().double()])
        flat = reduce(flat)
        n = self.confusion.shape[0]
        return Tally(float(flat[0]), int(flat[1]), int(flat[2]), int(flat[3]),
                     flat[4:].round().long().view(n, n))

    def metrics(self, prefix: str) -> dict[str, float]:
        c = max(1, self.count)
        return {f"{prefix}_loss": self.loss_sum / c, f"{prefix}_acc": self.top1 / c,
                f"{prefix}_top5": self.top5 / c, f"{prefix}_clips": self.count}


def confusion_summary(confusion: list[list[int]], names: tuple[str, ...] | list[str]
                      ) -> list[dict]:
    """Per class: videos, correct, recall, and the class it is most often mistaken for."""
    out = []
    for i, row in enumerate(confusion):
        total = sum(row)
        wrong = [(n, names[j]) for j, n in enumerate(row) if j != i and n]
        worst = max(wrong) if wrong else None
        out.append({"class": names[i], "videos": total, "correct": row[i],
                    "recall": round(row[i] / total, 4) if total else None,
                    "most_confused_with": worst[1] if worst else None,
                    "times": worst[0] if worst else 0})
    return out


def write_confusion(directory: Path, confusion: list[list[int]],
                    names: tuple[str, ...] | list[str]) -> None:
    """``confusion.json`` (matrix + per-class summary) and ``confusion.csv`` (the matrix,
    rows = true class, columns = predicted) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFUSION_JSON).write_text(json.dumps({
        "classes": list(names), "rows": "true class", "columns": "predicted class",
        "matrix": confusion, "per_class": confusion_summary(confusion, names),
    }, indent=2), encoding="utf-8")
    with (directory / CONFUSION_CSV).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *names])
        for name, row in zip(names, confusion):
            w.writerow([name, *row])
