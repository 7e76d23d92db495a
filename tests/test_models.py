"""The model zoo: cards, weights resolution, checkpoints, and honest download failures."""

import pytest
import torch

from pipeline.errors import WeightsError
from pipeline.model.archs import ARCHS
from pipeline.model.checkpoint import save_checkpoint
from pipeline.model.spec import ModelSpec
from pipeline.model.zoo import build_network, ensure_weights_available, model_card, split_head


def test_none_weights_use_arch_defaults():
    card = model_card(ModelSpec(arch="r3d_18"))
    assert card.kind == "clip" and len(card.class_names) == 400 and not card.meaningful
    assert (card.short_side, card.crop_size) == (128, 112)


def test_labels_file_sets_class_names(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\nbird\n")
    card = model_card(ModelSpec(arch="resnet18", labels=str(labels)))
    assert card.class_names == ("cat", "dog", "bird")


def test_torchvision_weights_card_reads_metadata_without_download():
    card = model_card(ModelSpec(arch="r2plus1d_18", weights="KINETICS400_V1"))
    assert card.source == "torchvision" and len(card.class_names) == 400
    assert card.crop_size == 112 and card.mean[0] == pytest.approx(0.43216)


def test_unknown_weights_name_lists_choices():
    with pytest.raises(WeightsError, match="KINETICS400_V1"):
        model_card(ModelSpec(arch="r3d_18", weights="IMAGENET1K_V1"))


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    # An empty hub cache on a machine that cannot reach the download host.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setattr("urllib.request.urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("network unreachable")))
    card = model_card(ModelSpec(arch="r3d_18", weights="KINETICS400_V1"))
    with pytest.raises(WeightsError) as e:
        ensure_weights_available(card)
    msg = str(e.value)
    assert "model.weights" in msg and "weights: none" in msg and str(tmp_path) in msg


def test_checkpoint_round_trip(tmp_path):
    card = model_card(ModelSpec(arch="mc3_18", num_classes=3))
    card = type(card)(**{**card.__dict__, "class_names": ("a", "b", "c")})
    net = build_network(card)
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", net, card, metrics={"acc": 1.0})
    loaded = model_card(ModelSpec(arch="mc3_18", weights=str(path.parent)))
    assert loaded.class_names == ("a", "b", "c") and loaded.source == "checkpoint"
    net2 = build_network(loaded)
    for k, v in net.state_dict().items():
        assert torch.equal(v, net2.state_dict()[k])


def test_checkpoint_arch_mismatch(tmp_path):
    card = model_card(ModelSpec(arch="resnet18", num_classes=2))
    path = save_checkpoint(tmp_path / "model.pt", build_network(card), card)
    with pytest.raises(WeightsError, match="set model.arch: resnet18"):
        model_card(ModelSpec(arch="resnet34", weights=str(path)))


def test_bare_state_dict_is_accepted(tmp_path):
    from torchvision.models import resnet18

    torch.save(resnet18(num_classes=5).state_dict(), tmp_path / "sd.pth")
    card = model_card(ModelSpec(arch="resnet18", weights=str(tmp_path / "sd.pth")))
    assert len(card.class_names) == 5


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"obj": object()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="safely"):
        model_card(ModelSpec(arch="resnet18", weights=str(tmp_path / "evil.pt")))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        model_card(ModelSpec(arch="resnet18", weights=str(tmp_path / "x.pt")))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_body_gives_the_embedding_the_head_classifies(arch):
    card = model_card(ModelSpec(arch=arch, num_classes=7))
    body, head = split_head(build_network(card).eval())
    x = torch.zeros((1, 3, 2, 32, 32) if card.kind == "clip" else (1, 3, 32, 32))
    with torch.inference_mode():
        f = body(x)
        logits = head(f)
    assert f.shape == (1, ARCHS[arch].embed_dim) and logits.shape == (1, 7)
