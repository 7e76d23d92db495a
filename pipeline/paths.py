"""Names of places: is this a URI, a local path, a checkpoint; where does a relative one point.

The one place that answers these questions, for specs, manifests, outputs, checkpoints and
the decoders alike. It imports nothing heavy (no pyarrow): the killable decode worker
imports it at start.
"""

from __future__ import annotations

import os
from pathlib import Path

# File names that make a model.weights value a checkpoint even without a directory part.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def is_uri(location: str) -> bool:
    """Whether ``location`` names a place through a scheme (``s3://``, ``gs://``,
    ``file://``, ...) rather than as a plain path."""
    return "://" in location


def local_path(location: str) -> str | None:
    """The local path that ``location`` names (itself, or a ``file://`` URI's path); None
    when it names a remote place, which pyarrow's filesystems open."""
    if not is_uri(location):
        return location
    if location.startswith("file://"):
        return location.removeprefix("file://")
    return None


def is_checkpoint_ref(weights: str) -> bool:
    """Whether a ``model.weights`` value names a checkpoint (a file, a directory holding
    one, or a URI), rather than ``none`` or a torchvision weights name such as
    ``KINETICS400_V1``."""
    if weights.lower() == "none":
        return False
    return (is_uri(weights) or "/" in weights or os.sep in weights
            or weights.endswith(CHECKPOINT_SUFFIXES))


def resolve(base: Path, value: str) -> str:
    """``value`` as an absolute path, a relative one taken from ``base``; URIs unchanged."""
    if is_uri(value) or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def parent(location: str) -> str:
    """The directory holding ``location`` (a path or a URI)."""
    if is_uri(location):
        return location.rsplit("/", 1)[0]
    return str(Path(location).parent)


def join(base: str, value: str) -> str:
    """``value`` taken relative to the directory ``base`` (a path or a URI); absolute paths
    and URIs unchanged."""
    if is_uri(value) or value.startswith("/"):
        return value
    if is_uri(base):
        return f"{base.rstrip('/')}/{value}"
    return os.path.normpath(os.path.join(base, value))
