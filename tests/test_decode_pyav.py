"""PyAV decoding: only the packets the sampled frames need, and the same frames as
decoding every packet."""

import numpy as np
import pytest

import pipeline.decode.video_pyav as decode_pyav
from pipeline.decode.base import DecodeSpec, open_source
from pipeline.decode.fallback import decode_video
from pipeline.decode.sampling import clip_indices
from pipeline.decode.video_pyav import _av_open, _demux, _pyav_frames, decode_with_pyav, packet_plan
from pipeline.synth import write_video


def spec(**kw):
    return DecodeSpec(**{**dict(clips=1, frames=4, stride=None, short_side=48, crop_size=48),
                         **kw})


def test_sparse_pyav_decodes_less_and_equals_decoding_everything(numbered_b_frames):
    src = open_source(str(numbered_b_frames))
    wanted = {3, 9, 15, 25}  # the last group (frames 40..59) holds none
    s = spec(short_side=48, crop_size=48)
    with _av_open(src) as container:
        stream = container.streams.video[0]
        packets, kept = _demux(container, stream)
        send, needed = packet_plan(packets, wanted)
        assert needed.sum() == len(wanted)
        assert send.sum() < 40 and not send[-20:].any()
        sparse, _, n_sparse, _ = _pyav_frames(stream, kept, wanted, s, packets)
    with _av_open(src) as container:
        stream = container.streams.video[0]
        dense, _, n_dense, _ = _pyav_frames(stream, container.demux(stream), wanted, s,
                                            packets, sparse=False)
    assert sorted(sparse) == sorted(dense) == sorted(wanted)
    assert all(np.array_equal(sparse[i], dense[i]) for i in wanted)
    assert n_sparse < n_dense
    assert [int(round(sparse[i].mean() / 4)) for i in sorted(wanted)] == sorted(wanted)


def test_pyav_reads_stream_facts_while_the_file_is_open(tmp_path):
    # Regression: the stream's time base and rate were once read after its container was
    # closed, which gave garbage (fps -23086.91) once the video had ~100+ packets.
    frames = np.zeros((300, 48, 64, 3), dtype=np.uint8)
    for t in range(300):
        frames[t] = t % 250
    path = str(write_video(tmp_path / "long.mp4", frames, options={"crf": "1"}))
    for _ in range(3):
        v = decode_video(path, spec(frames=2, stride=30, decoder="pyav"), start_s=5.0,
                         end_s=7.0)
        assert v.fps == pytest.approx(30.0) and v.duration_s == pytest.approx(10.0)
        assert [int(round(f.mean())) for f in v.frames[0]] == [164, 194]


def test_pyav_decodes_videos_too_large_to_keep_in_memory(numbered_b_frames, monkeypatch):
    s = spec(clips=2, frames=5, decoder="pyav")
    kept = decode_video(str(numbered_b_frames), s)
    monkeypatch.setattr(decode_pyav, "KEEP_PACKETS_BYTES", 0)  # demux again to decode
    again = decode_video(str(numbered_b_frames), s)
    assert np.array_equal(kept.frames, again.frames)
    assert [int(round(f.mean() / 4)) for f in again.frames.reshape(-1, 48, 48, 3)] == \
        clip_indices(0, 59, 2, 5).reshape(-1).tolist()
    assert (kept.num_frames, kept.fps) == (again.num_frames, again.fps) == (60, 30.0)


def test_best_stream_is_chosen(shared_videos):
    # Stream 0 is 320x180; the best (and decord's) video stream is 480x270.
    p = decode_with_pyav(open_source(str(shared_videos / "torchcodec__nasa_13013.mp4")), spec())
    assert (p.width, p.height, p.num_frames) == (480, 270, 390)
