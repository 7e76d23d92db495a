"""The output store: --overwrite deletes only what the job record shows vidbatch wrote,
--resume reads only that, and a crash's leftovers block neither."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import OutputError
from pipeline.output.outdir import STAGING_SUFFIX, OutputDir, write_atomically
from pipeline.output.store import (
    JOB_RECORD,
    LEASE,
    QUARANTINE,
    prepare_output,
    read_job_record,
)


def vidbatch_output(path, runs=("r1",), record=True):
    """An output directory as a run of vidbatch leaves it: one data file per run, a record."""
    path.mkdir()
    for run in runs:
        (path / f"vidbatch-{run}_w_000000.parquet").write_bytes(b"data")
    if record:
        (path / JOB_RECORD).write_text(json.dumps({"job": "j", "runs": list(runs)}))
    return OutputDir.at(str(path))


def test_a_folder_of_the_users_own_parquet_is_never_overwritten(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "part-0.parquet").write_bytes(b"precious")
    with pytest.raises(OutputError, match="no vidbatch job record"):
        prepare_output(OutputDir.at(str(out)), "overwrite")
    assert (out / "part-0.parquet").read_bytes() == b"precious"


def test_a_spark_style_folder_beside_vidbatchs_files_is_refused_by_name(tmp_path):
    out = vidbatch_output(tmp_path / "out")
    spark = tmp_path / "out" / "x.parquet"
    spark.mkdir()
    (spark / "part-0.parquet").write_bytes(b"precious")
    for policy in ("overwrite", "resume"):
        with pytest.raises(OutputError, match=r"does not show vidbatch wrote \(x\.parquet\)"):
            prepare_output(out, policy)
    assert (spark / "part-0.parquet").exists()
    assert (tmp_path / "out" / "vidbatch-r1_w_000000.parquet").exists()  # nothing deleted


def test_overwrite_removes_every_run_the_record_names_and_nothing_else(tmp_path):
    out = vidbatch_output(tmp_path / "out", runs=("r1", "r2"))
    (tmp_path / "out" / QUARANTINE).mkdir()
    (tmp_path / "out" / QUARANTINE / "vidbatch-r1_w_000009.parquet").write_bytes(b"cut")
    prepare_output(out, "overwrite", apply=False)
    assert len(out.entries()) == 4  # checked, not applied
    prepare_output(out, "overwrite")
    assert out.entries() == []


def test_what_vidbatch_derives_from_the_rows_is_kept_by_resume_and_removed_by_overwrite(
        tmp_path):
    out = vidbatch_output(tmp_path / "out")
    (tmp_path / "out" / "_vidbatch_report.html").write_text("<html>")
    (tmp_path / "out" / "_vidbatch_index").mkdir()
    (tmp_path / "out" / "_vidbatch_index" / "index.faiss").write_bytes(b"v")
    prepare_output(out, "resume")
    assert (tmp_path / "out" / "_vidbatch_report.html").exists()
    (tmp_path / "out" / "_vidbatch_report.html").rename(tmp_path / "out" / "report.html")
    with pytest.raises(OutputError, match=r"does not show vidbatch wrote \(report\.html\)"):
        prepare_output(out, "overwrite")  # the same file under a name of the user's own
    (tmp_path / "out" / "report.html").rename(tmp_path / "out" / "_vidbatch_report.html")
    (tmp_path / "out" / "_vidbatch_index" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"_vidbatch_index/notes\.txt"):
        prepare_output(out, "overwrite")  # inside vidbatch's folder, still the user's
    assert (tmp_path / "out" / "_vidbatch_index" / "notes.txt").read_text() == "mine"
    (tmp_path / "out" / "_vidbatch_index" / "notes.txt").unlink()
    prepare_output(out, "overwrite")
    assert out.entries() == []


def test_a_stray_file_in_partial_is_refused(tmp_path):
    out = vidbatch_output(tmp_path / "out")
    (tmp_path / "out" / QUARANTINE).mkdir()
    (tmp_path / "out" / QUARANTINE / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=f"{QUARANTINE}/notes.txt"):
        prepare_output(out, "overwrite")


def test_an_older_vidbatch_output_resumes_but_is_not_overwritten(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "3f2a_000000_000000.parquet").write_bytes(b"data")  # Ray Data's own file name
    (out / JOB_RECORD).write_text(json.dumps({"job": "j"}))  # a record without runs
    prepare_output(OutputDir.at(str(out)), "resume")
    with pytest.raises(OutputError, match="did not record the names of its files"):
        prepare_output(OutputDir.at(str(out)), "overwrite")
    assert (out / "3f2a_000000_000000.parquet").exists()


@pytest.mark.parametrize("name", [JOB_RECORD, LEASE])
def test_a_temporary_record_or_lease_left_by_a_crash_blocks_nothing(tmp_path, name):
    """A driver killed while it rewrote the record, or the lease's heartbeat, leaves the
    temporary copy write_atomically made: vidbatch's own file, not a stranger's."""
    out = vidbatch_output(tmp_path / "out")
    leftover = tmp_path / "out" / f"{name}.1a2b3c4d{STAGING_SUFFIX}"
    leftover.write_text('{"job": "j", "ru')  # cut short mid-write
    prepare_output(out, "resume")
    prepare_output(out, "overwrite")
    assert out.entries() == []


def test_the_record_is_replaced_whole(tmp_path):
    out = vidbatch_output(tmp_path / "out")
    out.write_text(JOB_RECORD, json.dumps({"job": "j", "runs": ["r1", "r2"]}))
    assert read_job_record(out)["runs"] == ["r1", "r2"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        JOB_RECORD, "vidbatch-r1_w_000000.parquet"]  # no temporary file is left


def test_write_atomically_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    target.write_text("old")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, b"new")
    assert target.read_text() == "old"
