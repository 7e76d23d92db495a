"""Manifests that never pass through the driver whole: shards numbered as one manifest,
the whole-manifest checks in DuckDB, resume as a bitmap, read tasks that read their own
chunk, and the end-of-job counts out of core."""

import hashlib
import json
import random
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import dataflow
from pipeline.errors import ManifestError
from pipeline.infer.resume import left_to_do
from pipeline.manifest import Todo, check_manifest, derive_video_ids, read_manifest
from pipeline.output.ledger import count_statuses
from pipeline.output.outdir import OutputDir
from pipeline.spec import ManifestSpec


def shards(folder, fmt, parts):
    """A directory of manifest shards, one per list of rows in ``parts``."""
    folder.mkdir()
    for k, rows in enumerate(parts):
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(rows), folder / f"part-{k}.parquet",
                           row_group_size=2)
        elif fmt == "csv":
            keys = list(rows[0])
            (folder / f"part-{k}.csv").write_text(",".join(keys) + "\n" + "".join(
                ",".join(str(r.get(c, "")) for c in keys) + "\n" for r in rows))
        else:
            (folder / f"part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "_SUCCESS").write_text("")  # Spark's marker: not data
    return folder


def legacy_id(path: str, hex_digits: int = 16) -> str:
    """How vidbatch derived ids in Python before the SQL did: outputs it wrote must keep
    resuming, so the SQL must agree with it."""
    stem = PurePosixPath(path.rstrip("/")).stem or "video"
    return f"{stem}-{hashlib.sha1(path.encode('utf-8')).hexdigest()[:hex_digits]}"


def test_derived_ids_agree_with_the_python_derivation_on_awkward_paths():
    rng = random.Random(0)
    paths = ["/data/clips/cat.mp4", "a.b.mp4", ".hidden", "x.", "..", "a/..", "a/.", ".",
             "/", "a//b.mp4", "s3://bucket/k.mp4", "a/b/./.", "ü/é.mp4", "名前.動画",
             "a\nb.c\nd", "/x/a..mp4", "/x/.a.b", "a.b//"]
    paths += ["".join(rng.choice("ab./.\n é") for _ in range(rng.randint(0, 10)))
              for _ in range(3000)]
    for digits in (16, 8):
        assert derive_video_ids(paths, digits) == [legacy_id(p, digits) for p in paths]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_shards_are_numbered_as_one_manifest_and_duplicates_across_them_named(tmp_path, fmt):
    parts = [[{"path": f"v{i}.mp4", "label": "x"} for i in range(3)],
             [{"path": f"w{i}.mp4", "label": "y"} for i in range(4)]]
    scan = check_manifest(ManifestSpec(path=str(shards(tmp_path / "ok", fmt, parts))))
    assert scan.rows == 7 and [c.first_row for c in scan.chunks][0] == 0
    rows = Todo(scan).read_all()
    assert rows["row"].to_pylist() == list(range(7))
    assert rows["path"].to_pylist()[3] == str(tmp_path / "w0.mp4")  # beside the folder
    parts[1][2] = {"path": "v1.mp4", "label": "y"}  # row 6 repeats row 2
    with pytest.raises(ManifestError, match=r"'v1-[0-9a-f]{16}' on rows 2, 6"):
        check_manifest(ManifestSpec(path=str(shards(tmp_path / "dup", fmt, parts))))


def test_a_given_id_and_a_path_are_different_keys_and_equal_ids_are_duplicates(tmp_path):
    ok = [{"video_id": "a", "path": "x.mp4"}, {"video_id": None, "path": "x.mp4"}]
    pq.write_table(pa.Table.from_pylist(ok), tmp_path / "ok.parquet")
    assert check_manifest(ManifestSpec(path=str(tmp_path / "ok.parquet"))).rows == 2
    dup = [{"video_id": "a", "path": "x.mp4"}, {"video_id": "a", "path": "y.mp4"}]
    pq.write_table(pa.Table.from_pylist(dup), tmp_path / "dup.parquet")
    with pytest.raises(ManifestError, match="'a' on rows 1, 2"):
        check_manifest(ManifestSpec(path=str(tmp_path / "dup.parquet")))


def test_relative_paths_that_resolve_alike_are_duplicates(tmp_path):
    (tmp_path / "m.csv").write_text("path\na.mp4\nsub/../a.mp4\n")
    with pytest.raises(ManifestError, match="rows 1, 2"):
        check_manifest(ManifestSpec(path=str(tmp_path / "m.csv")))


def test_segment_bounds_that_are_not_numbers_are_named(tmp_path):
    (tmp_path / "m.csv").write_text("path,start_s,end_s\na.mp4,1,2\nb.mp4,soon,3\n")
    with pytest.raises(ManifestError, match="rows 2: start_s and end_s must hold seconds"):
        check_manifest(ManifestSpec(path=str(tmp_path / "m.csv")))


def test_an_empty_manifest_directory_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ManifestError, match="without data files"):
        check_manifest(ManifestSpec(path=str(tmp_path / "m")))


