"""The RAM helper process: ``python -m tradeoff_search.cost._memory_process``.

It measures what the process that started it sends, one flatbuffer at a time, over its standard
input and output: a request is an 8-byte big-endian length and that many bytes of ``.tflite``; the
answer is one JSON line, ``{"ram": {...}}``, ``{"refusal": {...}}`` (see ``_memory``) or
``{"error": "..."}``. It imports numpy and the micro runtime, never TensorFlow or LiteRT, and
stays single-threaded: each probe forks it (see ``_arena``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, BinaryIO

from tradeoff_search.cost._arena import minimum_arena
from tradeoff_search.cost._memory import encode


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer requests until ``requests`` closes."""
    while header := requests.read(8):
        flatbuffer = requests.read(int.from_bytes(header, "big"))
        answer: dict[str, Any]
        try:
            answer = encode(minimum_arena(flatbuffer))
        except Exception as error:
            answer = {"error": f"{type(error).__name__}: {error}"[:500]}
        answers.write(json.dumps(answer).encode() + b"\n")
        answers.flush()


def main() -> None:
    # Only answers go to the asker's pipe: anything printed on stdout goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
