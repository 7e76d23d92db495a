"""PyAV decoding of the sampled frames: the fallback for decord, or ``decoder: pyav``.

PyAV decodes only what the sampled frames need (:func:`packet_plan`): each group of
pictures up to its last sampled frame, with unsampled non-reference pictures skipped by the
decoder. decord decodes every picture from the keyframe to each sampled frame, so PyAV
first is faster for sparse sampling of B-frame video (benchmarks/README.md). Frames are
named by their presentation timestamps; where those cannot identify frames, every packet is
decoded and pictures are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pipeline.decode.base import DecodedVideo, DecodeSpec, reader_input
from pipeline.errors import VideoError


def _av_open(src):
    import av

    return av.open(reader_input(src), mode="r")


@dataclass
class _Packets:
    """What one demux pass tells about a stream's packets, in decode order."""

    pts: list  # None where the container gives none
    keyframe: np.ndarray  # bool

    @cached_property  # read by the plan, packet_plan and the decode loop of one video
    def ranks(self) -> dict[int, int] | None:
        """Display index of every pts, or None when pts cannot identify frames."""
        if any(p is None for p in self.pts) or len(set(self.pts)) != len(self.pts):
            return None
        return {p: i for i, p in enumerate(sorted(self.pts))}


# A video's packets up to this size stay in memory between planning and decoding, so it
# is opened and demuxed once (an open costs about as much as decoding a keyframe, which
# matters for short videos). A larger one, whose decoding dwarfs a second open, is demuxed
# again rather than held in the decode task's memory.
KEEP_PACKETS_BYTES = 32 * 2**20


def _demux(container, stream) -> tuple[_Packets, list | None]:
    """Every packet's pts and keyframe flag, and the packets themselves when they fit."""
    pts, keys, kept, size = [], [], [], 0
    for p in container.demux(stream):
        if p.size <= 0:
            continue
        pts.append(p.pts)
        keys.append(p.is_keyframe)
        if kept is not None:
            size += p.size
            kept = kept if size <= KEEP_PACKETS_BYTES else None
        if kept is not None:
            kept.append(p)
    return _Packets(pts, np.array(keys, bool)), kept


def _video_stream(container):
    stream = container.streams.best("video")
    if stream is None:
        raise VideoError("decode", "no video stream in the file")
    return stream


