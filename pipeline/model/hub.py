"""torchvision's published weights, fetched and loaded without trusting the cache.

torchvision's own loader (``WeightsEnum.get_state_dict``, through
``torch.hub.load_state_dict_from_url``) checks a file's hash only while downloading it, never
for a file already in ``TORCH_HOME``, and unpickles it without ``weights_only``. Clusters
share ``TORCH_HOME`` on a network volume, so whoever can write there would run code in every
replica. Here every load verifies the file's SHA-256 against the prefix torchvision puts in
the file name (``r3d_18-b3b3357e.pth``) and reads it with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from pipeline.errors import WeightsError

# torch.hub's convention: the file name carries the first hex digits of its SHA-256.
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


def cache_file(url: str) -> Path:
    """Where the torch hub cache keeps the file of ``url`` (``TORCH_HOME`` sets it)."""
    from torch.hub import get_dir

    return Path(get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_file(url: str) -> Path:
    """The cached file of ``url``, downloaded first if absent, whose SHA-256 starts with the
    prefix in its name; a ``WeightsError`` otherwise."""
    from torch.hub import download_url_to_file

    path = cache_file(url)
    match = HASH_IN_NAME.search(path.name)
    if match is None:
        raise WeightsError(f"model.weights: {url} carries no hash in its file name, so its "
                           "cached copy cannot be verified; use a vidbatch checkpoint")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # checks the hash itself before moving the download into place
            download_url_to_file(url, str(path), hash_prefix=match.group(1), progress=False)
        except Exception as e:
            raise WeightsError(
                f"model.weights: cannot download {url} ({e}). Either put the file at {path} "
                "(TORCH_HOME sets the cache), point model.weights at a local checkpoint, or "
                "use weights: none (random weights, meaningless predictions).") from None
    if not _sha256(path).startswith(match.group(1)):
        raise WeightsError(f"model.weights: {path} does not have the SHA-256 its name carries "
                           f"({match.group(1)}...): it was altered or cut short. Delete it "
                           "(it is downloaded again), and keep TORCH_HOME read-only for the "
                           "workers.")
    return path


def load_state_dict(url: str) -> dict[str, Any]:
    """The verified weights of ``url``, read with ``torch.load(weights_only=True)``."""
    import torch

    path = verified_file(url)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"model.weights: cannot load {path} safely: {e}") from None
