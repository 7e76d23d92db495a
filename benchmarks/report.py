"""Medians, the issue's ratios, and the Markdown table."""

from __future__ import annotations

import statistics

NUMBERS = ("wall_s", "cpu_core_s", "e2e_videos_per_s", "steady_videos_per_s", "peak_pss_mb",
           "peak_rss_mb", "infer_only_videos_per_s")
STAGES = ("decode_s", "prep_s", "infer_s", "write_s")
# (label, contender, metric, reference, metric, target): the issues' targets, then context
# (target None): steady-state ratios are what long jobs approach, once start-up is amortised.
# A tuple of references is the slower of them in the same repeat (a job's bounding stage);
# one that starts with "shared" is both stages sharing the same cores, each at its rate
# alone: 1 / (1/a + 1/b) (where the two stages use the same cores, the best a pipeline can do).
RATIOS = [
    ("clip fp32: vidbatch / naive, end to end", "vidbatch_clip", "e2e", "naive_clip", "e2e",
     1.1),
    ("clip fp32: vidbatch steady / the slower bound (model alone, decode alone)",
     "vidbatch_clip", "steady", ("model_bound_clip", "vidbatch_clip_decode_only"), "steady",
     0.9),
    ("frame: vidbatch steady / the slower bound (model alone, decode alone)",
     "vidbatch_frame", "steady", ("model_bound_frame", "vidbatch_frame_decode_only"),
     "steady", 0.9),
    ("clip bf16: vidbatch bf16 / naive fp32, end to end", "vidbatch_clip_bf16", "e2e",
     "naive_clip", "e2e", 2.0),
    ("frame: vidbatch / naive, end to end", "vidbatch_frame", "e2e", "naive_frame", "e2e", 1.1),
    ("frame: vidbatch / ray-read-videos, end to end", "vidbatch_frame", "e2e",
     "ray_read_videos", "e2e", 3.0),
    ("decode: vidbatch decode-only / decode bound", "vidbatch_decode_only", "steady",
     "decode_bound", "steady", 1.5),
    ("decode: vidbatch decode-only, decoder pyav / decode bound", "vidbatch_decode_only_pyav",
     "steady", "decode_bound", "steady", 1.5),
    ("decode: vidbatch keyframe-snapped / decode bound", "vidbatch_decode_keyframes", "steady",
     "decode_bound", "steady", 3.0),
    ("decode: vidbatch keyframe-snapped, decoder pyav / decode bound",
     "vidbatch_decode_keyframes_pyav", "steady", "decode_bound", "steady", 3.0),
    ("context: clip fp32, vidbatch steady / model and decoding sharing the cores",
     "vidbatch_clip", "steady", ("shared", "model_bound_clip", "vidbatch_clip_decode_only"),
     "steady", None),
    ("context: frame, vidbatch steady / model and decoding sharing the cores",
     "vidbatch_frame", "steady", ("shared", "model_bound_frame", "vidbatch_frame_decode_only"),
     "steady", None),
    ("context: clip fp32, naive steady / model bound", "naive_clip", "steady",
     "model_bound_clip", "steady", None),
    ("context: clip fp32, vidbatch / naive, steady", "vidbatch_clip", "steady", "naive_clip",
     "steady", None),
    ("context: frame, vidbatch / naive, steady", "vidbatch_frame", "steady", "naive_frame",
     "steady", None),
    ("context: frame, vidbatch / ray-read-videos, steady", "vidbatch_frame", "steady",
     "ray_read_videos", "steady", None),
    ("context: clip fp32, vidbatch on a running Ray / naive, end to end", "vidbatch_clip_warm",
     "e2e", "naive_clip", "e2e", None),
    ("context: frame, vidbatch on a running Ray / naive, end to end", "vidbatch_frame_warm",
     "e2e", "naive_frame", "e2e", None),
    ("context: frame, vidbatch on a running Ray / ray-read-videos, end to end",
     "vidbatch_frame_warm", "e2e", "ray_read_videos", "e2e", None),
]


