"""A soundtrack as a report shows it: a strip with the mel spectrogram of one video's
sound, the label of each of its windows and where speech was heard, on one time axis.

The sound is read on demand through the same confined, killable decode child as the
thumbnails (:class:`~pipeline.decode.worker.DecodeWorker`). It is never held whole: the
decoder is asked for :data:`COLUMNS` short windows spread over the soundtrack (an hour
costs what a minute does), and each becomes one column of the spectrogram. The labels and
speech come from the row's ``window_predictions``; they are drawn in HTML over the
picture's time axis, so that they stay text (readable, searchable, escaped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.decode.audio import AudioSpec
from pipeline.decode.worker import DecodeWorker
from pipeline.errors import VideoError
from pipeline.report.page import esc
from pipeline.report.thumbs import jpeg_uri

STRIP = (64, 448)  # (height, width) of the spectrogram picture, px
COLUMNS = 448  # spectrogram columns: short windows spread over the soundtrack
FFT_S = 0.032  # each column's window: 32 ms, the usual frame for speech
MELS = 64
RANGE_DB = 80  # the quietest band drawn, below the loudest
_PALETTE = ("rgb(141,211,199)", "rgb(190,186,218)", "rgb(251,128,114)", "rgb(128,177,211)",
            "rgb(253,180,98)", "rgb(179,222,105)", "rgb(252,205,229)", "rgb(217,217,217)",
            "rgb(188,128,189)", "rgb(204,235,197)", "rgb(255,237,111)")  # ColorBrewer Set3


@dataclass(frozen=True)
class Run:
    """Consecutive windows that say the same (a label, or speech), drawn from ``start``
    to ``end`` seconds of the strip."""

    start: float
    end: float
    text: str

    @property
    def title(self) -> str:
        return f"{self.text or 'speech'} {self.start:.2f}-{self.end:.2f} s"


def spectrogram(worker: DecodeWorker, path: str, start_s: float, end_s: float,
                sample_rate: int, allow_uri_options: bool = False) -> np.ndarray:
    """The mel power (``MELS`` x ``COLUMNS``, dB) of ``path``'s sound from ``start_s`` to
    ``end_s``, each column the 32 ms around its time; raises :class:`VideoError`."""
    n_fft = 2 ** math.ceil(math.log2(FFT_S * sample_rate))
    spec = AudioSpec(sample_rate=sample_rate, window_s=n_fft / sample_rate,
                     hop_s=max((end_s - start_s) / COLUMNS, 1e-3), max_windows=COLUMNS,
                     timeout_s=worker.timeout_s, memory_mb=worker.memory_mb,
                     allow_uri_options=allow_uri_options)
    audio = worker.decode_audio(path, spec, start_s, end_s)
    frames = audio.windows[:audio.count] * np.hanning(n_fft).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    from librosa.filters import mel

    bank = mel(sr=sample_rate, n_fft=n_fft, n_mels=MELS, fmax=sample_rate / 2)
    db = 10 * np.log10(bank @ power.T + 1e-10)
    times = audio.starts[:audio.count] + n_fft / sample_rate / 2
    # each pixel column shows the spectrogram column nearest its time
    at = start_s + (np.arange(STRIP[1]) + 0.5) * (end_s - start_s) / STRIP[1]
    nearest = np.clip(np.searchsorted(times, at), 0, audio.count - 1)
    return db[:, nearest]


def strip_image(db: np.ndarray) -> str:
    """``db`` (bands x columns) as a JPEG ``data:`` URI in Viridis, low bands at the
    bottom: the loudest yellow, ``RANGE_DB`` below it and quieter dark purple (digital
    silence is all dark purple)."""
    top = float(db.max())
    level = np.clip((db - (top - RANGE_DB)) / RANGE_DB, 0, 1) if top > -90 else db * 0
    rgb = _viridis()[np.round(level[::-1] * 255).astype(int)]
    image = Image.fromarray(rgb).resize((STRIP[1], STRIP[0]), Image.BILINEAR)
    return jpeg_uri(np.asarray(image), quality=85)


def _viridis() -> np.ndarray:
    """Plotly's Viridis as 256 RGB steps (the colour scale of its heatmaps)."""
    from plotly.colors import hex_to_rgb, sequential

    stops = np.array([hex_to_rgb(c) for c in sequential.Viridis], dtype=float)
    x = np.linspace(0, 1, len(stops))
    grid = np.linspace(0, 1, 256)
    return np.stack([np.interp(grid, x, stops[:, k]) for k in range(3)], 1).astype(np.uint8)


