"""Planning a job (no Ray): sampling from checkpoints, and configuration errors."""

import pytest
import yaml

from pipeline.errors import ConfigError, OutputError
from pipeline.infer.plan import plan_job
from pipeline.infer.spec import parse_jobspec, spec_yaml
from pipeline.model.checkpoint import save_checkpoint
from pipeline.model.spec import ModelSpec
from pipeline.model.zoo import build_network, model_card
from pipeline.output.outdir import OutputDir


@pytest.fixture
def trained(tmp_path):
    """A checkpoint that remembers it was trained on 1 clip x 8 frames, stride 2."""
    card = model_card(ModelSpec(arch="mc3_18", num_classes=2))
    path = save_checkpoint(tmp_path / "run" / "model.pt", build_network(card), card,
                           sampling={"clips": 1, "frames": 8, "stride": 2})
    (tmp_path / "m.csv").write_text("path\na.mp4\n")
    return tmp_path, path


def spec(root, weights, **sections):
    return parse_jobspec({"name": "t", "manifest": str(root / "m.csv"),
                          "model": {"arch": "mc3_18", "weights": str(weights)},
                          "output": {"path": str(root / "out")}, **sections})


def test_clip_sampling_comes_from_the_checkpoint(trained):
    root, ckpt = trained
    d = plan_job(spec(root, ckpt)).decode
    assert (d.clips, d.frames, d.stride) == (1, 8, 2)


def test_the_job_spec_wins_where_it_says_something(trained):
    root, ckpt = trained
    d = plan_job(spec(root, ckpt, sampling={"frames_per_clip": 4, "frame_stride": None})).decode
    assert (d.frames, d.stride) == (4, None)


@pytest.mark.parametrize("sampling", [{}, {"frames_per_clip": 4, "frame_stride": None}])
def test_a_spec_sent_to_a_cluster_plans_the_same_job(trained, sampling):
    """The Jobs API ships the spec as YAML and the cluster plans it again: the keys the spec
    left out must stay out there, or the checkpoint's sampling would lose to defaults."""
    root, ckpt = trained
    here = spec(root, ckpt, sampling=sampling)
    there = parse_jobspec(yaml.safe_load(spec_yaml(here)))
    assert there.model_dump() == here.model_dump()
    assert plan_job(there).decode == plan_job(here).decode


def test_crop_larger_than_short_side(trained):
    root, ckpt = trained
    with pytest.raises(ConfigError, match="sampling.crop_size"):
        plan_job(spec(root, ckpt, sampling={"short_side": 64, "crop_size": 96}))


def test_fp16_without_gpus(trained):
    root, ckpt = trained
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        plan_job(spec(root, ckpt, inference={"precision": "fp16", "device": "cpu"}))


def test_decoding_on_the_replica_is_refused_where_it_cannot_run(tmp_path):
    """decode_on: replica decodes sampled frames in replicas: not a soundtrack, and not
    in mode: decode_only, which starts none. Refused at planning, naming the field."""
    (tmp_path / "m.csv").write_text("path\na.mp4\n")
    base = {"name": "t", "manifest": str(tmp_path / "m.csv"),
            "output": {"path": str(tmp_path / "out")},
            "resources": {"decode_on": "replica"}}
    model = {"model": {"arch": "r3d_18", "weights": "none"}}
    audio = parse_jobspec({**base, "task": "audio", "model": {"weights": "none"}})
    with pytest.raises(ConfigError, match="resources.decode_on: replica .* audio task"):
        plan_job(audio)
    with pytest.raises(ConfigError, match="resources.decode_on: replica .* decode_only"):
        plan_job(parse_jobspec({**base, **model, "mode": "decode_only"}))
    assert not (tmp_path / "out").exists()
    assert plan_job(parse_jobspec({**base, **model})).spec.resources.decode_on == "replica"


def _written_by(root, **spec_over):
    """An output directory as a finished run of ``spec`` leaves it."""
    from pipeline.output.rows import SCHEMA_VERSION
    from pipeline.output.store import write_job_record

    out = root / "out"
    out.mkdir()
    (out / "part-0.parquet").write_bytes(b"")
    s = spec(root, "none", **spec_over)
    return OutputDir.at(str(out)), \
        {"spec": s.model_dump(mode="json"), "schema_version": SCHEMA_VERSION}, write_job_record


def test_resume_refuses_another_mode(tmp_path):
    (tmp_path / "m.csv").write_text("path\na.mp4\n")
    out, record, write = _written_by(tmp_path)
    write(out, record)
    with pytest.raises(OutputError, match="mode"):
        plan_job(spec(tmp_path, "none", mode="decode_only"), policy="resume")


def test_resume_refuses_an_older_output_schema(tmp_path):
    (tmp_path / "m.csv").write_text("path\na.mp4\n")
    out, record, write = _written_by(tmp_path)
    write(out, {**record, "schema_version": "1"})
    with pytest.raises(OutputError, match="output schema 1"):
        plan_job(spec(tmp_path, "none"), policy="resume")


def test_resuming_an_output_of_the_old_id_scheme_keeps_its_ids(tmp_path):
    """Derived ids have 16 hex digits now; an output written with 8 still resumes: the rows
    it holds are recognised as done."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.manifest import derive_video_id

    (tmp_path / "m.csv").write_text("path\na.mp4\nb.mp4\n")
    out, record, write = _written_by(tmp_path)
    a = str(tmp_path / "a.mp4")
    pq.write_table(pa.table({"video_id": [derive_video_id(a, 8)], "status": ["ok"]}),
                   tmp_path / "out" / "part-0.parquet")
    write(out, record)  # a record of the old scheme: no id_hex
    plan = plan_job(spec(tmp_path, "none"), policy="resume")
    assert plan.inputs.already_done == 1 and plan.inputs.id_hex == 8
    assert plan.todo.read_all()["video_id"].to_pylist() == [
        derive_video_id(str(tmp_path / "b.mp4"), 8)]
    write(out, {**record, "id_hex": 16})
    assert plan_job(spec(tmp_path, "none"), policy="resume").inputs.already_done == 0
