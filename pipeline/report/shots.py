"""A shots job (``task: shots``) as a report shows it: how long shots are, how many a video
has, and each video's shots on a timeline strip with one thumbnail per shot.

A strip is a bar that stands for the video's duration, one segment per shot in proportion
to its length (numbered, its seconds and transition score in its tooltip); the frames
between two shots, a gradual transition (a dissolve or a fade), are hatched. Under the
bar, each shot's thumbnail (the frame in its middle) in shot order, in a row that scrolls
sideways. Time is on the bar and pictures are in the row because shot lengths vary a
hundredfold within a video (a 0.3-s insert beside a 2-min take): thumbnails placed on the
time axis would overlap or leave a long shot a sliver. The numbers tie a picture to its
segment. Shots are numbered from 1 on the page, as a reader counts; the ``shot`` field
counts from 0.

Frames are decoded one at a time by the thumbnailer's confined child (an open and a seek
each), so the strips share a budget of frames (:func:`per_video_cap`): a video with more
shots than its share shows every k-th shot's thumbnail, the others are segments only.
After a frame that cannot be read the video's other shots are not tried.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from pipeline.errors import VideoError
from pipeline.report import charts
from pipeline.report.page import Page, esc, key_values
from pipeline.report.rows import Bins, RowsView
from pipeline.report.thumbs import Thumbnailer, jpeg_uri

STRIP_VIDEOS = 24  # the first ok videos by video_id get a strip
STRIP_FRAMES = 240  # default frame budget of all strips together
_CSS = """
.shot-strip{margin:0 0 16px}.shot-head{font-size:13px;margin-bottom:3px}
.shot-bar{position:relative;height:18px;background:#eef0f3;border-radius:2px;overflow:hidden}
.shot-bar span{position:absolute;top:0;bottom:0;min-width:1px;overflow:hidden;
white-space:nowrap;font-size:10px;line-height:18px;padding-left:2px;box-sizing:border-box;
border-left:1px solid #fff;color:#fff}
.shot-bar .s0{background:#3b6ea5}.shot-bar .s1{background:#6c9bd2}
.shot-bar .gap{background:repeating-linear-gradient(45deg,#f0b429 0 3px,#fff 3px 6px);
border:0}
.shot-thumbs{display:flex;gap:4px;overflow-x:auto;padding:4px 0 2px}
.shot-thumb{flex:0 0 auto;font-size:10px;color:#57606a}
.shot-thumb img,.shot-thumb .missing{display:block;height:63px;border-radius:2px;
border-bottom:3px solid #3b6ea5}
.shot-thumb.s1 img,.shot-thumb.s1 .missing{border-bottom-color:#6c9bd2}
.shot-thumb .missing{width:112px;background:#eaecef;display:flex;align-items:center;
justify-content:center}
"""


def per_video_cap(counts: list[int], budget: int) -> int:
    """The most thumbnails one strip gets so that all strips together decode at most
    ``budget`` frames: the largest ``c`` with ``sum(min(n, c)) <= budget``, so that videos
    with few shots leave their share to the others. Example: shot counts 3, 10 and 40 with
    a budget of 30 give 17 (3 + 10 + 17 frames)."""
    if budget <= 0 or not counts:
        return 0
    cap = 0
    while cap < max(counts) and sum(min(n, cap + 1) for n in counts) <= budget:
        cap += 1
    return cap


def picked(n: int, cap: int) -> list[int]:
    """The shots (0-based) of a video with ``n`` that get a thumbnail: all when ``n <=
    cap``, else every k-th from the first, ``k = ceil(n / cap)``. Example: 40 shots, cap 17
    -> k = 3: shots 0, 3, ..., 39 (14 frames)."""
    if cap <= 0:
        return []
    return list(range(0, n, max(1, math.ceil(n / cap))))


def middle_s(shot: dict, fps: float | None) -> float:
    """The time of the frame in a shot's middle (a frame's own time, not between two)."""
    if not fps:
        return (shot["start_s"] + shot["end_s"]) / 2
    frame = (shot["start_frame"] + shot["end_frame"]) // 2
    return shot["start_s"] + (frame - shot["start_frame"]) / fps


def shots_section(page: Page, view: RowsView, budget: int,
                  log: Callable[[str], None]) -> None:
    """The report's "Shots" section: figures, two histograms, and the strips."""
    figures = _figures(view)
    if figures is None:
        return
    lengths = view.bins("s.end_s - s.start_s", lo=0.0, source="SELECT unnest(shots) AS s "
                        "FROM rows WHERE status = 'ok'")
    parts = []
    if lengths is not None:
        parts.append(page.chart(charts.histogram(lengths, "shot length", "seconds",
                                                 "shots"), "shot-lengths"))
    counts = _count_bins(view)
    if counts is not None:
        fig = charts.histogram(counts, "shots per video", "shots")
        whole = counts.edges[1] - counts.edges[0] == 1  # one bar per count: tick each
        fig.update_xaxes(tickformat=",d", **({"dtick": 1} if whole else {}))
        parts.append(page.chart(fig, "shots-per-video"))
    page.section("Shots", key_values(figures.items()),
                 "<div class='grid'>" + "".join(parts) + "</div>",
                 *_strips(view, budget, log), key="shots")


def _figures(view: RowsView) -> dict[str, Any] | None:
    videos, shots, median, mean = view.query(
        "SELECT count(*), sum(shot_count), median(shot_count), "
        "sum(mean_shot_s * shot_count) / sum(shot_count) FROM rows "
        "WHERE status = 'ok' AND shots IS NOT NULL")[0]
    if not videos:
        return None
    gradual = view.scalar(
        "SELECT count(*) FROM (SELECT s.start_frame - lag(s.end_frame) OVER (PARTITION BY "
        "video_id ORDER BY s.shot) AS gap FROM (SELECT video_id, unnest(shots) AS s FROM "
        "rows WHERE status = 'ok')) WHERE gap > 1")
    return {"videos with shots": f"{videos:,}", "shots": f"{int(shots):,}",
            "shots per video": f"median {median:g}",
            "shot length": f"mean {mean:.2f} s (over all shots)" if mean is not None else None,
            "transitions": f"{int(shots) - videos - gradual:,} hard cuts, {gradual:,} "
                           "gradual (frames between two shots; hatched on the strips)"}


def _count_bins(view: RowsView) -> Bins | None:
    """Shots per video in whole-number bins (one per count up to 30 of them)."""
    lo, hi = view.query("SELECT min(shot_count), max(shot_count) FROM rows "
                        "WHERE status = 'ok'")[0]
    if lo is None:
        return None
    n = min(30, hi - lo + 1)
    return view.bins("shot_count", "status = 'ok'", n=n, lo=lo - 0.5,
                     hi=lo - 0.5 + n * max(1, math.ceil((hi - lo + 1) / n)))


def _strips(view: RowsView, budget: int, log: Callable[[str], None]) -> list[str]:
    rows = view.query("SELECT video_id, path, height, width, fps, duration_s, start_s, "
                      "end_s, shots FROM rows WHERE status = 'ok' AND shots IS NOT NULL "
                      "ORDER BY video_id LIMIT ?", [STRIP_VIDEOS])
    total = view.scalar("SELECT count(*) FROM rows WHERE status = 'ok' AND shots IS NOT "
                        "NULL") or 0
    cap = per_video_cap([len(r[8]) for r in rows], budget)
    left = f"; the other {total - len(rows):,} are left out" if total > len(rows) else ""
    every = "" if all(len(r[8]) <= cap for r in rows) else (
        f" A video with more than {cap} shot{'s' * (cap != 1)} shows every k-th shot's "
        "frame, the others are segments only." if cap else " No frames: a budget of 0.")
    note = (f"<h3>Timelines</h3><p class='note'>The first {len(rows):,} ok videos by "
            f"video_id{left}. Each bar is a video's duration, one segment per shot; hatched: "
            f"a gradual transition. Below, the frame in each shot's middle (at most "
            f"{budget:,} frames decoded, in a confined child).{every}</p>")
    thumbs, strips, decoded = Thumbnailer(view.record.get("spec", {}).get(
        "allow_uri_options", False)), [], 0
    try:
        for r in rows:
            html, n = strip(r, picked(len(r[8]), cap), thumbs)
            strips.append(html)
            decoded += n
    finally:
        thumbs.close()
    log(f"report: {decoded} frames decoded for the shot strips")
    return [f"<style>{_CSS}</style>", note, *strips]


def strip(row: tuple, shown: list[int], thumbs: Thumbnailer) -> tuple[str, int]:
    """One video's strip (its bar and the thumbnails of the ``shown`` shots), and the
    frames decoded for it."""
    vid, path, height, width, fps, duration, start, end, shots = row
    lo = start or 0.0
    hi = max([end or duration or 0.0, *(s["end_s"] for s in shots)])
    span = max(hi - lo, 1e-6)
    cards, tried, readable = [], 0, True
    for i in shown:
        uri = None
        if readable:
            uri, tried = _thumbnail(thumbs, path, shots[i], height, width, fps), tried + 1
            readable = uri is not None
        cards.append(_card(vid, shots[i], uri))
    head = (f"<div class='shot-head'><b>{esc(vid)}</b> <code>{esc(path)}</code> · "
            f"{len(shots)} shot{'s' * (len(shots) != 1)} in {hi - lo:.2f} s</div>")
    return (f"<div class='shot-strip' data-video='{esc(vid)}' data-shots='{len(shots)}'>"
            f"{head}<div class='shot-bar'>{_segments(shots, lo, span)}</div>"
            f"<div class='axis'><span>{lo:g} s</span><span>{hi:.2f} s</span></div>"
            f"<div class='shot-thumbs'>{''.join(cards)}</div></div>", tried)


def _segments(shots: list[dict], lo: float, span: float) -> str:
    """The bar's spans: each shot, and a hatched gap before any shot that does not start
    where the one before ended (a gradual transition)."""
    out = []
    for prev, s in zip([None, *shots], shots):
        if prev is not None and s["start_frame"] > prev["end_frame"] + 1:
            out.append(_span("gap", prev["end_s"], s["start_s"], lo, span, "",
                             f"gradual transition {prev['end_s']:.2f}-{s['start_s']:.2f} s "
                             f"({s['start_frame'] - prev['end_frame'] - 1} frames)"))
        score = "" if s["score"] is None else f", transition score {s['score']:.3g}"
        out.append(_span(f"s{s['shot'] % 2}", s["start_s"], s["end_s"], lo, span,
                         str(s["shot"] + 1), f"shot {s['shot'] + 1}: {_seconds(s)}{score}",
                         s["shot"]))
    return "".join(out)


def _span(cls: str, a: float, b: float, lo: float, span: float, text: str, title: str,
          shot: int | None = None) -> str:
    data = "" if shot is None else f" data-shot='{shot}'"
    return (f"<span class='{cls}'{data} style='left:{100 * (a - lo) / span:.4f}%;"
            f"width:{100 * (b - a) / span:.4f}%' title='{esc(title)}'>{esc(text)}</span>")


def _seconds(shot: dict) -> str:
    return (f"{shot['start_s']:.2f}-{shot['end_s']:.2f} s "
            f"({shot['end_s'] - shot['start_s']:.2f} s)")


def _card(vid: str, shot: dict, uri: str | None) -> str:
    title = esc(f"{vid}, shot {shot['shot'] + 1}: {_seconds(shot)}")
    image = (f"<img src='{uri}' alt='{title}' title='{title}'>" if uri else
             f"<div class='missing' title='{title}'>not readable</div>")
    return (f"<div class='shot-thumb s{shot['shot'] % 2}' data-shot='{shot['shot']}'>"
            f"{image}{shot['shot'] + 1} · {shot['start_s']:.1f}-{shot['end_s']:.1f} s</div>")


def _thumbnail(thumbs: Thumbnailer, path: str, shot: dict, height: int | None,
               width: int | None, fps: float | None) -> str | None:
    """The JPEG ``data:`` URI of the shot's middle frame at half the contact sheets' size
    (a strip holds many); None when it cannot be read."""
    try:
        frame = thumbs.frame(path, middle_s(shot, fps), height, width, fps)
    except (VideoError, OSError, ValueError):
        return None
    h, w = frame.shape[:2]
    small = Image.fromarray(np.ascontiguousarray(frame)).resize(
        (max(1, w // 2), max(1, h // 2)), Image.BILINEAR)
    return jpeg_uri(np.asarray(small))
