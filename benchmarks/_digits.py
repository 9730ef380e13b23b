"""The default digits spec, shortened for benchmarks that need many quick trials."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def short_digits_spec(epochs: int) -> str:
    """``studies/digits.toml`` with ``epochs`` epochs at most and no model logging, as TOML text."""
    text = (REPO / "studies" / "digits.toml").read_text()
    text = text.replace("max_epochs = 30", f"max_epochs = {epochs}").replace(
        'log_models = "pareto"', 'log_models = "none"'
    )
    assert tomllib.loads(text)["training"]["max_epochs"] == epochs
    return text
