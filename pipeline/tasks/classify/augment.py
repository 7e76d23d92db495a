"""Train-time clip augmentation: pure torch functions over decoded uint8 clips.

Decoding is not repeated here: the training data is decoded by ``pipeline.decode`` like
inference data, only with ``temporal_positions`` evenly spaced clips per video (the usual
``clip_indices`` spread) and the frame centre-cropped to its short side instead of the
model's crop. Each epoch then, per clip and with one random generator per worker:

1. **random temporal offset**: pick one of the decoded clip positions;
2. **random resized crop**: one box per clip (the same for all its frames, so motion stays
   intact), resized to ``crop_size``; the area/aspect ranges follow torchvision's
   ``RandomResizedCrop``;
3. **horizontal flip** with probability 1/2 (again the whole clip).

Worked example: a 24-frame video, 8 frames with stride 2 (a clip spans 15 frames) and
``temporal_positions=4`` decodes clips starting at frames 0, 3, 6 and 9; epoch 1 may train
on the one starting at 6, epoch 2 on the one at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True, kw_only=True)
class ClipAugment:
    crop_size: int
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True

    def __call__(self, clips: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 ``(N, positions, T, H, W, 3)`` -> float ``(N, T, crop, crop, 3)`` in 0..255.

        Args:
            clips: the decoded candidate clips of ``N`` videos.
            gen: a CPU generator, so that a seeded run draws the same augmentations.
        """
        picked = pick_positions(clips, gen)
        out = [random_resized_crop(c, self.crop_size, self.crop_scale, self.crop_ratio, gen)
               for c in picked]
        x = torch.stack(out)
        if self.hflip:
            flip = torch.rand(x.shape[0], generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1, 1).to(x.device), x.flip(-2), x)
        return x


def pick_positions(clips: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``(N, P, T, H, W, C)`` -> ``(N, T, H, W, C)``: one random clip position per video."""
    n, positions = clips.shape[:2]
    choice = torch.randint(positions, (n,), generator=gen).to(clips.device)
    return clips[torch.arange(n, device=clips.device), choice]


def crop_box(height: int, width: int, scale: tuple[float, float],
             ratio: tuple[float, float], gen: torch.Generator) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random box with area in ``scale`` (relative) and aspect
    ratio in ``ratio`` (log-uniform), as torchvision's RandomResizedCrop draws it; after 10
    failed draws, the largest centred box with an allowed ratio."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=gen).item())
        aspect = math.exp(log_lo + (log_hi - log_lo) * torch.rand(1, generator=gen).item())
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(height - h + 1, (1,), generator=gen))
            left = int(torch.randint(width - w + 1, (1,), generator=gen))
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(clip: torch.Tensor, size: int, scale: tuple[float, float],
                        ratio: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """One clip ``(T, H, W, C)`` uint8 -> ``(T, size, size, C)`` float, one box for all
    frames."""
    top, left, h, w = crop_box(clip.shape[1], clip.shape[2], scale, ratio, gen)
    box = clip[:, top:top + h, left:left + w].permute(0, 3, 1, 2).float()
    out = F.interpolate(box, size=(size, size), mode="bilinear", align_corners=False,
                        antialias=True)
    return out.clamp_(0, 255).permute(0, 2, 3, 1)
