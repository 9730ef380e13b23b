"""The latency server's timing process: ``python -m tradeoff_search.device._timing_process``.

It times what the server hands it, one request at a time, over its standard input and output:
a request is an 8-byte big-endian length, that many bytes of JSON (``setting`` and the ``sizes``
of the flatbuffers that follow), then the flatbuffers; the answer is one JSON line,
``{"stats": [...]}`` or ``{"error": "..."}``. LiteRT runs here, not in the server, so a
flatbuffer that crashes it ends this process only: the server answers and starts another.
It imports the harness only (numpy and LiteRT), like the server.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, BinaryIO

from tradeoff_search.cost._harness import Setting, time_flatbuffers


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer requests until the server closes ``requests``."""
    while header := requests.read(8):
        request = json.loads(requests.read(int.from_bytes(header, "big")))
        flatbuffers = [requests.read(size) for size in request["sizes"]]
        answer: dict[str, Any]
        try:
            stats = time_flatbuffers(flatbuffers, Setting(**request["setting"]))
            answer = {"stats": [s.to_dict() for s in stats]}
        except (ValueError, RuntimeError) as error:  # LiteRT's words for a model it cannot load or run
            lines = str(error).strip().splitlines()
            answer = {"error": lines[-1][:500] if lines else type(error).__name__}
        answers.write(json.dumps(answer).encode() + b"\n")
        answers.flush()


def main() -> None:
    # Only answers go to the server's pipe: anything LiteRT prints on stdout goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
