"""How good a shots job's boundaries are against a cuts file: ``vidbatch evaluate`` for
``task: shots``.

**The cuts file** (CSV, Parquet or JSON Lines, as manifests are; ``vidbatch
demo-shots-data`` writes one) has one row per true transition: ``video`` (the manifest's
``video_id``), ``frame`` (the first frame of the transition: for a hard cut the first frame
of the new shot, for a dissolve its first blended frame), ``kind`` (``cut`` or
``dissolve``) and ``length`` (the frames it lasts: 1 for a cut, may be left empty there).
A video that is one single shot has one row of kind ``none`` and ``frame`` empty.

**Predictions**: between consecutive shots ``i`` and ``i + 1`` of an ok row, the span
``[end_frame_i + 1, start_frame_{i+1}]``; for a hard cut that is the one frame
``start_frame_{i+1}``. E.g. shots ending at 99 and starting at 100: a cut at 100; shots
ending at 99 and starting at 110: a gradual transition over frames 100..110.

**Matching**, per video and one-to-one, within :data:`TOLERANCE` frames: a true cut at
``f`` matches a prediction whose span lies inside ``[f - 2, f + 2]``; a true dissolve over
``[f, f + length - 1]`` matches a prediction whose span overlaps ``[f - 2, f + length +
1]``. Among the allowed pairs, scipy's ``linear_sum_assignment`` first makes as many pairs
as it can, then the nearest (distance between the spans' centres).

**Figures**: precision, recall and F1 for cuts, for dissolves and overall. A matched
prediction takes the kind of its true transition; an unmatched one (a false positive)
counts as a cut when its span is at most :data:`CUT_SPAN` frames long, else as a gradual
transition (a false dissolve). Single-shot videos (kind ``none``): every boundary found in
them is a false cut, whatever its span, reported per 10 minutes of their video (from the
rows' ``duration_s``); they also count as false positives above. Only ok rows are scored:
``videos`` counts error rows, labelled videos missing from the output, and rows of
videos the cuts file does not list (left out, ``unlabelled``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import ManifestError
from pipeline.manifest import read_table
from pipeline.output.store import read_rows

TOLERANCE = 2  # frames either side of a true transition
CUT_SPAN = 2  # an unmatched predicted span of at most this many frames is a false cut
KINDS = ("cut", "dissolve", "none")
COLUMNS = ("video", "frame", "kind", "length")


def _integer(value: Any, column: str, row: int, uri: str) -> int | None:
    """``value`` as an int (None when empty); a ``ManifestError`` names the column and row
    when it is something else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer():
        raise ManifestError(f"cuts file {uri}, row {row}: {column} is {value!r}, not a "
                            "frame count or index (an integer)")
    return int(number)


def _transition(r: dict, row: int, uri: str) -> tuple[str, int | None, int | None]:
    """One row as ``(kind, frame, length)``, checked."""
    at = f"cuts file {uri}, row {row}"
    kind = str(r["kind"] or "").strip().lower()
    if kind not in KINDS:
        raise ManifestError(f"{at}: kind is {r['kind']!r}; it must be one of "
                            f"{', '.join(KINDS)}")
    frame = _integer(r["frame"], "frame", row, uri)
    length = _integer(r["length"], "length", row, uri)
    if kind == "none":
        if frame is not None:
            raise ManifestError(f"{at}: frame is {frame} in a row of kind none (a single-"
                                "shot video); leave it empty")
        return kind, None, None
    if frame is None or frame < 0:
        raise ManifestError(f"{at}: frame must be the transition's first frame, >= 0")
    if kind == "cut" and length not in (None, 1):
        raise ManifestError(f"{at}: length is {length} for a cut; a cut lasts 1 frame "
                            "(write kind dissolve for a gradual transition)")
    if kind == "dissolve" and (length is None or length < 2):
        raise ManifestError(f"{at}: length must be the dissolve's frames, >= 2")
    return kind, frame, 1 if kind == "cut" else length


def read_cuts(uri: str) -> dict[str, list[tuple[str, int, int]]]:
    """The cuts file as ``{video: [(kind, frame, length), ...] by frame}`` (``[]`` for a
    single-shot video); a ``ManifestError`` names a missing column, or the row and column
    of a bad value, or a video both single-shot and with transitions."""
    table = read_table(uri, "cuts file", "--labels")
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(f"cuts file {uri} lacks columns {missing}; it needs video, "
                            "frame, kind (cut, dissolve or none) and length")
    cuts: dict[str, list] = {}
    single: set[str] = set()
    for i, r in enumerate(table.select(list(COLUMNS)).to_pylist()):
        if r["video"] is None or not str(r["video"]).strip():
            raise ManifestError(f"cuts file {uri}, row {i + 1}: video is empty")
        video = str(r["video"]).strip()
        kind, frame, length = _transition(r, i + 1, uri)
        cuts.setdefault(video, [])
        if kind == "none":
            single.add(video)
        else:
            cuts[video].append((kind, frame, length))
        if video in single and cuts[video]:
            raise ManifestError(f"cuts file {uri}, row {i + 1}: video {video!r} has a row "
                                "of kind none (one single shot) and transitions too")
    return {v: sorted(t, key=lambda c: c[1]) for v, t in cuts.items()}


