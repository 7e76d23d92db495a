"""What a report shows of each task's own columns: its labels and scores, which frame a
thumbnail shows (and what is drawn on it), its embedding, and any section of its own.

Classification and audio label a video (``pred_label``, ``pred_score``); detection labels
objects in it (``labels_found``, ``detections``), so a video counts once under each label
it holds, and its thumbnail is the sampled frame with the most detections, boxes drawn.
With ``segments: shots`` each row is a shot (``shot``, ``shot_count``): labels count shots,
and a card names its shot. A shots job lists each video's shots (``shots``): it has no
labels, and its section draws them (:mod:`pipeline.report.shots`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.report.page import Page, figure_card
from pipeline.report.rows import Bins, RowsView
from pipeline.report.shots import STRIP_FRAMES, shots_section
from pipeline.report.sound import sound_strip, strip_card
from pipeline.report.thumbs import Box, Thumbnailer

# Columns every contact-sheet row reads.
_SHEET = "video_id, path, label, width, height, fps, start_s, end_s"
MAX_BOXES = 8


@dataclass(frozen=True)
class Shot:
    """One contact-sheet entry: the video, the time to show, boxes, and caption lines."""

    video_id: str
    path: str
    t_s: float | None
    height: int | None
    width: int | None
    fps: float | None
    caption: list[str]
    boxes: list[Box]
    windows: list[dict] | None = None  # audio: the row's window_predictions ...
    span: tuple[float, float] | None = None  # ... over this part of its soundtrack (s)


def _middle(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else (start + end) / 2


class TaskView:
    """Classification (and the default for an output without another view's column)."""

    needs: str | None = None  # the column an output must have for this view to show it
    embedding = "embedding"
    has_scores = True
    sheet_note = "one frame each"
    frames = 36  # decoded for the contact sheets unless the report is told otherwise

    def __init__(self, columns: set[str] = frozenset()) -> None:
        self.per_shot = "shot" in columns  # a row per shot (segments: shots)
        # The shot columns last in a contact sheet's query, and its stable sample's order.
        self.part = ", shot, shot_count" if self.per_shot else ", NULL, NULL"
        self.order = "hash(video_id, shot)" if self.per_shot else "hash(video_id)"

    @property
    def unit(self) -> str:
        """What a row is."""
        return "shots" if self.per_shot else "videos"

    @property
    def scored(self) -> str:
        """What the confidence histogram counts."""
        return self.unit

    def labels(self, v: RowsView, limit: int) -> list[tuple[str, int]]:
        return v.query("SELECT pred_label, count(*) FROM rows WHERE status = 'ok' AND "
                       "pred_label IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
                       [limit])

    def label_total(self, v: RowsView) -> int:
        return v.scalar("SELECT count(DISTINCT pred_label) FROM rows WHERE status = 'ok'") or 0

    def scores(self, v: RowsView) -> Bins | None:
        return v.bins("pred_score", "status = 'ok'", n=20, lo=0.0, hi=1.0)

    def low_confidence(self, v: RowsView, n: int) -> list[tuple]:
        """(video_id, path, manifest label, predicted label, score), least sure first."""
        who = "video_id || ', shot ' || (shot + 1)" if self.per_shot else "video_id"
        return v.query(f"SELECT {who}, path, label, pred_label, pred_score FROM rows "
                       "WHERE status = 'ok' AND pred_score IS NOT NULL "
                       "ORDER BY pred_score, video_id LIMIT ?", [n])

    def shots(self, v: RowsView, label: str, n: int) -> list[Shot]:
        """``n`` videos predicted ``label``, picked by a hash of their id (a stable
        sample, not the first files of the run)."""
        rows = v.query(f"SELECT {_SHEET}, pred_score, topk_labels, topk_scores{self.part} "
                       f"FROM rows WHERE status = 'ok' AND pred_label = ? ORDER BY "
                       f"{self.order} LIMIT ?", [label, n])
        return [Shot(r[0], r[1], _middle(r[6], r[7]), r[4], r[3], r[5],
                     [r[0], *_part(r), *_topk(r[9], r[10])], []) for r in rows]

    def card(self, v: RowsView, shot: Shot, thumbs: Thumbnailer) -> tuple[str, bool]:
        """The contact sheet's card of ``shot``, and whether its video could be read."""
        uri = thumbs.thumbnail(shot.path, shot.t_s, shot.height, shot.width, shot.fps,
                               shot.boxes)
        return figure_card(uri, shot.caption, shot.path), uri is not None

    def sections(self, v: RowsView) -> list[tuple[str, Any]]:
        return []

    def add_sections(self, page: Page, v: RowsView, frames: int,
                     log: Callable[[str], None]) -> None:
        """Sections the view draws itself, decoding at most ``frames`` frames."""


def _part(r: tuple) -> list[str]:
    """A contact-sheet row's shot (its query's last two columns) as a caption line."""
    shot, count = r[-2], r[-1]
    if shot is None:
        return []
    return [f"shot {shot + 1} of {count}, {r[6]:.2f}-{r[7]:.2f} s"]


def _topk(labels: list[str] | None, scores: list[float] | None, k: int = 3) -> list[str]:
    return [f"{lab} {s:.2f}" for lab, s in zip(labels or [], scores or [])][:k]


class DetectView(TaskView):
    needs = "detections"
    embedding = None
    scored = "detections"

    def labels(self, v: RowsView, limit: int) -> list[tuple[str, int]]:
        return v.query("SELECT f.label, count(*) FROM (SELECT unnest(labels_found) AS f "
                       "FROM rows WHERE status = 'ok') GROUP BY 1 ORDER BY 2 DESC, 1 "
                       "LIMIT ?", [limit])

    def label_total(self, v: RowsView) -> int:
        return v.scalar("SELECT count(DISTINCT f.label) FROM (SELECT unnest(labels_found) "
                        "AS f FROM rows WHERE status = 'ok')") or 0

    def scores(self, v: RowsView) -> Bins | None:
        return v.bins("score", n=20, lo=0.0, hi=1.0, source="SELECT unnest(detections)"
                      ".score AS score FROM rows WHERE status = 'ok'")

    def low_confidence(self, v: RowsView, n: int) -> list[tuple]:
        return []

    def shots(self, v: RowsView, label: str, n: int) -> list[Shot]:
        rows = v.query(f"SELECT {_SHEET}, detections{self.part} FROM rows WHERE status = "
                       "'ok' AND list_contains(list_transform(labels_found, lambda f: "
                       f"f.label), ?) ORDER BY {self.order} LIMIT ?", [label, n])
        return [self._shot(r, label) for r in rows]

    def _shot(self, r: tuple, label: str) -> Shot:
        dets = [d for d in r[8] or [] if d["box"] is not None]
        frames = {}
        for d in dets:
            frames[d["frame_index"]] = frames.get(d["frame_index"], 0) + (d["label"] == label)
        best = max(frames, key=lambda f: (frames[f], -f)) if frames else None
        shown = sorted((d for d in dets if d["frame_index"] == best),
                       key=lambda d: -d["score"])[:MAX_BOXES]
        t = shown[0]["t_s"] if shown else _middle(r[6], r[7])
        boxes = [Box(tuple(d["box"]), d["label"], d["score"]) for d in shown]
        return Shot(r[0], r[1], t, r[4], r[3], r[5],
                    [r[0], *_part(r),
                     f"{len(shown)} boxes at {t:.2f} s" if t is not None else ""], boxes)


class AudioView(TaskView):
    needs = "window_predictions"
    embedding = "audio_embedding"
    sheet_note = ("the sound of each: its mel spectrogram (low pitches at the bottom, "
                  "loud bright), where Silero VAD heard speech (green) and each window's "
                  "label")

    def shots(self, v: RowsView, label: str, n: int) -> list[Shot]:
        rows = v.query(f"SELECT {_SHEET}, pred_score, topk_labels, topk_scores, "
                       f"window_predictions, audio_duration_s, speech_fraction, silent"
                       f"{self.part} FROM rows WHERE status = 'ok' AND pred_label = ? "
                       f"ORDER BY {self.order} LIMIT ?", [label, n])
        return [Shot(r[0], r[1], None, r[4], r[3], r[5],
                     [r[0], *_part(r), ", ".join(_topk(r[9], r[10])),
                      *_heard(r[13], r[14])], [],
                     r[11] or [],
                     _span(r[6], r[7], r[12], r[11] or [])) for r in rows]

    def __init__(self, columns: set[str] = frozenset()) -> None:
        super().__init__(columns)
        self.colours: dict[str, str] = {}  # one colour per window label, page-wide

    def card(self, v: RowsView, shot: Shot, thumbs: Thumbnailer) -> tuple[str, bool]:
        rec = v.record
        sampling, predict = rec.get("sampling") or {}, rec.get("spec", {}).get("predict", {})
        uri = sound_strip(thumbs.worker, shot.path, *shot.span,
                          int(sampling.get("sample_rate") or 16000),
                          thumbs.allow_uri_options)
        threshold = predict.get("vad_threshold", 0.5) if predict.get("vad", True) else None
        return strip_card(uri, shot.windows, float(sampling.get("window_s") or 1.0),
                          *shot.span, threshold, shot.caption, shot.path,
                          self.colours), uri is not None

    def sections(self, v: RowsView) -> list[tuple[str, Any]]:
        """How much of the soundtracks is speech, and how many are silent."""
        if "speech_fraction" not in v.columns:
            return []
        speech = v.quantiles("speech_fraction", "status = 'ok'")["median"]
        silent = v.scalar("SELECT count(*) FROM rows WHERE status = 'ok' AND silent")
        return [("speech", {
            "speech, median over videos": None if speech is None else
            f"{speech:.0%} of a video's windows (Silero VAD)",
            "silent videos": f"{silent:,} (every sample below the job's silence_dbfs)"})]


def _span(start: float | None, end: float | None, duration: float | None,
          windows: list[dict]) -> tuple[float, float]:
    """The part of the soundtrack a strip shows: the row's segment, else the whole
    soundtrack, else as far as its windows reach."""
    lo = start or 0.0
    hi = end if end is not None else duration
    if hi is None or hi != hi or hi <= lo:
        hi = max([lo + 1.0, *(float(w["t_s"]) + 0.5 for w in windows)])
    return lo, float(hi)


def _heard(speech: float | None, silent: bool | None) -> list[str]:
    if silent:
        return ["silent"]
    return [] if speech is None else [f"speech in {speech:.0%} of windows"]


class ShotsView(TaskView):
    """A shots job: no labels or scores; its section draws the shots."""

    needs = "shots"
    embedding = None
    has_scores = False
    frames = STRIP_FRAMES

    def labels(self, v: RowsView, limit: int) -> list[tuple[str, int]]:
        return []

    def label_total(self, v: RowsView) -> int:
        return 0

    def scores(self, v: RowsView) -> Bins | None:
        return None

    def low_confidence(self, v: RowsView, n: int) -> list[tuple]:
        return []

    def add_sections(self, page: Page, v: RowsView, frames: int,
                     log: Callable[[str], None]) -> None:
        shots_section(page, v, frames, log)


VIEWS: tuple[type[TaskView], ...] = (DetectView, AudioView, ShotsView)


def view_for(columns: set[str]) -> TaskView:
    """The view of an output with ``columns``: the first whose column it has (whichever
    task wrote it), else the classification view."""
    return next((view for view in VIEWS if view.needs in columns), TaskView)(columns)


def describe_sampling(record: dict[str, Any]) -> str | None:
    """What the job sampled, as its record stores it (``DecodeSpec.record`` or
    ``AudioSpec.record``): clips of frames, whole frames fitted into a detector's input,
    or windows of sound."""
    s = record.get("sampling")
    if not s:
        return None
    asked = record.get("spec", {}).get("sampling", {})
    snapped = ", snapped to keyframes" if asked.get("snap_to_keyframes") else ""
    if s.get("every_frame"):
        height, width = s["size"]
        return (f"every frame at {width}x{height} (the shot detector's input), at most "
                f"{s['max_frames']:,} per video")
    if "sample_rate" in s:
        return (f"mono at {s['sample_rate']} Hz, {s['window_s']:g}-s windows every "
                f"{s['hop_s']:g} s (at most {s['max_windows']} per video, spread evenly "
                "beyond)")
    if s.get("canvas"):
        count = s["clips"] * s["frames"]
        how = (f"{s['rate']:g} frames/s, at most {count} per video" if s.get("rate") else
               f"{count} frames per video, spread evenly")
        return (f"{how}{snapped}; whole frames fitted into {s['canvas'][1]}x"
                f"{s['canvas'][0]} (the detector's input)")
    stride = f"stride {s['stride']}" if s.get("stride") else "spread evenly"
    return (f"{s['clips']} clip(s) x {s['frames']} frames ({stride}){snapped}, short side "
            f"{s['short_side']}, centre crop {s['crop_size']}")
