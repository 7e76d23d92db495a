"""Decode one video with the chosen decoder, and the other one when it fails.

decord is the default (``resources.decoder``); PyAV, which ships its own and newer FFmpeg,
decodes what decord cannot (AV1, WebM without a duration, some corrupt files), and what
torchcodec (``decoder: torchcodec``, the system's FFmpeg) cannot. The result records which
decoder ran and, in its note, why a fallback did.
"""

from __future__ import annotations

from pipeline.decode.base import NAMES, DecodedVideo, DecodeSpec, open_source, other, short_error
from pipeline.decode.video_decord import decode_with_decord
from pipeline.decode.video_pyav import decode_with_pyav
from pipeline.errors import VideoError


def _torchcodec(src, spec: DecodeSpec, start_s=None, end_s=None, indices=None) -> DecodedVideo:
    from pipeline.decode.video_torchcodec import decode_with_torchcodec  # optional extra

    return decode_with_torchcodec(src, spec, start_s, end_s, indices)


DECODERS = {"decord": decode_with_decord, "pyav": decode_with_pyav, "torchcodec": _torchcodec}


def decode_video(path: str, spec: DecodeSpec, start_s: float | None = None,
                 end_s: float | None = None, src: str | bytes | None = None,
                 indices=None) -> DecodedVideo:
    """Decode the sampled clips of one video. Raises :class:`VideoError` with the reason.

    ``spec.decoder`` runs first; any failure of it falls back to the other decoder, except
    a sampling error (e.g. a segment past the end), which is final: another decoder would
    see the same video. ``src``: the file as :func:`~pipeline.decode.base.open_source`
    gave it, when the caller opened it already (the decode worker's parent does).
    ``indices``: the frames to decode, as a probe chose them (decoding on the replica).
    """
    if src is None:
        src = open_source(path, spec.allow_uri_options, spec.max_file_mb)
    first, second = spec.decoder, other(spec.decoder)
    try:
        return DECODERS[first](src, spec, start_s, end_s, indices)
    except VideoError as e:
        if e.stage == "sample":
            raise
        reason = e.message
    except Exception as e:  # decord raises DECORDError, RuntimeError, ...
        reason = short_error(e)
    try:
        video = DECODERS[second](src, spec, start_s, end_s, indices)
    except VideoError as e:
        raise VideoError(e.stage, f"{e.message} ({NAMES[first]} also failed: {reason})") \
            from None
    except Exception as e:
        raise VideoError("decode", f"not a decodable video: {NAMES[first]}: {reason}; "
                         f"{NAMES[second]}: {short_error(e)}") from None
    video.note = f"{NAMES[first]} failed ({reason}); " + (
        video.note or f"decoded by {NAMES[second]}")
    return video
