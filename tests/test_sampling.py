"""The sampler is pure index math: every docstring example is checked here."""

import numpy as np
import pytest

from pipeline.decode.sampling import clip_indices, segment_frames, snap_to_keyframes
from pipeline.errors import VideoError


def test_uniform_one_clip_takes_window_centres():
    assert clip_indices(0, 299, 1, 4).tolist() == [[37, 112, 187, 262]]


def test_uniform_two_clips_split_the_range():
    assert clip_indices(0, 299, 2, 2).tolist() == [[37, 112], [187, 262]]


def test_stride_one_clip_is_centred():
    assert clip_indices(0, 299, 1, 4, stride=2).tolist() == [[146, 148, 150, 152]]


def test_stride_clips_spread_from_start_to_end():
    idx = clip_indices(0, 299, 3, 4, stride=2)
    assert idx[:, 0].tolist() == [0, 146, 293]
    assert idx[-1, -1] == 299


def test_clip_longer_than_video_repeats_last_frame():
    assert clip_indices(0, 4, 1, 8, stride=1).tolist() == [[0, 1, 2, 3, 4, 4, 4, 4]]


def test_uniform_on_short_video_repeats_frames_in_order():
    idx = clip_indices(0, 2, 1, 8)
    assert idx.min() == 0 and idx.max() == 2
    assert np.all(np.diff(idx[0]) >= 0)


def test_one_frame_video_gives_frame_zero_everywhere():
    for stride in (None, 1, 4):
        assert clip_indices(0, 0, 2, 5, stride=stride).tolist() == [[0] * 5] * 2


@pytest.mark.parametrize("n,clips,frames,stride", [
    (1, 1, 1, None), (7, 3, 16, None), (1000, 10, 32, 2), (33, 4, 8, 5), (2, 64, 3, 1)])
def test_indices_stay_inside_the_segment(n, clips, frames, stride):
    idx = clip_indices(10, 10 + n - 1, clips, frames, stride)
    assert idx.shape == (clips, frames)
    assert idx.min() >= 10 and idx.max() <= 10 + n - 1
    assert np.all(np.diff(idx, axis=1) >= 0)


def test_segment_in_seconds_at_constant_rate():
    assert segment_frames(300, 30.0, 2.0, 3.0) == (60, 89)


def test_whole_video_without_segment():
    assert segment_frames(5, 0.0) == (0, 4)


def test_segment_end_past_the_video_is_clamped():
    assert segment_frames(300, 30.0, 9.0, 60.0) == (270, 299)


def test_segment_starting_after_the_end_is_an_error():
    with pytest.raises(VideoError, match="after the video ends"):
        segment_frames(300, 30.0, 12.0, 13.0)


def test_variable_frame_rate_uses_timestamps():
    # Frames at 0, 0.5, 0.6, 0.7, 2.0, 2.1 s: a constant-rate guess would be wrong.
    ts = np.array([0.0, 0.5, 0.6, 0.7, 2.0, 2.1])
    assert segment_frames(6, 3.0, 0.55, 2.05, timestamps=ts) == (2, 4)
    assert segment_frames(6, 3.0, 1.0, None, timestamps=ts) == (4, 5)


def test_empty_video_is_an_error():
    with pytest.raises(VideoError, match="no frames"):
        segment_frames(0, 30.0)


def test_snap_moves_each_frame_to_the_nearest_keyframe():
    # The docstring example: 95 is 35 from 60 and 25 from 120.
    assert snap_to_keyframes(np.array([[20, 40, 95]]), [0, 60, 120]).tolist() == [[0, 60, 120]]
    # Ties go to the earlier keyframe; before the first / after the last keyframe: that one.
    assert snap_to_keyframes(np.array([30, 31, 5, 299]), [10, 50, 120]).tolist() == [
        10, 50, 10, 120]
    assert snap_to_keyframes(np.array([30]), [0, 60]).tolist() == [0]


def test_snap_without_keyframes_keeps_the_indices():
    assert snap_to_keyframes(np.array([3, 7]), []).tolist() == [3, 7]