def packet_plan(packets: _Packets, wanted: set[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Which packets to send to the decoder and which must come out as pictures.

    Returns ``(send, needed)`` per packet (decode order), or None when frames cannot be
    identified by pts. A group of pictures (keyframe to next keyframe) is sent up to its
    last needed packet only: in decode order references come first, so nothing after it is
    needed. Unneeded packets that are sent are decoded with ``skip_frame=NONREF``: the
    decoder drops them unless other frames reference them. The next group is an exception
    when it is open (its leading pictures reference this group's tail): then this group is
    sent whole.
    """
    ranks = packets.ranks
    if ranks is None:
        return None
    n = len(packets.pts)
    needed = np.array([ranks[p] in wanted for p in packets.pts], bool)
    send = np.ones(n, bool)
    starts = [*np.flatnonzero(packets.keyframe).tolist(), n]
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    for g, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        c = starts[g + 2] if g + 2 < len(starts) else n
        next_open = b < n and any(packets.pts[j] < packets.pts[b] for j in range(b + 1, c))
        if next_open:
            continue
        hits = np.flatnonzero(needed[a:b])
        send[a + (hits[-1] + 1 if hits.size else 0):b] = False
    return send, needed


def upright_turns(frame) -> int:
    """Quarter turns (``np.rot90``'s ``k``) that make a decoded PyAV picture upright, as
    a player shows it (its stream's display rotation; 0 without one)."""
    return (int(getattr(frame, "rotation", 0) or 0) // 90) % 4


def _to_rgb(frame, spec: DecodeSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """A decoded picture as uint8 RGB, rotated upright, short side resized."""
    turns = upright_turns(frame)
    fh, fw = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)
    th, tw = spec.resized(fh, fw)
    rw, rh = (th, tw) if turns % 2 else (tw, th)
    arr = frame.to_ndarray(format="rgb24", width=rw, height=rh)
    return (np.rot90(arr, k=turns) if turns else arr), (fh, fw)


def decode_packet(ctx, packet) -> list | None:
    """The pictures a packet completes (None drains the decoder), or None when FFmpeg
    cannot decode it: a corrupt packet costs its frames, not the rest of the video."""
    import av

    try:
        return ctx.decode(packet)
    except av.FFmpegError:
        return None


def _pyav_frames(stream, source, wanted: set[int], spec: DecodeSpec, packets: _Packets,
                 sparse: bool = True):
    """Decode packet by packet, so that one corrupt packet costs one frame, not the rest.

    ``source`` yields the stream's non-empty packets in decode order (then the decoder is
    drained). ``sparse`` decodes only what the wanted frames need (:func:`packet_plan`)
    and names pictures by pts; otherwise every packet is decoded and pictures are counted.
    Returns ``(frames by index, (height, width), pictures decoded, corrupt packets)``.
    """

    plan = packet_plan(packets, wanted) if sparse else None
    ranks = packets.ranks if plan is not None else None
    got: dict[int, np.ndarray] = {}
    size, decoded, bad = None, 0, 0
    stream.thread_count = max(1, spec.threads)
    ctx = stream.codec_context
    for k, packet in enumerate([*source, None]):  # None drains the decoder's delayed frames
        if plan is not None and packet is not None:
            if k >= len(plan[0]) or not plan[0][k]:
                continue
            ctx.skip_frame = "DEFAULT" if plan[1][k] else "NONREF"
        frames = decode_packet(ctx, packet)
        if frames is None:
            bad += 1
            continue
        for frame in frames:
            i, decoded = decoded, decoded + 1
            if ranks is not None:
                i = ranks.get(frame.pts, -1)
            if i in wanted and i not in got:
                got[i], shape = _to_rgb(frame, spec)
                size = size or shape
        if len(got) == len(wanted):
            break
    return got, size, decoded, bad


def _decode_again(src, wanted: set[int], spec: DecodeSpec, packets: _Packets, sparse: bool):
    """:func:`_pyav_frames` from a new open of the file."""
    with _av_open(src) as container:
        stream = _video_stream(container)
        source = (p for p in container.demux(stream) if p.size > 0)
        return _pyav_frames(stream, source, wanted, spec, packets, sparse)


def decode_with_pyav(src: str | bytes, spec: DecodeSpec, start_s: float | None = None,
                     end_s: float | None = None, indices: np.ndarray | None = None
                     ) -> DecodedVideo:
    """Demux once to count frames and read timestamps, then decode only what the sampled
    frames need from the same packets (falling back to decoding every packet, from a
    fresh open, if that misses any). ``indices``: the frames a probe chose (decoding on
    the replica). With ``spec.probe_only``, the indices and metadata without frames."""
    with _av_open(src) as container:
        stream = _video_stream(container)
        packets, kept = _demux(container, stream)
        pts = packets.pts
        n = len(pts)
        tb = float(stream.time_base) if stream.time_base else 0.0
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else (n / (float(stream.duration) * tb) if stream.duration
                                        else 0.0)
        ranks = packets.ranks
        ts = keys = None
        if (start_s is not None or end_s is not None) and tb and ranks is not None:
            ts = (np.sort(np.asarray(pts, dtype=np.float64)) - min(pts)) * tb
        if spec.snap_to_keyframes and ranks is not None:
            keys = sorted(ranks[p] for p, key in zip(pts, packets.keyframe) if key)
        idx = spec.indices(n, fps, start_s, end_s, ts, keys, given=indices)
        if spec.probe_only:
            ctx = stream.codec_context
            return DecodedVideo(None, "pyav", n, fps, ctx.width, ctx.height,
                                indices=idx.reshape(-1))
        wanted = set(int(i) for i in np.unique(idx))
        if kept is not None:
            result = _pyav_frames(stream, kept, wanted, spec, packets)
    if kept is None:  # too large to keep: demux again
        result = _decode_again(src, wanted, spec, packets, sparse=True)
    if len(result[0]) < len(wanted):
        result = _decode_again(src, wanted, spec, packets, sparse=False)
    got, size, decoded, bad_packets = result
    if len(got) < len(wanted):
        raise VideoError("decode", f"only {decoded} of {n} frames are decodable "
                         f"({bad_packets} corrupt packets); sampled frames are missing")
    note = f"{bad_packets} corrupt packets skipped" if bad_packets else None
    frames = np.stack([spec.crop(got[int(i)]) for i in idx.reshape(-1)])
    frames = frames.reshape(spec.shape)
    return DecodedVideo(frames, "pyav", n, fps, size[1], size[0], note, idx.reshape(-1))
