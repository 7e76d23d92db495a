"""`vidbatch report` of real jobs, rendered in a real headless Chromium (Debian's
`chromium`, driven by Playwright): no console errors, every chart and thumbnail drawn with
non-blank pixels, and the counts shown equal the Parquet's."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from conftest import render
from PIL import Image

from pipeline.infer.plan import plan_job
from pipeline.infer.run import execute
from pipeline.infer.spec import parse_jobspec
from pipeline.report.build import make_report
from pipeline.synth import make_demo_set, moving_texture, write_manifest, write_video

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def demo_job(ray_session, tmp_path_factory) -> Path:
    """The demo's videos (several containers and codecs, some broken) through a real job."""
    root = tmp_path_factory.mktemp("report")
    rows = make_demo_set(root / "videos")
    manifest = write_manifest(root / "demo.csv", rows, videos_dir=root / "videos")
    spec = parse_jobspec({
        "name": "report-demo", "manifest": str(manifest),
        "sampling": {"clips_per_video": 1, "frames_per_clip": 4, "short_side": 32,
                     "crop_size": 32},
        "model": {"arch": "r3d_18", "weights": "none"},
        "inference": {"batch_size": 4, "channels_last": False},
        "resources": {"cpus_per_replica": 1, "cpus_per_decode_task": 0.5},
        "output": {"path": str(root / "out")}, "max_error_fraction": 0.9})
    execute(plan_job(spec), log=lambda s: None)
    return root / "out"


def parquet_counts(out: Path) -> dict[str, int]:
    t = ds.dataset(sorted(out.glob("*.parquet")), format="parquet").to_table(
        columns=["status"])
    ok = int(pc.sum(pc.equal(t["status"], "ok")).as_py())
    return {"rows": t.num_rows, "ok": ok, "error": t.num_rows - ok}


