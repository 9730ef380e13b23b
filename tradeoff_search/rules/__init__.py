"""Rules and errors: one rule per spec key or API parameter (:class:`Scalar`, :class:`Range`,
:class:`Choice`, …, bounded by an :class:`Interval`), and the two errors of the checks, one line
naming the source, key and value: :class:`SpecError` (bad input) and :class:`RunError` (a run that
cannot go on)."""

from tradeoff_search.rules._errors import RunError, SpecError, excerpt, show
from tradeoff_search.rules._rules import (
    ANY,
    AT_LEAST_ONE,
    FRACTION,
    POSITIVE,
    SEED,
    TOKEN_ENV,
    Builders,
    Choice,
    Described,
    Device,
    Interval,
    OrNone,
    Point,
    Range,
    Rule,
    Scalar,
    Shape,
    Strings,
    check_device_url,
)
from tradeoff_search.rules._section import Section, parse_section, setting, spec_rule
from tradeoff_search.rules._values import Categorical, FloatRange, IntRange

__all__ = [
    "ANY",
    "AT_LEAST_ONE",
    "FRACTION",
    "POSITIVE",
    "SEED",
    "TOKEN_ENV",
    "Builders",
    "Categorical",
    "Choice",
    "Described",
    "Device",
    "FloatRange",
    "IntRange",
    "Interval",
    "OrNone",
    "Point",
    "Range",
    "Rule",
    "RunError",
    "Scalar",
    "Section",
    "Shape",
    "SpecError",
    "Strings",
    "check_device_url",
    "excerpt",
    "parse_section",
    "setting",
    "show",
    "spec_rule",
]
