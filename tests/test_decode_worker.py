"""The decode worker: a decoder stuck in native code becomes an error row, and the child
that parses untrusted files holds no secrets, no network, and a bounded memory."""

import os

import numpy as np
import pytest

from pipeline.decode.base import DecodeSpec
from pipeline.decode.stage import decode_batch
from pipeline.decode.worker import KEPT_ENV, DecodeWorker, _video
from pipeline.errors import VideoError
from pipeline.synth import moving_texture, write_video


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


def test_native_decoder_messages_are_captured_not_printed(tmp_path, make_video, capfd):
    """FFmpeg's and decord's own lines about a broken file stay out of the worker's
    standard error (a terminal, or a Ray worker's log); the error row keeps the reason."""
    good = make_video("good.mp4", frames=8, size=(32, 48))
    broken = tmp_path / "truncated.mp4"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    worker = DecodeWorker(timeout_s=30)
    try:
        with pytest.raises(VideoError, match="not a decodable video") as e:
            worker.decode(str(broken), spec())
        assert worker.decode(str(good), spec()).frames.shape == (1, 2, 32, 32, 3)
    finally:
        worker.close()
    printed = capfd.readouterr()
    assert "truncated.mp4" not in printed.err + printed.out
    assert "truncated.mp4" in e.value.message


def test_decode_batch_with_a_limit_keeps_every_row(fifo, make_video):
    good = make_video("ok.mp4", frames=8, size=(32, 48))
    batch = {"video_id": np.array(["stuck", "ok"], dtype=object),
             "path": np.array([str(fifo), str(good)], dtype=object),
             "start_s": np.full(2, np.nan), "end_s": np.full(2, np.nan)}
    out = decode_batch(batch, spec(timeout_s=3))
    assert out["status"].tolist() == ["error", "ok"]
    assert out["error"][0].startswith("decode: timed out")


# ---------------------------------------------------------------- the child is confined


@pytest.fixture
def running_worker(make_video, monkeypatch):
    """A worker whose child has decoded one video, started from a parent that holds
    secrets in its environment."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t0ken")
    good = make_video("good.mp4", frames=8, size=(32, 48))
    worker = DecodeWorker(timeout_s=30, memory_mb=2048)
    worker.decode(str(good), spec())
    yield worker
    worker.close()


def test_the_child_gets_no_secrets(running_worker):
    environ = open(f"/proc/{running_worker.pid}/environ", "rb").read().split(b"\0")
    names = {v.split(b"=", 1)[0].decode() for v in environ if v}
    assert "AWS_SECRET_ACCESS_KEY" not in names and "RAY_AUTH_TOKEN" not in names
    assert names <= {*KEPT_ENV, "PYTHONPATH"}


def test_the_child_has_a_memory_limit_and_no_network(running_worker):
    limits = open(f"/proc/{running_worker.pid}/limits").read()
    (line,) = [ln for ln in limits.splitlines() if ln.startswith("Max address space")]
    assert line.split()[3] == str(2048 * 2**20)
    # A network namespace of its own: no interface of the machine, no route out.
    assert os.readlink(f"/proc/{running_worker.pid}/ns/net") != os.readlink("/proc/self/ns/net")


def test_a_video_that_needs_more_memory_than_allowed_is_an_error_row(tmp_path):
    """An 8192x8192 frame (a 14 KB file): decoders allocate hundreds of MB for it. Under a
    512 MiB limit that fails in the child, and the row says so; the worker goes on."""
    huge = write_video(tmp_path / "huge.mp4", np.full((1, 8192, 8192, 3), 90, np.uint8),
                       options={"x264-params": "level=6.2"})
    good = write_video(tmp_path / "good.mp4", moving_texture(10, 64, 80, seed=1))
    worker = DecodeWorker(timeout_s=60, memory_mb=512)
    try:
        with pytest.raises(VideoError) as e:
            worker.decode(str(huge), spec())
        assert e.value.stage == "decode"
        # The next file decodes (in a fresh child when the last one ran out of memory).
        assert worker.decode(str(good), spec()).frames.shape == spec().shape
    finally:
        worker.close()


def test_frames_come_back_only_in_the_shape_asked_for():
    """The reply is data, never code: a child that answers with other sizes is refused."""
    s = spec()
    forged = {"ok": True, "decoder": "decord", "num_frames": 1, "fps": 1.0, "width": 1,
              "height": 1, "note": None, "shape": [1, 2, 64, 64, 3]}
    with pytest.raises(VideoError, match="frames of shape"):
        _video(forged, bytes(1 * 2 * 64 * 64 * 3), s)
    video = _video({**forged, "shape": list(s.shape)}, bytes(int(np.prod(s.shape))), s)
    assert video.frames.shape == s.shape


def _dies_on_killer(batch, spec):
    """A decode stage whose process dies on one video, every time (as a decoder that
    crashes in-process would)."""
    if any("killer" in str(p) for p in batch["path"]):
        os._exit(1)
    return batch


@pytest.mark.slow
def test_a_decode_task_that_keeps_dying_fails_the_job_instead_of_retrying_forever(ray_session):
    import sys

    import pyarrow as pa
    from ray import cloudpickle

    from pipeline import dataflow
    from pipeline.spec import DecodeResourcesSpec

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        rows = pa.table({"video_id": ["a", "b"], "path": ["/x/ok.mp4", "/x/killer.mp4"]})
        ds = dataflow.decoded(dataflow.manifest_blocks(rows, 1), spec(),
                              DecodeResourcesSpec(videos_per_decode_task=1), _dies_on_killer)
        with pytest.raises(Exception, match="(?i)worker|died|crash|exit"):
            ds.materialize()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
