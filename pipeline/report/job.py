"""The report of a finished job: what ran, what came out, what failed and why, how fast,
what the videos show, and how their embeddings lie.

Aggregates come from DuckDB (:mod:`pipeline.report.rows`); thumbnails are decoded for a
bounded sample of rows only, so the time and memory of a report do not grow with the job
beyond DuckDB's scans.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.report import charts
from pipeline.report.near_dups import near_duplicates_section
from pipeline.report.page import Markup, Page, esc, key_values, table
from pipeline.report.rows import RowsView
from pipeline.report.thumbs import Thumbnailer
from pipeline.report.views import TaskView, describe_sampling, view_for

TOP_LABELS = 30
SHEET_LABELS, SHEET_VIDEOS = 6, 12
LOW_CONFIDENCE = 20


def job_report(view: RowsView, thumbnails: int | None = None,
               log: Callable[[str], None] = lambda _: None) -> str:
    """The HTML of the report of the job ``view`` reads (at most ``thumbnails`` frames
    decoded; None: the task view's own default)."""
    rec, task = view.record, view_for(view.columns)
    frames = task.frames if thumbnails is None else thumbnails
    page = Page(f"vidbatch job {rec.get('job', '?')}",
                f"task {view.task} · {view.out.location}")
    if not rec.get("model", {}).get("predictions_meaningful", True):
        page.add("<div class='banner' id='random-weights'>Random weights: predictions are "
                 "meaningless. This job ran with <code>weights: none</code>; set "
                 "model.weights to trained weights or a checkpoint.</div>")
    page.section("Job", job_card(view), key="job")
    counts = view.counts()
    page.section("Rows", counts_block(counts, rec), key="counts")
    errors_section(page, view)
    timing_section(page, view)
    labels_section(page, view, task)
    sheets_section(page, view, task, frames, log)
    task.add_sections(page, view, frames, log)
    for name, data in task.sections(view):
        task_section(page, name, data)
    map_section(page, view, task)
    near_duplicates_section(page, view.out)
    return page.render()


def job_card(view: RowsView) -> str:
    rec = view.record
    model, versions = rec.get("model", {}), rec.get("versions", {})
    return key_values([
        ("job", rec.get("job")), ("task", view.task), ("state", rec.get("state")),
        ("model", model.get("arch")), ("shot detector", _detector(model)),
        ("weights", model.get("weights")), ("classes", model.get("classes")),
        ("sampling", describe_sampling(rec)),
        ("segments", _segments(rec.get("spec", {}).get("segments"))),
        ("started (UTC)", rec.get("started_utc")), ("wall time", _seconds(rec.get("wall_s"))),
        ("videos/s", _rate(rec.get("videos_per_s"))),
        ("GPU feeding", _feeding(rec.get("feeding"))), ("GPU check", _gpu_check(rec)),
        ("dashboard", rec.get("dashboard_url")),
        ("runs", ", ".join(rec.get("runs", []))),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
        ("output", view.out.location)])


def _feeding(feed: dict[str, Any] | None) -> str | None:
    """The job's GPU feed plan (``pipeline.infer.feeding``) in one line."""
    if not feed or feed.get("decode_core_s") is None:
        return None
    text = f"decode {feed['decode_core_s']:.3g} CPU core-s per video"
    if feed.get("replica_core_s"):
        text += f" (+ {feed['replica_core_s']:g} on the replica)"
    if feed.get("gpu_videos_per_s"):
        text += (f"; model ~{feed['gpu_videos_per_s']:,.0f} videos/s on one "
                 f"{feed['accelerator']}: {feed['cores_needed_per_gpu']:,.0f} cores per GPU "
                 f"needed, {feed['cores_per_gpu']:g} there; GPUs ~{feed['gpu_busy']:.0%} busy")
    return text


def _gpu_check(rec: dict[str, Any]) -> str | None:
    check = rec.get("gpu_check")
    if not check:
        return None
    if not check.get("checked"):
        return "not checked at the start (no GPU node yet); each replica checked its own"
    return (f"torch {check.get('torch')} sees {check.get('device_count')} CUDA device(s) "
            f"(CUDA_VISIBLE_DEVICES={check.get('cuda_visible_devices')})")


def _detector(model: dict[str, Any]) -> str | None:
    """A shots job's detector and the threshold it ran with."""
    if not model.get("detector"):
        return None
    threshold = model.get("threshold")
    return model["detector"] + ("" if threshold is None else f", threshold {threshold:g}")


def _segments(seg: dict[str, Any] | None) -> str | None:
    """What ``segments: shots`` made a row: a shot, found how, fitted to which lengths."""
    if not seg:
        return None
    found = (f"shots from {seg['shots_from']}" if seg.get("shots_from") else
             f"shots found by {seg.get('detector')}" + (
                 "" if seg.get("threshold") is None else f" (threshold {seg['threshold']:g})"))
    return (f"one row per shot: {found}, merged under {seg.get('min_s'):g} s, split over "
            f"{seg.get('max_s'):g} s")


def _seconds(value: Any) -> str | None:
    return None if value is None else f"{value:.1f} s"


def _span(seconds: float) -> str:
    """A length of time as a title says it: 0.62-s, 45-s, 12-min, 2.5-h."""
    if seconds < 120:
        return f"{seconds:.2g}-s" if seconds < 10 else f"{seconds:.0f}-s"
    return f"{seconds / 60:.0f}-min" if seconds < 7200 else f"{seconds / 3600:.1f}-h"


def _rate(value: Any) -> str | None:
    return None if value is None else f"{value:.3g}"


def counts_block(counts: dict[str, int], rec: dict[str, Any]) -> str:
    manifest = rec.get("counts", {}).get("manifest_rows")
    items = [("rows", counts["rows"]), ("ok", counts["ok"]), ("error", counts["error"])]
    if manifest is not None:
        items.append(("manifest rows", manifest))
    boxes = "".join(f"<div class='count {esc(k)}' data-count='{esc(k)}'><b>{v:,}</b>"
                    f"{esc(k)}</div>" for k, v in items)
    note = ""
    if manifest is not None and manifest != counts["rows"]:
        note = (f"<p class='note'>{manifest - counts['rows']:,} manifest rows have no output "
                "row yet: the job did not finish (resume it with --resume).</p>")
    return f"<div class='counts'>{boxes}</div>{note}"


def errors_section(page: Page, view: RowsView) -> None:
    stages = view.errors_by_stage()
    if not stages:
        page.section("Errors", "<p>No error rows.</p>", key="errors")
        return
    groups = view.errors()
    rows = [(g["stage"], g["reason"], g["count"],
             Markup("<br>".join(f"<code>{esc(p)}</code>" for p in g["paths"])))
            for g in groups]
    page.section("Errors by stage and reason",
                 page.chart(charts.bars(list(stages), list(stages.values()),
                                        "error rows by stage", "stage"), "errors-by-stage"),
                 table(["stage", "reason", "rows", "examples"], rows, numeric=[2]), key="errors")


def timing_section(page: Page, view: RowsView) -> None:
    parts = []
    rate = view.timeline()
    if rate is not None:
        parts.append(page.chart(charts.rate(
            rate.t_s, rate.per_s, f"videos finished per second, over a sliding "
            f"{_span(rate.window_s)} window", "seconds since the first row", "videos/s"),
            "throughput"))
    for col, what in (("decode_s", "decode"), ("infer_s", "inference")):
        if col not in view.columns:
            continue
        # From 0 s: a few similar times are read against zero, not spread over 30 bins
        # of a few milliseconds.
        bins = view.bins(col, f"status = 'ok' AND {col} IS NOT NULL", lo=0.0)
        if bins is None:
            continue
        q = view.quantiles(col, "status = 'ok'")
        title = (f"{what} time per video (median {q['median']:.3f} s, p90 {q['p90']:.3f} s, "
                 f"max {q['max']:.3f} s)")
        parts.append(page.chart(charts.histogram(bins, title, "seconds"), col))
    if parts:
        page.section("Throughput and time per video", "<div class='grid'>" + "".join(parts)
                     + "</div>", key="timing")


def labels_section(page: Page, view: RowsView, task: TaskView) -> None:
    labels = task.labels(view, TOP_LABELS)
    if not labels:
        return
    total = task.label_total(view)
    more = f" (top {len(labels)} of {total})" if total > len(labels) else ""
    parts = [page.chart(charts.bars([lab for lab, _ in labels], [n for _, n in labels],
                                    f"{task.unit} per label{more}", "label", task.unit),
                        "labels")]
    scores = task.scores(view)
    if scores is not None:
        parts.append(page.chart(charts.histogram(scores, "confidence (score)", "score",
                                                 task.scored), "confidence"))
    body = ["<div class='grid'>" + "".join(parts) + "</div>"]
    if task.per_shot:
        shots, videos = view.query("SELECT count(*), count(DISTINCT video_id) FROM rows "
                                   "WHERE status = 'ok'")[0]
        body.insert(0, f"<p class='note' id='per-shot'>Each row is one shot of a video "
                       f"(segments: shots): {shots:,} shots of {videos:,} videos.</p>")
    low = task.low_confidence(view, LOW_CONFIDENCE)
    if low:
        body.append("<h3>Least confident predictions</h3><p class='note'>Where to look for "
                    "mislabelled or out-of-domain videos.</p>" + table(
                        ["video_id", "path", "manifest label", "predicted", "score"],
                        [(a, Markup(f"<code>{esc(b)}</code>"), c, d, f"{e:.3f}")
                         for a, b, c, d, e in low], numeric=[4]))
    page.section("Labels and confidence", *body, key="labels")


def sheets_section(page: Page, view: RowsView, task: TaskView, budget: int,
                   log: Callable[[str], None]) -> None:
    labels = [lab for lab, _ in task.labels(view, min(SHEET_LABELS, budget))]
    if not labels or budget <= 0:
        return
    per = max(1, min(SHEET_VIDEOS, budget // len(labels)))
    thumbs, body, read = Thumbnailer(view.record.get("spec", {}).get("allow_uri_options",
                                                                    False)), [], 0
    try:
        for label in labels:
            cards = []
            for s in task.shots(view, label, per):
                card, readable = task.card(view, s, thumbs)
                read += readable
                cards.append(card)
            body.append(f"<h3>{esc(label)}</h3><div class='sheet'>{''.join(cards)}</div>")
    finally:
        thumbs.close()
    log(f"report: {read} {task.unit} decoded for the contact sheets")
    page.section("Contact sheets", f"<p class='note'>A sample of {task.unit} per top label, "
                 f"{esc(task.sheet_note)} (decoded in a confined child).</p>", *body,
                 key="sheets")


def task_section(page: Page, name: str, data: Any) -> None:
    if name == "speech":
        page.section("Speech", key_values(data.items()), key="speech")


def map_section(page: Page, view: RowsView, task: TaskView) -> None:
    if not task.embedding:
        return
    extra = ("pred_label", "pred_score") if task.has_scores else ()
    got = view.embedding_sample(task.embedding, extra=extra)
    vectors = got.get(task.embedding)
    if vectors is None or len(vectors) < 3:
        return
    from sklearn.decomposition import PCA

    xy = PCA(n_components=2, random_state=0).fit_transform(vectors - vectors.mean(0))
    labels = got.get("pred_label", np.array(["?"] * len(vectors), dtype=object))
    hover = [f"{v}<br>{esc(p)}<br>{esc(lab)} {s:.2f}" for v, p, lab, s in
             zip(got["video_id"], got["path"], labels, got.get("pred_score", [0.0] * len(xy)))]
    page.section("Embedding map", f"<p class='note'>PCA of {len(xy):,} ok rows' "
                 f"<code>{task.embedding}</code>, centred on their mean; hover a point for "
                 "its video.</p>", page.chart(charts.scatter_map(
                     xy, labels, hover, "embeddings, coloured by predicted label"),
                     "embedding-map"), key="map")
