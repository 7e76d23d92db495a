"""Manifests in every supported format, normalised to one schema."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import dataflow
from pipeline.dataflow import manifest_blocks
from pipeline.errors import ManifestError
from pipeline.manifest import MANIFEST_SCHEMA, derive_video_id, derive_video_ids, read_manifest
from pipeline.spec import ManifestSpec

ROWS = [{"path": "a.mp4", "label": "cat"}, {"path": "sub/b.mp4", "label": "dog"}]


def write(tmp_path, fmt, rows=ROWS):
    if fmt == "csv":
        p = tmp_path / "m.csv"
        keys = list(rows[0])
        p.write_text(",".join(keys) + "\n" + "".join(
            ",".join(str(r.get(k, "")) for k in keys) + "\n" for r in rows))
    elif fmt == "jsonl":
        p = tmp_path / "m.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "parquet":
        p = tmp_path / "m.parquet"
        pq.write_table(pa.Table.from_pylist(rows), p)
    else:
        p = tmp_path / "dir"
        p.mkdir()
        pq.write_table(pa.Table.from_pylist(rows[:1]), p / "part-0.parquet")
        pq.write_table(pa.Table.from_pylist(rows[1:]), p / "part-1.parquet")
    return p


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "dir"])
def test_formats_normalise_to_one_schema(tmp_path, fmt):
    t = read_manifest(ManifestSpec(path=str(write(tmp_path, fmt))))
    assert t.schema == MANIFEST_SCHEMA
    assert sorted(t["label"].to_pylist()) == ["cat", "dog"]
    # Relative video paths resolve against the manifest's directory.
    assert str(tmp_path / "sub" / "b.mp4") in t["path"].to_pylist()


def test_derived_ids_are_stable_and_readable():
    assert derive_video_id("/x/cat.mp4") == derive_video_id("/x/cat.mp4")
    assert derive_video_id("/x/cat.mp4").startswith("cat-")
    assert derive_video_id("/x/cat.mp4") != derive_video_id("/y/cat.mp4")


def test_derived_ids_carry_64_bits_so_shared_stems_do_not_collide():
    """A million files called clip.mp4 in different folders: with 32 bits of hash two of
    them collide with probability ~1 - exp(-n^2 / 2^33), about 1 for n = 10^6."""
    digest = derive_video_id("/data/a/b/clip.mp4").removeprefix("clip-")
    assert len(digest) == 16 and int(digest, 16) >= 0
    ids = set(derive_video_ids([f"/data/{i}/clip.mp4" for i in range(200_000)]))
    assert len(ids) == 200_000


def test_given_ids_are_kept_as_text(tmp_path):
    rows = [{"path": "a.mp4", "video_id": "007"}, {"path": "b.mp4", "video_id": "008"}]
    t = read_manifest(ManifestSpec(path=str(write(tmp_path, "csv", rows))))
    assert t["video_id"].to_pylist() == ["007", "008"]


def test_duplicate_ids_name_the_rows(tmp_path):
    rows = [{"path": "a.mp4"}, {"path": "b.mp4"}, {"path": "a.mp4"}]
    with pytest.raises(ManifestError, match="rows 1, 3"):
        read_manifest(ManifestSpec(path=str(write(tmp_path, "csv", rows))))


def test_missing_path_column(tmp_path):
    with pytest.raises(ManifestError, match="no 'path' column"):
        read_manifest(ManifestSpec(path=str(write(tmp_path, "csv", [{"file": "a.mp4"}]))))


def test_custom_path_column(tmp_path):
    p = write(tmp_path, "csv", [{"file": "a.mp4"}])
    t = read_manifest(ManifestSpec(path=str(p), path_column="file"))
    assert t["path"].to_pylist() == [str(tmp_path / "a.mp4")]


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(ManifestSpec(path=str(tmp_path / "none.csv")))


def test_bad_segment_is_rejected(tmp_path):
    rows = [{"path": "a.mp4", "start_s": "3", "end_s": "2"}]
    with pytest.raises(ManifestError, match="start_s < end_s"):
        read_manifest(ManifestSpec(path=str(write(tmp_path, "csv", rows))))


def test_segments_are_read_as_seconds(tmp_path):
    rows = [{"path": "a.mp4", "start_s": "1.5", "end_s": "2"}, {"path": "b.mp4"}]
    t = read_manifest(ManifestSpec(path=str(write(tmp_path, "jsonl", rows))))
    assert t["start_s"].to_pylist() == [1.5, None]


def test_empty_path_is_kept_for_an_error_row(tmp_path):
    rows = [{"path": "a.mp4"}, {"path": ""}]
    t = read_manifest(ManifestSpec(path=str(write(tmp_path, "csv", rows))))
    assert t.num_rows == 2 and t["path"].to_pylist()[1] is None


def block_rows(ds) -> list[int]:
    return [m.num_rows for b in ds.materialize().iter_internal_ref_bundles()
            for m in b.metadata]


def test_manifest_blocks_keep_rows_order_and_block_size(ray_session):
    table = pa.table({"video_id": [f"v{i}" for i in range(10)],
                      "path": [f"/v{i}.mp4" for i in range(10)]})
    ds = manifest_blocks(table, 4)
    assert sorted(block_rows(ds)) == [3, 3, 4]  # one decode task per (at most) 4 rows
    assert [r["video_id"] for r in ds.take_all()] == table["video_id"].to_pylist()
    assert ds.schema().names == ["video_id", "path"]
    assert manifest_blocks(table.slice(0, 0), 4).count() == 0


def test_each_read_task_carries_its_own_rows_not_the_whole_manifest():
    """A read task is pickled to the worker that runs it: with an Arrow slice, every task
    carried the whole manifest's buffers."""
    from ray import cloudpickle

    table = pa.table({"video_id": [f"v{i:07d}" for i in range(200_000)],
                      "path": [f"/videos/some/folder/v{i:07d}.mp4" for i in range(200_000)]})
    source = dataflow._ManifestSource(table, 10_000)
    tasks = source.get_read_tasks(1)
    assert len(tasks) == 20
    sizes = [len(cloudpickle.dumps(t)) for t in tasks]
    assert max(sizes) < 3 * table.nbytes / len(tasks)  # about its own 1/20th, not all
    got = pa.concat_tables([block for t in tasks for block in t()])
    assert got.equals(table)


