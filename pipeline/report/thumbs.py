"""Thumbnails for a report: one frame of a video, read on demand, as an embedded JPEG.

Frames are decoded by the same confined, killable child as a job's decoding
(:class:`~pipeline.decode.worker.DecodeWorker`): a report reads files from the manifest,
which may be hostile or broken, and a bad one costs a placeholder, never the report.
Detection boxes are drawn with supervision's annotators (the detect task's own library).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.decode.base import DecodeSpec, fitted_dims
from pipeline.decode.worker import DecodeWorker
from pipeline.errors import VideoError

# The box a thumbnail fits in (height, width): a 16:9 frame fills it.
THUMB = (126, 224)
TIMEOUT_S = 20.0
MEMORY_MB = 2048


@dataclass(frozen=True)
class Box:
    """A detection to draw, in the video's upright pixels."""

    xyxy: tuple[float, float, float, float]
    label: str
    score: float


class Thumbnailer:
    """Reads one frame per video through a confined decode child, and encodes it."""

    def __init__(self, allow_uri_options: bool = False):
        self.worker = DecodeWorker(TIMEOUT_S, MEMORY_MB)
        self.allow_uri_options = allow_uri_options

    def close(self) -> None:
        self.worker.close()

    def frame(self, path: str, t_s: float | None, height: int | None, width: int | None,
              fps: float | None) -> np.ndarray:
        """The frame at ``t_s`` (the middle of the video when None), fitted in
        :data:`THUMB`; raises :class:`VideoError` when it cannot be read."""
        spec = DecodeSpec(clips=1, frames=1, stride=1, short_side=THUMB[0],
                          crop_size=THUMB[0], canvas=THUMB, timeout_s=TIMEOUT_S,
                          memory_mb=MEMORY_MB, allow_uri_options=self.allow_uri_options)
        start = end = None
        if t_s is not None:  # one frame period around t_s: it holds a frame wherever t_s
            # falls between two (the middle of a shot rarely is a frame's own time)
            half = 0.5 / (fps or 25.0)
            start, end = max(0.0, t_s - half), t_s + half
        video = self.worker.decode(path, spec, start, end)
        # drop the canvas's padding (bottom and right)
        h, w = fitted_dims(height or video.height, width or video.width, THUMB)
        return video.frames[0, 0, :h, :w]

    def thumbnail(self, path: str, t_s: float | None = None, height: int | None = None,
                  width: int | None = None, fps: float | None = None,
                  boxes: list[Box] = ()) -> str | None:
        """A ``data:`` URI of the frame as JPEG, with ``boxes`` drawn; None when the video
        cannot be read."""
        try:
            frame = self.frame(path, t_s, height, width, fps)
        except (VideoError, OSError, ValueError):
            return None
        if boxes and height and width:
            frame = draw_boxes(frame, boxes, frame.shape[0] / height, frame.shape[1] / width)
        return jpeg_uri(frame)


def draw_boxes(frame: np.ndarray, boxes: list[Box], sy: float, sx: float) -> np.ndarray:
    """``frame`` with ``boxes`` (scaled by ``sx``, ``sy`` from the video's pixels) drawn
    and labelled."""
    import supervision as sv

    xyxy = np.array([[b.xyxy[0] * sx, b.xyxy[1] * sy, b.xyxy[2] * sx, b.xyxy[3] * sy]
                     for b in boxes], dtype=np.float32)
    names = sorted({b.label for b in boxes})
    det = sv.Detections(xyxy=xyxy, class_id=np.array([names.index(b.label) for b in boxes]))
    image = np.ascontiguousarray(frame[..., ::-1])  # supervision draws on BGR images
    image = sv.BoxAnnotator(thickness=1).annotate(image, det)
    image = sv.LabelAnnotator(text_scale=0.3, text_padding=2).annotate(
        image, det, labels=[f"{b.label} {b.score:.2f}" for b in boxes])
    return np.ascontiguousarray(image[..., ::-1])


def jpeg_uri(frame: np.ndarray, quality: int = 80) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
