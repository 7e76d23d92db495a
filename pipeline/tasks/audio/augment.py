"""Audio augmentation, batched on the training worker's device (torch).

On the waveform: a random crop of the decoded window (time shift), a random gain, and
white or pink noise at a random signal-to-noise ratio. On the normalised log-mel
spectrogram: SpecAugment's frequency and time masks (Park et al., 2019). Written here
rather than taken from audiomentations, which transforms one numpy example at a time on
the CPU; these run over a whole batch on the worker's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, kw_only=True)
class WaveAugment:
    samples: int  # the model's window
    gain_db: tuple[float, float]
    noise_prob: float
    noise_snr_db: tuple[float, float]
    freq_masks: int
    freq_mask_bands: int
    time_masks: int
    time_mask_frames: int

    def centre(self, wave: torch.Tensor) -> torch.Tensor:
        """The model's window from the middle of wider decoded windows ``(N, S)``."""
        lo = (wave.shape[1] - self.samples) // 2
        return wave[:, lo:lo + self.samples]

    def __call__(self, wave: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Shifted, gained and noised windows ``(N, samples)`` from ``(N, S >= samples)``."""
        n, room = wave.shape[0], wave.shape[1] - self.samples
        offsets = torch.randint(0, room + 1, (n,), generator=gen)
        idx = offsets[:, None] + torch.arange(self.samples)[None]
        x = torch.gather(wave, 1, idx.to(wave.device))
        lo, hi = self.gain_db
        gain = 10 ** ((lo + (hi - lo) * torch.rand(n, 1, generator=gen)) / 20)
        x = x * gain.to(x.device)
        return x + self.noise(x, gen)

    def noise(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """White or pink noise at a random SNR, for a random ``noise_prob`` of the rows."""
        n = x.shape[0]
        white = torch.randn(x.shape, generator=gen)
        pink = _pink(white)
        noise = torch.where(torch.rand(n, 1, generator=gen) < 0.5, white, pink).to(x.device)
        lo, hi = self.noise_snr_db
        snr = (lo + (hi - lo) * torch.rand(n, 1, generator=gen)).to(x.device)
        power = x.square().mean(dim=1, keepdim=True).clamp_min(1e-8)
        scale = torch.sqrt(power / 10 ** (snr / 10) / noise.square().mean(1, keepdim=True))
        on = (torch.rand(n, 1, generator=gen) < self.noise_prob).to(x.device)
        return noise * scale * on

    def mask(self, spec: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """SpecAugment: zero (the band mean, after normalisation) random bands and frames
        of ``(N, 1, bands, frames)``."""
        n, _, bands, frames = spec.shape
        keep = torch.ones(n, 1, bands, frames, device=spec.device)
        for count, width, size, axis in ((self.freq_masks, self.freq_mask_bands, bands, 2),
                                         (self.time_masks, self.time_mask_frames, frames, 3)):
            for _ in range(count):
                w = torch.randint(0, width + 1, (n,), generator=gen)
                start = (torch.rand(n, generator=gen) * (size - w).clamp_min(0)).long()
                pos = torch.arange(size)[None]
                hit = (pos >= start[:, None]) & (pos < (start + w)[:, None])
                shape = (n, 1, size, 1) if axis == 2 else (n, 1, 1, size)
                keep = keep * (~hit).view(shape).to(spec.device)
        return spec * keep


def _pink(white: torch.Tensor) -> torch.Tensor:
    """Pink (1/f) noise from white noise, shaped in the frequency domain."""
    spectrum = torch.fft.rfft(white, dim=1)
    f = torch.arange(spectrum.shape[1], dtype=torch.float32).clamp_min(1.0)
    return torch.fft.irfft(spectrum / f.sqrt(), n=white.shape[1], dim=1)
