"""The classify replica, called directly (no Ray): results equal a plain torch computation."""

import numpy as np
import pytest
import torch

from pipeline.model.checkpoint import save_checkpoint
from pipeline.model.runtime import Runtime, auto_streams
from pipeline.model.spec import ModelSpec
from pipeline.model.zoo import build_network, model_card
from pipeline.tasks.classify.replica import ClassifyConfig, ClassifyReplica


@pytest.fixture(scope="module")
def clip_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    card = model_card(ModelSpec(arch="r3d_18", num_classes=4))
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, build_network(card), card)
    return path


def replica_of(card, top_k=5, **runtime):
    """A classify replica of ``card``; ``runtime``: :class:`Runtime` fields."""
    return ClassifyReplica(ClassifyConfig.of(card, Runtime(**runtime), top_k=top_k))


def batch_of(frames: np.ndarray, status: list[str]):
    n = len(status)
    return {
        "video_id": np.array([f"v{i}" for i in range(n)], dtype=object),
        "path": np.array([f"/v{i}.mp4" for i in range(n)], dtype=object),
        "label": np.array([None] * n, dtype=object),
        "start_s": np.full(n, np.nan), "end_s": np.full(n, np.nan),
        "status": np.array(status, dtype=object),
        "error": np.array([None if s == "ok" else "decode: bad" for s in status], dtype=object),
        "decoder": np.array(["decord"] * n, dtype=object),
        "decode_note": np.array([None] * n, dtype=object),
        "num_frames": np.full(n, 30.0), "fps": np.full(n, 30.0), "duration_s": np.full(n, 1.0),
        "width": np.full(n, 64.0), "height": np.full(n, 48.0), "decode_s": np.full(n, 0.1),
        "frames": frames,
    }


def reference_clip_model(ckpt, frames):
    """What a user would write by hand: normalise, run the full model, average logits."""
    card = model_card(ModelSpec(arch="r3d_18", weights=str(ckpt)))
    net = build_network(card).eval()
    mean = torch.tensor(card.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(card.std).view(1, 3, 1, 1, 1)
    out = []
    with torch.no_grad():
        for video in frames:
            x = torch.from_numpy(video).permute(0, 4, 1, 2, 3).float() / 255.0
            out.append(net((x - mean) / std).mean(0))
    return torch.stack(out)


def test_clip_predictions_match_a_direct_computation(clip_ckpt):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 2, 4, 32, 32, 3), dtype=np.uint8)
    card = model_card(ModelSpec(arch="r3d_18", weights=str(clip_ckpt)))
    table = replica_of(card, top_k=2, channels_last=False)(
        batch_of(frames, ["ok", "error", "ok"]))
    assert table.num_rows == 3
    assert table["status"].to_pylist() == ["ok", "error", "ok"]
    logits = reference_clip_model(clip_ckpt, frames[[0, 2]])
    ref_idx = logits.argmax(1).tolist()
    got = table["pred_index"].to_pylist()
    assert [got[0], got[2]] == ref_idx and got[1] is None
    probs = torch.softmax(logits, 1).max(1).values.numpy()
    scores = table["pred_score"].to_numpy(zero_copy_only=False)
    np.testing.assert_allclose(scores[[0, 2]], probs, rtol=1e-4)
    assert table["embedding"][1].as_py() is None
    assert table["error"][1].as_py() == "decode: bad"


def test_channels_last_and_bf16_stay_close_to_fp32(clip_ckpt):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(2, 1, 4, 32, 32, 3), dtype=np.uint8)
    card = model_card(ModelSpec(arch="r3d_18", weights=str(clip_ckpt)))
    ref = replica_of(card, channels_last=False).embed(frames)
    cl = replica_of(card, channels_last=True).embed(frames)
    bf = replica_of(card, precision="bf16").embed(frames)
    np.testing.assert_allclose(cl, ref, rtol=1e-3, atol=1e-4)
    cos = (bf * ref).sum(1) / np.linalg.norm(bf, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_gpu_replica_matches_the_cpu(clip_ckpt, precision):
    """The CUDA path (pinned host memory, channels_last_3d, autocast) gives the CPU fp32
    replica's embeddings, and a batch with an error row comes out whole."""
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(3, 2, 4, 32, 32, 3), dtype=np.uint8)
    card = model_card(ModelSpec(arch="r3d_18", weights=str(clip_ckpt)))
    cpu = replica_of(card, device="cpu", channels_last=False)
    gpu = replica_of(card, device="cuda", precision=precision)
    assert gpu.device.type == "cuda"
    ref, got = cpu.embed(frames), gpu.embed(frames)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > (0.9999 if precision == "fp32" else 0.99)
    table = gpu(batch_of(frames, ["ok", "error", "ok"]))
    assert table["status"].to_pylist() == ["ok", "error", "ok"]
    assert len(table["embedding"][0].as_py()) == ref.shape[1]


def test_frame_model_averages_over_frames():
    torch.manual_seed(0)
    card = model_card(ModelSpec(arch="resnet18", num_classes=3))
    pred = replica_of(card, channels_last=False)
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, size=(1, 2, 3, 32, 32, 3), dtype=np.uint8)
    emb = pred.embed(frames)
    per_frame = np.stack([pred.embed(frames[:, c:c + 1, t:t + 1])[0]
                          for c in range(2) for t in range(3)])
    np.testing.assert_allclose(emb[0], per_frame.mean(0), rtol=1e-4, atol=1e-5)


