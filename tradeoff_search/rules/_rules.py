"""The rules: one per spec key or API parameter, each parsing a value or raising
:class:`~tradeoff_search.rules.SpecError` that names the key, the value and what was expected
(in the spirit of scikit-learn's ``_param_validation``).

A rule's ``parse(value, source, key)`` returns the value as the spec holds it (a float for a
float, an :class:`IntRange` for a range, …); ``source`` is the file, flag or function the value
came from. The named intervals are the bounds several keys and parameters share.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from tradeoff_search.rules._errors import SpecError, show
from tradeoff_search.rules._values import Categorical, FloatRange, IntRange

TOKEN_ENV = "TRADEOFF_SEARCH_DEVICE_TOKEN"  # a latency server's token: from the environment only


class Rule(Protocol):
    """What every rule does: parse a value or raise :class:`SpecError` saying what is expected."""

    def parse(self, value: Any, source: Path, key: str) -> Any: ...


@dataclass(frozen=True)
class Interval:
    """Numbers from ``low`` to ``high`` (either end open or absent); ``in`` tests one."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return not (self.high is not None and (x >= self.high if self.high_open else x > self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"> {self.low}" if self.low_open else f">= {self.low}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"in {left}{self.low}, {self.high}{right}"


ANY = Interval()
POSITIVE = Interval(0, low_open=True)
AT_LEAST_ONE = Interval(1)
FRACTION = Interval(0, 1, low_open=True, high_open=True)
# NumPy seeds stop at 2**32 - 1 and trial t uses seed + t: leave room for 2**31 trials.
SEED = Interval(0, 2**31 - 1)


def _is_number(x: Any, kind: type) -> bool:
    if isinstance(x, bool):
        return False
    if kind is int:
        return isinstance(x, int)
    return isinstance(x, int | float) and math.isfinite(x)


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind]


@dataclass(frozen=True)
class Scalar:
    """One value of ``kind`` (``int``, ``float``, ``str``, ``bool``): within ``bounds``, or one of
    ``choices``."""

    kind: type
    bounds: Interval = ANY
    choices: tuple[Any, ...] | None = None

    def parse(self, value: Any, source: Path, key: str) -> Any:
        if self.choices is not None:
            if value not in self.choices or isinstance(value, bool) != (self.kind is bool):
                raise SpecError(source, key, value, f"one of {show(list(self.choices))}")
            return value
        ok = _is_number(value, self.kind) if self.kind in (int, float) else isinstance(value, self.kind)
        if not ok:
            raise SpecError(source, key, value, _type_name(self.kind))
        if self.kind in (int, float) and value not in self.bounds:
            raise SpecError(source, key, value, f"{_type_name(self.kind)} {self.bounds}")
        return float(value) if self.kind is float else value


@dataclass(frozen=True)
class Range:
    """A fixed number or ``[low, high]``; log ranges need a positive low."""

    kind: type
    bounds: Interval = ANY
    log: bool = False

    def parse(self, value: Any, source: Path, key: str) -> IntRange | FloatRange:
        what = f"{_type_name(self.kind)} or [low, high] of them, {self.bounds}"
        pair = list(value) if isinstance(value, list) else [value, value]
        if len(pair) != 2 or not all(_is_number(x, self.kind) for x in pair):
            raise SpecError(source, key, value, what)
        low, high = pair
        if low not in self.bounds or high not in self.bounds:
            raise SpecError(source, key, value, what)
        if low > high:
            raise SpecError(source, key, value, "[low, high] with low <= high")
        if self.kind is int:
            return IntRange(low, high, self.log)
        return FloatRange(float(low), float(high), self.log)


