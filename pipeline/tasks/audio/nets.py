"""Audio networks: a log-mel front end and ResNets over spectrograms (torch).

Every network maps waveform windows ``(N, samples)`` at the card's sample rate to logits,
through the same three parts, so that training and inference cannot disagree on features:

* :class:`LogMel`: ``torch.stft`` (Hann window) -> power -> a mel filterbank -> log. The
  filterbank is librosa's (``librosa.filters.mel``, Slaney-style), computed once and kept
  as a buffer: torchaudio's releases are tied to exact torch versions and none matches
  torch 2.14. Features are computed on the replica, batched with the model (measured in
  docs/audio.md), so the decode stage ships samples and training can augment them;
* a **body** that returns the pooled embedding: Tang & Lin's keyword-spotting ResNets
  (``res8``, ``res15``; "Deep Residual Learning for Small-Footprint Keyword Spotting",
  ICASSP 2018), or torchvision's ResNet-18/34 with a one-channel stem (PANNs' approach);
* a linear **head**.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class LogMel(nn.Module):
    """Waveforms ``(N, samples)`` -> log-mel spectrograms ``(N, 1, n_mels, frames)``."""

    def __init__(self, sample_rate: int, n_mels: int, win_ms: float, hop_ms: float,
                 fmin: float, fmax: float | None):
        super().__init__()
        from librosa.filters import mel

        self.win = round(sample_rate * win_ms / 1000)
        self.hop = round(sample_rate * hop_ms / 1000)
        self.n_fft = 1 << math.ceil(math.log2(self.win))
        bank = mel(sr=sample_rate, n_fft=self.n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        self.register_buffer("bank", torch.from_numpy(bank).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wave.float(), self.n_fft, self.hop, self.win, self.window,
                          center=True, return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (N, freq, frames)
        return torch.log(self.bank @ power + 1e-6).unsqueeze(1)


class _Block(nn.Module):
    """Two 3x3 convolutions at one dilation, each followed by ReLU and an affine-free
    batch norm, with an identity shortcut (the residual block of res8/res15)."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.a = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.b = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.na = nn.BatchNorm2d(width, affine=False)
        self.nb = nn.BatchNorm2d(width, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.na(torch.relu(self.a(x)))
        return self.nb(torch.relu(self.b(y))) + x


class KwsResNet(nn.Module):
    """res8 (``pool`` after the stem, 3 blocks) or res15 (no pooling, 6 blocks with
    dilations growing 1, 2, 2, 4, 8, 8 so the receptive field covers a second of
    audio): features ``(N, 1, mels, frames)`` -> embeddings ``(N, width)``."""

    def __init__(self, blocks: int, width: int = 45, pool: tuple[int, int] | None = None,
                 dilate: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.pool = nn.AvgPool2d(pool) if pool else nn.Identity()
        self.blocks = nn.Sequential(*(
            _Block(width, 2 ** ((2 * i + 1) // 3) if dilate else 1) for i in range(blocks)))
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.stem(x)))
        return self.blocks(x).mean(dim=(2, 3))


def _torchvision_body(arch: str) -> nn.Module:
    """torchvision's ResNet with a one-channel stem and no classifier (PANNs style)."""
    from torchvision.models import get_model

    net = get_model(arch, weights=None)
    net.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    net.out_features = net.fc.in_features
    net.fc = nn.Identity()
    return net


def audio_body(arch: str) -> nn.Module:
    """The body of an architecture of :data:`pipeline.tasks.audio.models.AUDIO_ARCHS`."""
    if arch == "res8":
        return KwsResNet(3, pool=(4, 3))
    if arch == "res15":
        return KwsResNet(6, dilate=True)
    return _torchvision_body(arch.removesuffix("_audio"))


class AudioNet(nn.Module):
    """Waveform windows -> logits; :meth:`embed` gives the pooled embeddings the head
    reads. ``bn0`` normalises each mel band (PANNs), learned with the network."""

    def __init__(self, arch: str, classes: int, features: dict):
        super().__init__()
        self.features = LogMel(features["sample_rate"], features["n_mels"],
                               features["win_ms"], features["hop_ms"], features["fmin"],
                               features.get("fmax"))
        self.bn0 = nn.BatchNorm2d(features["n_mels"])
        self.body = audio_body(arch)
        self.head = nn.Linear(self.body.out_features, classes)

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.features(wave)  # (N, 1, mels, frames)
        return self.bn0(x.transpose(1, 2)).transpose(1, 2)

    def embed(self, wave: torch.Tensor, mask=None) -> torch.Tensor:
        """Embeddings of waveforms; ``mask(spectrogram)``, training only, masks
        features (SpecAugment) between the front end and the body."""
        x = self.spectrogram(wave)
        return self.body(mask(x) if mask is not None else x)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(wave))
