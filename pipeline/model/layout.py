"""The network's input: uint8 clips -> normalised float tensors in the network's layout.

One module for the inference replica and the training loop, so that a model is served
exactly as it was trained. It imports torch: callers that must stay light import it where
they build a network.
"""

from __future__ import annotations

import torch

from pipeline.model.card import ModelCard


def channels_first(x: torch.Tensor, clip_model: bool) -> torch.Tensor:
    """Clips ``(n, T, H, W, 3)`` -> the network's layout: ``(n, 3, T, H, W)`` for clip
    models, ``(n * T, 3, H, W)`` (every frame an image) for frame models."""
    return x.permute(0, 4, 1, 2, 3) if clip_model else x.flatten(0, 1).permute(0, 3, 1, 2)


class Normalize(torch.nn.Module):
    """Clips ``(n, T, H, W, 3)`` (uint8, or float in 0..255) -> float32 in the network's
    layout, normalised with the card's mean and std (buffers: they follow ``.to(device)``,
    and checkpoints do not store them)."""

    def __init__(self, card: ModelCard):
        super().__init__()
        self.clip_model = card.clip_model
        shape = (1, 3, 1, 1, 1) if self.clip_model else (1, 3, 1, 1)
        self.register_buffer("mean", torch.tensor(card.mean).view(shape) * 255.0,
                             persistent=False)
        self.register_buffer("std", torch.tensor(card.std).view(shape) * 255.0,
                             persistent=False)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return (channels_first(clips, self.clip_model).float() - self.mean) / self.std