def test_random_weights_are_the_same_in_every_replica():
    """weights: none builds one network, whatever the replica or the run: embeddings of
    one job (several replicas) and of its rerun can be compared."""
    card = model_card(ModelSpec(arch="resnet18", num_classes=3))
    frames = np.random.default_rng(4).integers(0, 256, size=(2, 1, 2, 32, 32, 3),
                                               dtype=np.uint8)
    torch.manual_seed(1)
    a = replica_of(card, channels_last=False).embed(frames)
    torch.manual_seed(2)
    b = replica_of(card, channels_last=False).embed(frames)
    np.testing.assert_array_equal(a, b)


def test_all_error_batch_passes_through():
    card = model_card(ModelSpec(arch="resnet18", num_classes=3))
    frames = np.zeros((2, 1, 2, 32, 32, 3), dtype=np.uint8)
    table = replica_of(card)(batch_of(frames, ["error", "error"]))
    assert table["status"].to_pylist() == ["error", "error"]
    assert table["pred_label"].null_count == 2


@pytest.mark.parametrize(("flags", "has"), [
    ("fpu sse2 avx2 fma", False),                # x86 without bf16 (this project's CI CPU)
    ("fpu avx2 avx512f avx512_bf16", True),      # Cooper Lake / Zen 4
    ("fpu avx512f amx_bf16 amx_tile", True),     # Sapphire Rapids
    ("fp asimd sve bf16 i8mm", True),            # Arm with FEAT_BF16
])
def test_cpu_bf16_is_read_from_the_cpu_flags(tmp_path, flags, has):
    from pipeline.model.runtime import cpu_has_bf16

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_bf16(str(info)) is has
    assert cpu_has_bf16(str(tmp_path / "absent")) is None


def test_bf16_warning_only_for_bf16_on_a_cpu_without_it():
    from pipeline.model.runtime import bf16_cpu_warning, cpu_has_bf16

    assert bf16_cpu_warning("fp32", "cpu") is None
    assert bf16_cpu_warning("bf16", "cuda") is None
    warning = bf16_cpu_warning("bf16", "cpu")
    if cpu_has_bf16() is False:
        assert "precision: fp32" in warning and "much slower" in warning
    else:
        assert warning is None


def test_streams_split_a_batch_and_keep_video_order(clip_ckpt):
    """5 videos over 3 streams (slices of 2, 1, 2): the same embeddings, in input order,
    as one pass over the whole batch; each stream's thread runs threads // streams torch
    threads."""
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(5, 1, 4, 32, 32, 3), dtype=np.uint8)
    card = model_card(ModelSpec(arch="r3d_18", weights=str(clip_ckpt)))
    one = replica_of(card, channels_last=False, threads=2).embed(frames)
    split = replica_of(card, channels_last=False, threads=2, streams=3)
    np.testing.assert_allclose(split.embed(frames), one, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(split.embed(frames[:1]), one[:1], rtol=1e-4, atol=1e-5)
    assert split.streams._pool.submit(torch.get_num_threads).result() == 1
    two = replica_of(card, threads=4, streams=2)
    assert two.streams._pool.submit(torch.get_num_threads).result() == 2


def test_auto_streams_one_per_thread_on_cpu_one_on_gpu():
    assert auto_streams(2, 8, gpu=False) == 2
    assert auto_streams(16, 8, gpu=False) == 8  # never more streams than videos per batch
    assert auto_streams(1, 8, gpu=False) == 1
    assert auto_streams(8, 32, gpu=True) == 1


def test_centre_view_is_the_middle_zoomed_back_to_size():
    """A frame whose middle 80% (a 10% border cut away) is white on black: the centre view
    is all white, the same size, and the border's columns are gone."""
    from pipeline.tasks.classify.replica import centre_view

    frames = np.zeros((1, 2, 40, 60, 3), np.uint8)
    frames[:, :, 4:36, 6:54] = 255
    view = centre_view(torch.from_numpy(frames))
    assert view.shape == (1, 2, 40, 60, 3)
    assert view.min() == 255


def test_centre_embedding_is_the_embedding_of_the_centre_view():
    """output.centre_embedding: embedding_centre is the network's embedding of the centre
    view; without it the column is null (and the embedding is the same either way)."""
    from pipeline.tasks.classify.replica import centre_view

    torch.manual_seed(0)
    card = model_card(ModelSpec(arch="resnet18", num_classes=3))
    frames = np.random.default_rng(5).integers(0, 256, size=(2, 1, 2, 40, 40, 3),
                                               dtype=np.uint8)
    on = ClassifyReplica(ClassifyConfig.of(card, Runtime(channels_last=False),
                                           centre_embedding=True))
    off = replica_of(card, channels_last=False)
    with_centre = on(batch_of(frames, ["ok", "error"]))
    without = off(batch_of(frames, ["ok", "error"]))
    zoomed = centre_view(torch.from_numpy(frames[:1].reshape(1, 2, 40, 40, 3)))
    expected = off.embed(zoomed.round().to(torch.uint8).numpy()[:, None])[0]
    got = np.array(with_centre["embedding_centre"][0].as_py())
    np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-2)
    assert not np.allclose(got, np.array(with_centre["embedding"][0].as_py()), atol=1e-2)
    assert with_centre["embedding_centre"][1].as_py() is None
    assert without["embedding_centre"].null_count == 2
    assert with_centre["embedding"].to_pylist() == without["embedding"].to_pylist()
