"""Plan an audio training run: labelled manifests, the model's features, the decode.

The manifests are read and split as for classification (:func:`pipeline.train.plan.
read_splits`: labels required, a class per label, val classes known to train). Each
soundtrack is decoded once into its loudest window, widened by ``augment.time_shift_s``
each way so that training can shift it; validation hears the centre.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.decode.audio import AudioSpec
from pipeline.errors import ConfigError
from pipeline.model.audio_models import AudioCard, audio_card, default_features
from pipeline.train.audio_spec import AudioTrainSpec
from pipeline.train.plan import check_run_dir, read_splits


@dataclass(frozen=True)
class AudioTrainPlan:
    spec: AudioTrainSpec
    start: AudioCard  # the starting weights
    card: AudioCard  # the model being trained: our classes, its features
    decode: AudioSpec  # train and val alike: the loudest window, with shift room
    train_rows: pa.Table  # manifest rows + "target" (class index)
    val_rows: pa.Table
    run_dir: Path
    resume: bool

    @property
    def best_dir(self) -> Path:
        return self.run_dir / "best"


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


def plan_audio_training(spec: AudioTrainSpec, resume: bool = False) -> AudioTrainPlan:
    """Validate an audio training spec against its data and storage. Starts nothing."""
    train, val, names = read_splits(spec)
    start = starting_card(spec)
    run_dir = Path(spec.checkpoint.storage_path) / spec.name
    check_run_dir(run_dir, resume)
    card = replace(start, weights=str(run_dir / "best"), source="checkpoint",
                   class_names=names, meaningful=True, extra={})
    f, res = card.features, spec.resources
    decode = AudioSpec(sample_rate=f["sample_rate"],
                       window_s=f["window_s"] + 2 * spec.augment.time_shift_s,
                       hop_s=spec.sampling.hop_s, max_windows=spec.sampling.max_windows,
                       pick="loudest", timeout_s=res.decode_timeout_s,
                       memory_mb=res.decode_memory_mb, max_file_mb=res.max_remote_file_mb,
                       allow_uri_options=spec.allow_uri_options)
    return AudioTrainPlan(spec, start, card, decode, train, val, run_dir, resume)
