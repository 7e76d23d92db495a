"""The whole job on a real local Ray: every row accounted for, results equal a direct run."""

import json
import shutil

import duckdb
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.decode.base import DecodeSpec
from pipeline.decode.fallback import decode_video
from pipeline.errors import JobFailed, OutputError
from pipeline.infer.plan import plan_job
from pipeline.infer.run import execute
from pipeline.infer.spec import parse_jobspec
from pipeline.model.checkpoint import save_checkpoint
from pipeline.model.spec import ModelSpec
from pipeline.model.zoo import build_network, model_card
from pipeline.output.store import JOB_RECORD, QUARANTINE
from pipeline.synth import moving_texture, write_video

pytestmark = pytest.mark.slow

GOOD = ["a.mp4", "b.mkv", "dir with space/vidéo ü.mp4", "one_frame.mp4", "short.mp4"]
BAD = {"text.mp4": "decode: not a decodable video", "empty.mp4": "read: file is empty",
       "missing.mp4": "read: file not found", "late.mp4": "sample: segment starts at"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    lengths = {"one_frame.mp4": 1, "short.mp4": 3}
    for i, name in enumerate(GOOD):
        write_video(root / name, moving_texture(lengths.get(name, 24), 40, 56, seed=i))
    (root / "text.mp4").write_text("not a video")
    (root / "empty.mp4").write_bytes(b"")
    shutil.copy(root / "a.mp4", root / "late.mp4")
    torch.manual_seed(0)
    card = model_card(ModelSpec(arch="r3d_18", num_classes=5))
    card = type(card)(**{**card.__dict__, "class_names": tuple("vwxyz")})
    ckpt = save_checkpoint(root / "ckpt" / "model.pt", build_network(card), card)
    lines = ["path,label,start_s,end_s"] + [f"{n},good,," for n in GOOD] + [
        f"{n},bad,{'10,11' if n == 'late.mp4' else ','}" for n in BAD]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root, ckpt


def job(root, ckpt, out, **over):
    data = {
        "name": "t", "manifest": str(root / "manifest.csv"),
        "sampling": {"clips_per_video": 2, "frames_per_clip": 4, "short_side": 32,
                     "crop_size": 32},
        "model": {"arch": "r3d_18", "weights": str(ckpt)},
        "inference": {"batch_size": 3, "channels_last": False},
        "resources": {"cpus_per_replica": 1, "cpus_per_decode_task": 0.5,
                      "videos_per_decode_task": 2},
        "output": {"path": str(out), "top_k": 3, "rows_per_file": 1},
        "max_error_fraction": 0.9,
    }
    for k, v in over.items():
        section, _, key = k.partition("__")
        if key:
            data[section] = {**data[section], key: v}
        else:
            data[section] = v
    return parse_jobspec(data)


@pytest.fixture(scope="module")
def finished(dataset, ray_session, tmp_path_factory):
    root, ckpt = dataset
    out = tmp_path_factory.mktemp("out") / "result"
    record = execute(plan_job(job(root, ckpt, out)), log=lambda s: None)
    return out, record


def test_every_manifest_row_has_exactly_one_output_row(finished):
    out, record = finished
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(GOOD) + len(BAD) == len({r["video_id"] for r in rows})
    assert record["counts"]["ok"] == len(GOOD) and record["counts"]["error"] == len(BAD)
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    for name in GOOD:
        row = by_name[name.rsplit("/", 1)[-1]]
        assert row["status"] == "ok" and row["error"] is None and row["decoder"] == "decord"
        assert row["clips"] == 2 and len(row["embedding"]) == 512
        assert len(row["topk_labels"]) == 3 and row["pred_label"] in "vwxyz"
    for name, reason in BAD.items():
        row = by_name[name]
        assert row["status"] == "error" and row["error"].startswith(reason), row["error"]
        assert row["embedding"] is None and row["label"] == "bad"
    assert by_name["one_frame.mp4"]["num_frames"] == 1


def test_predictions_equal_a_direct_single_process_run(dataset, finished):
    root, ckpt = dataset
    out, _ = finished
    t = pq.read_table(out).to_pandas().set_index("path")
    card = model_card(ModelSpec(arch="r3d_18", weights=str(ckpt)))
    net = build_network(card).eval()
    mean = torch.tensor(card.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(card.std).view(1, 3, 1, 1, 1)
    spec = DecodeSpec(clips=2, frames=4, stride=None, short_side=32, crop_size=32)
    for name in ("a.mp4", "b.mkv"):
        frames = decode_video(str(root / name), spec).frames
        x = (torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 255 - mean) / std
        with torch.no_grad():
            fc, net.fc = net.fc, torch.nn.Identity()
            emb = net(x).mean(0)
            net.fc = fc
            probs = torch.softmax(fc(emb), 0)
        row = t.loc[str(root / name)]
        # Tolerance: float32 reductions in a different order (batching) differ ~1e-6.
        np.testing.assert_allclose(row.embedding, emb.numpy(), rtol=1e-4, atol=1e-5)
        assert row.pred_index == int(probs.argmax())
        assert row.pred_score == pytest.approx(float(probs.max()), rel=1e-4)


def test_output_reads_in_duckdb_as_fixed_size_arrays(finished):
    out, _ = finished
    con = duckdb.connect()
    counts = dict(con.execute(
        f"select status, count(*) from '{out}/*.parquet' group by 1").fetchall())
    assert counts == {"ok": len(GOOD), "error": len(BAD)}
    arrow = pq.read_table(out)
    assert str(arrow.schema.field("embedding").type) == "fixed_size_list<element: float>[512]"
    con.register("arrow_view", arrow)
    kind = con.execute("select typeof(embedding) from arrow_view limit 1").fetchall()[0][0]
    assert kind == "FLOAT[512]"


def test_job_record_describes_the_run(finished):
    out, record = finished
    on_disk = json.loads((out / JOB_RECORD).read_text())
    assert on_disk["state"] == "finished" and on_disk["counts"] == record["counts"]
    assert on_disk["versions"]["ray"] and on_disk["spec"]["model"]["arch"] == "r3d_18"
    # Seconds from the command's (here: pytest's) start: Ray, then rows, then the end.
    t = on_disk["timing"]
    assert 0 < t["ray_ready_s"] <= t["first_decode_s"] <= t["first_row_s"] <= t["last_row_s"] \
        <= t["end_s"]
    assert 50 < t["driver_peak_rss_mb"] < 64_000


def test_failed_rows_travel_packed_and_replicas_get_them_dense(ray_session):
    """Through a real Ray Data stream, as inference runs it: decode tasks over whole blocks
    (``in_batches``) hand on decoded rows and pack each block's failed rows, without
    frames, into one carrier row; the replica side (``unpack``, ``dense_samples``) gets
    every row back exactly once, the decoded rows' frames intact, dense batches, and the
    failed rows in batches of their own with zero frames of the decoded shape."""
    import ray.data as rd

    from pipeline.decode.stage import PACKED, dense_samples, in_batches, unpack

    def decode_stage(batch, spec, guard=None):
        ids = batch["video_id"].astype(int)
        return {**batch, "status": np.where(ids % 3 == 0, "error", "ok").astype(object),
                "frames": np.stack([np.full((1, 2, 4, 4, 3), i % 251, np.uint8) for i in ids])}

    def replica(batch):
        parts = unpack(batch)
        rows = []
        for part in parts:
            dense = dense_samples(part)
            ok = dense["status"] == "ok"
            right = all(bool((f == int(i) % 251).all())
                        for f, i in zip(dense["frames"][ok], dense["video_id"][ok]))
            zeros = not dense["frames"][~ok].any()
            rows += [{"id": int(i), "right": right and zeros and (ok.all() or not ok.any()),
                      "shape": str(dense["frames"].shape[1:]) + ("" if ok.any() else " failed"),
                      "carriers": int(sum(len(p) > 0 for p in batch[PACKED]))}
                     for i in dense["video_id"]]
        return {k: np.array([r[k] for r in rows]) for k in rows[0]}

    manifest = rd.from_items([{"video_id": str(i)} for i in range(48)], override_num_blocks=4)
    rows = manifest.map_batches(in_batches, batch_size=None, fn_kwargs={
        "spec": None, "decode_stage": decode_stage, "videos": 2}, memory=1 << 20).map_batches(
        replica, batch_size=4).take_all()
    assert sorted(r["id"] for r in rows) == list(range(48))  # each row once, none lost
    assert all(r["right"] for r in rows)
    assert {r["shape"] for r in rows} == {"(1, 2, 4, 4, 3)", "(1, 2, 4, 4, 3) failed"}
    assert max(r["carriers"] for r in rows) >= 1  # the failed rows did travel packed


def test_existing_output_is_refused_before_anything_runs(dataset, finished):
    root, ckpt = dataset
    out, _ = finished
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(OutputError, match="--resume"):
        plan_job(job(root, ckpt, out))
    assert sorted(p.name for p in out.iterdir()) == before


def one_file_per_row(out):
    """The run's rows rewritten one per data file, under the run's own file names: what a
    job with ``rows_per_file: 1`` may write, but does not always (Ray Data's write tasks
    put whatever reached them at once into one file)."""
    files = sorted(out.glob("*.parquet"))
    stem = files[0].name.rsplit("_", 1)[0]  # vidbatch-<run>_<write uuid>
    table = pq.read_table(files)
    for f in files:
        f.unlink()
    for i in range(table.num_rows):
        pq.write_table(table.slice(i, 1), out / f"{stem}_{i:06d}-0.parquet")
    return sorted(out.glob("*.parquet"))


def test_resume_finishes_a_killed_job_without_duplicates(dataset, finished, tmp_path):
    root, ckpt = dataset
    out = tmp_path / "resumed"
    shutil.copytree(finished[0], out)
    files = one_file_per_row(out)
    assert len(files) == len(GOOD) + len(BAD)
    lost = pq.read_metadata(files[0]).num_rows + pq.read_metadata(files[1]).num_rows
    files[0].unlink()  # never written
    files[1].write_bytes(files[1].read_bytes()[:100])  # killed mid-write: no footer
    plan = plan_job(job(root, ckpt, out), policy="resume")
    assert plan.todo.num_rows == lost and plan.inputs.already_done == len(GOOD) + len(BAD) - lost
    assert files[1].exists() and not (out / QUARANTINE).exists()  # planning writes nothing
    record = execute(plan, log=lambda s: None)
    ids = pq.read_table(out, columns=["video_id"])["video_id"].to_pylist()
    assert len(ids) == len(set(ids)) == len(GOOD) + len(BAD)
    assert record["counts"]["processed_this_run"] == lost
    assert (out / QUARANTINE / files[1].name).exists()


def test_resume_refuses_a_different_job(dataset, finished, tmp_path):
    root, ckpt = dataset
    out = tmp_path / "other"
    shutil.copytree(finished[0], out)
    with pytest.raises(OutputError, match="sampling"):
        plan_job(job(root, ckpt, out, sampling__frames_per_clip=8), policy="resume")


def test_too_many_errors_fail_the_job_but_keep_the_rows(dataset, ray_session, tmp_path):
    root, ckpt = dataset
    out = tmp_path / "strict"
    with pytest.raises(JobFailed, match="max_error_fraction") as e:
        execute(plan_job(job(root, ckpt, out, max_error_fraction=0.1)), log=lambda s: None)
    assert e.value.exit_code == 1
    assert pq.read_table(out).num_rows == len(GOOD) + len(BAD)


def test_frame_model_job_with_overwrite(dataset, ray_session, tmp_path):
    root, _ = dataset
    out = tmp_path / "frames"
    out.mkdir()  # what an earlier run of vidbatch left: its record names the run
    (out / "vidbatch-old_w_000000.parquet").write_bytes(b"stale")
    (out / JOB_RECORD).write_text(json.dumps({"job": "j", "runs": ["old"]}))
    spec = job(root, None, out, model={"arch": "resnet18", "num_classes": 4},
               output={"path": str(out), "embeddings": False, "top_k": 2},
               resources__batches_in_flight_per_replica=1)
    record = execute(plan_job(spec, policy="overwrite"), log=lambda s: None)
    t = pq.read_table(out)
    assert not (out / "vidbatch-old_w_000000.parquet").exists()
    assert len(json.loads((out / JOB_RECORD).read_text())["runs"]) == 1
    assert t.num_rows == len(GOOD) + len(BAD) and record["counts"]["ok"] == len(GOOD)
    assert t["embedding"].null_count == t.num_rows
    assert str(t.schema.field("embedding").type).endswith("[512]")


def test_decode_only_writes_every_row_without_running_the_model(dataset, finished, tmp_path):
    root, ckpt = dataset
    out = tmp_path / "decode_only"
    spec = job(root, ckpt, out, mode="decode_only", resources__decoder="pyav",
               sampling__snap_to_keyframes=True)
    record = execute(plan_job(spec), log=lambda s: None)
    t = pq.read_table(out)
    full = pq.read_table(finished[0])
    assert t.num_rows == full.num_rows == len(GOOD) + len(BAD)
    assert record["counts"]["ok"] == len(GOOD) and record["spec"]["mode"] == "decode_only"
    assert t["pred_label"].null_count == t["embedding"].null_count == t.num_rows
    assert t["infer_s"].null_count == t.num_rows
    ok = t.filter(pc.equal(t["status"], "ok"))
    assert set(ok["decoder"].to_pylist()) == {"pyav"}
    assert min(ok["decode_s"].to_pylist()) > 0
    errors = dict(zip(t["path"].to_pylist(), t["error"].to_pylist()))
    for name, reason in BAD.items():
        assert reason in errors[str(root / name)]
