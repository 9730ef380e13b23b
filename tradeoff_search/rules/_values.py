"""What the search-space rules parse to: a range of numbers or a set of choices (plain data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IntRange:
    """An integer hyperparameter searched in ``[low, high]`` (a fixed value when equal)."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    """A float hyperparameter searched in ``[low, high]`` (a fixed value when equal)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Categorical:
    """A hyperparameter chosen among ``choices``."""

    choices: tuple[Any, ...]
