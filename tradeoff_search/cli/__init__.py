"""The command line: a thin shell over the public API (``python -m tradeoff_search``)."""

from tradeoff_search.cli._cli import main

__all__ = ["main"]
