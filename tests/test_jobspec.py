"""Job specs: unknown keys, missing fields and bad values fail with the field path."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipeline.errors import ConfigError, OutputError
from pipeline.infer.spec import load_jobspec, parse_jobspec
from pipeline.output.outdir import OutputDir

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"name": "t", "manifest": "m.csv", "model": {"arch": "r3d_18"},
           "output": {"path": "out"}}


def write(tmp_path, data) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


# jobs/train*.yaml are training specs (`vidbatch train`), checked in tests/test_trainspec.py.
@pytest.mark.parametrize("job", sorted(p for p in (REPO / "jobs").glob("*.yaml")
                                       if not p.name.startswith("train")),
                         ids=lambda p: p.name)
def test_shipped_job_specs_validate(job):
    spec = load_jobspec(job)
    assert Path(spec.output.path).is_absolute()


@pytest.mark.parametrize("job", sorted((REPO / "cluster" / "jobs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_cluster_job_specs_validate(job):
    spec = load_jobspec(job)  # offline: no manifest read, no weights download
    assert spec.output.path.startswith("/mnt/shared/")
    if spec.task == "detect":
        from pipeline.tasks.registry import get_task

        card = get_task("detect").resolve(spec)  # class names from the weights' metadata
        assert card.source == "torchvision" and (card.min_size, card.max_size) == (512, 896)


def test_relative_paths_resolve_against_the_spec_file(tmp_path):
    spec = load_jobspec(write(tmp_path, MINIMAL))
    assert spec.manifest.path == str(tmp_path / "m.csv")
    assert spec.output.path == str(tmp_path / "out")


def test_unknown_key_names_its_path(tmp_path):
    bad = {**MINIMAL, "sampling": {"frames_per_clp": 8}}
    with pytest.raises(ConfigError, match=r"sampling\.frames_per_clp: unknown key"):
        load_jobspec(write(tmp_path, bad))


def test_missing_required_field(tmp_path):
    bad = {k: v for k, v in MINIMAL.items() if k != "model"}
    with pytest.raises(ConfigError, match="model: required"):
        load_jobspec(write(tmp_path, bad))


def test_bad_value_names_field(tmp_path):
    bad = {**MINIMAL, "model": {"arch": "resnet999"}}
    with pytest.raises(ConfigError, match=r"model\.arch"):
        load_jobspec(write(tmp_path, bad))


def test_output_uri_stays_a_uri(tmp_path):
    spec = load_jobspec(write(tmp_path, {**MINIMAL, "output": {"path": "s3://bucket/out"}}))
    assert spec.output.path == "s3://bucket/out"
    assert not (tmp_path / "s3:").exists()


def test_an_output_uri_pyarrow_cannot_open_is_refused():
    with pytest.raises(OutputError, match="cannot write to output.path s4://bucket/out"):
        OutputDir.at("s4://bucket/out")


def test_invalid_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_jobspec(write(tmp_path, "name: [unclosed\n"))


def test_missing_spec_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_jobspec(tmp_path / "nope.yaml")


def test_overrides_are_parsed_as_yaml(tmp_path):
    spec = load_jobspec(write(tmp_path, MINIMAL),
                        ["inference.batch_size=3", "output.embeddings=false"])
    assert spec.inference.batch_size == 3 and spec.output.embeddings is False


def test_override_without_equals_sign(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_jobspec(write(tmp_path, MINIMAL), ["inference.batch_size"])


def test_spec_is_frozen():
    spec = parse_jobspec(MINIMAL)
    with pytest.raises(ValidationError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


def test_uris_with_credentials_or_unasked_query_options_are_refused(tmp_path):
    base = {"name": "j", "model": {"arch": "r3d_18"}, "output": {"path": "out"}}
    with pytest.raises(ConfigError, match=r"manifest\.path: s3://\*\*\*@bucket/m\.csv carries "
                                          r"credentials") as e:
        parse_jobspec({**base, "manifest": "s3://AKIAXXX:s3cr3t@bucket/m.csv"})
    assert "s3cr3t" not in str(e.value)
    evil = {**base, "manifest": "m.csv",
            "output": {"path": "s3://bucket/out?endpoint_override=10.1.2.3:9000"}}
    with pytest.raises(ConfigError, match=r"output\.path: .* allow_uri_options: true"):
        parse_jobspec(evil)
    assert parse_jobspec({**evil, "allow_uri_options": True}).allow_uri_options


def test_a_manifest_row_with_such_a_uri_is_an_error_row_and_connects_nowhere():
    import numpy as np

    from pipeline.decode.base import DecodeSpec
    from pipeline.decode.stage import decode_batch

    paths = ["s3://bucket/v.mp4?endpoint_override=127.0.0.1:9&scheme=http",
             "s3://user:pw@bucket/v.mp4"]
    batch = {"video_id": np.array(["a", "b"], dtype=object),
             "path": np.array(paths, dtype=object),
             "start_s": np.full(2, np.nan), "end_s": np.full(2, np.nan)}
    out = decode_batch(batch, DecodeSpec(clips=1, frames=2, stride=None, short_side=32,
                                         crop_size=32))
    assert out["status"].tolist() == ["error", "error"]
    assert out["error"][0].startswith("read: s3://bucket/v.mp4?endpoint_override=127.0.0.1:9")
    assert "allow_uri_options" in out["error"][0]
    assert "carries credentials" in out["error"][1] and "pw" not in out["error"][1]
