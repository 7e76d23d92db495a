"""Search over a real job's embeddings: generated originals of distinct content with
re-encoded, resized, cropped and trimmed copies, through a real vidbatch job, ``vidbatch
index``, ``similar`` and ``near-duplicates``, on resnet18 with ``weights: none``. How well
a trained copy embedding finds copies (recall at precision 1.0, generated and real
videos) is a proof, not a test: ``bash scripts/prove.sh --only copies``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from pipeline.errors import ConfigError
from pipeline.infer.plan import plan_job
from pipeline.infer.run import execute
from pipeline.infer.spec import parse_jobspec
from pipeline.output.outdir import OutputDir
from pipeline.output.store import DERIVED
from pipeline.search import commands, read_near_duplicates
from pipeline.search.index import load
from pipeline.search.layout import INDEX_DIR, NEAR_DUPS_DIR
from pipeline.search.near_dups import find_groups
from pipeline.search.vectors import embedding_column
from pipeline.synth import write_manifest
from pipeline.tasks.classify.copies import (
    ALTERATIONS,
    make_copies,
    make_originals,
)

REPO = Path(__file__).resolve().parents[1]
app = typer.Typer()
app.command("index")(commands.index)
app.command("similar")(commands.similar)
app.command("near-duplicates")(commands.near_duplicates)


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def with_copies(root: Path, originals: list[Path]) -> tuple[Path, list[dict[str, str]]]:
    """``(root, manifest rows)``: ``originals`` and their copies (written under ``root``),
    labelled with the original's name; the manifest is ``root/manifest.csv``."""
    rows = []
    for o in originals:
        rows.append({"path": str(o), "label": o.stem})
        rows += [{"path": str(c), "label": o.stem}
                 for c in make_copies(o, root / "videos", o.stem).values()]
    write_manifest(root / "manifest.csv", rows)
    return root, rows


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    """The 12 generated originals of distinct content and their copies."""
    root = tmp_path_factory.mktemp("near_dups")
    return with_copies(root, make_originals(root / "videos", 12))


def run_job(root: Path, rows: list[dict[str, str]], out: str, model: dict,
            sampling: dict | None = None) -> tuple[Path, dict[str, str]]:
    """``(output folder, {path: original's name})`` of a finished job over ``rows``."""
    spec = {"name": "near-dups", "manifest": str(root / "manifest.csv"), "model": model,
            "resources": {"num_cpus": 2, "object_store_mb": 256},
            "output": {"path": str(root / out)}}
    if sampling:
        spec["sampling"] = sampling
    record = execute(plan_job(parse_jobspec(spec)), log=lambda s: None)
    assert record["counts"]["ok"] == len(rows)
    return root / out, {r["path"]: r["label"] for r in rows}


@pytest.fixture(scope="module")
def collection(videos, ray_session):
    """The job on resnet18 with ``weights: none``."""
    return run_job(*videos, "out", {"arch": "resnet18", "weights": "none"},
                   {"clips_per_video": 1, "frames_per_clip": 8, "short_side": 112,
                    "crop_size": 112})


def is_copy(path: str) -> bool:
    return any(path.rsplit(".", 1)[0].endswith(f"__{a}") for a in ALTERATIONS)


@pytest.mark.slow
def test_index_resume_overwrite_and_what_is_not_ours(collection):
    out, _ = collection
    first = cli("index", out)
    assert first.exit_code == 0, first.output
    assert f"{len(_)} vectors (flat), {len(_)} added" in first.output
    again = cli("index", out)
    assert again.exit_code == 2 and "--resume" in again.output
    assert cli("index", out, "--resume").output.count(", 0 added") == 1
    (out / INDEX_DIR / "notes.txt").write_text("mine")
    refused = cli("index", out, "--overwrite")
    assert refused.exit_code == 2 and "notes.txt" in refused.output
    assert (out / INDEX_DIR / "notes.txt").read_text() == "mine"
    (out / INDEX_DIR / "notes.txt").unlink()
    before = (out / INDEX_DIR / "index.json").stat().st_mtime_ns
    assert cli("index", out, "--overwrite").exit_code == 0
    assert (out / INDEX_DIR / "index.json").stat().st_mtime_ns != before
    # The job's own --resume and --overwrite treat the index as vidbatch's (store.DERIVED).
    assert INDEX_DIR in DERIVED and NEAR_DUPS_DIR in DERIVED