def written(out, rows):
    """``rows`` as a data file of an earlier run in ``out``, plus a footerless one."""
    out.mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / "vidbatch-r1_0.parquet")
    (out / "vidbatch-r1_1.parquet").write_bytes(b"PAR1 killed mid-write")
    return OutputDir.at(str(out))


def test_resume_skips_the_written_rows_as_bits_and_lists_unreadable_files(tmp_path):
    m = shards(tmp_path / "m", "parquet", [[{"path": f"v{i}.mp4"} for i in range(5)],
                                           [{"path": f"w{i}.mp4"} for i in range(5)]])
    scan = check_manifest(ManifestSpec(path=str(m)))
    ids = Todo(scan).read_all()["video_id"].to_pylist()
    out = written(tmp_path / "out", [{"video_id": ids[k], "status": "ok"} for k in (0, 4, 7)])
    todo, unreadable = left_to_do(scan, out)
    assert todo.skipped == 3 and todo.num_rows == 7 and len(unreadable) == 1
    left = todo.read_all()
    assert left["row"].to_pylist() == [1, 2, 3, 5, 6, 8, 9]
    parts = todo.parts()  # chunks are row groups of 2: one part has no row left
    assert sum(p.todo for p in parts) == 7 and len(parts) == 5


def test_per_shot_resume_carries_the_partly_written_videos_shots(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("video_id,path\na,a.mp4\nb,b.mp4\nc,c.mp4\n")
    scan = check_manifest(ManifestSpec(path=str(m)))
    rows = [{"video_id": "a", "shot": 0, "shot_count": 2, "status": "ok"},
            {"video_id": "a", "shot": 1, "shot_count": 2, "status": "ok"},
            {"video_id": "b", "shot": 1, "shot_count": 3, "status": "ok"},
            {"video_id": "c", "shot": None, "shot_count": None, "status": "error"}]
    todo, _ = left_to_do(scan, written(tmp_path / "out", rows), per_shot=True)
    left = todo.read_all()
    assert left["video_id"].to_pylist() == ["b"] and left["done_shots"].to_pylist() == [[1]]


def test_end_counts_are_read_out_of_core(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"video_id": ["a", "b"], "status": ["ok", "error"],
                             "error": [None, "audio: no audio stream"]}), out / "x.parquet")
    pq.write_table(pa.table({"video_id": ["a"], "status": ["ok"], "error": [None]}),
                   out / "y.parquet")
    counts = count_statuses(OutputDir.at(str(out)), ("audio",))
    assert counts == {"rows": 3, "ok": 2, "error": 1, "unique_ids": 2, "outcomes": 1}


