"""The spoken-command demo: 3-second videos whose sound track speaks one command word over
background noise, and whose picture says nothing about the word.

Words are the ten commands of Speech Commands (:data:`WORDS`), plus ``_silence_`` (noise
only) and ``_unknown_`` (one of :data:`UNKNOWN_WORDS`). Speech comes from the eSpeak NG
library of the ``espeakng-loader`` wheel, so the set needs no download; a voice is an
English accent plus a voice variant (``"en-us+f3"``). Validation speaks with variants that
training never hears (:data:`VAL_VARIANTS`, a quarter of them: 4 of 16 formant-synthesis
men, 2 of 8 Klatt-synthesis men, 3 of 12 women), in every accent of :data:`ACCENTS`.

The picture is a panning texture seeded by the video's index within its class only: video
``i`` of every class shows the same picture, so no model can read the word off it.

Everything comes from the seed: the same arguments write the same files and rows.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pipeline.demo_commands import ManifestsDir, VideosDir, write_splits
from pipeline.synth import moving_texture, write_video

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree",
                 "wow")
CLASSES = WORDS + (SILENCE, UNKNOWN)

ACCENTS = ("en", "en-us", "en-us-nyc", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-029")
# Variants (espeak-ng-data/voices/!v) that speak plainly: no whisper, croak, robot echo.
# Near twins stay in one split: Mike and mike2, f4 and aunty, belinda and linda, m7 and m8.
TRAIN_VARIANTS = ("m1", "m2", "m3", "m5", "m7", "m8", "Alex", "Andy", "Gene", "max", "paul",
                  "robert",  # formant-synthesis men
                  "klatt", "klatt2", "klatt3", "adam", "benjamin", "edward",  # Klatt men
                  "f1", "f2", "f3", "f5", "Annie", "Andrea", "belinda", "linda", "steph")
VAL_VARIANTS = ("m4", "m6", "Mike", "victor", "mike2", "david", "f4", "aunty", "anika")
TRAIN_VOICES = tuple(f"{a}+{v}" for v in TRAIN_VARIANTS for a in ACCENTS)
VAL_VOICES = tuple(f"{a}+{v}" for v in VAL_VARIANTS for a in ACCENTS)

SAMPLE_RATE = 16000
CLIP_S, FPS, SIZE = 3.0, 10, 64
# Onsets in ONSET_S and words of at most MAX_WORD_S: every clip has a second without word.
ONSET_S, MAX_WORD_S = (0.25, 1.55), 1.0
SNR_DB = (5.0, 25.0)  # word RMS over noise RMS
RATE_WPM, PITCH, PITCH_RANGE = (120, 220), (20, 80), (30, 70)  # eSpeak parameters
NOISES = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power falls as 1 / f ** value

_ESPEAK_RATE = 22050
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)
_LOCK = threading.Lock()  # the library is one global synthesiser


def _bind(lib) -> None:
    """Argument types of the eSpeak NG calls that take pointers."""
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]


def _espeak(text: str, voice: str, rate_wpm: int, pitch: int, pitch_range: int
            ) -> np.ndarray:
    """int16 samples at 22050 Hz of eSpeak NG saying ``text``.

    The library is loaded afresh for each utterance and unloaded after it: it keeps state
    between utterances (the phase of its pitch flutter) that neither ``espeak_Terminate``
    nor the random seed resets, so the same call would otherwise give other samples after
    other calls. Loading costs a few milliseconds. Its noise generators are seeded before
    each utterance (the C library's ``rand`` among them).
    """
    import _ctypes

    import espeakng_loader

    chunks: list[np.ndarray] = []

    def collect(wav, n, _events) -> int:
        if n > 0 and wav:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback, data = _CALLBACK(collect), str(espeakng_loader.get_data_path()).encode()
    with _LOCK:
        lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
        try:
            # 2: synchronous (samples to the callback); 0x8000: on error return, not exit().
            if lib.espeak_Initialize(2, 0, data, 0x8000) != _ESPEAK_RATE:
                raise RuntimeError(f"eSpeak NG did not start with its data in {data!r}")
            lib.espeak_SetSynthCallback(callback)
            _bind(lib)
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {voice!r}")
            for parameter, value in ((1, rate_wpm), (3, pitch), (4, pitch_range)):
                lib.espeak_SetParameter(parameter, int(value), 0)
            raw = text.encode()
            # Breath noise ("breath" in a variant) comes from the C library's rand(), the
            # Klatt voices' noise from eSpeak's own generator: both from a fixed seed.
            ctypes.CDLL(None).srand(0)
            lib.espeak_ng_SetRandSeed(0)
            lib.espeak_Synth(raw, len(raw) + 1, 0, 1, 0, 0, None, None)  # 1: POS_CHARACTER
            lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def speak(word: str, voice: str, rate_wpm: int = 175, pitch: int = 50,
          pitch_range: int = 50) -> np.ndarray:
    """``word`` spoken by ``voice`` at ``rate_wpm`` words a minute, ``pitch`` and
    ``pitch_range`` (0-100, eSpeak's units): float32 at :data:`SAMPLE_RATE`, without the
    silence around it, peak at 1."""
    from scipy.signal import resample_poly

    x = resample_poly(_espeak(word, voice, rate_wpm, pitch, pitch_range).astype(np.float32),
                      SAMPLE_RATE // 50, _ESPEAK_RATE // 50).astype(np.float32)
    # Trim by the RMS of 10-ms windows at -45 dB of the loudest: a fricative ("off") is
    # some 35 dB under the vowel; eSpeak's pauses are (near) digital silence.
    win = SAMPLE_RATE // 100
    rms = np.sqrt(np.mean(np.pad(x, (0, -len(x) % win)).reshape(-1, win) ** 2, axis=1))
    loud = np.flatnonzero(rms > 10 ** (-45 / 20) * rms.max(initial=0.0))
    if not len(loud) or rms.max() == 0:
        raise RuntimeError(f"eSpeak NG said nothing for {word!r} in voice {voice!r}")
    x = x[loud[0] * win:(loud[-1] + 1) * win]
    return x / np.abs(x).max()


def noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of white, pink or brown noise (:data:`NOISES`) at RMS 1: white noise
    with its spectrum shaped (flat below 20 Hz)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
    x = np.fft.irfft(spectrum * freqs ** (-NOISES[kind] / 2), n)
    return (x / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def _say(word: str, voice: str, rng: np.random.Generator) -> np.ndarray:
    """:func:`speak` at a random rate, pitch and pitch range; faster if the word would last
    over :data:`MAX_WORD_S` (a slow "marvin" can)."""
    rate, pitch, pitch_range = (int(rng.integers(lo, hi + 1))
                                for lo, hi in (RATE_WPM, PITCH, PITCH_RANGE))
    speech = speak(word, voice, rate, pitch, pitch_range)
    while len(speech) > MAX_WORD_S * SAMPLE_RATE:
        rate += 20
        speech = speak(word, voice, rate, pitch, pitch_range)
    return speech


def speech_clip(label: str, voices: tuple[str, ...], seed: int
                ) -> tuple[np.ndarray, dict[str, object]]:
    """One clip's sound (:data:`CLIP_S` at :data:`SAMPLE_RATE`, peak at most 0.9) and its
    ``onset_s``, ``word_s`` (the word's start and length in seconds), ``voice`` and ``word``.

    ``_silence_`` draws everything a word clip does and leaves the word out, so its noise
    is as loud as in the other classes; its onset, length and voice are ``""``.
    """
    rng = np.random.default_rng(seed)
    word = label if label in WORDS else str(rng.choice(UNKNOWN_WORDS))
    voice = str(rng.choice(voices))
    speech = _say(word, voice, rng)
    gain, snr_db = rng.uniform(0.2, 0.8), rng.uniform(*SNR_DB)
    n = round(CLIP_S * SAMPLE_RATE)
    start = round(rng.uniform(*ONSET_S) * SAMPLE_RATE)
    speech = gain * speech
    rms = float(np.sqrt(np.mean(speech ** 2)))
    audio = noise(n, str(rng.choice(list(NOISES))), rng) * (rms / 10 ** (snr_db / 20))
    if label == SILENCE:
        info = {"onset_s": "", "word_s": "", "voice": "", "word": ""}
    else:
        audio[start:start + len(speech)] += speech
        info = {"onset_s": round(start / SAMPLE_RATE, 4),
                "word_s": round(len(speech) / SAMPLE_RATE, 4), "voice": voice, "word": word}
    return audio * min(1.0, 0.9 / float(np.abs(audio).max())), info


def picture(seed: int) -> np.ndarray:
    """The frames ``(T, 64, 64, 3)``: a texture panning one of 15 ways, from ``seed`` only."""
    velocity = (seed % 3 - 1, seed // 3 % 5 - 2)
    return moving_texture(round(CLIP_S * FPS), SIZE, SIZE, seed, velocity=velocity)


# libx264's macroblock tree (rate control looking ahead) wrote different bytes and pictures
# for the same frames now and then, on one thread too; without it the same frames give the
# same file. One thread: a 64x64 picture gains nothing from more.
_X264 = {"x264-params": "mbtree=0", "threads": "1"}


def make_speech_set(out_dir: str | Path, split: str, per_class: int, seed: int,
                    classes: tuple[str, ...] = CLASSES) -> list[dict[str, object]]:
    """Write ``per_class`` videos for each of ``classes``; return their manifest rows
    (``video_id``, ``path`` relative to ``out_dir``, ``label``, ``onset_s``, ``word_s``,
    ``voice``).

    ``split`` picks the voices (``"train"``: :data:`TRAIN_VOICES`, ``"val"``:
    :data:`VAL_VOICES`). Video ``i`` of a class has sound seed ``seed + 12 * i + k`` (``k``
    the class's index in :data:`CLASSES`) and picture seed ``seed + i``: disjoint seed
    ranges (``seed`` 100_000 apart for fewer than 8_000 per class) give disjoint sets.
    """
    voices = {"train": TRAIN_VOICES, "val": VAL_VOICES}[split]
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; choose from {CLASSES}")
    out = Path(out_dir)
    rows = []
    for i in range(per_class):
        frames = picture(seed + i)
        for label in classes:
            s = seed + len(CLASSES) * i + CLASSES.index(label)
            audio, info = speech_clip(label, voices, s)
            name = f"{label}_{s:06d}"
            write_video(out / f"{name}.mp4", frames, fps=FPS, options=_X264,
                        audio=audio, sample_rate=SAMPLE_RATE)
            rows.append({"video_id": name, "path": f"{name}.mp4", "label": label,
                         "onset_s": info["onset_s"], "word_s": info["word_s"],
                         "voice": info["voice"]})
    return rows


def demo_speech_data(
    out: VideosDir = Path("data/speech"),
    manifests: ManifestsDir = Path("manifests"),
    train_per_class: Annotated[int, typer.Option(help="Train videos per class")] = 200,
    val_per_class: Annotated[int, typer.Option(help="Held-out val videos per class")] = 20,
    extras: Annotated[bool, typer.Option(
        "--extras/--no-extras", help="Also the _silence_ (noise only) and _unknown_ (another "
        "word) classes, besides the ten command words")] = True,
) -> None:
    """Generate the spoken-command demo: 3-second videos whose sound track speaks one of ten
    command words over noise and whose picture says nothing about it; validation speaks
    with voices training never hears. The same command always writes the same videos."""
    classes = CLASSES if extras else WORDS
    counts = {"train": train_per_class, "val": val_per_class}
    for split, rows, manifest in write_splits(
            out, manifests, "speech", counts,
            lambda folder, split, per_class, seed: make_speech_set(folder, split, per_class,
                                                                   seed, classes)):
        typer.echo(f"wrote {len(rows)} {split} videos ({len(classes)} classes) to "
                   f"{out / split} and {manifest}")


COMMANDS = {"demo-speech-data": demo_speech_data}
