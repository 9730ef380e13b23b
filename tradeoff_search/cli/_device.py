"""``device serve``: the latency server, started from the command line."""

from __future__ import annotations

import argparse
import sys

from tradeoff_search.cli._parser import EXIT_OK, EXIT_USAGE


def device(args: argparse.Namespace) -> int:
    """``device serve``: imports the harness only (no TensorFlow, Keras, MLflow or Optuna)."""
    from pathlib import Path

    from tradeoff_search.device import read_token, serve

    try:
        token = None if args.token_file is None else read_token(Path(args.token_file))
        limits = ("max_mb", "client_timeout", "max_connections", "max_queue", "max_memory_mb")
        serve(args.host, args.port, token, **{name: getattr(args, name) for name in limits})
    except (ValueError, OSError) as error:  # a bad flag, or the address cannot be bound
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