@dataclass(frozen=True)
class Choice:
    """One value or a non-empty list of distinct values, each one of ``allowed``."""

    kind: type
    allowed: tuple[Any, ...] | None = None
    bounds: Interval = ANY
    may_be_empty: bool = False

    def parse(self, value: Any, source: Path, key: str) -> Categorical:
        items = value if isinstance(value, list) else [value]
        item = Scalar(self.kind, self.bounds, self.allowed)
        what = f"a list of {show(list(self.allowed)) if self.allowed else _type_name(self.kind)}"
        if (not items and not self.may_be_empty) or len(set(map(show, items))) != len(items):
            empty = "" if self.may_be_empty else "non-empty and "
            raise SpecError(source, key, value, f"{what}, {empty}without repeats")
        for x in items:
            try:
                item.parse(x, source, key)
            except SpecError as error:
                raise SpecError(source, key, value, f"{what}; {show(x)} is not {error.expected}") from None
        return Categorical(tuple(float(x) if self.kind is float else x for x in items))


@dataclass(frozen=True)
class Shape:
    """A non-empty list of positive integers."""

    def parse(self, value: Any, source: Path, key: str) -> tuple[int, ...]:
        if not isinstance(value, list) or not value or not all(_is_number(x, int) and x >= 1 for x in value):
            raise SpecError(source, key, value, "a list of positive integers, e.g. [40, 1]")
        return tuple(value)


@dataclass(frozen=True)
class Strings:
    """A list of distinct non-empty strings (e.g. column names), possibly empty."""

    what: str  # what they are, e.g. "column names"

    def parse(self, value: Any, source: Path, key: str) -> tuple[str, ...]:
        items = value if isinstance(value, list) else None
        if items is None or not all(isinstance(x, str) and x for x in items) or len(set(items)) != len(items):
            raise SpecError(source, key, value, f"a list of {self.what}, each a non-empty string, without repeats")
        return tuple(items)


@dataclass(frozen=True)
class Point:
    """A non-empty list of numbers, e.g. a reference point (its length is checked by the spec)."""

    def parse(self, value: Any, source: Path, key: str) -> tuple[float, ...]:
        if not isinstance(value, list) or not value or not all(_is_number(x, float) for x in value):
            raise SpecError(source, key, value, "a list of numbers")
        return tuple(float(x) for x in value)


@dataclass(frozen=True)
class Builders:
    """A table of family names (none of ``reserved``, the built-in ones) to builder targets,
    ``module:function`` or ``file.py:function``."""

    reserved: tuple[str, ...]

    def parse(self, value: Any, source: Path, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            raise SpecError(source, key, value, 'a table of names to builders, e.g. mine = "models.py:build"')
        for name, target in value.items():
            if name in self.reserved or not name.isidentifier():
                raise SpecError(source, f"{key}.{name}", target, f"a name of your own (not {', '.join(self.reserved)})")
            Scalar(str).parse(target, source, f"{key}.{name}")
        return tuple(value.items())


@dataclass(frozen=True)
class Device:
    """``"local"`` or the ``http://HOST:PORT`` of a latency server (``device serve``)."""

    def parse(self, value: Any, source: Path, key: str) -> str:
        if value == "local":
            return value
        try:
            return check_device_url(value) if isinstance(value, str) else check_device_url("")
        except ValueError as error:
            shown = re.sub(r"//[^/@]*@", "//***@", value) if isinstance(value, str) else value  # no credentials
            raise SpecError(source, key, shown, str(error).removeprefix("expected ")) from None


def check_device_url(url: str) -> str:
    """``url`` if it is ``http(s)://HOST:PORT`` (nothing else: no path, query or credentials);
    else ``ValueError`` saying what is expected."""
    expected = "expected 'local' or 'http://HOST:PORT' of a latency server (python -m tradeoff_search device serve)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(expected) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise ValueError(expected)
    if parts.username or parts.password:
        raise ValueError(f"{expected}; a token goes in {TOKEN_ENV}, not in the URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(expected)
    return url.rstrip("/")


@dataclass(frozen=True)
class OrNone:
    """``None`` or what ``rule`` takes."""

    rule: Rule

    def parse(self, value: Any, source: Path, key: str) -> Any:
        return None if value is None else self.rule.parse(value, source, key)


@dataclass(frozen=True)
class Described:
    """``rule``, saying ``expected`` when it fails (for a parameter whose values mean something)."""

    rule: Rule
    expected: str

    def parse(self, value: Any, source: Path, key: str) -> Any:
        try:
            return self.rule.parse(value, source, key)
        except SpecError:
            raise SpecError(source, key, value, self.expected) from None
