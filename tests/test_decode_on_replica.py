"""Decoding on the replica (``resources.decode_on: replica``) and the torchcodec decoder, on
real encoded files: the probe in decode tasks chooses exactly the frames that decoding in
tasks decodes, and the replica's decode gives the same frames."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.decode.base import DecodeSpec, open_source
from pipeline.decode.on_replica import ReplicaDecoder, probe_batch
from pipeline.decode.optional import unavailable
from pipeline.decode.stage import decode_batch
from pipeline.decode.video_decord import decode_with_decord
from pipeline.synth import moving_texture, write_video

SAMPLES = ("imageio__cockatoo.mp4", "mmaction2__test.mp4", "moviepy__chaplin.mp4",
           "decord__video_90.mov", "mmaction2__S001C001P001R001A001_rgb.avi",
           "moviepy__big_buck_bunny_0_30.webm")

needs_torchcodec = pytest.mark.skipif(unavailable() is not None,
                                      reason=f"{unavailable()} (scripts/test_tools.sh "
                                      "installs it where it can)")


def spec(**kw) -> DecodeSpec:
    base = dict(clips=2, frames=4, stride=2, short_side=64, crop_size=56)
    return DecodeSpec(**{**base, **kw})


def rows(paths, start_s=None, end_s=None) -> dict[str, np.ndarray]:
    n = len(paths)
    return {"video_id": np.array([f"v{i}" for i in range(n)], dtype=object),
            "path": np.array([str(p) for p in paths], dtype=object),
            "start_s": np.full(n, np.nan if start_s is None else start_s),
            "end_s": np.full(n, np.nan if end_s is None else end_s)}


@pytest.fixture
def videos(tmp_path):
    """Generated videos (a long GOP, B-frames, an odd size) and a missing file."""
    return [write_video(tmp_path / "gop.mp4", moving_texture(90, 72, 96, seed=1), gop=30),
            write_video(tmp_path / "odd.mp4", moving_texture(40, 50, 90, seed=2)),
            tmp_path / "missing.mp4"]


@pytest.mark.parametrize("kw", [{}, {"snap_to_keyframes": True}, {"stride": None},
                                {"canvas": (48, 80), "rate": 2.0}])
def test_the_replica_decodes_the_frames_decoding_in_tasks_decodes(videos, kw):
    s = spec(**kw)
    batch = rows(videos, start_s=0.3)
    in_tasks = decode_batch(batch, s)
    probed = probe_batch(batch, s)
    assert "frames" not in probed
    assert np.array_equal(probed["frame_indices"], in_tasks["frame_indices"])
    assert list(probed["status"]) == list(in_tasks["status"]) == ["ok", "ok", "error"]
    assert probed["error"][2] == in_tasks["error"][2]
    on_replica = ReplicaDecoder(s, "cpu")(probed)
    assert np.array_equal(on_replica["frames"], in_tasks["frames"])
    assert list(on_replica["decoder"]) == list(in_tasks["decoder"])
    assert list(on_replica["status"]) == ["ok", "ok", "error"]


def test_real_world_samples_probe_to_the_same_frames(shared_videos):
    paths = [shared_videos / name for name in SAMPLES if (shared_videos / name).exists()]
    s = spec(clips=1, frames=8, stride=None)
    in_tasks = decode_batch(rows(paths), s)
    on_replica = ReplicaDecoder(s, "cpu")(probe_batch(rows(paths), s))
    assert list(on_replica["status"]) == list(in_tasks["status"])
    assert np.array_equal(on_replica["frames"], in_tasks["frames"])


def test_a_file_that_fails_on_the_replica_becomes_its_error_row(tmp_path):
    """The probe saw a good file; it is gone when the replica decodes it."""
    path = write_video(tmp_path / "v.mp4", moving_texture(20, 64, 80, seed=3))
    probed = probe_batch(rows([path]), spec())
    path.unlink()
    out = ReplicaDecoder(spec(), "cpu")(probed)
    assert out["status"][0] == "error" and out["error"][0].startswith("read: file not found")
    assert out["decoder"][0] is None
    assert out["frames"].shape == (1, *spec().shape) and not out["frames"].any()


@needs_torchcodec
def test_torchcodec_decodes_the_frames_decord_decodes(videos, shared_videos):
    from pipeline.decode.video_torchcodec import decode_with_torchcodec

    paths = [*videos[:2], *(shared_videos / n for n in SAMPLES[:4])]
    for path in paths:
        s = spec(clips=1, frames=6, stride=None)
        a = decode_with_decord(open_source(str(path)), s)
        b = decode_with_torchcodec(open_source(str(path)), s)
        assert b.decoder == "torchcodec" and b.frames.shape == a.frames.shape == s.shape
        assert (b.num_frames, b.fps) == (a.num_frames, a.fps), path.name
        assert np.array_equal(a.indices, b.indices), path.name
        # Same frames; the decoders resize differently (swscale vs torch), so pixels
        # differ by a few levels, not by content.
        diff = np.abs(a.frames.astype(np.int16) - b.frames).mean()
        assert diff < 6, (path.name, diff)


@needs_torchcodec
def test_torchcodec_as_the_job_decoder_falls_back_to_pyav(tmp_path):
    from pipeline.decode.fallback import decode_video

    path = tmp_path / "text.mp4"
    path.write_text("not a video\n")
    ok = write_video(tmp_path / "ok.mp4", moving_texture(20, 64, 80, seed=4))
    s = spec(decoder="torchcodec")
    assert decode_video(str(ok), s).decoder == "torchcodec"
    out = decode_batch(rows([path, ok]), s)
    assert out["status"][0] == "error" and "torchcodec" in out["error"][0]
    assert out["status"][1] == "ok" and out["decoder"][1] == "torchcodec"
