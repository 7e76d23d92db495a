"""Signing in to the Ray dashboard: where its token is, and the hint printed beside its URL.

With token authentication (a local Ray 2.60 turns it on by itself), the dashboard opens on
an "Authentication Token Required" dialog. The token is found here the way Ray's own loader
finds it (``ray get-auth-token``; ray ``AuthenticationTokenLoader``, checked against it by
tests/test_dashboard.py), so what ``vidbatch token`` prints is what this user's Ray, its
drivers and ``JobSubmissionClient`` use:

1. ``RAY_AUTH_TOKEN``, when set and not empty (blank after stripping: no token);
2. else the file ``RAY_AUTH_TOKEN_PATH``, when set (missing or empty: an error, no fallback);
3. else ``~/.ray/auth_token`` (missing or empty: no token).

Surrounding whitespace is stripped; ``~`` in ``RAY_AUTH_TOKEN_PATH`` is not expanded.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import VidbatchError

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"

_WHERE_TO_GET_ONE = (
    "A local Ray that `vidbatch submit` or `vidbatch up` starts creates ~/.ray/auth_token; "
    "for a Ray started elsewhere, run `ray get-auth-token` where it was started and put the "
    f"token in ~/.ray/auth_token (chmod 600) or in {TOKEN_ENV}. A Ray started with "
    "RAY_AUTH_MODE=disabled needs no token.")


def token_path() -> Path:
    """Where Ray keeps its authentication token (``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def protect_token() -> None:
    """Make Ray's token readable by its owner only: Ray 2.60 writes it world-readable
    (0644), and whoever reads it may submit jobs to every Ray this user starts."""
    path = token_path()
    if path.is_file() and path.stat().st_mode & 0o077:
        path.chmod(0o600)


def find_token() -> tuple[str, str]:
    """``(token, where it was found)``, the way Ray looks it up; a :class:`VidbatchError`
    that says what to do when there is none."""
    value = os.environ.get(TOKEN_ENV)
    if value:
        if not value.strip():
            raise VidbatchError(f"{TOKEN_ENV} is set but blank: set it to the token, or unset "
                                f"it to use the token file. {_WHERE_TO_GET_ONE}")
        return value.strip(), TOKEN_ENV
    path = token_path()
    named = bool(os.environ.get(TOKEN_PATH_ENV))
    try:
        token = path.read_text().strip()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        token = ""
    except OSError as e:
        raise VidbatchError(f"cannot read Ray's token file {path}: {e}. Read it as the user "
                            "who started Ray.") from e
    if token:
        return token, str(path)
    if named:
        raise VidbatchError(f"{TOKEN_PATH_ENV} names {path}, which does not exist or is "
                            f"empty: point it at the token file, or unset it. "
                            f"{_WHERE_TO_GET_ONE}")
    raise VidbatchError(f"no Ray authentication token: {TOKEN_ENV} and {TOKEN_PATH_ENV} are "
                        f"unset and {path} does not exist or is empty. {_WHERE_TO_GET_ONE}")


def auth_disabled() -> bool:
    """This environment turns Ray's token authentication off: ``RAY_AUTH_MODE`` set to
    anything but ``token`` (Ray reads it so), e.g. ``disabled``."""
    mode = os.environ.get("RAY_AUTH_MODE")
    return mode is not None and mode.lower() != "token"


def dashboard_hint(url: str) -> str:
    """The line that stands for ``dashboard: <url>`` wherever one is printed: the URL and
    how to sign in to it. Never the token itself."""
    if auth_disabled():
        return f"dashboard: {url} (RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}: no sign-in)"
    return f"dashboard: {url} (sign-in token: `vidbatch token`)"
