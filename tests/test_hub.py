"""torchvision's published weights: the cached file is verified before every load, and read
without running code."""

from __future__ import annotations

import hashlib
import os
import pickle

import pytest
import torch

from pipeline.errors import WeightsError
from pipeline.model.hub import cache_file, load_state_dict, verified_file
from pipeline.model.spec import ModelSpec
from pipeline.model.zoo import build_network, ensure_weights_available, model_card


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_an_altered_cache_file_is_refused_before_it_is_unpickled(torch_home):
    """What someone who can write to a shared TORCH_HOME would plant: torchvision's own
    loader would unpickle it (running its code) because the file is already cached."""
    card = model_card(ModelSpec(arch="r3d_18", weights="KINETICS400_V1"))
    planted = cache_file(card.extra["url"])
    planted.parent.mkdir(parents=True)
    marker = torch_home / "code-ran"
    planted.write_bytes(pickle.dumps({"fc.weight": _RunsCode(marker)}))
    for load in (ensure_weights_available, build_network):
        with pytest.raises(WeightsError, match="does not have the SHA-256 its name carries"):
            load(card)
    assert not marker.exists()


def _published(torch_home, payload: bytes, name: str = "net") -> str:
    """A URL whose cached file holds ``payload`` under the name torchvision would give it."""
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    url = f"https://download.pytorch.org/models/{name}-{prefix}.pth"
    path = cache_file(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return url


def test_a_verified_file_loads_and_a_cut_one_does_not(torch_home):
    buffer = torch_home / "state.pt"
    torch.save({"w": torch.arange(3.0)}, buffer)
    url = _published(torch_home, buffer.read_bytes())
    assert torch.equal(load_state_dict(url)["w"], torch.arange(3.0))
    path = verified_file(url)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(WeightsError, match="altered or cut short"):
        load_state_dict(url)


def test_a_file_with_the_right_hash_still_cannot_run_code(torch_home):
    marker = torch_home / "code-ran"
    url = _published(torch_home, pickle.dumps(_RunsCode(marker)), name="evil")
    with pytest.raises(WeightsError, match="cannot load .* safely"):
        load_state_dict(url)
    assert not marker.exists()
