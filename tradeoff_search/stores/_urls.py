"""Where a study's state lives by default, the store URLs' environment variables, and URLs as
messages show them (passwords hidden)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote_plus

STATE_DIR = Path("mlruns")
DEFAULT_STORAGE = f"sqlite:///{STATE_DIR}/optuna.db"
DEFAULT_TRACKING_URI = f"sqlite:///{STATE_DIR}/mlflow.db"

# Store URLs from the environment: a URL with a password belongs there, not on a command line.
STORAGE_ENV, TRACKING_ENV = "TRADEOFF_SEARCH_STORAGE", "MLFLOW_TRACKING_URI"


# Query parameters whose values are secrets (libpq's password and sslpassword, tokens, keys, SAS
# signatures, ...), matched in their lower-case names.
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|key|auth|credential|^sig$")


def redact(url: str) -> str:
    """``url`` with its password and every secret query value (``password=``, ``sslpassword=``,
    ``token=``, ...) replaced by ``***``, for messages and logs; any string, even no URL.

    A password is hidden however its URL is read: SQLAlchemy (``make_url``) ends it at the first
    ``@``, so it may hold ``/``, ``?`` or ``#``; a URL parser (``urlsplit``, as HTTP clients read
    it) at the last ``@`` before the path, so it may hold ``@``. Everything from the user's ``:``
    to the later of the two is hidden: ``u:p@ss@host`` is shown ``u:***@host``.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    authority, tail = _authority(rest)
    user, password, host = _userinfo(authority)
    if password is not None:
        authority = f"{user}:***@{host}"
    path, question, query = tail.partition("?")
    if question:  # a value ends at "&" only ("#" in it is the value's, as SQLAlchemy reads it)
        query = "&".join(_hidden(parameter) for parameter in query.split("&"))
    return f"{scheme}://{authority}{path}{question}{query}"


def ambiguous_credentials(url: str) -> bool:
    """Whether the password of ``url`` holds an ``@`` not written ``%40``: SQLAlchemy would read
    another password and host from it than an HTTP client (and than its user meant)."""
    _, separator, rest = url.partition("://")
    password = _userinfo(_authority(rest)[0])[1] if separator else None
    return password is not None and "@" in password


def _authority(rest: str) -> tuple[str, str]:
    """``rest`` (a URL after ``://``) as its authority (user, password, host, port) and the rest:
    the authority ends at the first ``/``, ``?`` or ``#`` after its first ``@`` (before it, they
    may be a password's), else at the first of them."""
    start = max(rest.find("@"), 0)
    end = min((i for i in map(lambda c: rest.find(c, start), "/?#") if i >= 0), default=len(rest))
    return rest[:end], rest[end:]


def _userinfo(authority: str) -> tuple[str, str | None, str]:
    """An authority's user, password (None: none) and host; a user name holds no ``/`` (as
    SQLAlchemy reads it; ``sqlite:////tmp/a:b@c/db`` has a path, no password)."""
    userinfo, _, host = authority.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return (user, password, host) if colon and "/" not in user else (userinfo, None, host)


def _hidden(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    secret = equals and _SECRET_PARAMETER.search(unquote_plus(name).lower())
    return f"{name}=***" if secret else parameter


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL (relative to the working directory unless absolute)."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def prepare_local_state(*urls: str) -> None:
    """Create ``mlruns/`` only when a local store will live right in it (not in a subfolder)."""
    if any(path.parent == STATE_DIR for path in map(sqlite_path, urls) if path is not None):
        STATE_DIR.mkdir(exist_ok=True)
