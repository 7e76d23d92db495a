"""Decoding on the replica (``resources.decode_on: replica``): the decode tasks only probe
each video (open it, read its metadata, choose its frames: the same indices decoding in
tasks would decode), and each replica decodes its batch's frames on its own device.

On a GPU the replica decodes on NVDEC through torchcodec and resizes on the GPU, so the
frames never cross the object store or the host; a video NVDEC cannot decode is decoded
by the CPU decoders (``resources.decoder``, then its fallback), and its row says so in
``decoder`` and ``decode_note``. On a CPU the replica runs the CPU decoders itself.

The probe runs where decoding runs today: in the confined, killable child when the job
has ``decode_timeout_s``, so a file that crashes or hangs the demuxer becomes an error row
there and never reaches the replica. The decode itself then runs in the replica's process,
without that child: docs/security.md says what that gives up.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from pipeline.decode.base import NAMES, DecodedVideo, DecodeSpec, open_source, short_error
from pipeline.decode.fallback import decode_video
from pipeline.decode.stage import attempted, decode_batch, float_or_none

# Videos a GPU replica decodes at once: NVDEC engines work in parallel (an H100 has 7),
# and each decode's host work (demuxing, kernel launches) overlaps the others'. Measured
# on an H100 with 2 cores (benchmarks/README.md, GPU): 4 at once 36.6 videos/s, 8 47.1,
# 16 51.0 (using 2.3 cores rather than 2.1).
GPU_DECODES_AT_ONCE = 8


def probe_batch(batch, spec: DecodeSpec, guard=None):
    """The decode tasks' stage with ``decode_on: replica``: every row's metadata and
    ``frame_indices``, no frames (:func:`~pipeline.decode.stage.decode_batch` with
    ``probe_only``). The frame size stays unknown (NaN) until the replica decodes: a
    probe decodes no picture, so a huge frame costs the confined child nothing."""
    out = decode_batch(batch, replace(spec, probe_only=True), guard)
    out["width"] = np.full(len(out["width"]), np.nan)
    out["height"] = np.full(len(out["height"]), np.nan)
    return out


class ReplicaDecoder:
    """Decodes a probed batch's frames on the replica's ``device`` ("cuda" or "cpu").

    Called with the rows the probe wrote (no ``frames`` column), returns them with
    ``frames`` filled: a numpy array, or with ``device_frames`` on a GPU a torch tensor in
    GPU memory. A row whose decode fails here becomes an error row with its reason.
    """

    def __init__(self, spec: DecodeSpec, device: str, device_frames: bool = False):
        self.spec = replace(spec, probe_only=False, timeout_s=None)
        self.device, self.device_frames = device, device_frames and device != "cpu"
        self.nvdec = None
        if device != "cpu":
            from pipeline.decode.optional import unavailable

            self.nvdec = unavailable()  # None: decode on NVDEC
            if self.nvdec:
                print(f"vidbatch: decode_on replica: this GPU replica decodes on the CPU: "
                      f"{self.nvdec}", file=sys.stderr, flush=True)
        workers = GPU_DECODES_AT_ONCE if device != "cpu" and self.nvdec is None else 1
        self._pool = ThreadPoolExecutor(workers) if workers > 1 else None

    def _decode(self, path: str, start_s, end_s, indices: np.ndarray) -> DecodedVideo:
        spec = self.spec
        src = open_source(path, spec.allow_uri_options, spec.max_file_mb)
        if self.device == "cpu" or self.nvdec is not None:
            return decode_video(path, spec, start_s, end_s, src, indices)
        from pipeline.decode.video_torchcodec import decode_with_torchcodec

        try:
            return decode_with_torchcodec(src, spec, start_s, end_s, indices, self.device)
        except Exception as e:  # noqa: BLE001  (NVDEC refused it: the CPU decoders try)
            reason = short_error(e)
        video = decode_video(path, spec, start_s, end_s, src, indices)
        video.note = f"NVDEC failed ({reason}); " + (
            video.note or f"decoded by {NAMES[video.decoder]} on the CPU")
        return video

    def _one(self, batch, i: int):
        return attempted(lambda: self._decode(
            str(batch["path"][i]), float_or_none(batch["start_s"][i]),
            float_or_none(batch["end_s"][i]), batch["frame_indices"][i]))

    def __call__(self, batch):
        n = len(batch["video_id"])
        out = {k: batch[k].copy() for k in ("status", "error", "decoder", "decode_note",
                                            "decode_s", "width", "height")}
        rows = np.flatnonzero(out["status"] == "ok")
        results = (self._pool.map(lambda i: self._one(batch, i), rows) if self._pool
                   else (self._one(batch, i) for i in rows))
        frames = self._empty(n)
        for i, (video, err, dt) in zip(rows, results):
            out["decode_s"][i] += dt
            if video is None:  # as a failed decode in a decode task: no decoder named
                out["status"][i], out["error"][i] = "error", err
                out["decoder"][i] = out["decode_note"][i] = None
                continue
            frames[i] = self._placed(video.frames)
            out["decoder"][i], out["decode_note"][i] = video.decoder, video.note
            out["width"][i], out["height"][i] = video.width, video.height
        return {**batch, **out, "frames": frames}

    def _empty(self, n: int):
        if not self.device_frames:
            return np.zeros((n, *self.spec.shape), dtype=np.uint8)
        import torch

        return torch.zeros((n, *self.spec.shape), dtype=torch.uint8, device=self.device)

    def _placed(self, frames):
        """One video's frames where :meth:`_empty` keeps them."""
        if self.device_frames:
            import torch

            return frames if isinstance(frames, torch.Tensor) else torch.from_numpy(frames)
        return frames if isinstance(frames, np.ndarray) else frames.cpu().numpy()