def predicted_spans(shots: list[dict] | None) -> list[tuple[int, int]]:
    """The ``[first, last]`` frames of each boundary between consecutive ``shots``."""
    shots = shots or []
    return [(a["end_frame"] + 1, b["start_frame"]) for a, b in zip(shots, shots[1:])]


def match(truth: list[tuple[str, int, int]], spans: list[tuple[int, int]]
          ) -> list[tuple[int, int]]:
    """One-to-one ``(truth index, span index)`` pairs under the module's rules."""
    from scipy.optimize import linear_sum_assignment

    if not truth or not spans:
        return []
    first = np.array([t[1] for t in truth])[:, None]
    last = first + np.array([t[2] - 1 for t in truth])[:, None]
    a, b = np.array(spans).T[:, None, :]
    is_cut = np.array([t[0] == "cut" for t in truth])[:, None]
    inside = (a >= first - TOLERANCE) & (b <= last + TOLERANCE)
    overlaps = (a <= last + TOLERANCE) & (b >= first - TOLERANCE)
    allowed = np.where(is_cut, inside, overlaps)
    distance = np.abs((first + last) / 2 - (a + b) / 2)
    # Any disallowed pair costs more than all allowed ones together: the assignment makes
    # the most pairs first, then the nearest.
    cost = np.where(allowed, distance, distance.sum() + 1.0 + allowed.size)
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if allowed[i, j]]


def _score(true: int, found: int, matched: int) -> dict[str, Any]:
    """Counts, precision, recall and F1 (None where a count they divide by is 0)."""
    p = matched / found if found else None
    r = matched / true if true else None
    f1 = None if p is None or r is None else (2 * p * r / (p + r) if p + r else 0.0)
    return {"true": true, "predicted": found, "matched": matched, "precision": p,
            "recall": r, "f1": f1}


def _count_video(counts: dict, truth: list, spans: list) -> int:
    """Add one ok video's true, matched and unmatched transitions to ``counts`` (keyed by
    kind: ``[true, predicted, matched]``); return its boundaries."""
    pairs = match(truth, spans)
    for kind, _, _ in truth:
        counts[kind][0] += 1
    for i, _ in pairs:
        counts[truth[i][0]][1] += 1
        counts[truth[i][0]][2] += 1
    paired = {j for _, j in pairs}
    for j, (a, b) in enumerate(spans):
        if j not in paired:
            counts["cut" if b - a + 1 <= CUT_SPAN else "dissolve"][1] += 1
    return len(spans)


def evaluate(output: str, labels: str) -> dict[str, Any]:
    """The figures of the module docstring for the shots job at ``output``."""
    truth = read_cuts(labels)
    rows = read_rows(output).to_pylist()
    videos = {"ok": 0, "error": 0, "unlabelled": 0, "missing": 0}
    counts = {"cut": [0, 0, 0], "dissolve": [0, 0, 0]}
    single = {"videos": 0, "seconds": 0.0, "false_cuts": 0}
    seen = set()
    for row in rows:
        video = row["video_id"]
        if video not in truth:
            videos["unlabelled"] += 1
            continue
        seen.add(video)
        videos["ok" if row["status"] == "ok" else "error"] += 1
        if row["status"] != "ok":
            continue
        found = _count_video(counts, truth[video], predicted_spans(row["shots"]))
        if not truth[video]:
            single["videos"] += 1
            single["seconds"] += _seconds(row)
            single["false_cuts"] += found
    videos["missing"] = len(set(truth) - seen)
    total = [sum(c[k] for c in counts.values()) for k in range(3)]
    minutes = single.pop("seconds") / 60
    per_10 = single["false_cuts"] / minutes * 10 if minutes else None
    return {"videos": videos, "tolerance_frames": TOLERANCE,
            "cut": _score(*counts["cut"]), "dissolve": _score(*counts["dissolve"]),
            "overall": _score(*total),
            "single_shot": {**single, "minutes": round(minutes, 3),
                            "false_cuts_per_10_min": per_10}}


def _seconds(row: dict) -> float:
    """A row's length in seconds: ``duration_s``, else ``num_frames / fps``, else 0."""
    if row.get("duration_s"):
        return float(row["duration_s"])
    if row.get("num_frames") and row.get("fps"):
        return row["num_frames"] / row["fps"]
    return 0.0