def expected_thumbnails(out: Path, budget: int) -> int:
    """Frames the contact sheets show: up to 6 top labels, an equal share of ``budget`` (at
    most 12) each; every demo video that decodes is readable."""
    t = ds.dataset(sorted(out.glob("*.parquet")), format="parquet").to_table(
        columns=["status", "pred_label"]).to_pandas()
    per_label = t[t.status == "ok"].pred_label.value_counts().sort_index()
    top = per_label.sort_values(ascending=False, kind="stable")[:min(6, budget)]
    each = max(1, min(12, budget // len(top)))
    return int(top.clip(upper=each).sum())


def non_blank(png: bytes) -> float:
    """The share of pixels that are not (near) the page's white."""
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float((np.abs(a - 255).sum(axis=2) > 30).mean())


def check_drawn(page) -> tuple[int, int]:
    """Every chart drew its traces and every thumbnail decoded, each with ink in it."""
    charts = page.locator("div.chart")
    for i in range(charts.count()):
        chart = charts.nth(i)
        name = chart.get_attribute("data-chart")
        chart.locator(".main-svg").first.wait_for()
        traces = chart.evaluate("c => c.querySelector('.js-plotly-plot').data.length")
        assert traces > 0, name
        assert non_blank(chart.screenshot()) > 0.01, f"chart {name} is blank"
    images = page.locator("figure img")
    for i in range(images.count()):
        img = images.nth(i)
        img.scroll_into_view_if_needed()
        assert img.evaluate("i => i.complete && i.naturalWidth > 0"), img.get_attribute("alt")
        shot = np.asarray(Image.open(io.BytesIO(img.screenshot())).convert("L"), dtype=float)
        assert shot.std() > 5, f"thumbnail of {img.get_attribute('alt')} is blank"
    return charts.count(), images.count()


# Each chart's title (the text itself, HTML or Plotly's SVG title), its modebar (Plotly's
# toolbar) and its plot, as boxes in the page.
_BOXES = """c => {
    const box = r => ({l: r.left, r: r.right, t: r.top, b: r.bottom});
    const title = c.querySelector('.chart-title') || c.querySelector('.gtitle');
    let text = null;
    if (title instanceof SVGElement) {
        text = box(title.getBoundingClientRect());
    } else if (title) {
        const range = document.createRange();
        range.selectNodeContents(title);
        text = box(range.getBoundingClientRect());
    }
    return {text, words: title ? title.textContent : '',
            overflows: !!title && title.scrollWidth > title.clientWidth,
            bar: box(c.querySelector('.modebar').getBoundingClientRect()),
            plot: box(c.querySelector('.js-plotly-plot').getBoundingClientRect())};
}"""


def overlap(a: dict, b: dict) -> bool:
    return a["l"] < b["r"] and b["l"] < a["r"] and a["t"] < b["b"] and b["t"] < a["b"]


def check_titles(page, widths: tuple[int, ...] = (1400, 800)) -> None:
    """At each page width, every chart's title is whole (not cut at the chart's right
    edge) and clear of the chart's modebar, shown as a pointer over the chart shows it."""
    for width in widths:
        page.set_viewport_size({"width": width, "height": 900})
        page.evaluate("() => Promise.all([...document.querySelectorAll('.js-plotly-plot')]"
                      ".map(d => Plotly.Plots.resize(d)))")
        charts = page.locator("div.chart")
        for i in range(charts.count()):
            chart = charts.nth(i)
            chart.locator(".js-plotly-plot").hover(position={"x": 5, "y": 5})
            chart.locator(".modebar").wait_for(state="visible")
            got = chart.evaluate(_BOXES)
            where = f"chart {chart.get_attribute('data-chart')!r} at {width} px: {got}"
            assert got["text"] and got["words"].strip(), f"no title, {where}"
            assert not overlap(got["text"], got["bar"]), f"title under the modebar, {where}"
            assert got["plot"]["l"] - 1 <= got["text"]["l"], f"title cut, {where}"
            assert got["text"]["r"] <= got["plot"]["r"] + 1, f"title cut, {where}"
            assert not got["overflows"], f"title cut, {where}"


def test_the_report_of_a_real_job_renders_in_chromium(browser, demo_job, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.search import read_near_duplicates

    for args in (["index", str(demo_job)],  # a low threshold, so that there are groups
                 ["near-duplicates", str(demo_job), "--threshold", "0.1", "-k", "3"]):
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
    groups = len(set(read_near_duplicates(str(demo_job))["group_id"].to_pylist()))
    html = Path(make_report(str(demo_job), log=lambda s: None))
    assert html == demo_job / "_vidbatch_report.html"
    page, problems = render(browser, html)
    charts, images = check_drawn(page)
    assert problems == []
    counts = parquet_counts(demo_job)
    shown = {k: int(page.locator(f"[data-count='{k}'] b").inner_text().replace(",", ""))
             for k in counts}
    assert shown == counts and counts["error"] == 4 and counts["ok"] == 8
    assert page.locator("#random-weights").is_visible()
    shown_groups = page.locator("[data-count='near-duplicate-groups']").inner_text()
    assert groups > 0 and int(shown_groups) == groups
    for key in ("errors", "timing", "labels", "sheets", "map"):
        assert page.locator(f"section#{key}").count() == 1, key
    assert charts >= 6 and images == expected_thumbnails(demo_job, budget=36)
    # every error group names its stage and an example path
    text = page.locator("section#errors").inner_text()
    for name in ("missing.mp4", "empty.mp4", "not_a_video.mp4", "truncated.mp4"):
        assert name in text
    # a rate, not rows per second-bin (0, 4, 0, 4 for 4-video batches)
    rate = page.locator("div.chart[data-chart='throughput']")
    assert "sliding" in rate.locator(".chart-title").inner_text()
    assert min(rate.evaluate("c => c.querySelector('.js-plotly-plot').data[0].y")) > 0
    check_titles(page)
    page.close()


def test_the_report_of_a_training_run_draws_its_curves(browser, tmp_path):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "train_acc": e / 5,
                "val_acc": e / 6, "val_top5": 1.0, "lr": 1e-3, "clips_per_s": 10.0}
               for e in range(1, 5)]
    (run / "history.jsonl").write_text("".join(json.dumps(h) + "\n"
                                               for h in history))
    (run / "best" / "confusion.json").write_text(json.dumps(
        {"classes": ["a", "b"], "matrix": [[5, 1], [2, 4]]}))
    html = Path(make_report(str(run), log=lambda s: None))
    page, problems = render(browser, html)
    charts, _ = check_drawn(page)
    assert problems == [] and charts == 5  # loss, accuracy, throughput, lr, confusion
    check_titles(page, widths=(800,))
    page.close()


def test_the_rate_over_the_run_is_a_rate_not_batches_per_bin():
    from pipeline.report.rows import sliding_rate

    # 4-video batches every 2 s: 2 videos/s throughout, though no second holds a batch
    steady = sliding_rate(np.arange(0, 61, 2.0), 4 * np.arange(1, 32))
    assert np.allclose(steady.per_s, 2.0) and steady.window_s == 8.0
    # two replicas finishing out of step (0.1 s apart, then 1.9 s): no spikes of 40/s
    both = sliding_rate(np.sort(np.r_[np.arange(0, 60, 2.0), np.arange(0.1, 60, 2.0)]),
                        4 * np.arange(1, 61))
    assert all(3.0 < r < 5.0 for r in both.per_s), both.per_s
    # a stall from 20 to 40 s shows as a dip to nothing
    times = np.r_[np.arange(0, 21, 2.0), np.arange(40, 61, 2.0)]
    stall = sliding_rate(times, 4 * np.arange(1, len(times) + 1))
    at = dict(zip(np.round(stall.t_s, 1), stall.per_s))
    assert at[10.2] == pytest.approx(2.0) and at[39.9] < 0.5 and at[60.0] > 1.5
    assert sliding_rate(np.array([0.0]), np.array([4])) is None  # one write: no rate


def test_the_job_card_says_what_each_task_sampled():
    from pipeline.report.views import describe_sampling

    detect = {"sampling": {"clips": 30, "frames": 1, "stride": None, "short_side": 384,
                           "crop_size": 384, "canvas": [384, 640], "rate": 10.0},
              "spec": {"sampling": {"fps": 10, "frames": 30, "snap_to_keyframes": True}}}
    assert describe_sampling(detect) == ("10 frames/s, at most 30 per video, snapped to "
                                         "keyframes; whole frames fitted into 640x384 (the "
                                         "detector's input)")
    classify = {"sampling": {"clips": 2, "frames": 16, "stride": None, "short_side": 128,
                             "crop_size": 112}}
    assert describe_sampling(classify) == ("2 clip(s) x 16 frames (spread evenly), short "
                                           "side 128, centre crop 112")


def test_a_report_is_refused_for_a_folder_vidbatch_did_not_write(tmp_path):
    from pipeline.errors import OutputError

    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(OutputError, match="no vidbatch job record"):
        make_report(str(tmp_path), log=lambda s: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.parquet"]  # nothing written


def test_the_report_of_a_uri_output_is_written_beside_it(browser, demo_job, s3, monkeypatch,
                                                         tmp_path):
    fs, env = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fs.create_dir("bucket")
    for f in demo_job.iterdir():
        if f.is_file() and not f.name.endswith(".html"):
            with fs.open_output_stream(f"bucket/out/{f.name}") as dst:
                dst.write(f.read_bytes())
    where = make_report("s3://bucket/out", thumbnails=2, log=lambda s: None)
    assert where == "s3://bucket/out/_vidbatch_report.html"
    local = tmp_path / "from-s3.html"
    with fs.open_input_stream("bucket/out/_vidbatch_report.html") as f:
        local.write_bytes(f.read())
    page, problems = render(browser, local)
    _, images = check_drawn(page)
    assert problems == [] and images == 2, images
    shown = int(page.locator("[data-count='rows'] b").inner_text())
    assert shown == parquet_counts(demo_job)["rows"]
    page.close()


def task_job(task: str, root: Path) -> dict:
    """A small real job of ``task`` (random weights) over videos with a picture and a
    soundtrack."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        t = np.arange(16000 * 2) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t) * (rng.random(t.size) > 0.3)
        path = write_video(root / f"{task}{i}.mp4", moving_texture(20, 96, 128, seed=i),
                           fps=10, audio=tone.astype(np.float32))
        rows.append({"path": path.name, "label": f"l{i}"})
    manifest = write_manifest(root / "m.csv", rows)
    spec = {"name": f"report-{task}", "task": task, "manifest": str(manifest),
            "output": {"path": str(root / "out")}, "resources": {"decode_timeout_s": 60}}
    if task == "detect":  # a random detector scores every box low: keep a few anyway
        spec |= {"model": {"arch": "fasterrcnn_resnet18_fpn", "weights": "none"},
                 "sampling": {"frames": 2},
                 "detect": {"score_threshold": 0.0, "max_per_frame": 3, "min_size": 96}}
    else:
        spec |= {"model": {"arch": "res8", "weights": "none"}, "sampling": {"max_windows": 6}}
    return spec


def spectrogram_pitch(uri: str, sample_rate: int) -> float:
    """The frequency (Hz) of the mel band an audio strip draws brightest, on average over
    its time (Viridis: brighter is louder)."""
    import base64

    from librosa import mel_frequencies

    picture = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("L")
    loudness = np.asarray(picture, dtype=float).mean(axis=1)[::-1]  # low bands first
    centres = mel_frequencies(n_mels=len(loudness) + 2, fmax=sample_rate / 2)[1:-1]
    return float(centres[int(np.argmax(loudness))])


def check_strips(page, out: Path) -> None:
    """Each audio strip draws its video's sound (the tone task_job wrote: 300, 500 or 700
    Hz, the brightest band) and its windows' labels in order, from the Parquet."""
    rows = {Path(r["path"]).name: r for r in ds.dataset(sorted(out.glob("*.parquet")))
            .to_table(columns=["path", "window_predictions"]).to_pylist()}
    strips = page.locator("figure.strip")
    assert strips.count() >= 1
    for i in range(strips.count()):
        strip = strips.nth(i)
        img = strip.locator("img")
        name = Path(img.get_attribute("alt")).name
        tone = 300 + 200 * int(name[-5])
        pitch = spectrogram_pitch(img.get_attribute("src"), 16000)
        assert abs(pitch - tone) < 60, (name, pitch, tone)
        labels = [w["label"] for w in rows[name]["window_predictions"]]
        runs = [lab for j, lab in enumerate(labels) if j == 0 or labels[j - 1] != lab]
        shown = strip.locator("[data-band='labels'] span").all_inner_texts()
        assert shown == runs and strip.locator("[data-band='speech']").count() == 1


@pytest.mark.parametrize("task", ["detect", "audio"])
def test_detect_and_audio_reports_draw_their_own_sections(browser, ray_session, tmp_path,
                                                          task):
    spec = task_job(task, tmp_path)
    execute(plan_job(parse_jobspec(spec)), log=lambda s: None)
    html = Path(make_report(str(tmp_path / "out"), log=lambda s: None))
    page, problems = render(browser, html)
    charts, images = check_drawn(page)
    assert problems == [] and images >= 1
    assert int(page.locator("[data-count='ok'] b").inner_text()) == 3
    card = page.locator("section#job").inner_text()
    if task == "detect":  # boxes are drawn on the frame: its caption counts them
        assert re.search(r"\b[1-9]\d* boxes at", page.locator("section#sheets").inner_text())
        assert page.locator("section#map").count() == 0  # a detect job has no embedding
        # what the detector was given: frames per video, fitted into its input
        size = spec["detect"]["min_size"]
        assert f"{spec['sampling']['frames']} frames per video" in card
        assert re.search(rf"fitted into \d+x{size} \(the detector's input\)", card), card
        assert "crop" not in card and "clips" not in card
    else:
        assert page.locator("figure.strip").count() == images  # sound, not pictures
        assert "1-s windows every 0.5 s" in card
        check_strips(page, tmp_path / "out")
        assert page.locator("section#map").count() == 1
    check_titles(page)
    page.close()