def test_each_read_task_carries_its_own_chunk_and_bits(tmp_path):
    from ray import cloudpickle

    rows = [{"path": f"/videos/v{i:06d}.mp4"} for i in range(40_000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet", row_group_size=10_000)
    scan = check_manifest(ManifestSpec(path=str(tmp_path / "m.parquet")))
    import numpy as np

    skip = np.zeros(scan.rows, bool)
    skip[::3] = True
    todo = Todo(scan, np.packbits(skip), int(skip.sum()))
    tasks = dataflow._ManifestParts(todo.parts(), None).get_read_tasks(1)
    assert len(tasks) == 4
    assert max(len(cloudpickle.dumps(t)) for t in tasks) < 2_000 + todo.skip.nbytes / 4
    got = pa.concat_tables([b for t in tasks for b in t()])["row"].to_pylist()
    assert got == [r for r in range(40_000) if r % 3]


def test_the_job_stream_reads_the_manifest_in_read_tasks(tmp_path, ray_session):
    rows = [{"path": f"/videos/v{i:04d}.mp4"} for i in range(1_000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet", row_group_size=300)
    todo = Todo(check_manifest(ManifestSpec(path=str(tmp_path / "m.parquet"))))
    ds = dataflow.manifest_rows(todo, 50)
    got = ds.take_all()
    assert sorted(r["row"] for r in got) == list(range(1_000))
    sizes = [m.num_rows for b in ds.materialize().iter_internal_ref_bundles()
             for m in b.metadata]
    assert max(sizes) <= 50 and len(sizes) >= 20  # each 300-row chunk cut into blocks


def test_read_manifest_keeps_an_empty_path_row(tmp_path):
    (tmp_path / "m.csv").write_text("path\na.mp4\n\nb.mp4\n")
    t = read_manifest(ManifestSpec(path=str(tmp_path / "m.csv")))
    assert t["path"].to_pylist() == [str(tmp_path / "a.mp4"), None, str(tmp_path / "b.mp4")]


def test_a_large_row_group_is_read_in_slices(tmp_path):
    """Each read task takes at most SLICE_ROWS rows of a row group: a task's rows travel
    together, through the driver."""
    import numpy as np

    from pipeline.manifest.todo import SLICE_ROWS

    n = 2 * SLICE_ROWS + 100
    pq.write_table(pa.table({"path": [f"/v/{i}.mp4" for i in range(n)]}),
                   tmp_path / "m.parquet", row_group_size=n)
    scan = check_manifest(ManifestSpec(path=str(tmp_path / "m.parquet")))
    skip = np.zeros(n, bool)
    skip[SLICE_ROWS - 1:SLICE_ROWS + 1] = True  # one row each side of a slice's edge
    parts = Todo(scan, np.packbits(skip), 2).parts()
    assert [p.todo for p in parts] == [SLICE_ROWS - 1, SLICE_ROWS - 1, 100]
    rows = pa.concat_tables(t for p in parts for t in p.tables())["row"].to_pylist()
    assert rows == [r for r in range(n) if not skip[r]]


def test_read_gate_holds_a_read_task_until_the_rows_before_it_are_nearly_done(
        ray_session):
    import threading
    import time

    import ray

    from pipeline.infer.progress import ProgressTracker, ReadGate

    name = f"gate-test-{time.time_ns()}"
    tracker = ProgressTracker.options(name=name).remote(1_000)
    try:
        gate = ReadGate(name, ray.get_runtime_context().namespace, window=100)
        gate(100)  # within the window of nothing done: goes at once
        passed = threading.Event()
        waiter = threading.Thread(target=lambda: (gate(500), passed.set()), daemon=True)
        waiter.start()
        time.sleep(1.0)
        assert not passed.is_set()  # 500 rows ahead, none done
        ray.get(tracker.add.remote(350, 49))  # 399 done: still one short of 500 - 100
        time.sleep(0.6)
        assert not passed.is_set()
        ray.get(tracker.add.remote(0, 1))
        assert passed.wait(5)
    finally:
        ray.kill(tracker)


def test_windows_cut_the_parts_in_order_and_a_todo_in_memory_is_one(tmp_path):
    pq.write_table(pa.table({"path": [f"/v/{i}.mp4" for i in range(95)]}),
                   tmp_path / "m.parquet", row_group_size=10)
    scan = check_manifest(ManifestSpec(path=str(tmp_path / "m.parquet")))
    import numpy as np

    skip = np.zeros(95, bool)
    skip[10:20] = True  # a whole row group done: no part for it
    todo = Todo(scan, np.packbits(skip), 10)
    windows = todo.windows(25)
    assert [sum(p.todo for p in w) for w in windows] == [30, 30, 25]
    assert [p for w in windows for p in w] == list(todo.parts())
    assert Todo(scan).windows(1_000) == [Todo(scan).parts()]
    assert todo.with_table(todo.read_all()).windows(25) == [None]


def test_a_job_in_windows_writes_every_row_once_and_resumes_across_them(
        tmp_path, ray_session, monkeypatch):
    """One Ray Data execution per window (dataflow.WINDOW_ROWS): every manifest row still
    yields exactly one row, each window's files are named apart, and --resume finds what a
    lost window's files held."""
    from pipeline.infer.plan import plan_job
    from pipeline.infer.run import execute
    from pipeline.infer.spec import parse_jobspec

    monkeypatch.setenv("VIDBATCH_WINDOW_ROWS", "25")
    pq.write_table(pa.table({"path": [f"/nowhere/v{i:03d}.mp4" for i in range(70)]}),
                   tmp_path / "m.parquet", row_group_size=10)
    out = tmp_path / "out"
    spec = parse_jobspec({
        "name": "windows", "manifest": str(tmp_path / "m.parquet"),
        "sampling": {"clips_per_video": 1, "frames_per_clip": 2, "short_side": 32,
                     "crop_size": 32},
        "model": {"arch": "r3d_18", "weights": "none", "num_classes": 3},
        "resources": {"cpus_per_replica": 1, "cpus_per_decode_task": 0.5},
        "output": {"path": str(out), "rows_per_file": 8}, "max_error_fraction": 1})

    record = execute(plan_job(spec), log=lambda _: None)
    assert record["state"] == "finished" and record["counts"]["rows"] == 70
    files = sorted(f.name for f in out.glob("*.parquet"))
    windows = sorted({f.split("_w", 1)[1][:5] for f in files})
    assert windows == ["00000", "00001", "00002"]  # 30 + 30 + 10 rows to do
    rows, unique = rows_and_ids(out)
    assert rows == unique == 70
    lost = [f for f in out.glob("*.parquet") if "_w00001_" in f.name]
    lost_rows = sum(pq.read_metadata(f).num_rows for f in lost)
    for f in lost:
        f.unlink()
    plan = plan_job(spec, policy="resume")
    assert plan.todo.num_rows == lost_rows == 30
    record = execute(plan, log=lambda _: None)
    assert record["state"] == "finished" and record["counts"]["processed_this_run"] == 30
    assert rows_and_ids(out) == (70, 70)


def rows_and_ids(out) -> tuple[int, int]:
    """The rows in ``out``'s data files, and their distinct ids."""
    import duckdb

    return duckdb.sql(f"SELECT count(*), count(DISTINCT video_id) FROM "
                      f"read_parquet('{out}/*.parquet')").fetchall()[0]


def test_a_window_size_that_is_not_a_number_of_rows_is_refused(monkeypatch):
    from pipeline.errors import ConfigError

    monkeypatch.setenv("VIDBATCH_WINDOW_ROWS", "1e6")
    with pytest.raises(ConfigError, match="VIDBATCH_WINDOW_ROWS='1e6'.*unset it"):
        dataflow.window_rows()
