"""Names of places: is this a URI, a local path, a checkpoint; where does a relative one point.

The one place that answers these questions, for specs, manifests, outputs, checkpoints and
the decoders alike. It imports nothing heavy (no pyarrow): the killable decode worker
imports it at start.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

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


def redact(location: str) -> str:
    """``location`` with any ``user:password@`` of a URI replaced by ``***@``."""
    if not is_uri(location):
        return location
    scheme, rest = location.split("://", 1)
    host, sep, tail = rest.partition("/")
    return f"{scheme}://***@{host.rsplit('@', 1)[1]}{sep}{tail}" if "@" in host else location


def uri_problem(location: str, allow_options: bool = False) -> str | None:
    """Why a URI is refused, or None. A URI may not carry credentials (they belong in each
    node's environment, not in specs, manifests and logs); it may carry query options
    (pyarrow's ``endpoint_override=...`` points a worker at any host and port) only when the
    job spec sets ``allow_uri_options: true``."""
    if not is_uri(location) or local_path(location) is not None:
        return None
    try:
        parts = urlsplit(location)
        user, password = parts.username, parts.password
    except ValueError as e:
        return f"{redact(location)} is not a valid URI ({e})"
    if password is not None or (user is not None and user != "anonymous"):
        return (f"{redact(location)} carries credentials; give them through each node's "
                "environment instead (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...)")
    if parts.query and not allow_options:
        return (f"{redact(location)} carries query options ({parts.query[:80]}), which can "
                "send a worker to another host; set allow_uri_options: true in the job spec "
                "if they are meant")
    return None
