"""torchcodec decoding of the sampled frames (``decoder: torchcodec``), on the CPU or on
an NVIDIA GPU's video engines (NVDEC).

torchcodec (PyTorch's decoder) uses the system's FFmpeg shared libraries (majors 4 to 9;
Debian 12's ``libavcodec59``), so it is an optional extra: ``pip install
'vidbatch[torchcodec]'`` and the FFmpeg libraries. On a GPU (``device="cuda"``) it decodes
on NVDEC through the driver's ``libnvcuvid`` and returns frames in GPU memory; a stream
NVDEC cannot decode is decoded by torchcodec on the CPU instead, and the row's note says
so. Frames come out upright (the stream's display rotation applied) at full size and are
resized here with torch, on the frames' device: torchcodec's own resize runs on the CPU
only.
"""

from __future__ import annotations

import numpy as np

from pipeline.decode.base import DecodedVideo, DecodeSpec


def resize_on_device(frames, spec: DecodeSpec):
    """uint8 ``(k, H, W, 3)`` torch frames -> ``(k, h, w, 3)`` at the spec's output size
    (short side resized and centre-cropped, or fitted into the canvas and padded), on the
    frames' own device. Antialiased bilinear, as a downscale wants."""
    import torch
    import torch.nn.functional as F

    h, w = frames.shape[1], frames.shape[2]
    th, tw = spec.resized(h, w)
    if (th, tw) != (h, w):
        x = frames.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False,
                          antialias=th < h)
        frames = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    if spec.canvas:
        out = frames.new_zeros((frames.shape[0], *spec.canvas, 3))
        out[:, :th, :tw] = frames
        return out
    top, left = (th - spec.crop_size) // 2, (tw - spec.crop_size) // 2
    return frames[:, top:top + spec.crop_size, left:left + spec.crop_size].contiguous()


def decode_with_torchcodec(src: str | bytes, spec: DecodeSpec, start_s: float | None = None,
                           end_s: float | None = None, indices: np.ndarray | None = None,
                           device: str = "cpu") -> DecodedVideo:
    """The sampled clips of ``src`` (from :func:`~pipeline.decode.base.open_source`).

    ``indices``: the frames to decode, as a probe chose them (decoding on the replica);
    by default they are sampled from torchcodec's own frame count. A segment is placed at
    the average frame rate (torchcodec exposes no per-frame timestamps). ``device="cuda"``
    decodes on NVDEC and returns the frames as a torch tensor on the GPU; on the CPU they
    are a numpy array. With ``spec.probe_only`` nothing is decoded: the result has the
    indices and metadata, and no frames.
    """
    import torch
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(src, device=device, seek_mode="exact", dimension_order="NHWC",
                           num_ffmpeg_threads=max(0, spec.threads))
    meta = decoder.metadata
    n, fps = int(meta.num_frames or 0), float(meta.average_fps or 0.0)
    keys = None
    if spec.snap_to_keyframes and n and indices is None:
        keys = decoder._get_key_frame_indices().tolist()  # the only API that has them
    idx = spec.indices(n, fps, start_s, end_s, None, keys, given=indices)
    flat = idx.reshape(-1)
    width, height = int(meta.width or 0), int(meta.height or 0)
    if spec.probe_only:
        return DecodedVideo(None, "torchcodec", n, fps, width, height, indices=flat)
    uniq, inverse = np.unique(flat, return_inverse=True)
    with torch.inference_mode():
        got = decoder.get_frames_at([int(i) for i in uniq]).data  # (k, H, W, 3) uint8
        height, width = int(got.shape[1]), int(got.shape[2])  # upright
        frames = resize_on_device(got, spec)[torch.from_numpy(inverse).to(got.device)]
        frames = frames.reshape(spec.shape)
    name, note = "torchcodec", None
    if device != "cpu":
        fallback = decoder.cpu_fallback
        if fallback:
            note = f"NVDEC could not decode this stream ({fallback}); torchcodec did, on the CPU"
        else:
            name = "nvdec"
    if device == "cpu":
        frames = np.ascontiguousarray(frames.numpy())
    return DecodedVideo(frames, name, n, fps, width, height, note, indices=flat)