@pytest.mark.slow
def test_similar_ranks_the_copies_first_and_filters(collection):
    out, labels = collection
    assert cli("index", out, "--resume").exit_code == 0
    # orig02: drifting colour ramps; its re-encoded, resized and trimmed copies keep its
    # frames nearly unchanged, unlike a crop (see benchmarks/README.md for the margins).
    result = cli("similar", out, "orig02.mp4", "-k", "5")
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.output.strip().splitlines()]
    assert lines[0][:3] == ["rank", "similarity", "video_id"]
    top = [row[-1].rsplit("/", 1)[-1] for row in lines[1:4]]
    assert sorted(top) == ["orig02__reencoded.avi", "orig02__resized.mp4",
                           "orig02__trimmed.mp4"], result.output
    filtered = cli("similar", out, "orig02.mp4", "--where", "label <> 'orig02'")
    paths = [line.split("\t")[-1] for line in filtered.output.strip().splitlines()[1:]]
    assert len(paths) == 10 and all(labels[p] != "orig02" for p in paths), filtered.output
    bad = cli("similar", out, "orig02.mp4", "--where", "no_such_column = 1")
    assert bad.exit_code == 2 and "--where" in bad.output and "pred_label" in bad.output
    missing = cli("similar", out, "nothing-like-it.mp4")
    assert missing.exit_code == 2 and "neither a video_id nor a path" in missing.output


@pytest.mark.slow
def test_near_duplicate_groups_file_and_representatives(collection):
    out, labels = collection
    assert cli("index", out, "--resume").exit_code == 0
    result = cli("near-duplicates", out, "--threshold", "0.98")
    assert result.exit_code == 0, result.output
    groups = read_near_duplicates(str(out))
    assert groups is not None and groups.num_rows >= 2
    index = load(OutputDir.at(str(out / INDEX_DIR)))
    size = {r["path"]: (r["width"] * r["height"], r["duration_s"])
            for r in index.rows.select(["path", "width", "height", "duration_s"]).to_pylist()}
    for _, g in groups.to_pandas().groupby("group_id"):
        assert g["is_representative"].sum() == 1
        rep = g[g["is_representative"]].iloc[0]
        assert size[rep["path"]] == max(size[p] for p in g["path"])
        assert rep["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert read_near_duplicates(str(out / "nowhere")) is None


@pytest.mark.slow
def test_index_and_similar_on_s3(collection, s3, monkeypatch):
    out, _ = collection
    fs, env = s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    fs.create_dir("bucket")
    for f in out.iterdir():
        if f.is_file():
            with fs.open_output_stream(f"bucket/out/{f.name}") as w:
                w.write(f.read_bytes())
    built = cli("index", "s3://bucket/out")
    assert built.exit_code == 0, built.output
    assert fs.get_file_info(f"bucket/out/{INDEX_DIR}/index.faiss").is_file
    near = cli("similar", "s3://bucket/out", "orig02.mp4", "-k", "3")
    assert near.exit_code == 0 and "orig02__" in near.output, near.output


def test_a_task_without_embeddings_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="writes no embeddings.*classify or audio"):
        embedding_column({"task": "detect"}, OutputDir.at(str(tmp_path)))


def test_groups_are_connected_components_with_the_largest_copy_representing(tmp_path):
    """Four vectors: a, its smaller copy a2, and b far from both; a chain c-d-e."""
    import pyarrow as pa

    from pipeline.search.index import VectorIndex, new_index

    v = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0, 0, 1], [0, 0.14, 0.99],
                  [0, 0.3, 0.95]], np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    faiss_index, kind = new_index(3, len(v), None)
    faiss_index.add(v)
    rows = pa.table({"id": np.arange(6), "video_id": list("aAbcde"),
                     "path": ["a.mp4", "a2.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"],
                     "width": [640, 320, 640, 100, 200, 100], "height": [480] * 6,
                     "duration_s": [1.0] * 6})
    groups = find_groups(VectorIndex(faiss_index, rows, {"mean": [0, 0, 0], **kind}), 0.95)
    got = {(g["group_id"], g["path"], g["is_representative"]) for g in groups.to_pylist()}
    assert got == {(0, "d.mp4", True), (0, "c.mp4", False), (0, "e.mp4", False),
                   (1, "a.mp4", True), (1, "a2.mp4", False)}


