"""The decode time limit: a decoder stuck in native code becomes an error row."""

import os

import numpy as np
import pytest

from pipeline.decode.base import DecodeSpec
from pipeline.decode.stage import decode_batch
from pipeline.decode.worker import DecodeWorker
from pipeline.errors import VideoError


def spec(timeout_s=None):
    return DecodeSpec(clips=1, frames=2, stride=None, short_side=32, crop_size=32,
                      timeout_s=timeout_s)


@pytest.fixture
def fifo(tmp_path):
    """A named pipe nobody writes to: opening it blocks forever inside the decoder."""
    path = tmp_path / "stuck.mp4"
    os.mkfifo(path)
    return path


def test_hung_decode_times_out_and_the_worker_recovers(fifo, make_video):
    good = make_video("good.mp4", frames=8, size=(32, 48))
    worker = DecodeWorker(timeout_s=3)
    try:
        with pytest.raises(VideoError, match="timed out after 3 s") as e:
            worker.decode(str(fifo), spec())
        assert e.value.stage == "decode"
        video = worker.decode(str(good), spec())  # a fresh child takes over
        assert video.frames.shape == (1, 2, 32, 32, 3)
    finally:
        worker.close()


def test_video_errors_cross_the_process_boundary(tmp_path):
    worker = DecodeWorker(timeout_s=30)
    try:
        with pytest.raises(VideoError, match="file not found") as e:
            worker.decode(str(tmp_path / "nope.mp4"), spec())
        assert e.value.stage == "read"
    finally:
        worker.close()


def test_decode_batch_with_a_limit_keeps_every_row(fifo, make_video):
    good = make_video("ok.mp4", frames=8, size=(32, 48))
    batch = {"video_id": np.array(["stuck", "ok"], dtype=object),
             "path": np.array([str(fifo), str(good)], dtype=object),
             "start_s": np.full(2, np.nan), "end_s": np.full(2, np.nan)}
    out = decode_batch(batch, spec(timeout_s=3))
    assert out["status"].tolist() == ["error", "ok"]
    assert out["error"][0].startswith("decode: timed out")
