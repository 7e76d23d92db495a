"""Speech and sound from the soundtrack: ``task: audio``.

The decode stage reads each file's first audio stream (PyAV), mono at the model's sample
rate, as windows (:mod:`pipeline.decode.audio`); the replica
(:mod:`pipeline.tasks.audio.replica`) computes log-mel spectrograms, runs an audio ResNet
(:mod:`pipeline.tasks.audio.models`) on every window, pools the windows into the video's
top-k, and measures speech with Silero VAD. One row per video, as every task writes.

Outcomes particular to audio (docs/audio.md): a file without an audio stream is an error
row whose reason starts with ``no_audio:``; a soundtrack silent all the way through is
``ok``, with ``silent`` true (the model still runs: a ``_silence_`` class can say so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from pydantic import Field

from pipeline.decode.audio import AudioSpec
from pipeline.decode.stage import decode_audio_batch
from pipeline.errors import ConfigError
from pipeline.model.runtime import Runtime
from pipeline.output.rows import Provenance
from pipeline.spec import DecodeResourcesSpec, JobSpec, Spec
from pipeline.tasks.audio.demo import COMMANDS as DEMOS
from pipeline.tasks.audio.evaluate import evaluate
from pipeline.tasks.audio.models import AUDIO_ARCH_NAMES, AudioCard, audio_card
from pipeline.tasks.audio.replica import VAD_RATES, AudioConfig, AudioReplica
from pipeline.tasks.base import Task, TaskLines, random_weights_note

if TYPE_CHECKING:
    from pipeline.fit.training import Training


class AudioSamplingSpec(Spec):
    """Which parts of each soundtrack the model hears."""

    sample_rate: int | None = Field(None, ge=4000, le=96_000, description="Hz; null: the "
                                    "model's (a checkpoint records the rate it was trained at)")
    window_s: float | None = Field(None, ge=0.1, le=30, description="seconds per window; "
                                   "null: the model's")
    hop_s: float = Field(0.5, gt=0, description="a window starts every hop_s seconds")
    max_windows: int = Field(60, ge=1, le=10_000, description="more windows than this are "
                             "spread evenly over the soundtrack instead")
    silence_dbfs: float = Field(-60, le=0, description="a soundtrack whose every sample is "
                                "quieter is reported as silent")


class AudioModelSpec(Spec):
    arch: Literal[AUDIO_ARCH_NAMES] = "res8"  # type: ignore[valid-type]
    weights: str = Field("none", description="'none' (random weights) or a checkpoint from "
                         "`vidbatch train` with task: audio")
    labels: str | None = Field(None, description="text file of class names, one per line")


class AudioPredictSpec(Spec):
    pooling: Literal["mean", "max"] = Field("mean", description="how window scores become "
                                            "the video's")
    top_k: int = Field(5, ge=1, le=1000)
    background: list[str] | None = Field(None, description="classes that mean nothing "
                                         "was said (pooled only when every window is "
                                         "one); null: those of BACKGROUND the model has "
                                         "(_silence_, _background_noise_, silence)")
    windows_per_batch: int = Field(64, ge=1, le=65_536, description="windows per forward "
                                   "pass, gathered across the videos of a batch")
    vad: bool = Field(True, description="Silero VAD: speech probability per window and the "
                      "video's speech_fraction")
    vad_threshold: float = Field(0.5, gt=0, lt=1)


class AudioJobSpec(JobSpec):
    task: Literal["audio"] = "audio"
    sampling: AudioSamplingSpec = AudioSamplingSpec()
    model: AudioModelSpec = AudioModelSpec()
    predict: AudioPredictSpec = AudioPredictSpec()


MAX_ROW_MB = 256  # the samples one video's windows may hold in a decoded batch
# t_s: the window's centre; speech_s: its 32 ms frame most likely speech (Silero VAD).
WINDOW = pa.struct([pa.field("t_s", pa.float32()), pa.field("label", pa.string()),
                    pa.field("score", pa.float32()), pa.field("speech", pa.float32()),
                    pa.field("speech_s", pa.float32())])


def audio_spec(s: AudioSamplingSpec, res: DecodeResourcesSpec, card: AudioCard,
               allow_uri_options: bool = False, pick: str = "all") -> AudioSpec:
    """What an audio job (or training, ``pick="loudest"``) decodes for ``card``: its
    sample rate and window length, which a job may only restate."""
    f = card.features
    for key in ("sample_rate", "window_s"):
        given = getattr(s, key)
        if given is not None and card.source == "checkpoint" and given != f[key]:
            raise ConfigError(f"sampling.{key}: {given:g} differs from the {f[key]:g} the "
                              f"checkpoint was trained at; remove the key or set {f[key]:g}")
    spec = AudioSpec(sample_rate=s.sample_rate or f["sample_rate"],
                     window_s=s.window_s or f["window_s"], hop_s=s.hop_s,
                     max_windows=s.max_windows, pick=pick, silence_dbfs=s.silence_dbfs,
                     timeout_s=res.decode_timeout_s, memory_mb=res.decode_memory_mb,
                     max_file_mb=res.max_remote_file_mb, allow_uri_options=allow_uri_options)
    row_mb = spec.max_windows * spec.window_samples * 4 / 2**20
    if row_mb > MAX_ROW_MB:
        raise ConfigError(f"sampling.max_windows: {spec.max_windows} windows of "
                          f"{spec.window_s:g} s at {spec.sample_rate} Hz are {row_mb:.0f} MiB "
                          f"per video (at most {MAX_ROW_MB}); lower max_windows")
    return spec


# Class names that mean "nothing was said" (Speech Commands' and AudioSet's).
BACKGROUND = ("_silence_", "_background_noise_", "silence", "Silence")


def background_classes(card: AudioCard, names: list[str] | None) -> tuple[int, ...]:
    """Indices of the background classes; a ``ConfigError`` names unknown ones."""
    if names is None:
        return tuple(i for i, n in enumerate(card.class_names) if n in BACKGROUND)
    unknown = [c for c in names if c not in card.class_names]
    if unknown:
        raise ConfigError(f"predict.background: {unknown} are not classes of the model "
                          f"({list(card.class_names)[:12]} ...)")
    return tuple(card.class_names.index(c) for c in names)


class AudioTask(Task):
    name = "audio"
    demos = DEMOS
    evaluation = staticmethod(evaluate)
    spec_class = AudioJobSpec
    resume_keys = ("model", "sampling", "predict")
    architectures = AUDIO_ARCH_NAMES
    decode_stage = staticmethod(decode_audio_batch)
    summary_figures = {"analysed": "count(*) FILTER (status = 'ok')",
                       "silent": "count(*) FILTER (status = 'ok' AND silent)",
                       "no_audio": "count(*) FILTER (starts_with(coalesce(error, ''), "
                                   "'no_audio:'))"}
    outcome_stages = ("no_audio",)

    def resolve(self, spec: AudioJobSpec) -> AudioCard:
        m = spec.model
        card = audio_card(m.arch, m.weights, m.labels)
        if card.source == "none":  # random weights: the spec sets the features
            s = spec.sampling
            rate = s.sample_rate or card.features["sample_rate"]
            card = audio_card(m.arch, m.weights, m.labels, {
                **card.features, "sample_rate": rate, "fmax": rate / 2,
                "window_s": s.window_s or card.features["window_s"]})
        background_classes(card, spec.predict.background)
        return card

    def fetch(self, model: AudioCard) -> None:
        """Nothing to download: checkpoints are read by the replicas, Silero VAD's
        weights ship in its wheel."""

    def decode_spec(self, spec: AudioJobSpec, model: AudioCard) -> AudioSpec:
        decode = audio_spec(spec.sampling, spec.resources, model, spec.allow_uri_options)
        if spec.predict.vad and decode.sample_rate not in VAD_RATES:
            raise ConfigError(f"predict.vad: Silero VAD takes 8000 or 16000 Hz audio and this "
                              f"job decodes at {decode.sample_rate}; set predict.vad: false")
        return decode

    def output_fields(self, arch: str) -> list[pa.Field]:
        from pipeline.tasks.audio.models import AUDIO_ARCHS

        return [
            pa.field("audio_codec", pa.string()), pa.field("audio_sample_rate", pa.int32()),
            pa.field("audio_channels", pa.int32()), pa.field("audio_duration_s", pa.float64()),
            pa.field("windows", pa.int32()), pa.field("silent", pa.bool_()),
            pa.field("peak_dbfs", pa.float32()),
            pa.field("pred_index", pa.int32()), pa.field("pred_label", pa.string()),
            pa.field("pred_score", pa.float32()),
            pa.field("topk_labels", pa.list_(pa.string())),
            pa.field("topk_scores", pa.list_(pa.float32())),
            pa.field("window_predictions", pa.list_(WINDOW)),
            pa.field("speech_fraction", pa.float32()),
            pa.field("audio_embedding", pa.list_(pa.float32(), AUDIO_ARCHS[arch].embed_dim)),
        ]

    def replica(self, spec: AudioJobSpec, model: AudioCard, runtime: Runtime
                ) -> tuple[type, dict[str, Any]]:
        p = spec.predict
        config = AudioConfig(card=model, runtime=runtime, decode=self.decode_spec(spec, model),
                             pooling=p.pooling, top_k=p.top_k,
                             background=background_classes(model, p.background),
                             windows_per_batch=p.windows_per_batch, vad=p.vad,
                             vad_threshold=p.vad_threshold, schema=self.schema(model.arch),
                             provenance=self.provenance(spec, model))
        return AudioReplica, {"config": config}

    def provenance(self, spec: AudioJobSpec, model: AudioCard) -> Provenance:
        return Provenance(model.arch, model.weights, spec.name)

    def describe(self, spec: AudioJobSpec, model: AudioCard) -> TaskLines:
        p, f = spec.predict, model.features
        return TaskLines(
            model=f"{model.arch} (audio), weights {model.weights}, "
                  f"{len(model.class_names)} classes, {f['n_mels']} log-mel bands",
            output=f"top-{p.top_k} ({p.pooling} over windows), per-window labels, "
                   "embeddings" + (", speech fraction (Silero VAD)" if p.vad else ""),
            notes=random_weights_note(model.meaningful, "predictions"))

    def record(self, model: AudioCard) -> dict[str, Any]:
        return {"arch": model.arch, "weights": model.weights,
                "classes": len(model.class_names), "features": model.features,
                "predictions_meaningful": model.meaningful}

    def summary(self, record: dict[str, Any], figures: dict[str, Any] | None = None
                ) -> list[str]:
        lines = []
        if figures is not None:
            lines.append(audio_outcomes(figures))
        if not record["model"]["predictions_meaningful"]:
            lines.append("note: weights: none -> random weights; predictions are meaningless."
                         " Train a model with `vidbatch train` (task: audio).")
        return lines

    def training(self) -> Training:
        from pipeline.tasks.audio.train import AudioTraining

        return AudioTraining()


def audio_outcomes(figures: dict[str, Any]) -> str:
    """The summary's audio line: soundtracks analysed, without audio, silent."""
    return (f"audio: {figures['analysed']} soundtrack(s) analysed ({figures['silent']} "
            f"silent throughout); {figures['no_audio']} file(s) without an audio stream "
            "(error rows, reason no_audio)")
