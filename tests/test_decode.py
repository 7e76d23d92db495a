"""Decoding real encoded files: exact frames from lossless videos, the fallback between
decoders, bad input."""

import numpy as np
import pytest

from pipeline.decode.base import DecodeSpec, open_source, resized_dims
from pipeline.decode.fallback import decode_video
from pipeline.decode.sampling import clip_indices
from pipeline.decode.stage import decode_batch
from pipeline.decode.video_decord import decode_with_decord
from pipeline.decode.video_pyav import decode_with_pyav
from pipeline.errors import VideoError
from pipeline.synth import moving_texture, write_video


def spec(**kw):
    base = dict(clips=1, frames=4, stride=None, short_side=48, crop_size=48)
    return DecodeSpec(**{**base, **kw})


@pytest.fixture
def numbered(tmp_path, numbered_frames):
    """A lossless 20-frame video whose frame t is filled with 8 * t."""
    return write_video(tmp_path / "numbered.mp4", numbered_frames(20), lossless=True)


def frame_values(frames: np.ndarray) -> list[int]:
    return [int(round(f.mean())) // 8 for f in frames.reshape(-1, *frames.shape[-3:])]


def values4(frames: np.ndarray) -> list[int]:
    return [int(round(f.mean() / 4)) for f in frames.reshape(-1, *frames.shape[-3:])]


def test_resized_dims_keep_aspect():
    assert resized_dims(360, 640, 128) == (128, 228)
    assert resized_dims(640, 360, 128) == (228, 128)


def test_decord_returns_exactly_the_sampled_frames(numbered):
    v = decode_video(str(numbered), spec(frames=4))
    assert v.decoder == "decord" and v.num_frames == 20
    # Uniform spread over 20 frames: window centres 2, 7, 12, 17.
    assert frame_values(v.frames) == [2, 7, 12, 17]


def test_lossless_frames_equal_what_was_written(tmp_path):
    data = moving_texture(12, 48, 64, seed=3)
    path = write_video(tmp_path / "lossless.mp4", data, lossless=True)
    v = decode_video(str(path), spec(frames=3, short_side=48, crop_size=48))
    # No resize (short side already 48): the crop of frames 2, 6, 10 must match exactly.
    expected = data[[2, 6, 10], :, 8:56]
    assert np.array_equal(v.frames[0], expected)


def test_pyav_fallback_agrees_with_decord(numbered):
    a = decode_with_decord(open_source(str(numbered)), spec(clips=2, frames=3, stride=2))
    b = decode_with_pyav(open_source(str(numbered)), spec(clips=2, frames=3, stride=2))
    assert frame_values(a.frames) == frame_values(b.frames)
    assert (a.num_frames, a.width, a.height) == (b.num_frames, b.width, b.height)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_segment_selects_frames_by_time(numbered, decoder):
    # 30 fps: 0.2 s..0.4 s holds frames 6..11; a centred 2-frame clip, stride 3.
    v = decode_video(str(numbered), spec(frames=2, stride=3, decoder=decoder), start_s=0.2,
                     end_s=0.4)
    assert v.decoder == decoder and frame_values(v.frames) == [7, 10]
    assert v.fps == pytest.approx(30.0) and v.duration_s == pytest.approx(20 / 30)


def test_segment_past_the_end_is_an_error_row_reason(numbered):
    with pytest.raises(VideoError, match="after the video ends"):
        decode_video(str(numbered), spec(), start_s=5.0, end_s=6.0)


def test_single_frame_video(tmp_path, numbered_frames):
    path = write_video(tmp_path / "one.mp4", numbered_frames(1), lossless=True)
    v = decode_video(str(path), spec(frames=4))
    assert v.num_frames == 1 and v.frames.shape == (1, 4, 48, 48, 3)


def test_video_shorter_than_a_clip_repeats_frames(tmp_path, numbered_frames):
    path = write_video(tmp_path / "short.mp4", numbered_frames(3), lossless=True)
    v = decode_video(str(path), spec(frames=8, stride=1))
    assert frame_values(v.frames) == [0, 1, 2, 2, 2, 2, 2, 2]


@pytest.mark.parametrize("kind,stage,reason", [
    ("missing", "read", "not found"),
    ("empty", "read", "empty"),
    ("text", "decode", "not a decodable video"),
    ("truncated", "decode", "not a decodable video"),
])
def test_bad_files_raise_a_reason(tmp_path, make_video, kind, stage, reason):
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, not a video")
    elif kind == "truncated":
        good = make_video("good.mp4", frames=60).read_bytes()
        path.write_bytes(good[: len(good) // 3])
    with pytest.raises(VideoError, match=reason) as e:
        decode_video(str(path), spec())
    assert e.value.stage == stage


@pytest.fixture
def corrupt_packet(tmp_path, break_packet):
    """A 60-frame H.264 video (keyframes at 0, 20, 40) whose packet 30, a P-frame, is
    garbage: decord stops at it, PyAV skips it and loses only the frames that reference
    it."""
    good = write_video(tmp_path / "good.mp4", moving_texture(60, 96, 128, seed=0), gop=20)
    return break_packet(good, tmp_path / "corrupt_packet.mp4")


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_a_corrupt_packet_is_skipped_by_pyav(corrupt_packet, decoder):
    v = decode_video(str(corrupt_packet), spec(frames=8, decoder=decoder))
    assert v.decoder == "pyav" and v.frames.shape == (1, 8, 48, 48, 3)
    assert v.note.endswith("1 corrupt packets skipped")
    assert v.note.startswith("decord failed") == (decoder == "decord")


def test_decord_falls_back_to_pyav_on_av1(tmp_path):
    """decord's bundled FFmpeg has no AV1 decoder; PyAV's has (dav1d)."""
    path = write_video(tmp_path / "av1.mkv", moving_texture(12, 64, 80, seed=1),
                       codec="libsvtav1")
    v = decode_video(str(path), spec(frames=4))
    assert v.decoder == "pyav" and v.num_frames == 12
    assert v.note.startswith("decord failed") and v.note.endswith("decoded by PyAV")


def test_a_directory_is_named_as_one(tmp_path):
    with pytest.raises(VideoError, match="is a directory, not a video file") as e:
        decode_video(str(tmp_path), spec())
    assert e.value.stage == "read"


def test_decode_batch_never_raises_and_keeps_every_row(tmp_path, numbered):
    batch = {
        "video_id": np.array(["a", "b", "c"], dtype=object),
        "path": np.array([str(numbered), str(tmp_path / "nope.mp4"), None], dtype=object),
        "start_s": np.array([np.nan, np.nan, np.nan]),
        "end_s": np.array([np.nan, np.nan, np.nan]),
    }
    out = decode_batch(batch, spec())
    assert out["status"].tolist() == ["ok", "error", "error"]
    assert "not found" in out["error"][1] and "empty path" in out["error"][2]
    assert out["frames"].shape == (3, 1, 4, 48, 48, 3)
    assert not out["frames"][1:].any()


# ---------------------------------------------------------------- real-world samples


def test_decord_failures_fall_back_to_pyav(shared_videos):
    for name in ("torchcodec__av1_video.mkv", "moviepy__no_duration.webm"):
        v = decode_video(str(shared_videos / name), spec())
        assert v.decoder == "pyav" and v.note.startswith("decord failed")


def test_rotation_is_applied(shared_videos):
    v = decode_video(str(shared_videos / "decord__video_90.mov"), spec())
    assert (v.width, v.height) == (320, 568)
    p = decode_with_pyav(open_source(str(shared_videos / "decord__video_90.mov")), spec())
    assert (p.width, p.height) == (320, 568)
    assert np.abs(p.frames.astype(int) - v.frames).mean() < 8


# Sample files that decord cannot decode at all (AV1; WebM without a duration) or fails on at
# this size (10-bit, H.265 and VP9 with alpha in its bundled FFmpeg 4.1, the rotated ones'
# resize, a corrupt packet): PyAV decodes each of them.
PYAV_SAMPLES = {"torchcodec__av1_video.mkv", "moviepy__no_duration.webm",
                "bad/decord__corrupted.mp4", "decord__unordered.mov", "decord__video_90.mov",
                "decord__video_270.mov", "moviepy__transparent.webm",
                "torchcodec__h264_10bits.mp4", "torchcodec__h265_10bits.mp4",
                "torchcodec__h265_video.mp4"}


def test_every_sample_video_gives_frames(shared_videos):
    files = sorted(p for p in shared_videos.rglob("*") if p.suffix in (".mp4", ".mkv", ".mov",
                                                                        ".webm", ".avi"))
    assert len(files) >= 20
    used = {}
    for f in files:
        v = decode_video(str(f), spec(frames=2))
        assert v.frames.shape == (1, 2, 48, 48, 3), f
        used[f.relative_to(shared_videos).as_posix()] = v.decoder
    assert {name for name, d in used.items() if d == "pyav"} == PYAV_SAMPLES


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_both_decoders_return_the_sampled_frames_of_b_frame_video(numbered_b_frames, decoder):
    s = spec(clips=2, frames=5, decoder=decoder)
    v = decode_video(str(numbered_b_frames), s)
    assert v.decoder == decoder and v.num_frames == 60
    assert values4(v.frames) == clip_indices(0, 59, 2, 5).reshape(-1).tolist()


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_snap_to_keyframes_returns_keyframes_only(numbered_b_frames, decoder):
    s = spec(clips=1, frames=6, decoder=decoder, snap_to_keyframes=True)
    v = decode_video(str(numbered_b_frames), s)
    # Uniform centres 5, 15, 25, 35, 45, 55 -> nearest of keyframes 0, 20, 40.
    assert values4(v.frames) == [0, 20, 20, 40, 40, 40]
