"""The audio replica: windows of soundtracks in, one row per video out.

Every window of every decoded row of a batch goes through the network together
(``predict.windows_per_batch`` at a time): log-mel features in fp32, the ResNet at the
job's precision. A video's windows are then pooled: the mean (or max) of their class
probabilities, over the windows whose best class is not a background class
(``_silence_``: nothing was said), or over all windows when every one is background. So a
word spoken in one window of nine decides the video (``_unknown_``, another word, is not
background), and a clip without speech says ``_silence_``. Its embedding is the mean of
its windows' embeddings.

Silero VAD (its wheel ships the weights) gives each window's speech probability, the
highest over its 32 ms frames, and the time of that frame (``speech_s``: where in the window
the speech is, finer than the window's centre ``t_s``); ``speech_fraction`` is the share of
windows at or above ``predict.vad_threshold``.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.decode.audio import AudioSpec
from pipeline.model.runtime import Runtime, Streams, bf16_cpu_warning, pick_device
from pipeline.output.rows import (
    Batch,
    Provenance,
    inference_failed,
    nullable_float,
    nullable_int,
    per_ok,
    rows_table,
    strings,
)
from pipeline.tasks.audio.models import AudioCard

VAD_RATES = (8000, 16000)  # the rates Silero VAD takes


@dataclass(frozen=True, kw_only=True)
class AudioConfig:
    card: AudioCard
    runtime: Runtime
    decode: AudioSpec
    pooling: str
    top_k: int
    background: tuple[int, ...]
    windows_per_batch: int
    vad: bool
    vad_threshold: float
    schema: pa.Schema
    provenance: Provenance


def pool(probs: np.ndarray, background: tuple[int, ...], how: str) -> np.ndarray:
    """A video's class scores from its windows' probabilities ``(windows, classes)``."""
    keep = ~np.isin(probs.argmax(axis=1), background)
    chosen = probs[keep] if keep.any() else probs
    return chosen.max(axis=0) if how == "max" else chosen.mean(axis=0)


class AudioReplica:
    """One audio model replica; Ray Data constructs it once per actor."""

    def __init__(self, config: AudioConfig):
        import torch

        from pipeline.tasks.audio.models import build_audio_net

        self.config = c = config
        self.device = torch.device(pick_device(c.runtime.device))
        warning = bf16_cpu_warning(c.runtime.precision, self.device.type)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        self.streams = Streams(c.runtime)
        self.net = build_audio_net(c.card).to(self.device).eval()
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[
            c.runtime.precision]
        self.names = np.array(c.card.class_names, dtype=object)
        self.vad = None
        if c.vad:
            from silero_vad import load_silero_vad

            with warnings.catch_warnings():  # its TorchScript file: torch.jit is deprecated
                warnings.simplefilter("ignore", FutureWarning)
                self.vad = load_silero_vad()

    def _forward(self, windows: np.ndarray) -> np.ndarray:
        """``[probabilities | embedding]`` of each window, ``(n, classes + dim)``."""
        import torch

        out = []
        for a in range(0, len(windows), self.config.windows_per_batch):
            x = torch.from_numpy(windows[a:a + self.config.windows_per_batch]).to(self.device)
            with torch.inference_mode():
                spec = self.net.spectrogram(x)
                with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                    enabled=self.dtype is not None):
                    emb = self.net.body(spec).float()
                probs = torch.softmax(self.net.head(emb), dim=1)
            out.append(torch.cat([probs, emb], dim=1).cpu().numpy())
        return np.concatenate(out)

    def speech(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each window's highest Silero VAD speech probability, and the time in the window
        (s from its start) of the 32 ms frame that has it."""
        import torch

        rate = self.config.decode.sample_rate
        step = 512 if rate == 16000 else 256
        x = torch.from_numpy(windows)
        best = np.zeros(len(windows), np.float32)
        where = np.zeros(len(windows), np.float64)
        for a in range(0, len(windows), 256):
            chunk = x[a:a + 256]
            self.vad.reset_states()
            with torch.inference_mode():
                probs = [self.vad(chunk[:, s:s + step], rate).reshape(-1)
                         for s in range(0, chunk.shape[1] - step + 1, step)]
            top = torch.stack(probs, 1).max(dim=1)
            best[a:a + len(chunk)] = top.values.numpy()
            where[a:a + len(chunk)] = (top.indices.numpy() + 0.5) * step / rate
        return best, where

    def analyse(self, audio: np.ndarray, counts: np.ndarray):
        """``(per-window probabilities, embeddings, (speech, where) or None)`` of the
        filled windows of rows ``audio`` ``(rows, windows, samples)``, flat, rows in order."""
        flat = np.concatenate([a[:n] for a, n in zip(audio, counts)])
        both = self.streams.map(self._forward, flat)
        k = len(self.names)
        speech = None
        if self.vad is not None:
            try:
                speech = self.speech(flat)
            except Exception as e:  # the predictions stand; speech is unknown (null)
                print(f"vidbatch: Silero VAD failed on a batch ({type(e).__name__}: "
                      f"{str(e)[:200]}); its speech columns are null", file=sys.stderr,
                      flush=True)
        return both[:, :k], both[:, k:], speech

    def __call__(self, batch: Batch) -> pa.Table:
        ok = batch["status"] == "ok"
        infer_s = np.full(len(ok), np.nan)
        columns = {}
        if ok.any():
            t0 = time.perf_counter()
            try:
                columns = self.columns(batch, ok)
            except Exception as e:  # one bad batch must not end the job: its rows say why
                batch = inference_failed(batch, ok, e)
                ok = np.zeros_like(ok)
            infer_s[ok] = (time.perf_counter() - t0) / max(1, int(ok.sum()))
        columns.update(self.facts(batch, ok))
        c = self.config
        return rows_table(batch, c.schema, c.provenance, ok, columns, infer_s)

    def facts(self, batch: Batch, ok: np.ndarray) -> dict[str, pa.Array]:
        """The decoded soundtrack's columns (also on rows that failed later)."""
        peak = np.asarray(batch["peak_dbfs"], np.float64)
        return {"audio_codec": strings(batch["audio_codec"]),
                "audio_sample_rate": nullable_int(batch["audio_sample_rate"], pa.int32()),
                "audio_channels": nullable_int(batch["audio_channels"], pa.int32()),
                "audio_duration_s": nullable_float(batch["audio_duration_s"]),
                "windows": per_ok(len(ok), ok, batch["windows"][ok].tolist(), pa.int32()),
                "silent": per_ok(len(ok), ok, (peak[ok] < self.config.decode.silence_dbfs)
                                 .tolist(), pa.bool_()),
                "peak_dbfs": pa.array(peak, pa.float32(), mask=np.isnan(peak))}

    def columns(self, batch: Batch, ok: np.ndarray) -> dict[str, pa.Array]:
        """The predictions of the ok rows: top-k, per-window labels, speech, embedding."""
        c, n = self.config, len(ok)
        counts = batch["windows"][ok]
        probs, emb, speech = self.analyse(batch["audio"][ok], counts)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        half = c.decode.window_s / 2
        top, windows, fraction, embeddings = [], [], [], []
        for r, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            scores = pool(probs[a:b], c.background, c.pooling)
            order = np.argsort(-scores)[:c.top_k]
            top.append((order, scores[order]))
            starts = batch["window_starts"][ok][r]
            best = probs[a:b].argmax(axis=1)
            windows.append([{"t_s": float(starts[w] + half), "label": self.names[best[w]],
                             "score": float(probs[a + w, best[w]]),
                             "speech": None if speech is None else float(speech[0][a + w]),
                             "speech_s": None if speech is None else
                             float(starts[w] + speech[1][a + w])}
                            for w in range(b - a)])
            if speech is not None:
                fraction.append(float(np.mean(speech[0][a:b] >= c.vad_threshold)))
            embeddings.append(emb[a:b].mean(axis=0).tolist())
        schema = c.schema
        return {
            "pred_index": per_ok(n, ok, [int(o[0]) for o, _ in top], pa.int32()),
            "pred_label": per_ok(n, ok, [self.names[o[0]] for o, _ in top], pa.string()),
            "pred_score": per_ok(n, ok, [float(s[0]) for _, s in top], pa.float32()),
            "topk_labels": per_ok(n, ok, [self.names[o].tolist() for o, _ in top],
                                  pa.list_(pa.string())),
            "topk_scores": per_ok(n, ok, [s.tolist() for _, s in top], pa.list_(pa.float32())),
            "window_predictions": per_ok(n, ok, windows, schema.field("window_predictions")
                                         .type),
            "speech_fraction": per_ok(n, ok, fraction if speech is not None else None,
                                      pa.float32()),
            "audio_embedding": per_ok(n, ok, embeddings, schema.field("audio_embedding").type),
        }
