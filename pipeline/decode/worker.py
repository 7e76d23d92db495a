"""A time limit for native decoders: decode in a child process that can be killed.

decord is known to hang on some inputs inside native code that holds the GIL, and native
decoders can crash the process outright. Neither can be stopped from a Python thread, so
:class:`DecodeWorker` runs decodes in one long-lived child process per decode worker: a
hang past the limit kills the child (the row becomes an ``error``), a crash is reported the
same way, and the next video gets a fresh child.

The child is started with ``spawn`` (no inherited threads or locks from the Ray worker) and
asks the kernel to kill it if its parent dies, so no decoder outlives the job.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
from typing import Any

from pipeline.decode.fallback import decode_video
from pipeline.errors import VideoError

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass


def _serve(conn) -> None:
    """Child loop: receive ``(path, spec, start_s, end_s)``, send back the result."""
    _die_with_parent()
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        try:
            reply: tuple[str, Any] = ("ok", decode_video(*request))
        except VideoError as e:
            reply = ("video_error", (e.stage, e.message))
        except Exception as e:  # reported as this video's error, the child stays up
            reply = ("error", f"{type(e).__name__}: {e}")
        conn.send(reply)


class DecodeWorker:
    """Runs :func:`pipeline.decode.fallback.decode_video` in a killable child process."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True,
                                 name="vidbatch-decode")
        self._proc.start()
        child.close()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
        self._proc = self._conn = None

    def decode(self, path: str, spec, start_s=None, end_s=None):
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((path, spec, start_s, end_s))
        try:
            ready = self._conn.poll(self.timeout_s)
            reply = self._conn.recv() if ready else None
        except (EOFError, ConnectionError):
            code = self._proc.exitcode if self._proc else None
            self.close()
            raise VideoError("decode", f"the decoder crashed (exit code {code}) on this "
                             "file") from None
        if reply is None:
            self.close()
            raise VideoError("decode", f"timed out after {self.timeout_s:g} s (the decoder "
                             "hung on this file; raise resources.decode_timeout_s if it is "
                             "just very long)")
        kind, value = reply
        if kind == "ok":
            return value
        if kind == "video_error":
            raise VideoError(*value)
        raise RuntimeError(value)


_workers: dict[float, DecodeWorker] = {}


def worker_for(timeout_s: float) -> DecodeWorker:
    """One child per decoding process and limit, reused across batches (Ray reuses its
    worker processes, so the child's start-up cost is paid once, not per video)."""
    if timeout_s not in _workers:
        _workers[timeout_s] = DecodeWorker(timeout_s)
    return _workers[timeout_s]