def median(values):
    """The median of the values that are not None (None if none is)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per contender: medians over repeats (cosine: the minimum over repeats)."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["name"] for r in runs):
        rows = [r for r in runs if r["name"] == name]
        first = rows[0]
        s = {k: first[k] for k in ("family", "job", "precision")}
        s["runs"] = len(rows)
        s["problem"] = next((r.get("failed") or r.get("skipped") for r in rows
                             if r.get("failed") or r.get("skipped")), None)
        s["videos"] = first.get("videos")
        s.update({k: median([r.get(k) for r in rows]) for k in NUMBERS})
        s["stages"] = {k: median([r.get("stages", {}).get(k) for r in rows]) for k in STAGES}
        for key in {k for r in rows for k in r if k.startswith("cos_min")}:
            s[key] = min((r[key] for r in rows if r.get(key) is not None), default=None)
        s["note"] = first.get("note")
        out[name] = s
    _add_fractions(out)
    return out


def _add_fractions(summary: dict[str, dict]) -> None:
    """Each contender's steady rate as a fraction of its job's model bound (same precision),
    and its end-to-end rate against the naive loop of its job."""
    for s in summary.values():
        bound = summary.get(f"model_bound_{s['job']}" + ("_bf16" if s["precision"] == "bf16"
                                                         else ""), {})
        naive = summary.get(f"naive_{s['job']}", {})
        s["x_model_bound"] = _div(s["steady_videos_per_s"], bound.get("steady_videos_per_s"))
        s["x_naive"] = _div(s["e2e_videos_per_s"], naive.get("e2e_videos_per_s"))


def _div(a, b):
    return a / b if a is not None and b else None


def _metric(row: dict | None, metric: str):
    return None if row is None else row.get(f"{metric}_videos_per_s")


def _reference(by: dict, names: str | tuple[str, ...], repeat: int, metric: str):
    """``metric`` of contender ``names`` in ``repeat``: the smallest of several, or their
    rate when sharing the cores (``("shared", a, b)``); None unless all ran."""
    names = (names,) if isinstance(names, str) else names
    shared = names[0] == "shared"
    values = [_metric(by.get((n, repeat)), metric) for n in names[shared:]]
    if None in values:
        return None
    return 1 / sum(1 / v for v in values) if shared else min(values)


def ratios(runs: list[dict], repeats: int, table: list[tuple] = RATIOS) -> list[dict]:
    """Each ratio of ``table`` (as :data:`RATIOS`) computed within each repeat, then the
    median over repeats."""
    by = {(r["name"], r["repeat"]): r for r in runs}
    out = []
    for label, a, ma, b, mb, target in table:
        per = [_div(_metric(by.get((a, i)), ma), _reference(by, b, i, mb))
               for i in range(repeats)]
        value = median(per)
        out.append({"label": label, "value": value, "target": target,
                    "per_repeat": per,
                    "met": None if value is None or target is None else value >= target})
    return out


def _f(v, digits=2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def one_line(r: dict) -> str:
    if r.get("skipped") or r.get("failed"):
        return f"[{r['repeat']}] {r['name']}: {r.get('skipped') or r.get('failed')}"
    return (f"[{r['repeat']}] {r['name']}: {r['videos']} videos, wall {_f(r['wall_s'], 1)} s, "
            f"CPU {_f(r.get('cpu_core_s'), 0)} core-s, "
            f"{_f(r.get('e2e_videos_per_s'))} videos/s end to end, steady "
            f"{_f(r.get('steady_videos_per_s'))}, peak PSS {_f(r['peak_pss_mb'], 0)} MiB "
            f"(load {r['loadavg_before']:.1f})")


HEADER = ("| contender | job | videos | wall s | CPU core-s | videos/s end to end | "
          "videos/s steady | x model bound | x naive | peak PSS MiB | peak RSS MiB | decode s | "
          "prep s | infer s | write s | note |")


def markdown(summary: dict[str, dict], ratios_: list[dict], info: dict, args) -> str:
    lines = [f"\n{info['cpu']}, {info['cores']} cores, {info['mem_gib']} GiB, bf16 "
             f"{'yes' if info['bf16'] else 'no'}; load average at start "
             f"{info['loadavg_start'][0]:.2f}; {args.videos} videos x {args.seconds} s; medians "
             f"of {args.repeats} run(s); commit {info['commit']}\n", HEADER,
             "|" + "---|" * (HEADER.count("|") - 1)]
    for name, s in summary.items():
        st = s["stages"]
        note = s["problem"] or "; ".join(
            [f"{k} {v:.4f}" for k, v in s.items() if k.startswith("cos_min") and v is not None]
            + ([s["note"]] if s["note"] else []))
        lines.append(f"| {name} | {s['job']} {s['precision']} | {s['videos'] or '–'} | "
                     f"{_f(s['wall_s'], 1)} | {_f(s['cpu_core_s'], 0)} | "
                     f"{_f(s['e2e_videos_per_s'])} | "
                     f"{_f(s['steady_videos_per_s'])} | {_f(s['x_model_bound'])} | "
                     f"{_f(s['x_naive'])} | {_f(s['peak_pss_mb'], 0)} | "
                     f"{_f(s['peak_rss_mb'], 0)} | {_f(st['decode_s'], 1)} | "
                     f"{_f(st['prep_s'], 1)} | {_f(st['infer_s'], 1)} | "
                     f"{_f(st['write_s'], 2)} | {note} |")
    lines.append("\n| target | value | target | met |\n|---|---|---|---|")
    for r in ratios_:
        met = "–" if r["met"] is None else ("yes" if r["met"] else "no")
        goal = "–" if r["target"] is None else f"≥ {r['target']}"
        lines.append(f"| {r['label']} | {_f(r['value'])} | {goal} | {met} |")
    return "\n".join(lines)
