"""Audio training specs: ``vidbatch train`` with ``task: audio``.

The sections of a classification run (:mod:`pipeline.train.spec`: labelled manifests,
optimizer, resources, checkpoints, failures) around audio's own: the log-mel
**features** the model is built for (recorded in its checkpoints, so jobs compute the
same), where in each soundtrack the training example is taken (**sampling**: the loudest
window, found every ``hop_s``), and audio **augmentation**.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.model.audio_models import AUDIO_ARCH_NAMES
from pipeline.spec import NAME_PATTERN, Spec
from pipeline.train.spec import (
    CheckpointSpec,
    DataSpec,
    OptimSpec,
    TrainResourcesSpec,
    parse_train_spec,
)


class AudioFeaturesSpec(Spec):
    """What the model hears: windows of ``window_s`` at ``sample_rate``, as log-mel."""

    sample_rate: int = Field(16_000, ge=4000, le=96_000)
    window_s: float = Field(1.0, ge=0.1, le=30)
    n_mels: int | None = Field(None, ge=8, le=256, description="null: the architecture's "
                               "(40 for res8/res15, 64 for the torchvision ResNets)")
    win_ms: float = Field(25, gt=0, le=200)
    hop_ms: float = Field(10, gt=0, le=100)
    fmin: float = Field(20, ge=0)
    fmax: float | None = Field(None, gt=0, description="null: half the sample rate")


class AudioTrainSamplingSpec(Spec):
    """Each soundtrack gives one training example: its loudest window, searched every
    ``hop_s`` (at most ``max_windows`` candidates)."""

    hop_s: float = Field(0.1, gt=0)
    max_windows: int = Field(100, ge=1, le=10_000)


def _ordered(v: tuple[float, float]) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError("must be [low, high] with low <= high")
    return v


class AudioAugmentSpec(Spec):
    """Train-time augmentation (validation hears the plain centred window)."""

    time_shift_s: float = Field(0.1, ge=0, le=5, description="random shift of the window "
                                "around the loudest part, each way")
    gain_db: tuple[float, float] = Field((-6, 6), description="random gain range")
    noise_prob: float = Field(0.8, ge=0, le=1, description="chance of added noise")
    noise_snr_db: tuple[float, float] = Field((0, 20), description="signal-to-noise ratio "
                                              "range of the added noise (white or pink)")
    freq_masks: int = Field(2, ge=0, le=10, description="SpecAugment frequency masks")
    freq_mask_bands: int = Field(8, ge=1)
    time_masks: int = Field(2, ge=0, le=10, description="SpecAugment time masks")
    time_mask_frames: int = Field(10, ge=1)

    _ranges = field_validator("gain_db", "noise_snr_db")(classmethod(
        lambda cls, v: _ordered(v)))


class AudioTrainModelSpec(Spec):
    arch: Literal[AUDIO_ARCH_NAMES] = "res8"  # type: ignore[valid-type]
    weights: str = Field("none", description="'none' (from scratch) or an audio checkpoint "
                         "to fine-tune")


class AudioTrainSpec(Spec):
    task: Literal["audio"]
    name: str = Field(pattern=NAME_PATTERN)
    data: DataSpec
    features: AudioFeaturesSpec = AudioFeaturesSpec()
    sampling: AudioTrainSamplingSpec = AudioTrainSamplingSpec()
    augment: AudioAugmentSpec = AudioAugmentSpec()
    model: AudioTrainModelSpec = AudioTrainModelSpec()
    optim: OptimSpec = OptimSpec()
    resources: TrainResourcesSpec = TrainResourcesSpec()
    checkpoint: CheckpointSpec
    max_failures: int = Field(1, ge=-1)
    allow_uri_options: bool = False


def parse_audio_trainspec(data: Any, source: str = "<spec>", base_dir: Path | None = None
                          ) -> AudioTrainSpec:
    """Validate a parsed audio training spec; resolve relative paths."""
    return parse_train_spec(AudioTrainSpec, data, source, base_dir, "docs/audio.md")
