"""Audio models without torch: the architecture table, the card, checkpoints.

Architectures (:mod:`pipeline.tasks.audio.nets` builds them):

* ``res8``, ``res15``: Tang & Lin's keyword-spotting ResNets (45 channels; res8 pools the
  spectrogram 4x3 after its stem and is about 20x cheaper; res15 is their most accurate);
* ``resnet18_audio``, ``resnet34_audio``: torchvision's ResNets with a one-channel stem
  over the spectrogram, as PANNs does for sound events.

Each classifies one window of audio (``features.window_s`` at ``features.sample_rate``);
a job pools the windows of a soundtrack (``pipeline.tasks.audio.job``). No audio weights are
published for torchvision, so weights are ``none`` (random, seeded) or a checkpoint from
``vidbatch train`` with ``task: audio``, which records its features, so that inference
computes exactly the spectrograms it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import WeightsError
from pipeline.model.checkpoint import (
    CHECKPOINT_FORMAT,
    read_checkpoint,
    task_checkpoint_metadata,
)
from pipeline.model.zoo import RANDOM_WEIGHTS_SEED, labels_file
from pipeline.paths import is_checkpoint_ref


@dataclass(frozen=True)
class AudioArch:
    embed_dim: int
    n_mels: int


AUDIO_ARCHS = {"res8": AudioArch(45, 40), "res15": AudioArch(45, 40),
               "resnet18_audio": AudioArch(512, 64), "resnet34_audio": AudioArch(512, 64)}
AUDIO_ARCH_NAMES = tuple(AUDIO_ARCHS)
DEFAULT_CLASSES = 12  # Speech Commands' 10 words, _silence_ and _unknown_


def default_features(arch: str, sample_rate: int = 16_000, window_s: float = 1.0
                     ) -> dict[str, Any]:
    """The log-mel features an architecture is built for: 25 ms windows every 10 ms."""
    return {"sample_rate": sample_rate, "window_s": window_s,
            "n_mels": AUDIO_ARCHS[arch].n_mels, "win_ms": 25.0, "hop_ms": 10.0,
            "fmin": 20.0, "fmax": sample_rate / 2}


@dataclass(frozen=True)
class AudioCard:
    arch: str
    weights: str  # as the user wrote it, or "none"
    source: str  # "none" or "checkpoint"
    class_names: tuple[str, ...]
    features: dict[str, Any]  # default_features' keys
    meaningful: bool
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def embed_dim(self) -> int:
        return AUDIO_ARCHS[self.arch].embed_dim


def audio_card(arch: str, weights: str, labels: str | None = None,
               features: dict[str, Any] | None = None) -> AudioCard:
    """Resolve classes and features without building the network. ``features`` (weights
    none, or a training run's own) replaces the defaults."""
    names = labels_file(labels)
    if weights.lower() == "none":
        names = names or tuple(f"class_{i}" for i in range(DEFAULT_CLASSES))
        return AudioCard(arch, "none", "none", names, features or default_features(arch),
                         meaningful=False)
    if not is_checkpoint_ref(weights):
        raise WeightsError(f"model.weights: {weights!r}: audio models have no published "
                           "weights here; use 'none' or a checkpoint from `vidbatch train` "
                           "(task: audio)")
    data = task_checkpoint_metadata(weights, "audio", "an audio", arch)
    trained = tuple(data["class_names"])
    if names is not None and len(names) != len(trained):
        raise WeightsError(f"model.labels has {len(names)} names but the checkpoint has "
                           f"{len(trained)} classes; make them match or remove model.labels")
    return AudioCard(arch, weights, "checkpoint", names or trained, dict(data["features"]),
                     meaningful=True, extra={"metrics": data.get("metrics", {})})


def build_audio_net(card: AudioCard):
    """The :class:`~pipeline.tasks.audio.nets.AudioNet` of a card, weights loaded (CPU)."""
    import torch

    from pipeline.tasks.audio.nets import AudioNet

    if card.source == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return AudioNet(card.arch, len(card.class_names), card.features)
    net = AudioNet(card.arch, len(card.class_names), card.features)
    try:
        net.load_state_dict(read_checkpoint(card.weights)["state_dict"])
    except RuntimeError as e:
        raise WeightsError(f"model.weights: {card.weights} does not fit {card.arch}: "
                           f"{str(e)[:400]}") from e
    return net


def save_audio_checkpoint(path: str | Path, net, card: AudioCard, **extra: Any) -> Path:
    """An audio checkpoint (``task: audio``): architecture, classes, features and weights,
    plus plain data (``spec``, ``metrics``, ``epoch``)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "task": "audio", "arch": card.arch,
                "class_names": list(card.class_names), "features": dict(card.features),
                "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                **extra}, path)
    return path