def test_a_large_manifest_travels_in_few_read_tasks_cut_into_task_sized_blocks(
        ray_session, monkeypatch):
    """Blocks of BLOCKS_PER_READ_TASK x 3 rows per read task, split back into blocks of 3
    rows; and the rows each decode task gets, by manifest and cluster size."""
    n = dataflow.BLOCKS_PER_READ_TASK * 3 * 2 + 5
    table = pa.table({"video_id": [f"v{i}" for i in range(n)]})
    ds = manifest_blocks(table, 3)
    sizes = block_rows(ds)
    assert sum(sizes) == n and max(sizes) == 3 and len(sizes) <= n // 3 + 3
    assert ds.take_all()[-1]["video_id"] == f"v{n - 1}"
    per = dataflow.rows_per_block
    assert per(96, 2, 2) == 3 and per(96, 4, 2) == 4  # small: videos_per_decode_task
    assert per(20_000, 2, 2) == dataflow.MAX_ROWS_PER_BLOCK  # many rows: capped
    assert per(20_000, 2, 64) == 20  # a large cluster: spread over its CPUs
    assert per(10_000_000, 2, 2) == dataflow.MAX_ROWS_PER_BLOCK  # blocks made as needed
    monkeypatch.setattr(dataflow, "MAX_BLOCKS", 10)
    big = manifest_blocks(pa.table({"video_id": [f"v{i}" for i in range(300)]}), 2)
    assert len(block_rows(big)) <= 10  # ... unless held in memory
