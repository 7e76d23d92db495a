"""The report's near-duplicates section, from the groups ``vidbatch near-duplicates``
wrote beside the rows (nothing is computed here: without groups, the section says how to
make them)."""

from __future__ import annotations

import pyarrow.dataset as ds
import pyarrow.fs as pafs

from pipeline.output.outdir import OutputDir
from pipeline.output.store import DERIVED
from pipeline.report.page import Markup, Page, esc, table

GROUPS_DIR = next(n for n in DERIVED if n.endswith("near_duplicates"))
SHOWN = 25


def read_groups(out: OutputDir):
    """The near-duplicate groups written beside ``out``'s rows, as a pyarrow table, or
    None when there are none."""
    folder = out.path(GROUPS_DIR)
    if out.fs.get_file_info(folder).type != pafs.FileType.Directory:
        return None
    return ds.dataset(folder, filesystem=out.fs, format="parquet").to_table()


def near_duplicates_section(page: Page, out: OutputDir) -> None:
    groups = read_groups(out)
    if groups is None:
        page.section("Near-duplicates", "<p class='note'>Not computed for this job. Run "
                     f"<code>vidbatch near-duplicates {esc(out.location)}</code>, then "
                     "report again.</p>", key="near-duplicates")
        return
    rows = groups.to_pylist()
    by_group: dict = {}
    for r in rows:
        by_group.setdefault(r["group_id"], []).append(r)
    ordered = sorted(by_group.values(), key=lambda g: (-len(g), str(g[0]["group_id"])))
    shown = []
    for g in ordered[:SHOWN]:
        rep = next((r for r in g if r["is_representative"]), g[0])
        others = [r for r in g if r is not rep]
        low = min((r["similarity"] for r in others), default=1.0)
        shown.append((rep["group_id"], len(g), Markup(f"<code>{esc(rep['path'])}</code>"),
                      Markup("<br>".join(f"<code>{esc(r['path'])}</code>"
                                         for r in others[:5])), f"{low:.3f}"))
    videos = sum(len(g) for g in ordered)
    page.section("Near-duplicates",
                 f"<p><b data-count='near-duplicate-groups'>{len(ordered):,}</b> groups "
                 f"holding {videos:,} videos; {videos - len(ordered):,} could be dropped, "
                 "keeping each group's representative.</p>",
                 table(["group", "videos", "representative", "others (first 5)",
                        "lowest similarity"], shown, numeric=[1, 4]), key="near-duplicates")
