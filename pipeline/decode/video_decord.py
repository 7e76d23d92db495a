"""decord decoding of the sampled frames: the default decoder (``resources.decoder``).

decord seeks to the sampled frames and resizes while decoding (``width``/``height``). Its
bundled FFmpeg has no AV1 and it refuses some WebM files without a duration; for those, and
for any decord failure, the fallback (:mod:`pipeline.decode.fallback`) tries PyAV.
"""

from __future__ import annotations

import numpy as np

from pipeline.decode.base import DecodedVideo, DecodeSpec, reader_input


def decode_with_decord(src: str | bytes, spec: DecodeSpec, start_s: float | None = None,
                       end_s: float | None = None, indices: np.ndarray | None = None
                       ) -> DecodedVideo:
    """The sampled clips of ``src`` (from :func:`~pipeline.decode.base.open_source`);
    ``indices``: the frames a probe chose (decoding on the replica). With
    ``spec.probe_only``, the indices and metadata without frames."""
    import decord

    probe = decord.VideoReader(reader_input(src), ctx=decord.cpu(0), num_threads=spec.threads)
    n, fps = len(probe), float(probe.get_avg_fps())
    ts = None
    if (start_s is not None or end_s is not None) and indices is None:
        ts = probe.get_frame_timestamp(range(n))[:, 0] if n else None
    keys = probe.get_key_indices() if spec.snap_to_keyframes and n and indices is None \
        else None
    idx = spec.indices(n, fps, start_s, end_s, ts, keys, given=indices)
    if spec.probe_only:  # no picture decoded: the frame size is the replica's to learn
        return DecodedVideo(None, "decord", n, fps, 0, 0, indices=idx.reshape(-1))
    uniq, inverse = np.unique(idx, return_inverse=True)
    # decord reports no frame size before decoding, and its width/height are the output
    # size after rotation, so decode the first frame (a keyframe: one frame's work) at full
    # size to learn the aspect ratio, then decode the sampled frames resized.
    first = probe.next().asnumpy()
    height, width = first.shape[0], first.shape[1]
    th, tw = spec.resized(height, width)
    reader = probe
    if (th, tw) != (height, width):
        del probe
        reader = decord.VideoReader(reader_input(src), ctx=decord.cpu(0), width=tw, height=th,
                                    num_threads=spec.threads)
    frames = reader.get_batch([int(i) for i in uniq]).asnumpy()
    frames = spec.crop(frames)[inverse.reshape(idx.shape)]
    return DecodedVideo(np.ascontiguousarray(frames), "decord", n, fps, width, height,
                        indices=idx.reshape(-1))
