"""Every kind of data source, by the name ``data.source`` starts with: the one place a new kind
is registered."""

from __future__ import annotations

from tradeoff_search.data._builtin import Mnist1d, Sklearn
from tradeoff_search.data._csv import Csv
from tradeoff_search.data._images import Images
from tradeoff_search.data._npz import Npz
from tradeoff_search.data._source import Source

# In the order a message lists them.
SOURCES: dict[str, Source] = {source.kind: source for source in (Sklearn(), Csv(), Npz(), Images(), Mnist1d())}


def source_of(text: str) -> Source | None:
    """The kind of source that reads ``data.source = text``; None if no kind does."""
    source = SOURCES.get(text.partition(":")[0])
    return source if source is not None and source.accepts(text) else None


def forms() -> str:
    """What a ``data.source`` may be: ``'sklearn:NAME', …, 'images:FOLDER' or 'mnist1d'``."""
    shown = [f"'{source.form}'" for source in SOURCES.values()]
    return f"{', '.join(shown[:-1])} or {shown[-1]}"
