"""What each Ray Train worker does to train a classifier over clips (driven by
:func:`pipeline.fit.epochs.train_worker`): a zoo network with a head for the run's
classes, fed augmented clips (:mod:`pipeline.tasks.classify.augment`) in training and,
in validation, every clip of a video averaged, as inference computes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.fit.classifier import ClassifierLoop
from pipeline.fit.epochs import LoopConfig
from pipeline.model.card import ModelCard
from pipeline.model.checkpoint import save_checkpoint
from pipeline.model.layout import Normalize
from pipeline.model.zoo import build_network
from pipeline.tasks.classify.augment import ClipAugment


@dataclass(frozen=True, kw_only=True)
class ClassifyLoopConfig(LoopConfig):
    augment: ClipAugment


class ClipClassifier(nn.Module):
    """A zoo network over float clips ``(N, T, H, W, 3)`` in 0..255 -> logits, normalised
    as the inference replica does (:class:`~pipeline.model.layout.Normalize`).

    Frame models see ``N * T`` frames and average their logits over time, which is what
    inference computes (it averages embeddings, then applies the linear head).
    """

    def __init__(self, net: nn.Module, card: ModelCard):
        super().__init__()
        self.net, self.clip_model = net, card.clip_model
        self.normalize = Normalize(card)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.normalize(clips).contiguous()
        if self.clip_model:
            return self.net(x)
        n, t = clips.shape[:2]
        return self.net(x).view(n, t, -1).mean(1)


class ClassifyLoop(ClassifierLoop):
    key = "frames"

    def build(self) -> nn.Module:
        """The starting network with a head for our classes (replaced when the count
        differs)."""
        net = build_network(self.cfg.start)
        if net.fc.out_features != len(self.cfg.card.class_names):
            net.fc = nn.Linear(net.fc.in_features, len(self.cfg.card.class_names))
        return net

    def wrap(self, net: nn.Module) -> nn.Module:
        return ClipClassifier(net, self.cfg.card)

    def train_logits(self, model, batch):
        x = self.cfg.augment(batch["frames"], self.gen).to(self.device, non_blocking=True)
        return model(x)

    def val_logits(self, model, batch):
        frames = batch["frames"].to(self.device)
        n, clips = frames.shape[:2]
        return model(frames.flatten(0, 1).float()).float().view(n, clips, -1).mean(1)

    def save_model(self, path: Path, net: nn.Module, **extra) -> None:
        save_checkpoint(path, net, self.cfg.card, **extra)
