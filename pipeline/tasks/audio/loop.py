"""What each Ray Train worker does to train an audio model (driven by
:func:`pipeline.fit.epochs.train_worker`), over soundtrack windows instead of clips: each
decoded row is its loudest window with room to shift, augmented on the waveform and the
spectrogram (:mod:`pipeline.tasks.audio.augment`); validation scores the centred windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.fit.classifier import ClassifierLoop
from pipeline.fit.epochs import LoopConfig
from pipeline.tasks.audio.augment import WaveAugment
from pipeline.tasks.audio.models import build_audio_net, save_audio_checkpoint


@dataclass(frozen=True, kw_only=True)
class AudioLoopConfig(LoopConfig):
    augment: WaveAugment


class _Masked(nn.Module):
    """The network as DDP sees it: ``forward(wave, mask)`` (SpecAugment inside)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, wave: torch.Tensor, mask=None) -> torch.Tensor:
        return self.net.head(self.net.embed(wave, mask))


class AudioLoop(ClassifierLoop):
    key = "audio"

    def build(self) -> nn.Module:
        """The starting network with a head for our classes (new when the count differs)."""
        net = build_audio_net(self.cfg.start)
        if net.head.out_features != len(self.cfg.card.class_names):
            net.head = nn.Linear(net.head.in_features, len(self.cfg.card.class_names))
        return net

    def wrap(self, net: nn.Module) -> nn.Module:
        return _Masked(net)

    def train_logits(self, model, batch):
        """Shifted, gained and noised windows; the masks go between the network's front
        end and its body."""
        augment = self.cfg.augment
        wave = augment(batch["audio"][:, 0].to(self.device), self.gen)
        return model(wave, partial(augment.mask, gen=self.gen))

    def val_logits(self, model, batch):
        return model(self.cfg.augment.centre(batch["audio"][:, 0].to(self.device)))

    def save_model(self, path: Path, net: nn.Module, **extra) -> None:
        save_audio_checkpoint(path, net, self.cfg.card, **extra)
