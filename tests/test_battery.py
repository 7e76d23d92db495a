"""The crafted-input battery: every bad input this project knows of, in one real job. Each
manifest row comes out as exactly one output row, as documented (README, 'Bad input never
crashes a job and never disappears')."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.dataset as pads
import pytest

from pipeline.infer.plan import plan_job
from pipeline.infer.run import execute
from pipeline.infer.spec import parse_jobspec
from pipeline.synth import moving_texture, write_video

pytestmark = pytest.mark.slow

# name -> (status, the start of its error, or of its decode note for ok rows)
EXPECTED = {
    "good.mp4": ("ok", None),
    "one_frame.mp4": ("ok", None),
    "av1.mkv": ("ok", "decord failed"),
    "corrupt_packet.mp4": ("ok", "decord failed"),
    "missing.mp4": ("error", "read: file not found"),
    "empty.mp4": ("error", "read: file is empty"),
    "a_folder": ("error", "read: is a directory"),
    "text.mp4": ("error", "decode: not a decodable video"),
    "truncated.mp4": ("error", "decode:"),
    "stuck.mp4": ("error", "decode: timed out after 8 s"),
    "huge_frame.mp4": ("error", "decode:"),
    "late_segment.mp4": ("error", "sample: segment starts at 60 s, after the video ends"),
    "s3://key:secret@bucket/v.mp4": ("error", "read: s3://***@bucket/v.mp4 carries credentials"),
    "s3://bucket/v.mp4?endpoint_override=127.0.0.1:9": ("error", "read: s3://bucket/v.mp4?"),
    "": ("error", "read: the manifest row has an empty path"),
}


@pytest.fixture(scope="module")
def battery(tmp_path_factory, break_packet):
    root = tmp_path_factory.mktemp("battery")
    write_video(root / "good.mp4", moving_texture(30, 64, 80, seed=1))
    write_video(root / "one_frame.mp4", moving_texture(1, 64, 80, seed=2))
    write_video(root / "late_segment.mp4", moving_texture(30, 64, 80, seed=3))
    write_video(root / "av1.mkv", moving_texture(12, 64, 80, seed=4), codec="libsvtav1")
    write_video(root / "huge_frame.mp4", np.full((1, 8192, 8192, 3), 90, np.uint8),
                options={"x264-params": "level=6.2"})
    good = write_video(root / "gop.mp4", moving_texture(60, 96, 128, seed=5), gop=20)
    break_packet(good, root / "corrupt_packet.mp4")
    (root / "truncated.mp4").write_bytes(good.read_bytes()[:2000])
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video\n")
    (root / "a_folder").mkdir()
    os.mkfifo(root / "stuck.mp4")  # nobody writes: a decoder that opens it hangs
    lines = ["path,start_s,end_s"] + [
        f"{name},{'60' if name == 'late_segment.mp4' else ''},"
        f"{'61' if name == 'late_segment.mp4' else ''}" for name in EXPECTED]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def _battery_job(root, out: str, **extra) -> tuple[dict, dict[str, list[dict]]]:
    """The battery as one classify job: its record, and its rows by input name."""
    spec = parse_jobspec({
        "name": "battery", "manifest": "manifest.csv",
        "sampling": {"clips_per_video": 1, "frames_per_clip": 4, "short_side": 32,
                     "crop_size": 32},
        "model": {"arch": "r3d_18", "num_classes": 3},
        "resources": {"decode_timeout_s": 8, "decode_memory_mb": 512,
                      "videos_per_decode_task": 4},
        "output": {"path": out}, "max_error_fraction": 1.0, **extra}, base_dir=root)
    record = execute(plan_job(spec), log=lambda _: None)
    rows = pads.dataset(str(root / out), format="parquet").to_table().to_pylist()
    assert len(rows) == record["counts"]["rows"]
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        path = r["path"] or ""
        by_name.setdefault(path if "://" in path else os.path.basename(path), []).append(r)
    assert set(by_name) == set(EXPECTED)
    return record, by_name


def _as_documented(name: str, r: dict) -> None:
    status, start = EXPECTED[name]
    assert r["status"] == status, (name, r["error"])
    if status == "error":
        assert r["error"].startswith(start), (name, r["error"])
        assert r["pred_label"] is None and "secret" not in r["error"]
    else:
        assert r["pred_label"] is not None and len(r["embedding"]) == 512
        if start:
            assert r["decode_note"].startswith(start), (name, r["decode_note"])


@pytest.fixture(scope="module")
def in_tasks(ray_session, battery) -> dict[str, list[dict]]:
    """The battery decoded in decode tasks (the default): its rows by input name."""
    return _battery_job(battery, "out")[1]


def test_every_bad_input_gives_its_documented_row(in_tasks):
    by_name = in_tasks
    for name in EXPECTED:
        assert len(by_name[name]) == 1, name
        _as_documented(name, by_name[name][0])


def test_per_shot_every_input_gives_its_shots_or_one_error_row(ray_session, battery):
    """segments: shots: a good video gives one row per shot, a bad one exactly one error
    row with the reason it gives per video (shot null: its shots could not be found).

    The huge frame is the exception: every frame at 48x27 decodes within 512 MiB, and
    then its one shot's own decode at full size does or does not (run to run), so its one
    row is ok or a ``decode:`` error of shot 0."""
    _, by_name = _battery_job(battery, "per_shot",
                              segments={"by": "shots", "detector": "content"})
    huge = by_name.pop("huge_frame.mp4")
    assert len(huge) == 1 and huge[0]["shot"] == 0, huge
    assert huge[0]["status"] == "ok" or huge[0]["error"].startswith("decode:"), huge
    for name, (status, _) in EXPECTED.items():
        if name == "huge_frame.mp4":
            continue
        rows = sorted(by_name[name], key=lambda r: r["shot"] or 0)
        if status == "error":
            assert len(rows) == 1 and rows[0]["shot"] is None, (name, rows)
        else:
            assert [r["shot"] for r in rows] == list(range(rows[0]["shot_count"])), name
        for r in rows:
            _as_documented(name, r)


def test_decoding_on_the_replica_gives_the_same_rows(ray_session, battery, in_tasks):
    """``decode_on: replica``: decode tasks probe (in the confined child), the replica
    decodes on its device (here the CPU). Every input gives its documented row, and each
    ok row's embedding is the one decoding in tasks gives (cosine >= 0.999).

    The huge frame is the exception: its probe decodes one frame at full size within the
    child's 512 MiB or not (run to run), and the replica, which has no such limit, decodes
    it; so its row is ok, or the probe's ``decode:`` error."""
    record, on_replica = _battery_job(battery, "on_replica",
                                      resources={"decode_timeout_s": 8,
                                                 "decode_memory_mb": 512,
                                                 "videos_per_decode_task": 4,
                                                 "decode_on": "replica"})
    huge = on_replica.pop("huge_frame.mp4")[0]
    assert huge["status"] == "ok" or huge["error"].startswith("decode:"), huge
    for name, got in on_replica.items():
        assert len(got) == 1, name
        _as_documented(name, got[0])
        want = in_tasks[name][0]
        assert got[0]["decoder"] == want["decoder"], name
        if got[0]["status"] == "ok":
            a, b = np.array(got[0]["embedding"]), np.array(want["embedding"])
            assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.999, name
