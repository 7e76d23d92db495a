"""The training seam: what a task declares so that ``vidbatch train`` trains it.

The runner (:mod:`pipeline.train`) is the same for every task: it validates the spec,
plans, decodes both splits once with Ray Data, fits a ``TorchTrainer`` whose workers run
:func:`pipeline.fit.epochs.train_worker`, prints each epoch, publishes the best checkpoint
and writes the summary. A task's :class:`Training` fills in what differs:

* its **spec** class (a :class:`~pipeline.fit.spec.TrainSpecBase`) and the data files
  its ``data`` section names besides the manifests;
* its **plan** (:meth:`Training.plan`): splits, cards, what each split decodes;
* what the decode stage makes and the loop reads (:attr:`Training.decode_stage`,
  :attr:`Training.columns`), and the **loop** itself (:meth:`Training.loop_config`: a
  :class:`~pipeline.fit.epochs.LoopConfig` naming the task's worker loop);
* the **metric** that picks the best checkpoint and the files published with it;
* its lines: in the plan, per epoch, and in the summary.

:class:`ClassifierTraining` holds the defaults of tasks that label each video with one
class. A task with training returns its ``Training`` from ``Task.training()``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pipeline.decode.stage import decode_batch
from pipeline.fit.epochs import LoopConfig
from pipeline.fit.metrics import CONFUSION_CSV, CONFUSION_JSON
from pipeline.fit.plan import TrainPlan
from pipeline.fit.spec import TrainSpecBase, parse_train_spec
from pipeline.model.checkpoint import CHECKPOINT_FILE


class Training(ABC):
    """One task's training parts. Subclasses are stateless."""

    spec_class: ClassVar[type[TrainSpecBase]]
    reference: ClassVar[str] = "docs/training.md"  # where errors send the user
    data_files: ClassVar[tuple[str, ...]] = ()  # keys of spec.data that name files
    columns: ClassVar[tuple[str, ...]]  # the decoded columns the worker loop reads
    decode_stage: ClassVar[Callable] = staticmethod(decode_batch)
    metric: ClassVar[str] = "val_acc"  # the best checkpoint has its highest value
    published: ClassVar[tuple[str, ...]] = (CHECKPOINT_FILE,)  # what <run>/best holds
    unit: ClassVar[str] = "clips"  # what a worker's step is made of, for the plan

    def parse(self, data: Any, source: str, base_dir: Path | None) -> TrainSpecBase:
        """The validated spec, relative paths resolved against ``base_dir``."""
        return parse_train_spec(self.spec_class, data, source, base_dir, self.reference,
                                self.data_files)

    @abstractmethod
    def plan(self, spec: TrainSpecBase, run_dir: Path, resume: bool) -> TrainPlan:
        """Read and check the data, resolve the models, derive the decodes. Starts
        nothing; the runner checks ``run_dir`` afterwards."""

    def fetch(self, start: Any) -> None:  # noqa: B027 (optional: most tasks download nothing)
        """Make the starting weights available on the driver (download them)."""

    def examples_per_video(self, plan: TrainPlan) -> int:
        """Training examples one decoded video gives (steps per epoch follow from it)."""
        return 1

    @abstractmethod
    def loop_config(self, plan: TrainPlan, **common: Any) -> LoopConfig:
        """The task's :class:`LoopConfig`: ``common`` holds the fields every task's has."""

    def classes(self, plan: TrainPlan) -> tuple[str, ...]:
        """The classes the plan names (without a background class)."""
        return plan.card.class_names

    @abstractmethod
    def inputs(self, plan: TrainPlan) -> tuple[str, str]:
        """The plan's line about what the model sees: ``(label, text)``."""

    def model_note(self, plan: TrainPlan) -> str:
        """Said after the starting weights in the plan (an input size)."""
        return ""

    @abstractmethod
    def epoch_line(self, m: dict[str, Any]) -> str:
        """An epoch's train and val figures, between its number and its learning rate."""

    @abstractmethod
    def best(self, metrics: dict[str, Any], plan: TrainPlan) -> dict[str, Any]:
        """The summary's figures of the best checkpoint (``metrics``: its epoch's)."""

    @abstractmethod
    def headline(self, summary: dict[str, Any]) -> str:
        """The summary's first words: the best figures and their epoch."""

    def details(self, summary: dict[str, Any]) -> list[str]:
        """Lines after the summary's paths."""
        return []


class ClassifierTraining(Training):
    """The defaults of a task whose model labels each video with one class: top-1 picks
    the best checkpoint, which is published with its confusion files."""

    published = (CHECKPOINT_FILE, CONFUSION_JSON, CONFUSION_CSV)

    def epoch_line(self, m: dict[str, Any]) -> str:
        return (f"train loss {m['train_loss']:.3f} acc {m['train_acc']:.1%} "
                f"({m['train_clips']} clips, {m['clips_per_s']:.1f} clips/s) | val loss "
                f"{m['val_loss']:.3f} top-1 {m['val_acc']:.1%} top-5 {m['val_top5']:.1%} "
                f"({m['val_clips']} videos)")

    def best(self, metrics: dict[str, Any], plan: TrainPlan) -> dict[str, Any]:
        confusion = json.loads((plan.best_dir / CONFUSION_JSON).read_text(encoding="utf-8"))
        return {"best_val_acc": metrics["val_acc"], "best_val_top5": metrics["val_top5"],
                "per_class": confusion["per_class"]}

    def headline(self, summary: dict[str, Any]) -> str:
        return (f"best val accuracy {summary['best_val_acc']:.1%} (top-5 "
                f"{summary['best_val_top5']:.1%})")

    def details(self, summary: dict[str, Any]) -> list[str]:
        lines = ["per class (val):"]
        for c in summary["per_class"]:
            confused = (f", most often taken for {c['most_confused_with']} ({c['times']}x)"
                        if c["most_confused_with"] else "")
            recall = "n/a" if c["recall"] is None else f"{c['recall']:.0%}"
            lines.append(f"  {c['class']}: {c['correct']}/{c['videos']} right ({recall})"
                         f"{confused}")
        return lines
