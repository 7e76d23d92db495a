"""Training an audio model: ``vidbatch train`` with ``task: audio``.

The sections every task's training has (:mod:`pipeline.fit.spec`: labelled manifests,
optimizer, resources, checkpoints, failures) around audio's own: the log-mel **features**
the model is built for (recorded in its checkpoints, so jobs compute the same), where in
each soundtrack the training example is taken (**sampling**: the loudest window, found
every ``hop_s``), and audio **augmentation**.

The manifests are read and split as for classification
(:func:`pipeline.fit.plan.read_splits`). Each soundtrack is decoded once into its loudest
window, widened by ``augment.time_shift_s`` each way so that training can shift it;
validation hears the centre. The worker loop is :mod:`pipeline.tasks.audio.loop`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.decode.audio import AudioSpec
from pipeline.decode.stage import decode_audio_batch
from pipeline.errors import ConfigError
from pipeline.fit.epochs import LoopConfig
from pipeline.fit.plan import TrainPlan, read_splits
from pipeline.fit.spec import TrainSpecBase
from pipeline.fit.training import ClassifierTraining
from pipeline.spec import Spec
from pipeline.tasks.audio.augment import WaveAugment
from pipeline.tasks.audio.models import AUDIO_ARCH_NAMES, AudioCard, audio_card, default_features


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


class AudioTrainSpec(TrainSpecBase):
    features: AudioFeaturesSpec = AudioFeaturesSpec()
    sampling: AudioTrainSamplingSpec = AudioTrainSamplingSpec()
    augment: AudioAugmentSpec = AudioAugmentSpec()
    model: AudioTrainModelSpec = AudioTrainModelSpec()


def spec_features(spec: AudioTrainSpec) -> dict[str, Any]:
    """The features the spec asks for, the architecture's defaults filled in."""
    f = spec.features
    out = default_features(spec.model.arch, f.sample_rate, f.window_s)
    out.update({k: v for k, v in f.model_dump().items() if v is not None})
    out["fmax"] = f.fmax or f.sample_rate / 2
    return out


def starting_card(spec: AudioTrainSpec) -> AudioCard:
    """The starting weights; a checkpoint's features must be the spec's (fine-tuning
    keeps the spectrograms the weights learned from)."""
    m = spec.model
    wanted = spec_features(spec)
    start = audio_card(m.arch, m.weights, None, wanted)
    if start.source == "checkpoint":
        given = spec.features.model_fields_set
        differ = [k for k in given if k in start.features and start.features[k] != wanted[k]]
        if differ:
            raise ConfigError(f"features.{differ[0]}: the checkpoint {m.weights} was trained "
                              f"with {differ[0]} = {start.features[differ[0]]}; remove the key "
                              "to fine-tune with the checkpoint's features")
    return start


class AudioTraining(ClassifierTraining):
    spec_class = AudioTrainSpec
    reference = "docs/audio.md"
    columns = ("row", "audio", "target")
    decode_stage = staticmethod(decode_audio_batch)
    unit = "windows"

    def plan(self, spec: AudioTrainSpec, run_dir: Path, resume: bool) -> TrainPlan:
        train, val, names = read_splits(spec)
        start = starting_card(spec)
        card = replace(start, weights=str(run_dir / "best"), source="checkpoint",
                       class_names=names, meaningful=True, extra={})
        f, res = card.features, spec.resources
        decode = AudioSpec(sample_rate=f["sample_rate"],
                           window_s=f["window_s"] + 2 * spec.augment.time_shift_s,
                           hop_s=spec.sampling.hop_s, max_windows=spec.sampling.max_windows,
                           pick="loudest", timeout_s=res.decode_timeout_s,
                           memory_mb=res.decode_memory_mb, max_file_mb=res.max_remote_file_mb,
                           allow_uri_options=spec.allow_uri_options)
        return TrainPlan(spec, start, card, decode, decode, train, val, run_dir, resume)

    def loop_config(self, plan: TrainPlan, **common: Any) -> LoopConfig:
        from pipeline.tasks.audio.loop import AudioLoop, AudioLoopConfig

        a, f = plan.spec.augment, plan.card.features
        augment = WaveAugment(samples=round(f["window_s"] * f["sample_rate"]),
                              gain_db=a.gain_db, noise_prob=a.noise_prob,
                              noise_snr_db=a.noise_snr_db, freq_masks=a.freq_masks,
                              freq_mask_bands=a.freq_mask_bands, time_masks=a.time_masks,
                              time_mask_frames=a.time_mask_frames)
        return AudioLoopConfig(worker=AudioLoop, augment=augment, **common)

    def inputs(self, plan: TrainPlan) -> tuple[str, str]:
        f = plan.card.features
        return "audio", (f"{plan.train_decode.describe()}; the model hears "
                         f"{f['window_s']:g} s as {f['n_mels']} log-mel bands every "
                         f"{f['hop_ms']:g} ms")
