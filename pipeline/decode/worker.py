"""Decoding untrusted files in a child process that has little to lose and can be killed.

decord is known to hang on some inputs inside native code that holds the GIL, native
decoders can crash outright, and both parse untrusted files with bundled FFmpeg builds
(decord's is from 2018). :class:`DecodeWorker` runs decodes in one long-lived child per
decode worker, started as a fresh interpreter (``python -m pipeline.decode.worker``):

* **a time limit**: a hang past ``decode_timeout_s`` kills the child (the row becomes an
  ``error``), a crash is reported the same way, and the next video gets a fresh child;
* **a scrubbed environment**: only ``PATH``, the locale and the import path; no cloud
  credentials, tokens or Ray variables. The parent reads remote files and hands the child
  their bytes, so the child needs no credentials and no network;
* **no network** where the platform allows it (a network namespace of its own, Linux);
* **a memory limit** (``RLIMIT_AS``, ``resources.decode_memory_mb``): a file that makes a
  decoder allocate without bound fails in the child, not the Ray worker;
* **raw arrays back, never pickle**: the reply is a JSON header and the frames' (or the
  audio samples') bytes, checked against the shape the spec asks for, so a compromised
  child cannot run code in the worker.

The child asks the kernel to kill it if its parent dies, so no decoder outlives the job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from typing import BinaryIO

import numpy as np

from pipeline.decode.audio import AudioSpec, DecodedAudio
from pipeline.decode.base import DecodedVideo, DecodeSpec, open_source
from pipeline.decode.sequence import SequenceSpec
from pipeline.errors import VideoError

# Variables the child keeps; everything else (AWS_*, RAY_*, tokens, ...) stays behind.
KEPT_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME")
_PR_SET_PDEATHSIG = 1
NATIVE_CHARS = 300  # of the native log kept in a failed decode's error
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000


def child_environment() -> dict[str, str]:
    env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


# ---------------------------------------------------------------- the child


def _confine(memory_mb: int | None) -> None:
    """Die with the parent, cap the address space, and leave the network (best effort:
    a network namespace needs root or unprivileged user namespaces)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import resource

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if memory_mb:
        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if libc.unshare(_CLONE_NEWNET) != 0:
        libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET)


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _decode_audio(req: dict, source) -> tuple[dict, bytes]:
    from pipeline.decode.audio import AudioSpec, decode_audio

    audio = decode_audio(req["path"], AudioSpec(**req["spec"]), req["start_s"], req["end_s"],
                         source)
    samples = np.ascontiguousarray(audio.windows, dtype=np.float32)
    return {**audio.meta(), "shape": list(samples.shape)}, samples.tobytes()


def _decode_video(req: dict, source) -> tuple[dict, bytes]:
    from pipeline.decode.fallback import decode_video

    canvas = req["spec"].get("canvas")
    spec = DecodeSpec(**{**req["spec"], "canvas": tuple(canvas) if canvas else None})
    video = decode_video(req["path"], spec, req["start_s"], req["end_s"], source)
    frames = np.zeros((0,), np.uint8) if spec.probe_only else \
        np.ascontiguousarray(video.frames, dtype=np.uint8)
    return {"decoder": video.decoder, "num_frames": video.num_frames, "fps": video.fps,
            "width": video.width, "height": video.height, "note": video.note,
            "shape": list(frames.shape), "indices": None if video.indices is None else
            [int(i) for i in video.indices]}, frames.tobytes()


def _decode_sequence(req: dict, source) -> tuple[dict, bytes]:
    from pipeline.decode.sequence import decode_sequence

    spec = SequenceSpec(**{**req["spec"], "size": tuple(req["spec"]["size"])})
    video = decode_sequence(req["path"], spec, req["start_s"], req["end_s"], source)
    frames = np.ascontiguousarray(video.frames, dtype=np.uint8)
    times = np.ascontiguousarray(video.times, dtype=np.float64)
    return {"decoder": video.decoder, "num_frames": video.num_frames, "fps": video.fps,
            "width": video.width, "height": video.height, "note": video.note,
            "shape": list(frames.shape), "first": int(video.indices[0])}, \
        frames.tobytes() + times.tobytes()


# What a request's ``kind`` asks the child to decode: a file's audio, its video stream's
# sampled clips, or every frame of it (a sequence).
_DECODE = {"audio": _decode_audio, "video": _decode_video, "sequence": _decode_sequence}


def _decode_one(req: dict, source) -> tuple[dict, bytes]:
    """Run one request's decode in the child: ``(reply fields, payload bytes)``."""
    return _DECODE[req.get("kind", "video")](req, source)


