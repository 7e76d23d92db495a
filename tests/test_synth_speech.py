"""The spoken-command demo's generator (no Ray): eSpeak NG speaks every word, validation's
voices are new, a written clip carries the word where its row says, and the same arguments
write the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from pipeline.synth import write_video  # noqa: E402
from pipeline.tasks.audio import demo as ss  # noqa: E402


def _decode_audio(path) -> tuple[np.ndarray, int, int]:
    """Samples, rate and channels of the file's first audio stream."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate, channels = stream.rate, stream.codec_context.channels
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    return samples, rate, channels


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.mark.parametrize("voice", [ss.TRAIN_VOICES[0], ss.VAL_VOICES[-1], "en-us+klatt"])
def test_speak_says_every_word(voice):
    for word in ss.WORDS + ss.UNKNOWN_WORDS:
        x = ss.speak(word, voice, 175, 50)
        assert x.dtype == np.float32 and x.ndim == 1
        assert 0.1 * ss.SAMPLE_RATE < len(x) < 1.2 * ss.SAMPLE_RATE, (word, len(x))
        assert np.abs(x).max() == pytest.approx(1.0) and _rms(x) > 0.05


def test_speak_repeats_itself_whatever_came_before():
    first = ss.speak("down", "en+victor", 150, 40)  # victor breathes: noise from rand()
    ss.speak("marvin", "en-us+f3", 210, 70)
    assert np.array_equal(first, ss.speak("down", "en+victor", 150, 40))


def test_validation_voices_are_new_and_every_variant_exists():
    import espeakng_loader

    # eSpeak NG ignores an unknown variant without a word: check the files are there.
    variants = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    assert all((variants / v).is_file() for v in ss.TRAIN_VARIANTS + ss.VAL_VARIANTS)
    assert not set(ss.TRAIN_VARIANTS) & set(ss.VAL_VARIANTS)
    assert not set(ss.TRAIN_VOICES) & set(ss.VAL_VOICES)
    assert 2.5 <= len(ss.TRAIN_VOICES) / len(ss.VAL_VOICES) <= 3.5


def test_a_written_clip_speaks_its_word_where_its_row_says(tmp_path):
    audio, info = ss.speech_clip("stop", ss.TRAIN_VOICES, seed=7)
    assert len(audio) == 3 * ss.SAMPLE_RATE and np.abs(audio).max() <= 0.9 + 1e-6
    onset, length = info["onset_s"], info["word_s"]
    assert ss.ONSET_S[0] <= onset <= ss.ONSET_S[1] and 0.1 < length <= ss.MAX_WORD_S
    path = write_video(tmp_path / "stop.mp4", ss.picture(0), fps=ss.FPS, audio=audio,
                       sample_rate=ss.SAMPLE_RATE)
    decoded, rate, channels = _decode_audio(path)
    assert (rate, channels) == (16000, 1)
    assert abs(len(decoded) / rate - 3.0) < 0.05
    sr = ss.SAMPLE_RATE
    word = decoded[int(onset * sr):int((onset + length) * sr)]
    # A second of noise at least 0.3 s from the word, before or after it.
    quiet_start = onset + length + 0.3 if onset < 1.3 else onset - 1.3
    quiet = decoded[int(quiet_start * sr):int((quiet_start + 1.0) * sr)]
    assert len(quiet) == sr
    assert _rms(word) > 1.5 * _rms(quiet)


def test_silence_has_no_word():
    audio, info = ss.speech_clip(ss.SILENCE, ss.VAL_VOICES, seed=3)
    assert info["onset_s"] == "" and info["voice"] == ""
    assert _rms(audio[: ss.SAMPLE_RATE]) == pytest.approx(_rms(audio[-ss.SAMPLE_RATE:]), rel=0.5)


def test_make_speech_set_writes_the_same_files_for_the_same_arguments(tmp_path):
    classes = ("yes", "go", ss.SILENCE, ss.UNKNOWN)
    a = ss.make_speech_set(tmp_path / "a", "val", 1, 100_000, classes)
    b = ss.make_speech_set(tmp_path / "b", "val", 1, 100_000, classes)
    assert a == b and [r["label"] for r in a] == list(classes)
    assert a[0]["video_id"] == "yes_100000" and a[0]["path"] == "yes_100000.mp4"
    assert a[2]["onset_s"] == "" and a[3]["voice"] in ss.VAL_VOICES
    for row in a:
        assert (tmp_path / "a" / row["path"]).read_bytes() == \
            (tmp_path / "b" / row["path"]).read_bytes()
