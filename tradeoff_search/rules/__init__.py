"""Rules: one per spec key or API parameter (:class:`Scalar`, :class:`Range`, :class:`Choice`, …,
bounded by an :class:`Interval`), and the error they raise, :class:`SpecError`: one line naming
the source, key, value and what was expected."""

from tradeoff_search.rules._errors import SpecError, excerpt, show
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
    "Scalar",
    "Section",
    "Shape",
    "SpecError",
    "check_device_url",
    "excerpt",
    "parse_section",
    "setting",
    "show",
    "spec_rule",
]
