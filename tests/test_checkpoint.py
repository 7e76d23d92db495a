"""Planning from a checkpoint without torch: the same metadata as ``torch.load``, or a
fallback to it for anything the reader cannot vouch for."""

import subprocess
import sys

import pytest
import torch

from pipeline.errors import WeightsError
from pipeline.model.checkpoint import read_checkpoint, save_checkpoint
from pipeline.model.checkpoint_meta import read_metadata
from pipeline.model.spec import ModelSpec
from pipeline.model.zoo import build_network, model_card


def test_planning_reads_a_checkpoint_without_torch(tmp_path):
    """The driver plans from the checkpoint's pickle alone: the same card, no tensors read."""
    card = model_card(ModelSpec(arch="r3d_18", num_classes=3))
    card = type(card)(**{**card.__dict__, "class_names": ("a", "b", "c")})
    path = save_checkpoint(tmp_path / "model.pt", build_network(card), card, metrics={"acc": 1.0},
                           sampling={"frames_per_clip": 8})
    meta = read_metadata(path)
    full = read_checkpoint(str(path))
    assert {k: v for k, v in meta.items() if k != "state_dict"} == \
        {k: v for k, v in full.items() if k != "state_dict"}
    assert {k: v.shape for k, v in meta["state_dict"].items()} == \
        {k: tuple(v.shape) for k, v in full["state_dict"].items()}
    torch.save(full["state_dict"], tmp_path / "bare.pt")
    assert read_metadata(tmp_path / "bare.pt")["fc.weight"].shape == (3, 512)
    # in a fresh interpreter: planning from either file imports no torch
    code = ("import sys; from pipeline.model.zoo import model_card; from pipeline.model.spec "
            "import ModelSpec; c = model_card(ModelSpec(arch='r3d_18', weights=sys.argv[1])); "
            "print(len(c.class_names), c.class_names[0], 'torch' in sys.modules)")
    for f, first in (("model.pt", "a"), ("bare.pt", "class_0")):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / f)], check=True,
                             capture_output=True, text=True).stdout.split()
        assert out == ["3", first, "False"]


def test_checkpoints_the_reader_cannot_vouch_for_go_to_torch_load(tmp_path):
    net = build_network(model_card(ModelSpec(arch="resnet18", num_classes=2)))
    path = save_checkpoint(tmp_path / "model.pt", net,
                           model_card(ModelSpec(arch="resnet18", num_classes=2)))
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    torch.save({"obj": object()}, tmp_path / "evil.pt")
    torch.save({"fc.weight": torch.zeros(4, 2)}, tmp_path / "old.pt",
               _use_new_zipfile_serialization=False)
    for name in ("cut.pt", "evil.pt", "old.pt"):
        assert read_metadata(tmp_path / name) is None
    # ... where torch.load accepts the old format and refuses the others, each with a reason
    assert len(model_card(ModelSpec(arch="resnet18", weights=str(tmp_path / "old.pt")))
               .class_names) == 4
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        model_card(ModelSpec(arch="resnet18", weights=str(tmp_path / "cut.pt")))
    with pytest.raises(WeightsError, match="safely"):
        model_card(ModelSpec(arch="resnet18", weights=str(tmp_path / "evil.pt")))
