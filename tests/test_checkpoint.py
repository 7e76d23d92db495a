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


def _pickle_bomb(path, megabytes: int) -> None:
    """A torch.save-shaped archive whose data.pkl deflates from a few hundred KB into a
    pickle of a list of ``megabytes`` / 2 million small ints: unpickling it needs gigabytes."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            f.write(b"\x80\x02]q\x00(")  # PROTO 2, EMPTY_LIST, BINPUT, MARK
            chunk = b"K\x00" * (2**20 // 2)
            for _ in range(megabytes):
                f.write(chunk)
            f.write(b"e.")  # APPENDS, STOP


def test_a_pickle_bomb_is_refused_before_it_is_read(tmp_path):
    """`submit --dry-run` on a crafted checkpoint: exit 2 with a sentence, and the driver's
    memory stays small (the whole pickle would take gigabytes)."""
    bomb = tmp_path / "bomb.pt"
    _pickle_bomb(bomb, 400)
    assert bomb.stat().st_size < 2 * 2**20
    (tmp_path / "m.csv").write_text("path\na.mp4\n")
    (tmp_path / "job.yaml").write_text(
        f"name: j\nmanifest: m.csv\nmodel: {{arch: r3d_18, weights: {bomb}}}\n"
        "output: {path: out}\n")
    # VmHWM: the peak of this process's own memory (ru_maxrss would carry over the peak of
    # the pytest process that forked it).
    code = ("import sys\nfrom pipeline.cli import app\ntry:\n    app()\nfinally:\n"
            "    hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')]\n"
            "    print('MAXRSS_KB', hwm[0].split()[1], file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code, "submit", str(tmp_path / "job.yaml"),
                          "--dry-run"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "refusing" in run.stderr and "unpacks to 400 MiB" in run.stderr
    peak_mb = int(run.stderr.split("MAXRSS_KB")[1].split()[0]) / 1024
    assert peak_mb < 400, f"the driver peaked at {peak_mb:.0f} MB"  # no torch import either
