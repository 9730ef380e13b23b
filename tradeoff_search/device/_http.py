"""The little of HTTP/1.1 the latency server speaks: a request's head, parsed strictly, and a
JSON answer after which the connection closes.

One request per connection: whatever follows a request on its connection (a body left unread
after a refusal, a pipelined request) is never parsed as another. Values a client sent are
echoed trimmed, and the answer names no software or version.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

MAX_HEAD_BYTES = 8192  # request line and headers: a measure request's are a few hundred bytes
_ECHO_CHARACTERS = 40  # of a value a client sent, in an error
_ERROR_CHARACTERS = 300
_SINGLE = ("host", "content-length", "transfer-encoding", "authorization", "origin")  # once at most
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110's token


class RequestError(Exception):
    """A request the server refuses: an HTTP status and one line saying why."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Head:
    """A request's line and headers (names in lower case)."""

    method: str
    target: str
    headers: dict[str, str]

    def __str__(self) -> str:  # for the log: never a header
        return f"{self.method} {trim(self.target, 200)}"


def parse_head(data: bytes) -> Head:
    """The head of a request (without the blank line that ends it); :class:`RequestError` 400
    for anything but ``METHOD TARGET HTTP/1.x`` and ``Name: value`` lines, or a header that must
    be single given twice."""
    request_line, *lines = data.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not _NAME.fullmatch(parts[0]) or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise RequestError(HTTPStatus.BAD_REQUEST, "expected a request line 'METHOD TARGET HTTP/1.1'")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _NAME.fullmatch(name):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed header line {trim(line)!r}")
        name = name.lower()
        if name in headers and name in _SINGLE:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"header {name!r} given twice")
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    return Head(parts[0], parts[1], headers)


def answer(status: HTTPStatus, body: dict[str, Any]) -> bytes:
    """A complete response: ``body`` as JSON, then the server closes the connection."""
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + payload


def refusal(error: RequestError) -> bytes:
    return answer(error.status, {"error": trim(str(error), _ERROR_CHARACTERS)})


FAILED = answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "the server failed on this request; its log says why"})


def trim(value: str, characters: int = _ECHO_CHARACTERS) -> str:
    """``value``, cut to ``characters`` (with an ellipsis): what a client sent, echoed."""
    return value if len(value) <= characters else value[: characters - 1] + "…"
