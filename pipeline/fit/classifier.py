"""The worker loop of a task whose model labels each video with one class (classification
over clips, audio over soundtrack windows): cross-entropy, top-1/top-5 and the confusion
matrix, summed exactly over the workers (:class:`~pipeline.fit.metrics.Tally`).

A task's subclass says what its model is fed: :meth:`ClassifierLoop.train_logits` (with
its augmentation) and :meth:`ClassifierLoop.val_logits` (plain, as inference sees it), and
how ``model.pt`` is written; the confusion files go beside it.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn

from pipeline.fit.epochs import WorkerLoop, autocast, val_batches
from pipeline.fit.metrics import Tally, write_confusion
from pipeline.model.checkpoint import CHECKPOINT_FILE


class ClassifierLoop(WorkerLoop):
    key: ClassVar[str]  # the decoded column the model reads ("frames", "audio")

    def __init__(self, *args):
        super().__init__(*args)
        o = self.cfg.optim
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.device.type == "cuda"
                                           and o.mixed_precision == "fp16")
        self.confusion: torch.Tensor | None = None  # the last evaluation's, for save

    @abstractmethod
    def train_logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of an augmented training batch."""

    @abstractmethod
    def val_logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of a val batch, one row per video, as inference computes them."""

    @abstractmethod
    def save_model(self, path: Path, net: nn.Module, **extra) -> None:
        """Write the checkpoint ``path`` of ``net`` with ``extra`` (epoch, metrics, ...)."""

    def train_epoch(self, model, shard, opt, epoch: int) -> tuple[dict, int]:
        model.train()
        bs = self.cfg.optim.batch_size
        loss_fn = nn.CrossEntropyLoss(label_smoothing=self.cfg.optim.label_smoothing)
        tally = Tally.empty(0)
        batches = shard.iter_torch_batches(batch_size=bs, local_shuffle_buffer_size=4 * bs)
        for batch, _ in zip(batches, self.lr_steps(opt, epoch)):
            y = batch["target"].to(self.device)
            with autocast(self.device, self.cfg.optim):
                logits = self.train_logits(model, batch)
                loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
            tally.add(logits.detach().float(), y, loss.detach() * len(y))
            self.stepped(loss)
        tally = tally.reduced(self.reduce)
        return tally.metrics("train"), tally.count

    @torch.no_grad()
    def evaluate(self, model, shard) -> dict[str, float]:
        model.eval()
        tally = Tally.empty(len(self.cfg.card.class_names))
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        for batch in val_batches(shard, self.cfg.optim.batch_size, self.rank, self.world,
                                 self.key):
            y = batch["target"].to(self.device)
            with autocast(self.device, self.cfg.optim):
                logits = self.val_logits(model, batch).float()
            tally.add(logits, y, loss_fn(logits, y))
        tally = tally.reduced(self.reduce)
        self.confusion = tally.confusion
        return tally.metrics("val")

    def save(self, directory: Path, net, epoch: int, metrics: dict) -> None:
        self.save_model(directory / CHECKPOINT_FILE, net, epoch=epoch, metrics=metrics,
                        **self.cfg.extra)
        write_confusion(directory, self.confusion.tolist(), self.cfg.card.class_names)
