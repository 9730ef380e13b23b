"""The latency server's token: read from a file only its owner can read, and of real strength.

The token is all that stands between a server bound beyond this machine and anyone on its
network, so a guessable one is refused: at least 128 bits by the size of the alphabet it is
written in (32 hex digits, 22 characters of base64), and not a short pattern repeated.
"""

from __future__ import annotations

import math
import os
import string
from pathlib import Path

MIN_BITS = 128
_MAX_BYTES = 4096
_MIN_DISTINCT = 8  # random tokens of 128 bits have many more
_CLASSES = (string.digits, string.ascii_lowercase, string.ascii_uppercase)
_OTHERS = 33  # printable ASCII beyond letters and digits
_HOW = "python -c 'import secrets; print(secrets.token_hex(16))' makes one"


def read_token(path: Path) -> str:
    """The token in ``path`` (its one line); ``ValueError`` naming the flag when the file cannot
    be read, others may read or change it, or the token is weak. The token is never echoed."""
    try:
        with path.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            text = file.read(_MAX_BYTES + 1).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--token-file {path}: cannot be read ({type(error).__name__})") from None
    if os.name == "posix" and mode & 0o077:
        raise ValueError(f"--token-file {path}: others may read or change it (mode {mode & 0o777:o}): chmod 600 it")
    if not text or "\n" in text or len(text) > _MAX_BYTES:
        raise ValueError(f"--token-file {path}: expected one line, the token")
    if token_bits(text) < MIN_BITS or _repetitive(text):
        raise ValueError(f"--token-file {path}: too weak a token: expected {MIN_BITS} random bits or more ({_HOW})")
    return text


def token_bits(token: str) -> float:
    """The most entropy ``token`` can hold: its length × log2 of its alphabet (hex digits, or
    the character classes it uses)."""
    if all(c in string.hexdigits for c in token) and (token.islower() or token.isupper() or token.isdigit()):
        alphabet = 10 if token.isdigit() else 16
    else:
        alphabet = sum(len(chars) for chars in _CLASSES if any(c in chars for c in token))
        alphabet += _OTHERS if any(not c.isascii() or not c.isalnum() for c in token) else 0
    return len(token) * math.log2(alphabet)


def _repetitive(token: str) -> bool:
    """Few distinct characters, or a shorter string repeated (``abcabcabc``)."""
    return len(set(token)) < _MIN_DISTINCT or token in (token + token)[1:-1]