def window_spans(windows: Sequence[dict], window_s: float, start_s: float,
                 end_s: float) -> list[tuple[float, float]]:
    """The stretch of the strip each window stands for: its own ``window_s`` around its
    centre, cut halfway to its neighbours where windows overlap, so that overlapping
    windows tile the strip and windows spread over a long soundtrack leave the parts
    the model did not hear blank. Examples: 1-s windows centred at 0.5, 0.75 and 1.0 s
    of 0..1.5 s stand for 0-0.625, 0.625-0.875 and 0.875-1.5 s; centred at 0.5 and
    10.5 s, for 0-1 and 10-11 s."""
    t = [float(w["t_s"]) for w in windows]
    cuts = [(a + b) / 2 for a, b in zip(t, t[1:])]
    return [(max(lo, c - window_s / 2, start_s), min(hi, c + window_s / 2, end_s))
            for c, lo, hi in zip(t, [-math.inf, *cuts], [*cuts, math.inf])]


def runs(windows: Sequence[dict], spans: list[tuple[float, float]],
         text: Callable[[dict], str | None]) -> list[Run]:
    """Windows that touch and have the same ``text``, merged into runs; windows whose
    text is None are left out (a gap)."""
    out: list[Run] = []
    for w, (lo, hi) in zip(windows, spans):
        said = text(w)
        if said is None:
            continue
        if out and out[-1].text == said and math.isclose(out[-1].end, lo, abs_tol=1e-6):
            out[-1] = Run(out[-1].start, hi, said)
        else:
            out.append(Run(lo, hi, said))
    return out


def _speech(threshold: float) -> Callable[[dict], str | None]:
    """A window's text in the speech band: "" when Silero VAD called it speech."""
    return lambda w: "" if (w.get("speech") or 0) >= threshold else None


def strip_card(uri: str | None, windows: Sequence[dict], window_s: float, start_s: float,
               end_s: float, threshold: float | None, caption: Sequence[str],
               title: str, colours: dict[str, str]) -> str:
    """The strip of one video: its spectrogram (a grey placeholder when the sound could
    not be read), then a band marking speech, a band of window labels (coloured by
    label, one colour per label across the page through ``colours``), and the times of
    its ends."""
    spans = window_spans(windows, window_s, start_s, end_s)
    image = (f"<img src='{uri}' alt='{esc(title)}' title='{esc(title)}'>" if uri else
             f"<div class='missing' title='{esc(title)}'>not readable</div>")
    bands = ""
    if threshold is not None:
        bands += _band("speech", runs(windows, spans, _speech(threshold)), start_s, end_s, {})
    labelled = runs(windows, spans, lambda w: w["label"])
    for run in labelled:
        colours.setdefault(run.text, _PALETTE[len(colours) % len(_PALETTE)])
    bands += _band("labels", labelled, start_s, end_s, colours)
    axis = f"<div class='axis'><span>{start_s:.1f} s</span><span>{end_s:.1f} s</span></div>"
    text = "<br>".join(esc(c) for c in caption)
    return (f"<figure class='strip'>{image}{bands}{axis}<figcaption>{text}</figcaption>"
            "</figure>")


def _band(kind: str, items: list[Run], start_s: float, end_s: float,
          colours: dict[str, str]) -> str:
    scale = 100 / max(end_s - start_s, 1e-9)
    spans = "".join(
        f"<span style='left:{(r.start - start_s) * scale:.2f}%;width:"
        f"{(r.end - r.start) * scale:.2f}%"
        + (f";background:{colours[r.text]}" if r.text in colours else "")
        + f"' title='{esc(r.title)}'>{esc(r.text)}</span>" for r in items)
    return f"<div class='band {kind}' data-band='{kind}'>{spans}</div>"


def sound_strip(worker: DecodeWorker, path: str, start_s: float, end_s: float,
                sample_rate: int, allow_uri_options: bool = False) -> str | None:
    """The spectrogram picture of ``path`` as a ``data:`` URI; None when its sound cannot
    be read."""
    try:
        return strip_image(spectrogram(worker, path, start_s, end_s, sample_rate,
                                       allow_uri_options))
    except (VideoError, OSError, ValueError):
        return None