def _native_lines(log: BinaryIO) -> str:
    """What native code wrote to the child's standard error since the last call (its last
    lines, short), and empty the file for the next request."""
    log.seek(0)
    lines = [x.strip() for x in log.read().decode("utf-8", "replace").splitlines()]
    log.seek(0)
    log.truncate()
    text = "; ".join(x for x in lines if x)
    return text if len(text) <= NATIVE_CHARS else "..." + text[-NATIVE_CHARS:]


def _serve(requests: BinaryIO, replies: BinaryIO, native: BinaryIO) -> None:
    """Child loop: a JSON request line (and the file's bytes when the parent read them),
    then a JSON reply line and the decoded samples' raw bytes. ``native``: the file that
    the child's standard error goes to; a failed decode's reply carries what it says."""
    while True:
        line = requests.readline()
        if not line:
            return
        req = json.loads(line)
        source = _read_exact(requests, req["nbytes"]) if req["nbytes"] else req["path"]
        payload = b""
        _native_lines(native)
        try:
            fields, payload = _decode_one(req, source)
            reply = {"ok": True, **fields}
        except VideoError as e:
            reply = {"ok": False, "stage": e.stage, "message": e.message}
        except MemoryError:
            reply = {"ok": False, "stage": "decode", "message": "the decoder needed more "
                     "memory than resources.decode_memory_mb "
                     f"({req['spec'].get('memory_mb')}) allows"}
        except Exception as e:  # reported as this file's error, the child stays up
            reply = {"ok": False, "stage": "decode",
                     "message": f"unexpected {type(e).__name__}: {str(e)[:300]}"}
        said = _native_lines(native)
        if not reply["ok"] and said and said not in reply["message"]:
            reply["message"] += f" (decoder log: {said})"
        replies.write(json.dumps({**reply, "nbytes": len(payload)}).encode() + b"\n")
        replies.write(payload)
        replies.flush()


def main() -> None:
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "0" else None
    _confine(memory_mb)
    # The protocol owns the real stdout. Whatever native libraries print (FFmpeg's and
    # decord's messages) goes to a private file, not to the Ray worker's log or a terminal:
    # a failed decode's error keeps what it said.
    replies = os.fdopen(os.dup(1), "wb")
    native = tempfile.TemporaryFile()
    os.dup2(native.fileno(), 2)
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, replies, native)


# ---------------------------------------------------------------- the parent


class DecodeWorker:
    """Runs :func:`pipeline.decode.fallback.decode_video` (video),
    :func:`pipeline.decode.sequence.decode_sequence` (every frame) and
    :func:`pipeline.decode.audio.decode_audio` (audio) in a confined child process."""

    def __init__(self, timeout_s: float, memory_mb: int | None = None):
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.decode.worker", str(self.memory_mb or 0)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_environment(),
            close_fds=True)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def decode(self, path: str, spec: DecodeSpec, start_s: float | None = None,
               end_s: float | None = None) -> DecodedVideo:
        """The sampled frames of a video (``pipeline.decode.fallback.decode_video``)."""
        reply, payload = self._request("video", path, spec, start_s, end_s)
        return _video(reply, payload, spec)

    def decode_audio(self, path: str, spec: AudioSpec, start_s: float | None = None,
                     end_s: float | None = None) -> DecodedAudio:
        """The windows of a soundtrack (``pipeline.decode.audio.decode_audio``)."""
        reply, payload = self._request("audio", path, spec, start_s, end_s)
        return _audio(reply, payload, spec)

    def decode_sequence(self, path: str, spec: SequenceSpec, start_s: float | None = None,
                        end_s: float | None = None) -> DecodedVideo:
        """Every frame of a video (``pipeline.decode.sequence.decode_sequence``)."""
        reply, payload = self._request("sequence", path, spec, start_s, end_s)
        return _sequence(reply, payload, spec)

    def _request(self, kind: str, path: str, spec, start_s: float | None,
                 end_s: float | None) -> tuple[dict, bytes]:
        src = open_source(path, spec.allow_uri_options, spec.max_file_mb)
        data = src if isinstance(src, bytes) else b""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        request = {"kind": kind, "path": path if data else src, "nbytes": len(data),
                   "spec": dataclasses.asdict(spec), "start_s": start_s, "end_s": end_s}
        deadline = time.monotonic() + self.timeout_s
        try:
            self._proc.stdin.write(json.dumps(request).encode() + b"\n" + data)
            self._proc.stdin.flush()
            reply = json.loads(self._read_line(deadline))
            payload = self._read(reply.get("nbytes", 0), deadline)
        except (BrokenPipeError, EOFError, ConnectionError, ValueError):
            code = self._proc.poll() if self._proc else None
            self.close()
            raise VideoError("decode", f"the decoder crashed (exit code {code}) on this "
                             "file" + (" (it may have hit resources.decode_memory_mb)"
                                       if code is not None and code < 0 else "")) from None
        except TimeoutError:
            self.close()
            raise VideoError("decode", f"timed out after {self.timeout_s:g} s (the decoder "
                             "hung on this file; raise resources.decode_timeout_s if it is "
                             "just very long)") from None
        if not reply.get("ok"):
            message = str(reply.get("message", ""))
            if "resources.decode_memory_mb" in message:
                # A child that ran out of memory may keep what it got near the limit: the
                # next file starts in a fresh one rather than failing in this one.
                self.close()
            raise VideoError(str(reply.get("stage", "decode")), message)
        return reply, payload

    def _wait(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self._proc.stdout], [], [], left)[0]:
            raise TimeoutError

    def _read_line(self, deadline: float) -> bytes:
        line = bytearray()
        fd = self._proc.stdout.fileno()
        while not line.endswith(b"\n"):
            self._wait(deadline)
            chunk = os.read(fd, 1)
            if not chunk:
                raise EOFError
            line += chunk
        return bytes(line)

    def _read(self, n: int, deadline: float) -> bytes:
        data = bytearray()
        fd = self._proc.stdout.fileno()
        while len(data) < n:
            self._wait(deadline)
            chunk = os.read(fd, min(n - len(data), 1 << 20))
            if not chunk:
                raise EOFError
            data += chunk
        return bytes(data)


