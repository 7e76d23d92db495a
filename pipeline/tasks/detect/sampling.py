"""Which frames of each video a detector sees, and how they are decoded: what a detect job
and detection training decode alike."""

from __future__ import annotations

from pydantic import Field

from pipeline.decode.base import DecodeSpec
from pipeline.spec import DecodeResourcesSpec, Spec
from pipeline.tasks.detect.models import DetectorCard


class DetectSamplingSpec(Spec):
    """Which frames of each video the detector sees."""

    fps: float | None = Field(None, gt=0, description="frames per second to sample (at most "
                              "`frames` of them); null: `frames` spread over the video")
    frames: int = Field(8, ge=1, le=1024, description="frames per video, or with fps the "
                        "most taken from one video")
    snap_to_keyframes: bool = Field(False, description="move each sampled frame to the "
                                    "nearest keyframe (faster decoding, frames less regular)")


def detect_decode_spec(s: DetectSamplingSpec, res: DecodeResourcesSpec, card: DetectorCard,
                       allow_uri_options: bool = False) -> DecodeSpec:
    """Whole frames fitted into the detector's input (``max_size`` x ``min_size``): what a
    detect job and detection training decode."""
    return DecodeSpec(clips=s.frames, frames=1, stride=None, short_side=card.min_size,
                      crop_size=card.min_size, threads=res.decode_threads,
                      timeout_s=res.decode_timeout_s, snap_to_keyframes=s.snap_to_keyframes,
                      decoder=res.decoder, allow_uri_options=allow_uri_options,
                      memory_mb=res.decode_memory_mb, max_file_mb=res.max_remote_file_mb,
                      canvas=(card.min_size, card.max_size), rate=s.fps)
