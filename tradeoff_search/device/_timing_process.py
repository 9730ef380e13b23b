"""The latency server's timing process: ``python -m tradeoff_search.device._timing_process MEMORY_BYTES``.

It times what the server hands it, one request at a time, over its standard input and output:
a request is an 8-byte big-endian length, that many bytes of JSON (``setting`` and the ``sizes``
of the flatbuffers that follow), then the flatbuffers; the answer is one JSON line,
``{"stats": [...]}`` or ``{"error": "..."}``. LiteRT runs here, not in the server, so a
flatbuffer that crashes it ends this process only: the server answers and starts another.
Its address space is limited to ``MEMORY_BYTES`` (``RLIMIT_AS``), and a request whose tensors
would not fit in that is refused before LiteRT allocates them: a tiny flatbuffer can declare
tensors of any size. It imports the harness only (numpy and LiteRT), like the server.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, BinaryIO

from tradeoff_search.cost._harness import Setting, time_flatbuffers

# Python, numpy, LiteRT and its threads, the request's flatbuffers: what a request's tensors
# cannot have of the address space.
BASE_BYTES = 512 * 2**20


def serve(requests: BinaryIO, answers: BinaryIO, max_tensor_bytes: int | None = None) -> None:
    """Answer requests until the server closes ``requests``."""
    while header := requests.read(8):
        request = json.loads(requests.read(int.from_bytes(header, "big")))
        flatbuffers = [requests.read(size) for size in request["sizes"]]
        answer: dict[str, Any]
        try:
            stats = time_flatbuffers(flatbuffers, Setting(**request["setting"]), max_tensor_bytes=max_tensor_bytes)
            answer = {"stats": [s.to_dict() for s in stats]}
        except (ValueError, RuntimeError) as error:  # LiteRT's words for a model it cannot load or run
            lines = str(error).strip().splitlines()
            answer = {"error": lines[-1][:500] if lines else type(error).__name__}
        except MemoryError:  # beyond the address-space limit all the same
            answer = {"error": "it needs more memory than this device allows"}
        del flatbuffers
        answers.write(json.dumps(answer).encode() + b"\n")
        answers.flush()


def limit_memory(memory_bytes: int) -> None:
    """Cap this process's address space (where the platform has ``RLIMIT_AS``)."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ImportError, ValueError, OSError):  # Windows; macOS does not enforce it
        pass


def main() -> None:
    memory_bytes = int(sys.argv[1])
    limit_memory(memory_bytes)
    # Only answers go to the server's pipe: anything LiteRT prints on stdout goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, answers, memory_bytes - BASE_BYTES)


if __name__ == "__main__":
    main()
