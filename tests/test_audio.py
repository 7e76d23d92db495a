"""task: audio without Ray: decoding soundtracks into windows (in process and in the
confined worker), the outcomes of files without audio or with silence, bounded memory on
long soundtracks, log-mel features, the networks, the replica's pooling and columns, and
the spec's checks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from pipeline.decode.audio import AudioSpec, decode_audio
from pipeline.decode.stage import decode_audio_batch
from pipeline.errors import ConfigError, VideoError, WeightsError
from pipeline.infer.spec import parse_jobspec
from pipeline.model.runtime import Runtime
from pipeline.synth import moving_texture, write_video
from pipeline.tasks.audio.job import AudioTask, background_classes
from pipeline.tasks.audio.models import audio_card, build_audio_net, save_audio_checkpoint
from pipeline.tasks.audio.replica import pool

RATE = 16_000


def tone_at(seconds: float, start: float, length: float, freq: float = 440.0) -> np.ndarray:
    """Quiet noise with a loud tone from ``start`` for ``length`` seconds."""
    t = np.arange(round(seconds * RATE)) / RATE
    audio = np.random.default_rng(0).normal(0, 0.003, t.size)
    on = (t >= start) & (t < start + length)
    audio[on] += 0.5 * np.sin(2 * np.pi * freq * t[on])
    return audio.astype(np.float32)


def av_file(path, audio: np.ndarray | None, seconds: float = 3.0):
    frames = moving_texture(round(seconds * 10), 32, 32, seed=1)
    return write_video(path, frames, fps=10, audio=audio, sample_rate=RATE)


def batch_of(paths: list) -> dict[str, np.ndarray]:
    n = len(paths)
    return {"video_id": np.array([f"v{i}" for i in range(n)], object),
            "path": np.array([str(p) for p in paths], object),
            "label": np.full(n, None, object),
            "start_s": np.full(n, np.nan), "end_s": np.full(n, np.nan)}


def test_window_starts_follow_the_hop_and_spread_beyond_max_windows():
    spec = AudioSpec(window_s=1.0, hop_s=0.25, max_windows=60)
    assert spec.starts(0.0, 3.0).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    few = AudioSpec(window_s=1.0, hop_s=0.25, max_windows=5)
    assert few.starts(0.0, 3.0).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert spec.starts(0.0, 0.4).tolist() == [0.0]  # shorter than a window: one, padded
    assert spec.starts(2.0, 3.5).tolist() == [2.0, 2.25, 2.5]  # a segment


def test_windows_hold_the_soundtrack_at_its_times(tmp_path):
    path = av_file(tmp_path / "tone.mp4", tone_at(3.0, 1.2, 0.5))
    audio = decode_audio(str(path), AudioSpec(window_s=0.5, hop_s=0.5, max_windows=60))
    assert audio.count == 6 and audio.starts[:6].tolist() == [0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert (audio.codec, audio.source_rate, audio.channels) == ("aac", RATE, 1)
    rms = np.sqrt(np.square(audio.windows[:6]).mean(axis=1))
    assert rms.argmax() in (2, 3) and rms[0] < 0.05 < rms[2]  # the tone is in 1.0-2.0 s
    assert -12 < audio.peak_dbfs < 0
    # The loudest window is centred on the tone.
    loud = decode_audio(str(path), AudioSpec(window_s=1.0, hop_s=0.1, pick="loudest"))
    assert loud.windows.shape == (1, RATE) and abs(loud.starts[0] - 0.95) <= 0.1


def test_a_segment_decodes_only_its_windows(tmp_path):
    path = av_file(tmp_path / "tone.mp4", tone_at(4.0, 2.5, 0.5), seconds=4.0)
    audio = decode_audio(str(path), AudioSpec(window_s=1.0, hop_s=0.5), 2.0, 4.0)
    assert audio.starts[:audio.count].tolist() == [2.0, 2.5, 3.0]
    assert np.abs(audio.windows[0, RATE // 2:RATE // 2 + 4000]).max() > 0.3
    with pytest.raises(VideoError, match="segment starts at 5"):
        decode_audio(str(path), AudioSpec(), 5.0, None)


def test_times_start_at_the_streams_first_timestamp_and_segments_end_with_it(tmp_path):
    """MPEG-TS streams start at a timestamp other than 0 (here 0.136 s): times are measured
    from it. An end past the soundtrack is clamped to it, as for video."""
    path = av_file(tmp_path / "tone.ts", tone_at(3.0, 1.0, 2.0))
    audio = decode_audio(str(path), AudioSpec(window_s=0.5, hop_s=0.5))
    rms = np.sqrt(np.square(audio.windows[:audio.count]).mean(axis=1))
    assert audio.count == 6 and (rms[:2] < 0.05).all() and (rms[2:] > 0.3).all()
    long = decode_audio(str(path), AudioSpec(window_s=0.5, hop_s=0.5, max_windows=10), 0, 100)
    assert long.starts[:long.count].tolist() == audio.starts[:6].tolist()


def test_a_short_track_is_centred_in_the_training_window(tmp_path):
    path = av_file(tmp_path / "short.mp4", tone_at(0.5, 0.0, 0.5), seconds=0.5)
    loud = decode_audio(str(path), AudioSpec(window_s=1.3, hop_s=0.1, pick="loudest"))
    heard = np.flatnonzero(np.abs(loud.windows[0]) > 0.05)
    middle = (heard[0] + heard[-1]) / 2
    assert abs(middle - 1.3 * RATE / 2) < 0.05 * RATE and loud.starts[0] < 0


def test_no_audio_stream_and_silence_are_outcomes(tmp_path):
    with pytest.raises(VideoError) as e:
        decode_audio(str(av_file(tmp_path / "mute.mp4", None)), AudioSpec())
    assert e.value.stage == "no_audio"
    silent = decode_audio(str(av_file(tmp_path / "silent.mp4", np.zeros(3 * RATE,
                                                                         np.float32))),
                          AudioSpec())
    assert silent.count == 5 and silent.peak_dbfs < -60


def test_the_confined_worker_gives_the_same_windows_and_errors(tmp_path):
    paths = [av_file(tmp_path / "tone.mp4", tone_at(3.0, 0.5, 1.0)),
             av_file(tmp_path / "mute.mp4", None), tmp_path / "missing.mp4"]
    (tmp_path / "text.mp4").write_text("not a video")
    paths.append(tmp_path / "text.mp4")
    spec = AudioSpec(window_s=1.0, hop_s=0.5, max_windows=8)
    inline = decode_audio_batch(batch_of(paths), spec)
    confined = decode_audio_batch(batch_of(paths), AudioSpec(**{**spec.__dict__,
                                                               "timeout_s": 30}))
    for out in (inline, confined):
        assert out["status"].tolist() == ["ok", "error", "error", "error"]
        assert out["error"][1].startswith("no_audio:") and "not found" in out["error"][2]
        assert out["windows"].tolist() == [5, 0, 0, 0] and out["audio"].shape == (4, 8, RATE)
        assert out["audio_codec"][0] == "aac" and out["duration_s"][0] == pytest.approx(3, 0.02)
    np.testing.assert_array_equal(inline["audio"], confined["audio"])
    np.testing.assert_array_equal(inline["window_starts"], confined["window_starts"])


def test_a_long_soundtrack_costs_its_windows_not_its_length(tmp_path):
    """Ten minutes of audio (38 MB as float32) decode into 20 windows (1.3 MB)."""
    import av

    path = tmp_path / "long.mka"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=RATE, layout="mono")
        chunk = (np.random.default_rng(0).normal(0, 0.1, (1, RATE)) * 32767).astype(np.int16)
        for i in range(600):
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            frame.sample_rate, frame.pts = RATE, i * RATE
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    spec = AudioSpec(window_s=1.0, hop_s=0.5, max_windows=20)
    tracemalloc.start()
    audio = decode_audio(str(path), spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert audio.count == 20 and audio.starts[19] == pytest.approx(599.0)
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("arch", ["res8", "res15", "resnet18_audio"])
def test_networks_map_windows_to_logits_and_embeddings(arch):
    import torch

    card = audio_card(arch, "none")
    net = build_audio_net(card).eval()
    x = torch.from_numpy(tone_at(1.0, 0.2, 0.3))[None].repeat(3, 1)
    with torch.inference_mode():
        spec = net.features(x)
        assert spec.shape == (3, 1, card.features["n_mels"], 101)
        assert torch.isfinite(spec).all()
        assert net(x).shape == (3, 12) and net.embed(x).shape == (3, card.embed_dim)
    # weights: none is seeded: two builds are the same network
    again = build_audio_net(card).eval()
    with torch.inference_mode():
        assert torch.equal(net(x), again(x))


def test_pooling_skips_background_windows_unless_all_are():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.8, 0.1, 0.1]])
    assert pool(probs, (0,), "mean").argmax() == 1  # only the window that holds a word
    assert pool(probs[[0, 2]], (0,), "mean").argmax() == 0  # all background: over all
    assert pool(probs, (), "max").tolist() == [0.9, 0.7, 0.1]


def replica_for(card, tmp_path, **predict):
    spec = parse_jobspec({"task": "audio", "name": "t", "manifest": str(tmp_path / "m.csv"),
                          "model": {"arch": card.arch}, "predict": predict,
                          "sampling": {"hop_s": 0.5, "max_windows": 8},
                          "output": {"path": str(tmp_path / "out")}})
    cls, kwargs = AudioTask().replica(spec, card, Runtime())
    return cls(**kwargs), AudioTask().decode_spec(spec, card)


def test_replica_rows_have_window_labels_speech_and_embeddings(tmp_path):
    card = audio_card("res8", "none")
    replica, spec = replica_for(card, tmp_path)
    paths = [av_file(tmp_path / "tone.mp4", tone_at(3.0, 1.0, 0.5)),
             av_file(tmp_path / "silent.mp4", np.zeros(3 * RATE, np.float32)),
             av_file(tmp_path / "mute.mp4", None)]
    rows = replica(decode_audio_batch(batch_of(paths), spec)).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    tone, silent = rows[0], rows[1]
    assert tone["windows"] == 5 and len(tone["window_predictions"]) == 5
    assert [w["t_s"] for w in tone["window_predictions"]] == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert all(0 <= w["speech"] <= 1 and w["label"] in card.class_names
               and w["t_s"] - 0.5 <= w["speech_s"] <= w["t_s"] + 0.5  # inside its window
               for w in tone["window_predictions"])
    assert len(tone["audio_embedding"]) == 45 and len(tone["topk_labels"]) == 5
    assert tone["silent"] is False and silent["silent"] is True
    assert silent["speech_fraction"] == 0.0 and silent["peak_dbfs"] < -60
    assert rows[2]["error"].startswith("no_audio:") and rows[2]["pred_label"] is None


def test_spec_checks_name_the_field(tmp_path):
    base = {"task": "audio", "name": "t", "manifest": "m.csv", "output": {"path": "o"}}
    with pytest.raises(ConfigError, match="sampling.hop_s"):
        parse_jobspec({**base, "sampling": {"hop_s": 0}})
    with pytest.raises(ConfigError, match="predict.pooling"):
        parse_jobspec({**base, "predict": {"pooling": "median"}})
    card = audio_card("res8", "none")
    with pytest.raises(ConfigError, match="predict.background"):
        background_classes(card, ["_nothing_"])
    named = audio_card("res8", "none", str(_labels(tmp_path, ["_silence_", "_unknown_",
                                                              "yes"])))
    assert background_classes(named, None) == (0,)
    spec = parse_jobspec({**base, "sampling": {"sample_rate": 22050}})
    with pytest.raises(ConfigError, match="predict.vad"):
        AudioTask().decode_spec(spec, AudioTask().resolve(spec))


def _labels(tmp_path, names):
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(names))
    return path


def test_checkpoints_carry_their_features_and_refuse_other_tasks(tmp_path):
    card = audio_card("res8", "none", features={**audio_card("res8", "none").features,
                                                "sample_rate": 8000})
    net = build_audio_net(card)
    path = save_audio_checkpoint(tmp_path / "model.pt", net, card, epoch=1)
    loaded = audio_card("res8", str(path))
    assert loaded.features["sample_rate"] == 8000 and loaded.meaningful
    spec = parse_jobspec({"task": "audio", "name": "t", "manifest": "m.csv",
                          "model": {"weights": str(path)}, "sampling": {"sample_rate": 16000},
                          "output": {"path": "o"}})
    with pytest.raises(ConfigError, match="sampling.sample_rate: 16000 differs"):
        AudioTask().decode_spec(spec, loaded)
    with pytest.raises(WeightsError, match="set model.arch: res8"):
        audio_card("res15", str(path))
    with pytest.raises(WeightsError, match="no published weights"):
        audio_card("res8", "DEFAULT")


def test_a_model_failure_makes_the_batch_rows_errors_that_say_why(tmp_path):
    replica, spec = replica_for(audio_card("res8", "none"), tmp_path, vad=False)
    paths = [av_file(tmp_path / "tone.mp4", tone_at(3.0, 1.0, 0.5)),
             av_file(tmp_path / "mute.mp4", None)]
    batch = decode_audio_batch(batch_of(paths), spec)
    replica.net.body = None  # the network's body is gone: every forward pass fails
    rows = replica(batch).to_pylist()
    assert rows[0]["status"] == "error" and rows[0]["error"].startswith("inference: TypeError")
    assert rows[0]["audio_codec"] == "aac" and rows[0]["pred_label"] is None
    assert rows[1]["error"].startswith("no_audio:")


def test_speech_s_finds_a_spoken_word_inside_its_window(tmp_path):
    """A word eSpeak NG says at 1.15 s in quiet noise: every window that hears speech puts
    it (speech_s) on the word, where the window centres (0.5, 1.0, 1.5, ...) would not."""
    pytest.importorskip("espeakng_loader")
    from pipeline.tasks.audio.demo import TRAIN_VOICES, speak

    word = 0.5 * speak("stop", TRAIN_VOICES[0])
    audio = np.random.default_rng(0).normal(0, 0.002, 3 * RATE).astype(np.float32)
    onset, length = 1.15, len(word) / RATE
    audio[round(onset * RATE):round(onset * RATE) + len(word)] += word
    replica, spec = replica_for(audio_card("res8", "none"), tmp_path)
    row = replica(decode_audio_batch(batch_of([av_file(tmp_path / "stop.mp4", audio)]),
                                     spec)).to_pylist()[0]
    speaking = [w for w in row["window_predictions"] if w["speech"] > 0.5]
    assert len(speaking) >= 2 and {w["t_s"] for w in speaking} & {1.0, 1.5}
    assert all(onset - 0.05 <= w["speech_s"] <= onset + length + 0.05 for w in speaking)
    assert 0 < row["speech_fraction"] < 1
