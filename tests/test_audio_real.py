"""The real-world samples in ../shared/videos through the audio decode stage: files with a
soundtrack decode ok (many codecs, rates, channel counts, containers with and without a
duration), files without one are no_audio rows. Skipped without ../shared."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.decode.audio import AudioSpec
from pipeline.decode.stage import decode_audio_batch

# name -> (codec, source rate, channels) of its first audio stream; None: no audio stream.
EXPECTED = {
    "decord__flipping_a_pancake.mkv": ("opus", 48000, 1),
    "imageio__cockatoo.mp4": ("mp3float", 16000, 1),
    "imageio__realshort.mp4": ("aac", 48000, 1),
    "mmaction2__test.avi": ("mp3float", 44100, 2),
    "moviepy__big_buck_bunny_0_30.webm": ("vorbis", 44100, 2),
    "moviepy__chaplin.mp4": ("mp3float", 44100, 2),
    "moviepy__fire2.mp4": ("aac", 48000, 1),
    "moviepy__no_duration.webm": ("opus", 48000, 2),
    "torchcodec__nasa_13013.mp4": ("aac", 8000, 2),
    "decord__video_0.mov": None,
    "imageio__cockatoo_yuv420.mp4": None,
    "mmaction2__demo.mp4": None,
    "torchcodec__av1_video.mkv": None,
    "torchcodec__h265_10bits.mp4": None,
}
# Audio streams of digital silence (every sample 0, checked with PyAV alone).
SILENT = {"imageio__cockatoo.mp4", "moviepy__no_duration.webm"}


@pytest.mark.parametrize("timeout_s", [None, 60])
def test_real_soundtracks_decode_and_files_without_one_are_no_audio(shared_videos,
                                                                    timeout_s):
    names = [n for n in EXPECTED if (shared_videos / n).exists()]
    if not names:
        pytest.skip("none of the expected samples is in ../shared/videos")
    n = len(names)
    batch = {"video_id": np.array(names, object),
             "path": np.array([str(shared_videos / x) for x in names], object),
             "label": np.full(n, None, object), "start_s": np.full(n, np.nan),
             "end_s": np.full(n, np.nan)}
    spec = AudioSpec(window_s=1.0, hop_s=0.5, max_windows=12, timeout_s=timeout_s)
    out = decode_audio_batch(batch, spec)
    for i, name in enumerate(names):
        expected = EXPECTED[name]
        if expected is None:
            assert out["status"][i] == "error", name
            assert out["error"][i].startswith("no_audio: "), (name, out["error"][i])
            continue
        assert out["status"][i] == "ok", (name, out["error"][i])
        codec, rate, channels = expected
        assert out["audio_codec"][i] == codec and out["audio_sample_rate"][i] == rate
        assert out["audio_channels"][i] == channels, name
        assert 1 <= out["windows"][i] <= 12, name
        peak = np.abs(out["audio"][i, :out["windows"][i]]).max()
        assert (peak == 0) == (name in SILENT), (name, peak)