def _video(reply: dict, payload: bytes, spec: DecodeSpec) -> DecodedVideo:
    """The child's reply as a :class:`DecodedVideo`, or its error; frames only of exactly
    the shape the spec asks for."""
    if not reply.get("ok"):
        raise VideoError(str(reply.get("stage", "decode")), str(reply.get("message", "")))
    shape = (0,) if spec.probe_only else spec.shape  # a probe returns no frames
    if tuple(reply["shape"]) != shape or len(payload) != int(np.prod(shape)):
        raise VideoError("decode", f"the decoder returned frames of shape {reply['shape']}, "
                         f"not {list(shape)}")
    frames = None if spec.probe_only else \
        np.frombuffer(payload, dtype=np.uint8).reshape(spec.shape).copy()
    indices = reply.get("indices")
    if indices is not None:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.shape != (spec.clips * spec.frames,):
            raise VideoError("decode", f"the decoder returned {indices.size} frame indices, "
                             f"not {spec.clips * spec.frames}")
    return DecodedVideo(frames, str(reply["decoder"]), int(reply["num_frames"]),
                        float(reply["fps"]), int(reply["width"]), int(reply["height"]),
                        reply.get("note"), indices)


def _sequence(reply: dict, payload: bytes, spec: SequenceSpec) -> DecodedVideo:
    """The child's reply as a :class:`DecodedVideo` with every frame and its time: frames
    only of the spec's size, and no more of them than it allows."""
    shape = tuple(reply["shape"])
    n = shape[0] if shape else 0
    if len(shape) != 4 or shape[1:] != (*spec.size, 3) or not 1 <= n <= spec.max_frames \
            or len(payload) != n * (int(np.prod(shape[1:])) + 8):
        raise VideoError("decode", f"the decoder returned frames of shape {list(shape)}, "
                         f"not [frames, {spec.size[0]}, {spec.size[1]}, 3]")
    split = len(payload) - 8 * n
    frames = np.frombuffer(payload[:split], dtype=np.uint8).reshape(shape).copy()
    times = np.frombuffer(payload[split:], dtype=np.float64).copy()
    first = int(reply["first"])
    return DecodedVideo(frames, str(reply["decoder"]), int(reply["num_frames"]),
                        float(reply["fps"]), int(reply["width"]), int(reply["height"]),
                        reply.get("note"), np.arange(first, first + n), times)


def _audio(reply: dict, payload: bytes, spec: AudioSpec) -> DecodedAudio:
    """The child's reply as :class:`DecodedAudio`: samples only of the spec's shape."""
    if tuple(reply["shape"]) != spec.shape or len(payload) != 4 * int(np.prod(spec.shape)) \
            or len(reply["starts"]) != spec.windows or not 1 <= reply["count"] <= spec.windows:
        raise VideoError("decode", f"the decoder returned audio of shape {reply['shape']}, "
                         f"not {list(spec.shape)}")
    windows = np.frombuffer(payload, dtype=np.float32).reshape(spec.shape).copy()
    return DecodedAudio.from_meta(reply, windows)


_workers: dict[tuple[float, int | None], DecodeWorker] = {}


def worker_for(timeout_s: float, memory_mb: int | None = None) -> DecodeWorker:
    """One child per decoding process and limits, reused across batches (Ray reuses its
    worker processes, so the child's start-up cost is paid once, not per video)."""
    key = (timeout_s, memory_mb)
    if key not in _workers:
        _workers[key] = DecodeWorker(timeout_s, memory_mb)
    return _workers[key]


if __name__ == "__main__":
    main()
