"""`vidbatch report` of shots: a shots job's timeline strips (one per ok video, one thumbnail
per shot, laid out without overlap) in a real headless Chromium, the strips' frame budget,
and the report of a classify job with a row per shot."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from conftest import render

from pipeline.infer.plan import plan_job
from pipeline.infer.run import execute
from pipeline.infer.spec import parse_jobspec
from pipeline.report.build import make_report
from pipeline.report.shots import _segments, per_video_cap, picked
from pipeline.synth import write_video
from pipeline.tasks.shots.demo import edited_video

pytestmark = pytest.mark.slow




def overlap(a: dict, b: dict) -> bool:
    return a["l"] < b["r"] and b["l"] < a["r"] and a["t"] < b["b"] and b["t"] < a["b"]


def test_the_frame_budget_is_shared_and_thinned_evenly():
    assert per_video_cap([3, 10, 40], 30) == 17  # 3 + 10 + 17
    assert per_video_cap([3, 10, 40], 100) == 40 and per_video_cap([3], 0) == 0
    assert picked(40, 17) == list(range(0, 40, 3)) and picked(5, 17) == [0, 1, 2, 3, 4]
    assert picked(5, 0) == []


def test_a_gradual_transition_is_a_hatched_gap_on_the_bar():
    shots = [{"shot": 0, "start_frame": 0, "end_frame": 49, "start_s": 0.0, "end_s": 2.0,
              "score": None},
             {"shot": 1, "start_frame": 60, "end_frame": 99, "start_s": 2.4, "end_s": 4.0,
              "score": 0.8}]
    html = _segments(shots, 0.0, 4.0)
    assert html.count("class='gap'") == 1 and "left:50.0000%;width:10.0000%" in html
    assert "gradual transition 2.00-2.40 s (10 frames)" in html
    assert "class='gap'" not in _segments([shots[0], {**shots[1], "start_frame": 50}], 0, 4)


@pytest.fixture(scope="module")
def shot_jobs(ray_session, tmp_path_factory) -> tuple[Path, Path]:
    """A shots job (content detector) and a classify job per shot over three edited
    videos and a missing file."""
    root = tmp_path_factory.mktemp("report_shots")
    for name, seed in (("a", 3), ("b", 5), ("c", 7)):
        frames, _ = edited_video(seed=seed, video_s=(8.0, 10.0))
        write_video(root / f"{name}.mp4", frames, fps=25)
    (root / "manifest.csv").write_text("video_id,path\na,a.mp4\nb,b.mp4\nc,c.mp4\n"
                                       "gone,missing.mp4\n")
    jobs = {"shots": {"task": "shots", "shots": {"detector": "content"}},
            "per_shot": {"segments": {"by": "shots", "detector": "content", "min_s": 1.0,
                                      "max_s": 4.0},
                         "model": {"arch": "r3d_18", "num_classes": 3, "weights": "none"},
                         "sampling": {"frames_per_clip": 4, "short_side": 32,
                                      "crop_size": 32}}}
    for name, extra in jobs.items():
        spec = parse_jobspec({"name": name, "manifest": "manifest.csv",
                              "resources": {"videos_per_decode_task": 2},
                              "output": {"path": name}, "max_error_fraction": 1.0, **extra},
                             base_dir=root)
        execute(plan_job(spec), log=lambda _: None)
    return root / "shots", root / "per_shot"


def _ok_rows(out: Path) -> dict[str, dict]:
    rows = ds.dataset(str(out), format="parquet").to_table().to_pylist()
    return {r["video_id"]: r for r in rows if r["status"] == "ok"}


_STRIPS = """() => [...document.querySelectorAll('.shot-strip')].map(s => {
    const box = e => { const r = e.getBoundingClientRect();
                       return {l: r.left, r: r.right, t: r.top, b: r.bottom}; };
    return {video: s.dataset.video, bar: box(s.querySelector('.shot-bar')),
            segments: [...s.querySelectorAll('.shot-bar span[data-shot]')].map(box),
            thumbs: [...s.querySelectorAll('.shot-thumb img')].map(i => ({
                ...box(i), ok: i.complete && i.naturalWidth > 0}))};
})"""


def test_a_shots_report_draws_a_strip_per_video(browser, shot_jobs):
    out, _ = shot_jobs
    rows = _ok_rows(out)
    html = Path(make_report(str(out), log=lambda _: None))
    page, problems = render(browser, html)
    strips = page.evaluate(_STRIPS)
    assert sorted(s["video"] for s in strips) == sorted(rows) == ["a", "b", "c"]
    for s in strips:
        row = rows[s["video"]]
        assert len(s["thumbs"]) == len(s["segments"]) == row["shot_count"] >= 2, s
        assert all(t["ok"] and t["r"] - t["l"] > 20 for t in s["thumbs"]), s
        assert not any(overlap(a, b) for i, a in enumerate(s["thumbs"])
                       for b in s["thumbs"][i + 1:]), s
        # each segment's width is its shot's share of the video (contiguous shots: the
        # bar is covered end to end)
        width = s["bar"]["r"] - s["bar"]["l"]
        span = row["shots"][-1]["end_s"]
        for seg, shot in zip(s["segments"], row["shots"]):
            expected = width * (shot["end_s"] - shot["start_s"]) / span
            assert abs((seg["r"] - seg["l"]) - expected) <= 2, (seg, shot)
    charts = page.locator("section#shots div.chart")
    assert [charts.nth(i).get_attribute("data-chart") for i in range(charts.count())] == \
        ["shot-lengths", "shots-per-video"]
    for i in range(charts.count()):
        charts.nth(i).locator(".main-svg").first.wait_for()
        assert charts.nth(i).evaluate("c => c.querySelector('.js-plotly-plot').data[0]"
                                      ".y.length") > 0
    assert "content, threshold 27" in page.locator("section#job").inner_text()
    assert problems == []
    page.close()
    # A budget of 3 frames: one per video, the first shot's.
    small = make_report(str(out), str(out.parent / "small.html"), thumbnails=3,
                        log=lambda _: None)
    text = Path(small).read_text()
    assert text.count("class='shot-thumb s") == 3 and "every k-th shot" in text


def test_a_per_shot_classify_report_counts_shots(browser, shot_jobs):
    _, out = shot_jobs
    rows = _ok_rows(out)  # one per video here: the dict keeps each video's last shot
    html = Path(make_report(str(out), log=lambda _: None))
    page, problems = render(browser, html)
    shots = ds.dataset(str(out), format="parquet").to_table().filter(
        ds.field("status") == "ok").num_rows
    assert shots > len(rows) == 3
    note = page.locator("#per-shot").inner_text()
    assert f"{shots} shots of 3 videos" in note
    assert "shots per label" in page.locator("div.chart[data-chart='labels']").inner_text()
    assert ("one row per shot: shots found by content, merged under 1 s, split over 4 s"
            in page.locator("section#job").inner_text())
    captions = page.locator("section#sheets figcaption").all_inner_texts()
    assert captions and all(re.search(r"shot \d+ of \d+, \d+\.\d\d-\d+\.\d\d s", c)
                            for c in captions), captions
    images = page.locator("section#sheets figure img")
    assert images.count() == len(captions)  # every shot's middle frame decodes
    assert problems == []
    page.close()