def test_an_ivf_index_saved_and_loaded_finds_planted_duplicates(tmp_path):
    """From FLAT_BELOW rows the index is IVF: it must survive save/load, give back its
    vectors, and group planted copies (8-d, so that the test is quick)."""
    import pyarrow as pa

    from pipeline.search.index import FLAT_BELOW, VectorIndex, new_index, save

    rng = np.random.default_rng(0)
    v = rng.standard_normal((FLAT_BELOW, 8)).astype(np.float32)
    v[-20:] = v[:20] + 0.01 * rng.standard_normal((20, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    faiss_index, kind = new_index(8, len(v), v[::10])
    faiss_index.add(v)
    assert kind["kind"] == "ivf"
    rows = pa.table({"id": np.arange(len(v)), "video_id": [f"v{i}" for i in range(len(v))],
                     "path": [f"v{i:06d}.mp4" for i in range(len(v))]})
    folder = OutputDir.at(str(tmp_path / "index"))
    save(folder, VectorIndex(faiss_index, rows, {"format": 1, "mean": [0.0] * 8, **kind}))
    index = load(folder)
    assert np.allclose(index.vectors([5, len(v) - 1]), v[[5, len(v) - 1]], atol=1e-6)
    groups = find_groups(index, 0.999, k=3)
    pairs = {tuple(sorted(g["path"])) for _, g in groups.to_pandas().groupby("group_id")}
    planted = {(f"v{i:06d}.mp4", f"v{len(v) - 20 + i:06d}.mp4") for i in range(20)}
    assert planted <= pairs


def write_output(folder: Path, whole: np.ndarray, centre: np.ndarray | None,
                 files: int = 2) -> OutputDir:
    """A classify job's output as the store reads it: a job record and Parquet files with
    the task's embedding columns (``embedding_centre`` null where ``centre`` is None or a
    row of it is NaN), the rows spread over ``files``."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.tasks.classify.replica import classify_fields

    folder.mkdir(parents=True)
    (folder / "_vidbatch_job.json").write_text(json.dumps({"task": "classify", "job": "t"}))
    types = {f.name: f.type for f in classify_fields("resnet18")}
    dim = types["embedding"].list_size
    pad = lambda v: np.pad(v, ((0, 0), (0, dim - v.shape[1])))  # noqa: E731
    n = len(whole)
    centres = [None] * n if centre is None else [
        None if np.isnan(c).any() else c.tolist() for c in pad(centre)]
    for part in np.array_split(np.arange(n), files):
        pq.write_table(pa.table({
            "video_id": [f"v{i}" for i in part], "path": [f"v{i}.mp4" for i in part],
            "status": ["ok"] * len(part),
            "embedding": pa.array(pad(whole)[part].tolist(), types["embedding"]),
            "embedding_centre": pa.array([centres[i] for i in part],
                                         types["embedding_centre"])}),
            folder / f"vidbatch-r_{part[0]:03d}.parquet")
    return OutputDir.at(str(folder))


# A cropped copy's whole view (row 1) is near its original's centre (row 0), not its whole
# view; rows 2 and 3 are unrelated to them and to each other.
WHOLE = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
CENTRE = np.array([[0.1, 1, 0, 0], [0, 1, 0.1, 0], [0, 0, 1, 0.1], [0, 0, 0.3, 1]],
                  np.float32)


def test_centre_views_group_a_cropped_copy_with_its_original(tmp_path):
    """vidbatch index over real Parquet: with centre views (classify's
    output.centre_embedding) a row matches another's centre, whole views alone do not,
    and the similarity is the best pair (whole-whole, centre-whole, whole-centre)."""
    from pipeline.search.build import build_index
    from pipeline.search.neighbours import similar

    out = write_output(tmp_path / "with", WHOLE, CENTRE)
    build_index(out, OutputDir.at(str(tmp_path / "with" / INDEX_DIR)), "error")
    index = load(OutputDir.at(str(tmp_path / "with" / INDEX_DIR)))
    assert index.meta["centre"] == "embedding_centre" and index.centre is not None
    groups = find_groups(index, 0.8)
    pairs = {tuple(sorted(g["path"])) for _, g in groups.to_pandas().groupby("group_id")}
    assert pairs == {("v0.mp4", "v1.mp4")}, pairs
    whole = index.vectors([0, 1])
    assert index.pair_similarity(np.array([0]), np.array([1]))[0] > whole[0] @ whole[1] + 0.5
    assert similar(index, "v0")["video_id"][0].as_py() == "v1"
    assert similar(index, "v1")["video_id"][0].as_py() == "v0"

    plain = write_output(tmp_path / "without", WHOLE, None)
    build_index(plain, OutputDir.at(str(tmp_path / "without" / INDEX_DIR)), "error")
    index = load(OutputDir.at(str(tmp_path / "without" / INDEX_DIR)))
    assert index.meta["centre"] is None and index.centre is None
    assert find_groups(index, 0.8).num_rows == 0


def test_a_row_without_a_centre_view_compares_its_whole_view(tmp_path):
    """Rows of a job resumed without output.centre_embedding have no centre: their whole
    view stands in for it, so they are never matched through a centre of their own."""
    from pipeline.search.build import build_index

    centre = CENTRE.copy()
    centre[0] = np.nan
    out = write_output(tmp_path / "o", WHOLE, centre)
    build_index(out, OutputDir.at(str(tmp_path / "o" / INDEX_DIR)), "error")
    index = load(OutputDir.at(str(tmp_path / "o" / INDEX_DIR)))
    np.testing.assert_allclose(index.views([0])[1], index.views([0])[0])
    assert find_groups(index, 0.8).num_rows == 0
