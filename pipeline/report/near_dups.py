"""The report's near-duplicates section, from the groups ``vidbatch near-duplicates``
wrote beside the rows (nothing is computed here: without groups, the section says how to
make them)."""

from __future__ import annotations

from pipeline.output.outdir import OutputDir
from pipeline.report.page import Markup, Page, esc, table
from pipeline.search import read_near_duplicates

SHOWN = 25


def near_duplicates_section(page: Page, out: OutputDir) -> None:
    groups = read_near_duplicates(out.location)
    if groups is None:
        page.section("Near-duplicates", "<p class='note'>Not computed for this job. Run "
                     f"<code>vidbatch near-duplicates {esc(out.location)}</code>, then "
                     "report again.</p>", key="near-duplicates")
        return
    by_group: dict[int, list[dict]] = {}
    for r in groups.to_pylist():
        by_group.setdefault(r["group_id"], []).append(r)
    ordered = sorted(by_group.values(), key=lambda g: (-len(g), g[0]["group_id"]))
    shown = []
    for g in ordered[:SHOWN]:
        rep = next((r for r in g if r["is_representative"]), g[0])
        others = [r for r in g if r is not rep]
        low = min((r["similarity"] for r in others), default=1.0)
        shown.append((rep["group_id"], len(g), Markup(f"<code>{esc(rep['path'])}</code>"),
                      Markup("<br>".join(f"<code>{esc(r['path'])}</code>"
                                         for r in others[:5])), f"{low:.3f}"))
    if not ordered:
        page.section("Near-duplicates", "<p><b data-count='near-duplicate-groups'>0</b> "
                     "groups: no two videos are as similar as the threshold asked.</p>",
                     key="near-duplicates")
        return
    videos = sum(len(g) for g in ordered)
    page.section("Near-duplicates",
                 f"<p><b data-count='near-duplicate-groups'>{len(ordered):,}</b> groups "
                 f"holding {videos:,} videos; {videos - len(ordered):,} could be dropped, "
                 "keeping each group's representative (the largest, then longest copy).</p>",
                 table(["group", "videos", "representative", "others (first 5)",
                        "lowest similarity to it"], shown, numeric=[1, 4]),
                 key="near-duplicates")
